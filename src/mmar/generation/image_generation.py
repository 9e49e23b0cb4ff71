"""Masked-autoregressive text-to-image sampling with a KV-cached text prefix (DESIGN.md §3).

    prefix  = [pad..] [bos] prompt [boi]   (cond)   and   [pad..] [bos] [boi]   (uncond, "")
              left-padded so that the N image slots are the last N columns of every row;
              run ONCE through the backbone -> KV cache (the prefix never attends to the image)
    order   = a random permutation per image; x = [MASK] everywhere
    for k in 0..K-1:   m_k = reveal_schedule(N, K)[k]
        h   = backbone(EmbeddingViT(x) at the N slots | cache)      (cond and uncond: one batch)
        z   = h + pos;  reveal order[m_k : m_{k-1}]
        x_i = sample_tokens(head, z_i^c, z_i^u, w_k = 1 + (w-1)(N - m_k)/N, tau)   for those i
    image = decode(unpatchify(x))

The cache is cropped back to the prefix after each iteration, so every iteration sees the same
prefix keys/values; ``use_cache=False`` recomputes prefix + block each time (same result).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from mmar.diffusion.sampling import sample_tokens
from mmar.diffusion.schedulers import build_scheduler
from mmar.model.masking import cfg_ramp, random_orders, reveal_schedule


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """(B, C, H, W) in [-1, 1] -> PIL images, mode "L" for C = 1 and "RGB" for C = 3."""
    arr = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
    if arr.shape[1] == 1:
        return [Image.fromarray(a[0], mode="L") for a in arr]
    return [Image.fromarray(np.ascontiguousarray(a.transpose(1, 2, 0)), mode="RGB") for a in arr]


def _sample_batch(model, prompts: list[str], num_iter: int, cfg: float, temperature: float,
                  scheduler, num_steps: int, generator: torch.Generator,
                  use_cache: bool) -> torch.Tensor:
    """Tokens (B, N, D) of one batch of prompts."""
    B, N, D = len(prompts), model.num_image_tokens, model.geometry.token_dim
    guided = cfg != 1.0
    texts = list(prompts) + ([""] * B if guided else [])
    batch = model.pack(texts, ["gen"] * len(texts), padding_side="left")
    P = batch.input_ids.shape[1] - N                                   # prefix length
    text_emb = model.embed(batch)                                      # (B2, L, W), B2 = B or 2B
    mask, pos = batch.attention_mask, batch.position_ids               # (B2, 1, L, L), (B2, L)
    cache = None
    if use_cache:
        _, cache = model.backbone_hidden(text_emb[:, :P], mask[:, :, :P, :P], pos[:, :P],
                                         use_cache=True)

    orders = random_orders(B, N, generator, model.device)              # (B, N)
    tokens = torch.zeros(B, N, D, device=model.device)
    masked = torch.ones(B, N, dtype=torch.bool, device=model.device)
    prev = N
    for m in reveal_schedule(N, num_iter):
        if m == prev:  # K > N: nothing to reveal at this step
            continue
        img = model.vit(model.with_mask_token(tokens, masked))         # (B, N, W)
        img = torch.cat([img, img]) if guided else img                 # (B2, N, W)
        if use_cache:
            h, cache = model.backbone_hidden(img.to(text_emb.dtype), mask[:, :, P:], pos[:, P:],
                                             cache=cache, use_cache=True)
            cache.crop(-N)                                             # back to the prefix
        else:
            emb = torch.cat([text_emb[:, :P], img.to(text_emb.dtype)], dim=1)
            h = model.backbone_hidden(emb, mask, pos)[0][:, P:]        # (B2, N, W)
        z = (h + model.diffusion_pos_emb).float()                      # (B2, N, W)
        reveal = orders[:, m:prev]                                     # (B, r)
        idx = reveal[..., None].expand(-1, -1, z.shape[-1])
        cond = z[:B].gather(1, idx).flatten(0, 1)                      # (B r, W)
        uncond = z[B:].gather(1, idx).flatten(0, 1) if guided else None
        x0 = sample_tokens(model.head, cond, scheduler, num_steps, uncond=uncond,
                           cfg_scale=cfg_ramp(cfg, N, m), temperature=temperature,
                           generator=generator)                        # (B r, D)
        tokens.scatter_(1, reveal[..., None].expand(-1, -1, D), x0.view(B, -1, D).float())
        masked.scatter_(1, reveal, False)
        prev = m
    return tokens


@torch.no_grad()
def generate_tokens(model, prompts: list[str], num_iter: int = 16, cfg: float = 3.0,
                    temperature: float | None = None, num_steps: int | None = None,
                    sampler: str | None = None, eta: float | None = None, seed: int = 0,
                    batch_size: int | None = None, use_cache: bool = True) -> torch.Tensor:
    """Image tokens (B, N, D) for the prompts; arguments as :func:`generate_images`."""
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts:
        raise ValueError("generate_images: prompts is empty; pass at least one prompt, e.g. "
                         "['a red circle'] ('' gives an unconditional sample)")
    dc = model.config.diffusion
    temperature = dc.temperature if temperature is None else temperature
    if num_iter < 1 or cfg < 0 or temperature < 0:
        raise ValueError(f"generate_images: need num_iter >= 1, cfg >= 0, temperature >= 0; got "
                         f"num_iter={num_iter}, cfg={cfg}, temperature={temperature}")
    dc = dc.replace(sampler=sampler or dc.sampler, eta=dc.eta if eta is None else eta)
    scheduler = build_scheduler(dc, model.noise_schedule())
    generator = torch.Generator(device=model.device).manual_seed(seed)
    size = batch_size or len(prompts)
    was_training = model.training
    model.eval()
    try:
        return torch.cat([
            _sample_batch(model, prompts[i:i + size], num_iter, cfg, temperature, scheduler,
                          num_steps or dc.num_sampling_steps, generator, use_cache)
            for i in range(0, len(prompts), size)])
    finally:
        model.train(was_training)


def generate_images(model, prompts: list[str], num_iter: int = 16, cfg: float = 3.0,
                    temperature: float | None = None, num_steps: int | None = None,
                    sampler: str | None = None, eta: float | None = None, seed: int = 0,
                    batch_size: int | None = None, use_cache: bool = True) -> list[Image.Image]:
    """One image per prompt ("" = unconditional), as PIL images of the tokenizer's size/mode.

    num_iter: K masked-AR iterations; cfg: guidance scale w (1 = no uncond half);
    temperature / num_steps / sampler / eta: override the diffusion config's temperature (tau,
    which scales the noise the sampler injects: DDPM, or DDIM with eta > 0) /
    num_sampling_steps / sampler ("ddim" | "ddpm") / DDIM eta; None keeps the config's.
    Every random draw comes from one torch.Generator seeded with ``seed`` on the model's device;
    batches of ``batch_size`` prompts (default: all) draw from it in turn.
    """
    tokens = generate_tokens(model, prompts, num_iter, cfg, temperature, num_steps, sampler, eta,
                             seed, batch_size, use_cache)
    with torch.no_grad():
        return to_pil(model.decode_tokens(tokens))
