"""The head's sampling loop with classifier-free guidance on its prediction (DESIGN.md §3, §4).

    x_T ~ N(0, I)
    for t in scheduler.timesteps:                         one head call per step
        out_c, out_u = head([x; x], t, [cond; uncond])    the SAME x for both halves
        out = out_u + w (out_c - out_u)                   guidance on the prediction (v, eps or x0)
        x = scheduler.step(out, t, x, tau)
    return x                                              x_0 (the last step returns x0_hat)

Temperature tau scales only the noise injected by the scheduler (MAR's choice), not x_T: x_T
must look like what the head saw at t = T-1 in training (x_T ~ eps), and a shrunken x_T is off
that distribution. So with deterministic DDIM (eta = 0) the temperature has no effect.
"""

from __future__ import annotations

import torch


def sample_tokens(head: torch.nn.Module, cond: torch.Tensor, scheduler, num_steps: int,
                  uncond: torch.Tensor | None = None,
                  cfg_scale: float | torch.Tensor = 1.0, temperature: float = 1.0,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw one token per row of ``cond`` -> x0 (M, D), D = ``head.token_dim``.

    cond, uncond: (M, C) conditioned / unconditioned z; no guidance when ``uncond`` is None or
    ``cfg_scale`` is the float 1.0 (then the doubled batch would be wasted work).
    cfg_scale: a float or an (M,) tensor (per-row scale, e.g. MAR's ramp over iterations).
    scheduler: a DDIMScheduler / DDPMScheduler; ``set_timesteps(num_steps)`` is called here.
    generator: on cond's device; draws x_T and every step's noise.
    """
    if not hasattr(scheduler, "step") or not hasattr(scheduler, "set_timesteps"):
        raise TypeError(f"sample_tokens: scheduler must be a DDIMScheduler/DDPMScheduler, got "
                        f"{type(scheduler).__name__} (argument order: head, cond, scheduler, "
                        f"num_steps, uncond=..., cfg_scale=...)")
    if cond.ndim != 2:
        raise ValueError(f"sample_tokens: cond must be (M, C), got {tuple(cond.shape)}")
    m, device = cond.shape[0], cond.device
    # the sampling state stays in float32 (float64 for float64 conditions, as in the tests)
    dtype = torch.float64 if cond.dtype == torch.float64 else torch.float32
    guided = uncond is not None and not (isinstance(cfg_scale, (int, float)) and cfg_scale == 1)
    if guided:
        if uncond.shape != cond.shape:
            raise ValueError(f"sample_tokens: uncond shape {tuple(uncond.shape)} != cond shape "
                             f"{tuple(cond.shape)}")
        w = cfg_scale
        if isinstance(w, torch.Tensor):
            if w.shape != (m,):
                raise ValueError(f"sample_tokens: a tensor cfg_scale must be ({m},), "
                                 f"got {tuple(w.shape)}")
            w = w.to(device, dtype)[:, None]                                         # (M, 1)
        cond = torch.cat([cond, uncond])                                               # (2M, C)
    scheduler.set_timesteps(num_steps, device=device)
    x = torch.randn((m, head.token_dim), generator=generator, device=device, dtype=dtype)
    # python ints: the head then embeds t once per step, and no step syncs with the device
    for t in scheduler.timesteps.tolist():
        if guided:
            out = head(torch.cat([x, x]), t, cond).to(dtype)                           # (2M, D)
            out_c, out_u = out.chunk(2)                                                # (M, D) x 2
            out = out_u + w * (out_c - out_u)                                          # (M, D)
        else:
            out = head(x, t, cond).to(dtype)                                           # (M, D)
        x = scheduler.step(out, t, x, generator=generator, temperature=temperature)    # (M, D)
    return x
