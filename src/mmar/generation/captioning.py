"""Image-to-text: encode the image block once, then decode text with the KV cache.

    prefix = [bos] [boi] img_1..img_N [eoi]       (image block bidirectional, nothing masked)
    y_1    = argmax / sample  logits(h_eoi)       then  y_{t+1} from logits(h(y_t) | cache)

Every sample's prefix has the same length (N image tokens, fixed specials), so the batch needs
no padding; samples that have emitted eos keep decoding pad until all are done or
``max_new_tokens`` is reached.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def pil_to_tensor(images: list[Image.Image], channels: int, size: int) -> torch.Tensor:
    """PIL images -> (B, channels, size, size) in [-1, 1].

    Images of another mode are converted ("L" for 1 channel, "RGB" for 3) and images of another
    size are resized (bicubic) to the tokenizer's square image_size, so any file can be captioned.
    """
    mode = "L" if channels == 1 else "RGB"
    arrays = []
    for im in images:
        im = im.convert(mode)
        if im.size != (size, size):
            im = im.resize((size, size), Image.BICUBIC)
        a = np.asarray(im, dtype=np.float32)
        arrays.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))          # (C, H, W)
    return torch.from_numpy(np.stack(arrays)) / 127.5 - 1.0


def _as_tensor(model, images) -> torch.Tensor:
    tok = model.image_tokenizer
    if isinstance(images, Image.Image):
        images = [images]
    if isinstance(images, torch.Tensor):
        tok.check_images(images)  # ValueError naming the expected vs the given shape
        return images.to(model.device, torch.float32)
    images = list(images)
    if not images or not all(isinstance(im, Image.Image) for im in images):
        raise ValueError("caption: images must be a non-empty list of PIL images or a tensor "
                         f"(B, {tok.image_channels}, {tok.image_size}, {tok.image_size}) in [-1, 1]")
    return pil_to_tensor(images, tok.image_channels, tok.image_size).to(model.device)


@torch.no_grad()
def caption_ids(model, images, max_new_tokens: int = 32, temperature: float = 0.0,
                seed: int = 0) -> torch.Tensor:
    """Generated token ids (B, T), T <= max_new_tokens, pad after each row's eos."""
    if max_new_tokens < 1 or temperature < 0:
        raise ValueError(f"caption: need max_new_tokens >= 1 and temperature >= 0, got "
                         f"{max_new_tokens}, {temperature}")
    x = _as_tensor(model, images)                                             # (B, C, H, W)
    B, sp = x.shape[0], model.special
    was_training = model.training
    model.eval()
    try:
        batch = model.pack([""] * B, ["img"] * B)                              # [bos][boi] img [eoi]
        h, cache = model.backbone_hidden(model.embed(batch, model.image_tokens(x)),
                                         batch.attention_mask, batch.position_ids, use_cache=True)
        logits = model.logits(h[:, -1]).float()                                # (B, V)
        generator = torch.Generator(device=model.device).manual_seed(seed)
        done = torch.zeros(B, dtype=torch.bool, device=model.device)
        L, out = batch.input_ids.shape[1], []
        for step in range(max_new_tokens):
            if temperature == 0:
                nxt = logits.argmax(-1)                                        # (B,)
            else:
                probs = torch.softmax(logits / temperature, dim=-1)
                nxt = torch.multinomial(probs, 1, generator=generator)[:, 0]
            nxt = torch.where(done, torch.full_like(nxt, sp.pad), nxt)
            out.append(nxt)
            done |= nxt == sp.eos
            if bool(done.all()) or step == max_new_tokens - 1:
                break
            kv = L + step + 1                                                  # keys incl. nxt
            h, cache = model.backbone_hidden(
                model.backbone.get_input_embeddings()(nxt[:, None]),
                torch.ones(B, 1, 1, kv, dtype=torch.bool, device=model.device),
                torch.full((B, 1), L + step, device=model.device),
                cache=cache, use_cache=True)
            logits = model.logits(h[:, -1]).float()
    finally:
        model.train(was_training)
    return torch.stack(out, 1)                                                 # (B, T)


def caption(model, images, max_new_tokens: int = 32, temperature: float = 0.0,
            seed: int = 0) -> list[str]:
    """One caption per image: greedy when ``temperature`` is 0, else sampled from
    softmax(logits / temperature) with a torch.Generator seeded by ``seed``; stops at eos.

    images: a list of PIL images (converted/resized, see :func:`pil_to_tensor`) or a tensor
    (B, C_img, H, W) in [-1, 1] of exactly the tokenizer's shape (else ValueError).
    """
    eos, texts = model.special.eos, []
    for row in caption_ids(model, images, max_new_tokens, temperature, seed).tolist():
        row = row[: row.index(eos)] if eos in row else row
        texts.append(model.tokenizer.decode(row, skip_special_tokens=True).strip())
    return texts
