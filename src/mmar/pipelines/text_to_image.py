"""TextToImagePipeline: masked-autoregressive sampling with a KV-cached text prefix
(docs/method.md §3).

    prefix  = [pad..] [bos] prompt [boi]   (cond)   and   [pad..] [bos] [boi]   (uncond, "")
              left-padded so that the N image slots are the last N columns of every row;
              run ONCE through the backbone -> KV cache (the prefix never attends to the image)
    order   = a random permutation per image; x = [MASK] everywhere
    for k in 0..K-1:   m_k = reveal_schedule(N, K)[k]
        h   = backbone(EmbeddingViT(x) at the N slots | cache)      (cond and uncond: one batch)
        z   = h + pos;  reveal order[m_k : m_{k-1}]                  (reveal_steps)
        x_i = sample_tokens(head, z_i^c, z_i^u, w_k = 1 + (w-1)(N - m_k)/N, tau, S_k)   those i
              S_k: num_steps, or annealed linearly to num_steps_final over the iterations
    image = decode(unpatchify(x))

The cache is cropped back to the prefix after each iteration, so every iteration sees the same
prefix keys/values; ``use_cache=False`` recomputes prefix + block each time (same result).
Each image's order and noise come from its own generator (see :mod:`mmar.pipelines.base`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image

from mmar.diffusion.sampling import noise_draws, sample_tokens
from mmar.diffusion.schedulers import NoiseScheduler, build_noise_scheduler
from mmar.model.config import SamplingConfig
from mmar.model.masking import annealed_steps, guidance_ramp, random_orders, reveal_steps
from mmar.model.mmar import MMARModel
from mmar.model.processor import MMARProcessor
from mmar.pipelines.base import (
    Seed,
    as_list,
    generators,
    sample_seeds,
    sampling_config,
    warn_if_ignored,
    warn_if_prompts_lose_words,
)
from mmar.torch_utils import eval_mode


class TextToImagePipeline:
    """Text -> images with an ``MMARModel`` and its ``MMARProcessor``.

        pipe = TextToImagePipeline(model, processor)
        images = pipe(["a handwritten digit seven"], SamplingConfig(guidance_scale=3.0), seed=0)

    The processor's image tokenizer must be on the model's device (``processor.to(device)``).
    """

    def __init__(self, model: MMARModel, processor: MMARProcessor):
        self.model, self.processor = model, processor

    def __call__(
        self,
        prompts: str | Sequence[str],
        sampling: SamplingConfig | None = None,
        seed: Seed = 0,
        use_cache: bool = True,
    ) -> list[Image.Image]:
        """One image per prompt ("" = unconditional), as PIL images of the tokenizer's size and
        mode. sampling: default the model's recommended ``config.sampling``. seed: sample i uses
        seed + i (or seed[i]), whatever the batch. Warns once per call when prompts lose words
        (unknown to the vocabulary, or cut at ``max_text_len``)."""
        tokens = self.generate_tokens(prompts, sampling, seed, use_cache)
        return self.processor.postprocess(self.processor.decode_tokens(tokens))

    def generate_tokens(
        self,
        prompts: str | Sequence[str],
        sampling: SamplingConfig | None = None,
        seed: Seed = 0,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """Image tokens (B, N, D) for the prompts; arguments as ``__call__``."""
        prompts = as_list(prompts)
        s = sampling_config(self.model.config.sampling, sampling)
        self.model.config.check_sampling(s)
        warn_if_ignored(s)
        warn_if_prompts_lose_words(self.processor, prompts)
        seeds = sample_seeds(seed, len(prompts))
        scheduler = build_noise_scheduler(
            s.scheduler,
            self.model.noise_schedule(),
            self.model.config.diffusion.parameterization,
            s.eta,
        )
        with eval_mode(self.model), torch.no_grad():
            return torch.cat(
                [
                    self._sample_batch(
                        prompts[i : i + s.batch_size],
                        seeds[i : i + s.batch_size],
                        s,
                        scheduler,
                        use_cache,
                    )
                    for i in range(0, len(prompts), s.batch_size)
                ]
            )

    def _sample_batch(
        self,
        prompts: list[str],
        seeds: list[int],
        s: SamplingConfig,
        scheduler: NoiseScheduler,
        use_cache: bool,
    ) -> torch.Tensor:
        """Tokens (B, N, D) of one batch of prompts."""
        # fmt: off
        model, dev = self.model, self.model.device
        B, N, D = len(prompts), model.num_image_tokens, model.geometry.token_dim
        gens = generators(seeds, dev)
        guided = s.guidance_scale != 1.0
        texts = prompts + ([""] * B if guided else [])
        batch = self.processor.pack(texts, ["gen"] * len(texts), padding_side="left").to(dev)
        P = batch.input_ids.shape[1] - N                                   # prefix length
        text_emb = model.embed(batch)                                      # (B2, L, W), B2: B | 2B
        pos = batch.position_ids                                           # (B2, L)
        cache = None
        if use_cache:  # masks (B2, 1, P, P) for the prefix, (B2, 1, N, L) for the image block
            _, cache = model.backbone_hidden(text_emb[:, :P], model.attention_mask(batch, 0, P),
                                             pos[:, :P], use_cache=True)
            mask = model.attention_mask(batch, P)
        else:
            mask = model.attention_mask(batch)                             # (B2, 1, L, L)

        orders = torch.cat([random_orders(1, N, g, dev) for g in gens])    # (B, N)
        tokens = torch.zeros(B, N, D, device=dev)
        masked = torch.ones(B, N, dtype=torch.bool, device=dev)
        reveals = list(reveal_steps(orders, s.num_iter))                   # [(m_k, (B, r_k))]
        steps = annealed_steps(s.num_steps, s.num_steps_final, len(reveals))
        for (m, reveal), n_steps in zip(reveals, steps):                   # reveal: (B, r)
            draws = noise_draws(scheduler, n_steps, s.temperature)        # x_T + noisy steps
            img = model.vit(model.with_mask_token(tokens, masked))         # (B, N, W)
            img = torch.cat([img, img]) if guided else img                 # (B2, N, W)
            if use_cache:
                h, cache = model.backbone_hidden(img.to(text_emb.dtype), mask, pos[:, P:],
                                                 cache=cache, use_cache=True)
                cache.crop(-N)                                             # back to the prefix
            else:
                emb = torch.cat([text_emb[:, :P], img.to(text_emb.dtype)], dim=1)
                h = model.backbone_hidden(emb, mask, pos)[0][:, P:]        # (B2, N, W)
            z = (h + model.diffusion_pos_emb).float()                      # (B2, N, W)
            idx = reveal[..., None].expand(-1, -1, z.shape[-1])
            cond = z[:B].gather(1, idx).flatten(0, 1)                      # (B r, W)
            uncond = z[B:].gather(1, idx).flatten(0, 1) if guided else None
            # each image's noise from its own generator: (draws, B r, D)
            noise = torch.stack([torch.randn(draws, reveal.shape[1], D, generator=g, device=dev)
                                 for g in gens], dim=1).flatten(1, 2)
            x0 = sample_tokens(model.head, cond, scheduler, n_steps, uncond=uncond,
                               guidance_scale=guidance_ramp(s.guidance_scale, N, m),
                               temperature=s.temperature, noise=noise)     # (B r, D)
            tokens.scatter_(1, reveal[..., None].expand(-1, -1, D), x0.view(B, -1, D).float())
            masked.scatter_(1, reveal, False)
        return tokens
        # fmt: on
