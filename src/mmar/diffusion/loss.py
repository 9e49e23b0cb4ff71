"""The diffusion loss of the head: the v-prediction loss (any parameterisation) (docs/method.md §4).

    t ~ U{0, .., T-1},  eps ~ N(0, I),  x_t = sqrt(ab_t) x0 + sqrt(1-ab_t) eps
    L_i = || head(x_t, t, z_i) - target_i ||^2 / D,   target = v | eps | x0

MMAR trains with v (the target whose bf16 rounding error stays bounded as ab -> 0, see
:mod:`mmar.diffusion.precision`); eps and x0 are kept for the paper's ablation.
"""

from __future__ import annotations

import torch

from mmar.diffusion.parameterization import compute_dtype, q_sample, training_target
from mmar.diffusion.schedule import NoiseSchedule


def diffusion_loss(
    head: torch.nn.Module,
    x0: torch.Tensor,
    cond: torch.Tensor,
    schedule: NoiseSchedule,
    parameterization: str = "v",
    generator: torch.Generator | None = None,
    t: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """The v-prediction loss (default ``parameterization="v"``), per row.

    head: maps (x_t (M, D), t (M,), cond (M, C)) -> (M, D).
    x0: (M, D) clean tokens; cond: (M, C) the LLM's z_i (rows already repeated
    ``diffusion_batch_mul`` times by the caller).
    t (M,) long and noise (M, D): the timesteps and eps to use (``MMARModel.forward`` draws them
    per sample); else both are drawn from ``generator``, which must live on x0's device (None:
    torch's default generator).
    Returns (M,) per-row MSE; the caller averages over masked tokens.
    """
    # fmt: off
    if x0.ndim != 2 or cond.ndim != 2 or x0.shape[0] != cond.shape[0]:
        raise ValueError(f"diffusion_loss: expected x0 (M, D) and cond (M, C) with the same M, "
                         f"got x0 {tuple(x0.shape)} and cond {tuple(cond.shape)}")
    if (t is None) != (noise is None):
        raise ValueError("diffusion_loss: give both t and noise, or neither (drawn from generator)")
    m, device, dtype = x0.shape[0], x0.device, compute_dtype(x0)
    if t is None or noise is None:
        t = torch.randint(0, schedule.num_timesteps, (m,), generator=generator, device=device)
        noise = torch.randn(x0.shape, generator=generator, device=device, dtype=dtype)
    elif t.shape != (m,) or noise.shape != x0.shape:
        raise ValueError(f"diffusion_loss: expected t ({m},) and noise {tuple(x0.shape)}, got "
                         f"t {tuple(t.shape)} and noise {tuple(noise.shape)}")
    eps = noise.to(dtype)                                                                  # (M, D)
    ab = schedule.ab(t)                                                                    # (M, 1)
    x_t = q_sample(x0, eps, ab)                                                            # (M, D)
    target = training_target(parameterization, x0, eps, ab)                                # (M, D)
    out = head(x_t, t, cond)                                                               # (M, D)
    # the head may run under bf16 autocast; the error is taken in float32
    return ((out.to(target.dtype) - target) ** 2).mean(dim=-1)                             # (M,)
    # fmt: on
