"""The head's sampling loop with classifier-free guidance on its prediction (docs/method.md §3, §4).

    x_T ~ N(0, I)
    for t in scheduler.timesteps:                         one head call per step
        out_c, out_u = head([x; x], t, [cond; uncond])    the SAME x for both halves
        out = out_u + w (out_c - out_u)                   guidance on the prediction (v, eps or x0)
        x = scheduler.step(out, t, x, tau)
    return x                                              x_0 (the last step returns x0_hat)

Temperature tau scales only the noise injected by the scheduler (MAR's choice), not x_T: x_T
must look like what the head saw at t = T-1 in training (x_T ~ eps), and a shrunken x_T is off
that distribution. So with deterministic DDIM (eta = 0) the temperature has no effect.

The noise is either drawn here from one ``generator`` or passed in as ``noise`` (the pipeline
draws each image's noise from that image's own generator, so a seeded image does not depend on
the batch it is sampled in).
"""

from __future__ import annotations

import torch

from mmar.diffusion.head import DiffusionHead
from mmar.diffusion.schedulers import NoiseScheduler


def noise_draws(scheduler: NoiseScheduler, num_steps: int, temperature: float) -> int:
    """How many (M, D) standard-normal draws ``sample_tokens`` uses: x_T, plus one per step
    that injects noise (every step but the last, when the scheduler injects any)."""
    return num_steps if scheduler.injects_noise(temperature) and num_steps > 1 else 1


def sample_tokens(
    head: DiffusionHead,
    cond: torch.Tensor,
    scheduler: NoiseScheduler,
    num_steps: int,
    uncond: torch.Tensor | None = None,
    guidance_scale: float | torch.Tensor = 1.0,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
    timestep_spacing: str = "linspace",
) -> torch.Tensor:
    """Draw one token per row of ``cond`` -> x0 (M, D), D = ``head.token_dim``.

    cond, uncond: (M, C) conditioned / unconditioned z; no guidance when ``uncond`` is None or
    ``guidance_scale`` is the float 1.0 (then the doubled batch would be wasted work).
    guidance_scale: a float or an (M,) tensor (per-row scale, e.g. MAR's ramp over iterations).
    scheduler: a DDIMScheduler / DDPMScheduler / DPMSolverPP2MScheduler;
      ``set_timesteps(num_steps, spacing=timestep_spacing)`` is called here ("linspace" or
      "leading", ``mmar.diffusion.schedulers.timestep_grid``).
    generator: on cond's device; draws x_T and every step's noise when ``noise`` is None.
    noise: (S, M, D) with S = ``noise_draws(scheduler, num_steps, temperature)``: noise[0] is
      x_T, noise[i + 1] the noise step i injects.
    """
    # fmt: off
    if not hasattr(scheduler, "step") or not hasattr(scheduler, "set_timesteps"):
        raise TypeError(f"sample_tokens: scheduler must be a DDIMScheduler/DDPMScheduler, got "
                        f"{type(scheduler).__name__} (argument order: head, cond, scheduler, "
                        f"num_steps, uncond=..., guidance_scale=...)")
    if cond.ndim != 2:
        raise ValueError(f"sample_tokens: cond must be (M, C), got {tuple(cond.shape)}")
    m, device = cond.shape[0], cond.device
    # the sampling state stays in float32 (float64 for float64 conditions, as in the tests)
    dtype = torch.float64 if cond.dtype == torch.float64 else torch.float32
    shape = (m, head.token_dim)
    if noise is not None:
        expected = (noise_draws(scheduler, num_steps, temperature), *shape)
        if tuple(noise.shape) != expected:
            raise ValueError(f"sample_tokens: noise must be {expected} (x_T, then one draw per "
                             f"noisy step), got {tuple(noise.shape)}")
        noise = noise.to(device, dtype)
    w, guided = guidance_scale, False
    if uncond is not None and not (isinstance(w, (int, float)) and w == 1):
        guided = True
        if uncond.shape != cond.shape:
            raise ValueError(f"sample_tokens: uncond shape {tuple(uncond.shape)} != cond shape "
                             f"{tuple(cond.shape)}")
        if isinstance(w, torch.Tensor):
            if w.shape != (m,):
                raise ValueError(f"sample_tokens: a tensor guidance_scale must be ({m},), "
                                 f"got {tuple(w.shape)}")
            w = w.to(device, dtype)[:, None]                                           # (M, 1)
        cond = torch.cat([cond, uncond])                                               # (2M, C)
    scheduler.set_timesteps(num_steps, device=device, spacing=timestep_spacing)
    timesteps = scheduler.timesteps
    if timesteps is None:  # set_timesteps just set them; a scheduler that does not is broken
        raise RuntimeError(f"{type(scheduler).__name__}.set_timesteps set no timesteps")
    x = noise[0] if noise is not None else torch.randn(shape, generator=generator, device=device,
                                                       dtype=dtype)                    # (M, D)
    # python ints: the head then embeds t once per step, and no step syncs with the device
    for i, t in enumerate(timesteps.tolist()):
        if guided:
            out = head(torch.cat([x, x]), t, cond).to(dtype)                           # (2M, D)
            out_c, out_u = out.chunk(2)                                                # (M, D) x 2
            out = out_u + w * (out_c - out_u)                                          # (M, D)
        else:
            out = head(x, t, cond).to(dtype)                                           # (M, D)
        step_noise = noise[i + 1] if noise is not None and i + 1 < noise.shape[0] else None
        x = scheduler.step(out, t, x, generator=generator, temperature=temperature,
                           noise=step_noise)                                           # (M, D)
    return x
    # fmt: on
