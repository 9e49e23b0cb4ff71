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
              (image_head "codebook": x_i = e_c, c ~ softmax((l_u + w_k (l_c - l_u)) / tau) of
              the code head's logits, one uniform per token from the image's generator;
              mmar.model.codebook_head)
    image = decode(unpatchify(x))

The cache is cropped back to the prefix after each iteration, so every iteration sees the same
prefix keys/values; ``use_cache=False`` recomputes prefix + block each time (same result).
Each image's order and noise come from its own generator (see :mod:`mmar.pipelines.base`).
``sampling.timestep_spacing`` picks the head's timestep grid (``sample_tokens``);
``sampling.precision = "bf16"`` runs each iteration under bf16 autocast (``sampling_autocast``).

Editing (``KnownTokens``, docs/method.md §3): tokens given with keep = True are visible from the
first iteration and never resampled; only the M = N - (kept) others are masked, ordered and
revealed, by the same schedule over M (and the guidance ramp over M). With nothing kept this is
exactly text-to-image (same draws, same tokens). ``steps`` yields the state after every iteration
(the progressive reveal a demo can show).

A model with ``config.image_head == "transfusion"`` is sampled by full-sequence denoising
instead (``mmar.pipelines.transfusion.denoise_batch``, dispatched in ``steps``).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any, cast

import torch
from PIL import Image

from mmar.diffusion.head import DiffusionHead
from mmar.diffusion.sampling import noise_draws, sample_tokens
from mmar.diffusion.schedulers import NoiseScheduler, build_noise_scheduler
from mmar.model.codebook_head import sample_code_tokens
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


@dataclasses.dataclass(frozen=True)
class KnownTokens:
    """Image tokens given to the sampler (editing): ``tokens`` (B, N, D) float and ``keep`` (B, N)
    bool, True where a token is kept (visible from the first iteration, never resampled); the
    values of ``tokens`` where keep is False are ignored."""

    tokens: torch.Tensor
    keep: torch.Tensor

    def __post_init__(self) -> None:
        t, k = self.tokens, self.keep
        if t.dim() != 3 or k.shape != t.shape[:2] or k.dtype != torch.bool:
            raise ValueError(
                f"KnownTokens: tokens must be (B, N, D) float and keep (B, N) bool, got tokens "
                f"{tuple(t.shape)} and keep {tuple(k.shape)} {k.dtype}"
            )

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def select(self, rows: Sequence[int]) -> KnownTokens:
        i = torch.as_tensor(list(rows), dtype=torch.long, device=self.tokens.device)
        return KnownTokens(self.tokens[i], self.keep[i])


@dataclasses.dataclass(frozen=True)
class SamplingStep:
    """The state after one masked-AR iteration of a call: ``index`` of ``total`` (the revealing
    iterations of the batch in progress), and every sample's ``tokens`` (B, N, D) with ``masked``
    (B, N) bool, True where a token is not revealed yet (its value there is meaningless)."""

    index: int
    total: int
    tokens: torch.Tensor
    masked: torch.Tensor


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

    def stream(
        self,
        prompts: str | Sequence[str],
        sampling: SamplingConfig | None = None,
        seed: Seed = 0,
        every: int = 1,
    ) -> Iterator[list[Image.Image]]:
        """``__call__``, yielding every sample's image after every ``every``-th iteration (tokens
        not yet revealed shown grey: ``render``) and always the finished images last
        (``every=0``: only those). The progressive reveal of masked AR, for a demo."""
        for step in self.frames(self.steps(prompts, sampling, seed), every):
            yield self.processor.postprocess(self.render(step.tokens, step.masked))

    @staticmethod
    def frames(steps: Iterator[SamplingStep], every: int) -> Iterator[SamplingStep]:
        """Every ``every``-th of ``steps`` and the last one (``every`` 0: the last only)."""
        if every < 0:
            raise ValueError(f"every: show every n-th iteration, n >= 0, got {every}; e.g. 1")
        step = None
        for i, step in enumerate(steps, 1):
            if every and i % every == 0:
                yield step
                step = None
        if step is not None:
            yield step

    def render(self, tokens: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) in [-1, 1] of partly revealed tokens (B, N, D): the decoded
        revealed tokens, with the pixels of every token still masked (B, N) set to grey (0)."""
        g = self.model.geometry.grid  # tokens per side
        images = self.processor.decode_tokens(torch.where(masked[..., None], 0.0, tokens))
        cell = images.shape[-1] // g  # pixels per token side
        grey = masked.view(-1, 1, g, 1, g, 1).expand(-1, 1, -1, cell, -1, cell)
        return images.masked_fill(grey.reshape(-1, 1, g * cell, g * cell), 0.0)

    def generate_tokens(
        self,
        prompts: str | Sequence[str],
        sampling: SamplingConfig | None = None,
        seed: Seed = 0,
        use_cache: bool = True,
        known: KnownTokens | None = None,
    ) -> torch.Tensor:
        """Image tokens (B, N, D) for the prompts; arguments as ``__call__``; ``known``: tokens
        to keep (editing), one row per prompt."""
        *_, last = self.steps(prompts, sampling, seed, use_cache, known)
        return last.tokens

    def steps(
        self,
        prompts: str | Sequence[str],
        sampling: SamplingConfig | None = None,
        seed: Seed = 0,
        use_cache: bool = True,
        known: KnownTokens | None = None,
    ) -> Iterator[SamplingStep]:
        """The sampling of ``generate_tokens``, yielding the state of all B samples after every
        iteration of every batch (batches run one after the other; samples of later batches stay
        masked meanwhile). The last step holds the finished tokens. The yielded tensors are the
        sampler's own: copy them to keep them past the next step."""
        prompts = as_list(prompts)
        s = sampling_config(self.model.config.sampling, sampling)
        self.model.config.check_sampling(s)
        if self.model.code_head is None:  # a codebook head uses temperature whatever the scheduler
            warn_if_ignored(s)
        warn_if_prompts_lose_words(self.processor, prompts)
        seeds = sample_seeds(seed, len(prompts))
        model, dev = self.model, self.model.device
        B, N, D = len(prompts), model.num_image_tokens, model.geometry.token_dim
        if known is None:
            known = KnownTokens(
                torch.zeros(B, N, D, device=dev), torch.zeros(B, N, dtype=torch.bool, device=dev)
            )
        if len(known) != B or known.tokens.shape[1:] != (N, D):
            raise ValueError(
                f"known tokens: expected ({B}, {N}, {D}) for {B} prompts of this model, got "
                f"{tuple(known.tokens.shape)}"
            )
        known = KnownTokens(known.tokens.to(dev, torch.float32), known.keep.to(dev))
        scheduler = build_noise_scheduler(
            s.scheduler,
            self.model.noise_schedule(),
            self.model.config.diffusion.parameterization,
            s.eta,
        )
        tokens = torch.where(known.keep[..., None], known.tokens, 0.0)  # (B, N, D)
        masked = ~known.keep  # (B, N)
        batches = _batches(masked.sum(1).tolist(), s.batch_size)
        if not batches:  # every token is kept: nothing to sample
            yield SamplingStep(0, 0, tokens, masked)
        # grad mode is per thread and a generator may be resumed on any thread (Gradio does):
        # each iteration runs under its own no_grad, entered by the thread that asks for it
        with eval_mode(self.model):
            for rows in batches:
                args = ([prompts[i] for i in rows], [seeds[i] for i in rows], s, scheduler,
                        use_cache, known.select(rows))  # fmt: skip
                if self.model.config.image_head == "transfusion":
                    # full-sequence denoising (imported here: that module imports this one)
                    from mmar.pipelines.transfusion import denoise_batch

                    steps = denoise_batch(self.model, self.processor, *args)
                else:
                    steps = self._sample_batch(*args)
                idx = torch.as_tensor(rows, device=dev)
                while True:
                    with torch.no_grad(), sampling_autocast(s, dev):
                        step = next(steps, None)
                    if step is None:
                        break
                    tokens[idx], masked[idx] = step.tokens, step.masked
                    yield SamplingStep(step.index, step.total, tokens, masked)

    def _sample_batch(
        self,
        prompts: list[str],
        seeds: list[int],
        s: SamplingConfig,
        scheduler: NoiseScheduler,
        use_cache: bool,
        known: KnownTokens,
    ) -> Iterator[SamplingStep]:
        """The states (B, N, D) / (B, N) of one batch after each of its iterations; every
        sample of the batch has the same number M of tokens to generate (``_batches``)."""
        # fmt: off
        model, dev = self.model, self.model.device
        B, N, D = len(prompts), model.num_image_tokens, model.geometry.token_dim
        gens = generators(seeds, dev)
        guided = s.guidance_scale != 1.0
        prefix = PromptPrefix(model, self.processor, prompts, guided, use_cache)

        orders = torch.cat([random_orders(1, N, g, dev) for g in gens])    # (B, N)
        free = ~known.keep.gather(1, orders)                               # (B, N) in order
        M = int(free[0].sum())                                             # tokens to generate
        orders = orders[free].view(B, M)                                   # (B, M): free only
        tokens = torch.where(known.keep[..., None], known.tokens, 0.0)     # (B, N, D)
        masked = ~known.keep                                               # (B, N)
        reveals = list(reveal_steps(orders, s.num_iter))                   # [(m_k, (B, r_k))]
        steps = annealed_steps(s.num_steps, s.num_steps_final, len(reveals))
        for k, ((m, reveal), n_steps) in enumerate(zip(reveals, steps)):   # reveal: (B, r)
            draws = noise_draws(scheduler, n_steps, s.temperature)        # x_T + noisy steps
            img = model.vit(model.with_mask_token(tokens, masked))         # (B, N, W)
            img = torch.cat([img, img]) if guided else img                 # (B2, N, W)
            h = prefix.image_hidden(img)                                   # (B2, N, W)
            z = (h + model.diffusion_pos_emb).float()                      # (B2, N, W)
            idx = reveal[..., None].expand(-1, -1, z.shape[-1])
            cond = z[:B].gather(1, idx).flatten(0, 1)                      # (B r, W)
            uncond = z[B:].gather(1, idx).flatten(0, 1) if guided else None
            if model.code_head is not None:  # image_head "codebook": a code per token
                x0 = sample_code_tokens(model.code_head, cond, uncond,
                                        guidance_ramp(s.guidance_scale, M, m), s.temperature, gens)
            else:
                # each image's noise from its own generator: (draws, B r, D)
                noise = torch.stack([torch.randn(draws, reveal.shape[1], D, generator=g,
                                                 device=dev) for g in gens], dim=1).flatten(1, 2)
                x0 = sample_tokens(cast(DiffusionHead, model.head), cond, scheduler, n_steps,
                                   uncond=uncond,
                                   guidance_scale=guidance_ramp(s.guidance_scale, M, m),
                                   temperature=s.temperature, noise=noise,
                                   timestep_spacing=s.timestep_spacing)     # (B r, D)
            tokens.scatter_(1, reveal[..., None].expand(-1, -1, D), x0.view(B, -1, D).float())
            masked.scatter_(1, reveal, False)
            yield SamplingStep(k + 1, len(reveals), tokens, masked)
        # fmt: on


def sampling_autocast(
    sampling: SamplingConfig, device: torch.device
) -> contextlib.AbstractContextManager[Any]:
    """The context the backbone and head run in while image tokens are sampled:
    ``torch.autocast(device.type, torch.bfloat16)`` for ``sampling.precision == "bf16"``,
    nothing for "fp32" (today's numbers, bit for bit; an autocast the caller entered still
    applies). The sampler's state (x_t, the revealed tokens) stays float32 either way: the
    head's output is cast back before every scheduler step (``sample_tokens``).

    Autocast is thread-local state, so it is entered around each ``next()`` of a sampling
    generator, never across a ``yield`` (the caller's code between steps must not run in it)."""
    if sampling.precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class PromptPrefix:
    """The prompts' prefix ``[pad..] [bos] prompt [boi]`` (and the "" prompts' when ``guided``:
    rows B..2B-1), left-padded so that the N image slots are the last N columns, run once
    through the backbone into a KV cache (``use_cache``); ``image_hidden`` then runs one image
    block after it. Shared by the masked-AR loop and the Transfusion-style denoising loop."""

    def __init__(
        self,
        model: MMARModel,
        processor: MMARProcessor,
        prompts: list[str],
        guided: bool,
        use_cache: bool,
    ):
        # fmt: off
        N, dev = model.num_image_tokens, model.device
        self.model, self.rows = model, len(prompts) * (2 if guided else 1)       # B2: B | 2B
        texts = prompts + ([""] * len(prompts) if guided else [])
        batch = processor.pack(texts, ["gen"] * len(texts), padding_side="left").to(dev)
        self.P = P = batch.input_ids.shape[1] - N                              # prefix length
        self.text_emb = model.embed(batch)                                     # (B2, L, W)
        self.pos = batch.position_ids                                          # (B2, L)
        self.cache: Any = None
        if use_cache:  # masks (B2, 1, P, P) for the prefix, (B2, 1, N, L) for the image block
            _, self.cache = model.backbone_hidden(
                self.text_emb[:, :P], model.attention_mask(batch, 0, P), self.pos[:, :P],
                use_cache=True)
            self.mask = model.attention_mask(batch, P)
        else:
            self.mask = model.attention_mask(batch)                            # (B2, 1, L, L)
        # fmt: on

    def image_hidden(self, img: torch.Tensor) -> torch.Tensor:
        """Hidden states (B2, N, W) of the image block whose inputs are ``img`` (B2, N, W), after
        the prefix. The cache is cropped back to the prefix, so every call sees the same prefix
        keys / values; without a cache the prefix is recomputed (the same result)."""
        model, P, img = self.model, self.P, img.to(self.text_emb.dtype)
        if self.cache is not None:
            h, self.cache = model.backbone_hidden(
                img, self.mask, self.pos[:, P:], cache=self.cache, use_cache=True
            )
            self.cache.crop(-img.shape[1])  # back to the prefix
            return h
        emb = torch.cat([self.text_emb[:, :P], img], dim=1)
        return model.backbone_hidden(emb, self.mask, self.pos)[0][:, P:]


def _batches(num_free: Sequence[int], batch_size: int) -> list[list[int]]:
    """Sample indices in batches of at most ``batch_size`` whose samples all generate the same
    number of tokens (the reveal schedule is one per batch): in call order when they all do (plain
    text-to-image), grouped by that number otherwise. Samples with nothing to generate are left
    out. Results do not depend on the grouping: every sample draws from its own generator."""
    groups: dict[int, list[int]] = {}
    for i, m in enumerate(num_free):
        if m:
            groups.setdefault(m, []).append(i)
    return [g[j : j + batch_size] for g in groups.values() for j in range(0, len(g), batch_size)]
