"""CaptionPipeline: encode the image block once, then decode text with the KV cache.

    prefix = [bos] [boi] img_1..img_N [eoi]       (image block bidirectional, nothing masked)
    y_1    = argmax / sample  logits(h_eoi)       then  y_{t+1} from logits(h(y_t) | cache)

Every sample's prefix has the same length (N image tokens, fixed specials), so the batch needs
no padding; samples that have emitted eos keep decoding pad until all are done or
``max_new_tokens`` is reached. Sampled tokens (``text_temperature`` > 0) come from each image's
own generator (see :mod:`mmar.pipelines.base`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from mmar.config import check
from mmar.model.config import SamplingConfig
from mmar.model.mmar import MMARModel
from mmar.model.processor import ImagesLike, MMARProcessor
from mmar.pipelines.base import Seed, generators, sample_seeds, sampling_config
from mmar.torch_utils import eval_mode


class CaptionPipeline:
    """Images -> text with an ``MMARModel`` and its ``MMARProcessor``.

        captions = CaptionPipeline(model, processor)(images)   # greedy by default

    images: PIL images (converted to the tokenizer's channels and resized to its size) or a
    tensor (B, C_img, H, W) in [-1, 1] of exactly the tokenizer's shape (else ValueError).
    """

    def __init__(self, model: MMARModel, processor: MMARProcessor):
        self.model, self.processor = model, processor

    def __call__(
        self, images: ImagesLike, sampling: SamplingConfig | None = None, seed: Seed = 0
    ) -> list[str]:
        """One caption per image; ``sampling.max_new_tokens`` / ``text_temperature`` (0 =
        greedy) / ``batch_size``, default the model's ``config.sampling``."""
        return self.processor.decode_ids(self.generate_ids(images, sampling, seed))

    @torch.no_grad()
    def generate_ids(
        self, images: ImagesLike, sampling: SamplingConfig | None = None, seed: Seed = 0
    ) -> torch.Tensor:
        """Generated token ids (B, T), T <= max_new_tokens, pad after each row's eos."""
        s = sampling_config(self.model.config.sampling, sampling)
        self._check_length(s)
        x = self.processor.preprocess(images).to(self.model.device)  # (B, C, H, W)
        seeds = sample_seeds(seed, x.shape[0])
        with eval_mode(self.model):
            chunks = [
                self._decode(x[i : i + s.batch_size], seeds[i : i + s.batch_size], s)
                for i in range(0, x.shape[0], s.batch_size)
            ]
        T = max(c.shape[1] for c in chunks)
        pad = self.processor.special.pad
        return torch.cat([F.pad(c, (0, T - c.shape[1]), value=pad) for c in chunks])

    def _check_length(self, s: SamplingConfig) -> None:
        """The prefix [bos][boi] image [eoi] and max_new_tokens must fit the backbone's
        positions (a caption past them is out of what the model can place)."""
        limit = getattr(self.model.backbone.config, "max_position_embeddings", None)
        if limit is None:
            return
        prefix = self.processor.pack([""], ["img"]).input_ids.shape[1]
        check(
            s.max_new_tokens <= limit - prefix,
            "SamplingConfig.max_new_tokens",
            f"must be <= {limit - prefix} (the backbone's max_position_embeddings = {limit} "
            f"less the {prefix} positions of the image prefix), got {s.max_new_tokens}; "
            "e.g. max_new_tokens: 32",
        )

    def _decode(self, x: torch.Tensor, seeds: Sequence[int], s: SamplingConfig) -> torch.Tensor:
        model, sp, dev = self.model, self.processor.special, self.model.device
        B = x.shape[0]
        batch = self.processor.pack([""] * B, ["img"] * B).to(dev)  # [bos][boi] img [eoi]
        tokens = self.processor.encode_images(x)  # (B, N, D)
        h, cache = model.backbone_hidden(
            model.embed(batch, tokens),
            model.attention_mask(batch),
            batch.position_ids,
            use_cache=True,
        )
        logits = model.logits(h[:, -1]).float()  # (B, V)
        gens = generators(seeds, dev) if s.text_temperature > 0 else []
        done = torch.zeros(B, dtype=torch.bool, device=dev)
        L, out = batch.input_ids.shape[1], []
        for step in range(s.max_new_tokens):
            if s.text_temperature == 0:
                nxt = logits.argmax(-1)  # (B,)
            else:
                # max subtracted, float64: finite for any T > 0 (float32 reads T = 1e-300 as 0)
                top = logits.amax(-1, keepdim=True)
                probs = torch.softmax((logits - top).double() / s.text_temperature, dim=-1)
                nxt = torch.cat(
                    [torch.multinomial(probs[b], 1, generator=g) for b, g in enumerate(gens)]
                )  # (B,)
            nxt = torch.where(done, torch.full_like(nxt, sp.pad), nxt)
            out.append(nxt)
            done |= nxt == sp.eos
            if bool(done.all()) or step == s.max_new_tokens - 1:
                break
            kv = L + step + 1  # keys incl. nxt
            h, cache = model.backbone_hidden(
                model.backbone.get_input_embeddings()(nxt[:, None]),
                model.decoding_mask(B, kv),
                torch.full((B, 1), L + step, device=dev),
                cache=cache,
                use_cache=True,
            )
            logits = model.logits(h[:, -1]).float()
        return torch.stack(out, 1)  # (B, T)
