"""Transfusion-style text-to-image: full-sequence denoising inside the backbone (issue 11).

For a model with ``config.image_head == "transfusion"`` (mmar.model.transfusion), the
``TextToImagePipeline`` hands each batch to :func:`denoise_batch`:

    prefix = [pad..] [bos] prompt [boi]  (cond)  and  [pad..] [bos] [boi]  (uncond, "")
             left-padded, run ONCE through the backbone -> KV cache (as masked AR does)
    x_T ~ N(0, I) (N, D) per image, from the image's generator
    for t in scheduler.timesteps (sampling.num_steps of them, the model's ``sampling.scheduler``):
        h   = backbone(EmbeddingViT(x_t) + TimestepEmbedder(t) at the N slots | cache)
        out = Linear(h + pos)                                   (B2, N, D), B2 = 2B with CFG
        out = out_u + w (out_c - out_u)                         constant w = guidance_scale
        x   = scheduler.step(out, t, x)  on the (B N, D) rows   (eta, temperature as for MMAR)
    image = decode(unpatchify(x))

No masking, no reveal order: ``num_iter`` (and ``num_steps_final``) are ignored; ``num_steps``
is the number of backbone passes. Each image draws x_T, then per step the noise the scheduler
injects (DDPM, DDIM with eta > 0) and, when it keeps tokens, the noise of its kept tokens, all
from its own generator, so a seeded image does not depend on its batch.

Editing (``KnownTokens``) is RePaint-style replacement: the kept positions of x_T are
q_sample(known, x_T, alpha_bar of the first t); after every step they are set to
q_sample(known, eps, alpha_bar of the next t), and after the last to the known tokens
themselves, so the kept tokens come out bit-identical.

Each step yields a ``SamplingStep`` whose ``masked`` is all False and whose ``tokens`` are the
step's x0 prediction (known tokens at the kept positions), the final tokens at the last step;
``stream`` and the web demo thus show the image forming from blur to detail.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from mmar.diffusion.parameterization import predict_x0_and_eps, q_sample
from mmar.diffusion.schedulers import NoiseScheduler
from mmar.model.config import SamplingConfig
from mmar.model.mmar import MMARModel
from mmar.model.processor import MMARProcessor
from mmar.pipelines.base import generators
from mmar.pipelines.text_to_image import KnownTokens, PromptPrefix, SamplingStep


def per_image_normal(
    gens: list[torch.Generator], shape: tuple[int, ...], device: torch.device, draw: list[bool]
) -> torch.Tensor:
    """(B, *shape) standard normal: row b drawn from ``gens[b]`` where ``draw[b]``, else zeros
    (and nothing drawn from that generator)."""
    rows = [
        torch.randn(shape, generator=g, device=device) if d else torch.zeros(shape, device=device)
        for g, d in zip(gens, draw, strict=True)
    ]
    return torch.stack(rows)


def denoise_batch(
    model: MMARModel,
    processor: MMARProcessor,
    prompts: list[str],
    seeds: list[int],
    s: SamplingConfig,
    scheduler: NoiseScheduler,
    use_cache: bool,
    known: KnownTokens,
) -> Iterator[SamplingStep]:
    """The states (B, N, D) of one batch after each denoising step (module docstring); the
    arguments are ``TextToImagePipeline._sample_batch``'s."""
    # fmt: off
    dev, kind = model.device, model.config.diffusion.parameterization
    B, N, D = len(prompts), model.num_image_tokens, model.geometry.token_dim
    gens = generators(seeds, dev)
    guided = s.guidance_scale != 1.0
    prefix = PromptPrefix(model, processor, prompts, guided, use_cache)

    scheduler.set_timesteps(s.num_steps, device=dev, spacing=s.timestep_spacing)
    if scheduler.timesteps is None:  # set_timesteps just set them
        raise RuntimeError(f"{type(scheduler).__name__}.set_timesteps set no timesteps")
    timesteps = scheduler.timesteps.tolist()                           # python ints, descending
    ab = model.noise_schedule().ab                                     # t -> (1, 1) float64
    injects = scheduler.injects_noise(s.temperature)
    keep, kept_any = known.keep[..., None], known.keep.any(1).tolist()  # (B, N, 1), B bools
    masked = torch.zeros(B, N, dtype=torch.bool, device=dev)
    x = per_image_normal(gens, (N, D), dev, [True] * B)               # x_T (B, N, D)
    x = torch.where(keep, q_sample(known.tokens, x, ab(timesteps[0])), x)
    for i, t in enumerate(timesteps):
        last = i == len(timesteps) - 1
        t_emb = torch.full((prefix.rows,), t, dtype=torch.long, device=dev)
        img = model.image_embeddings(torch.cat([x, x]) if guided else x, t_emb)  # (B2, N, W)
        h = prefix.image_hidden(img)                                   # (B2, N, W)
        out = model.transfusion(h + model.diffusion_pos_emb).float()   # (B2, N, D)
        if guided:
            out_c, out_u = out.chunk(2)                                # (B, N, D) x 2
            out = out_u + s.guidance_scale * (out_c - out_u)
        rows, x_rows = out.flatten(0, 1), x.flatten(0, 1)              # (B N, D)
        x0_hat = predict_x0_and_eps(kind, rows, x_rows, ab(t))[0].view(B, N, D)
        noise = per_image_normal(gens, (N, D), dev, [True] * B) if injects and not last else None
        x = scheduler.step(rows, t, x_rows, temperature=s.temperature,
                           noise=None if noise is None else noise.flatten(0, 1)).view(B, N, D)
        if last:
            x = torch.where(keep, known.tokens, x)
            yield SamplingStep(i + 1, len(timesteps), x, masked)
        else:
            eps = per_image_normal(gens, (N, D), dev, kept_any)       # (B, N, D)
            x = torch.where(keep, q_sample(known.tokens, eps, ab(timesteps[i + 1])), x)
            yield SamplingStep(i + 1, len(timesteps), torch.where(keep, known.tokens, x0_hat),
                               masked)
    # fmt: on
