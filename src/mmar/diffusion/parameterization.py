"""eps <-> v <-> x0: the training targets and their inverses (docs/method.md §4).

    forward     x_t    = sqrt(ab) x0 + sqrt(1-ab) eps
    v target    v      = sqrt(ab) eps - sqrt(1-ab) x0
    from v      x0_hat = sqrt(ab) x_t - sqrt(1-ab) v_hat
                eps_hat = sqrt(1-ab) x_t + sqrt(ab) v_hat
    from eps    x0_hat = (x_t - sqrt(1-ab) eps_hat) / sqrt(ab)      error ~ sqrt((1-ab)/ab) |d eps|
    from x0     eps_hat = (x_t - sqrt(ab) x0_hat) / sqrt(1-ab)

Every function takes data of shape (M, D) and ``ab`` broadcastable to it, usually the float64
(M, 1) of :meth:`NoiseSchedule.ab`. The square roots are taken in ``ab``'s precision, then the
arithmetic runs in float32 (float64 when any data input is float64, as in the tests): a bf16 head
output is upcast before it is converted, which is where v-prediction's precision advantage lives.
"""

from __future__ import annotations

import torch

PARAMETERIZATIONS = ("v", "eps", "x0")


def compute_dtype(*xs: torch.Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32 (bf16 / fp16 data is upcast)."""
    return torch.float64 if any(x.dtype == torch.float64 for x in xs) else torch.float32


def _coefficients(
    ab: torch.Tensor, like: torch.Tensor, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sqrt(ab), sqrt(1-ab)) computed in ab's precision, then cast to the working dtype on the
    data's device (a no-op when the schedule already lives there)."""
    return ab.sqrt().to(like.device, dtype), (1 - ab).sqrt().to(like.device, dtype)


def _check_kind(kind: str) -> None:
    if kind not in PARAMETERIZATIONS:
        raise ValueError(
            f"parameterization must be one of {list(PARAMETERIZATIONS)}, "
            f"got {kind!r} (set DiffusionConfig.parameterization, e.g. 'v')"
        )


def q_sample(x0: torch.Tensor, eps: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(ab) x0 + sqrt(1-ab) eps.  (M, D), (M, D), (M, 1) -> (M, D)"""
    dt = compute_dtype(x0, eps)
    a, s = _coefficients(ab, x0, dt)
    return a * x0.to(dt) + s * eps.to(dt)


def v_target(x0: torch.Tensor, eps: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """v = sqrt(ab) eps - sqrt(1-ab) x0.  (M, D), (M, D), (M, 1) -> (M, D)"""
    dt = compute_dtype(x0, eps)
    a, s = _coefficients(ab, x0, dt)
    return a * eps.to(dt) - s * x0.to(dt)


def x0_from_v(x_t: torch.Tensor, v: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """x0_hat = sqrt(ab) x_t - sqrt(1-ab) v_hat.  (M, D), (M, D), (M, 1) -> (M, D)"""
    dt = compute_dtype(x_t, v)
    a, s = _coefficients(ab, x_t, dt)
    return a * x_t.to(dt) - s * v.to(dt)


def eps_from_v(x_t: torch.Tensor, v: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """eps_hat = sqrt(1-ab) x_t + sqrt(ab) v_hat.  (M, D), (M, D), (M, 1) -> (M, D)"""
    dt = compute_dtype(x_t, v)
    a, s = _coefficients(ab, x_t, dt)
    return s * x_t.to(dt) + a * v.to(dt)


def x0_from_eps(x_t: torch.Tensor, eps: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """x0_hat = (x_t - sqrt(1-ab) eps_hat) / sqrt(ab); an eps error is amplified by
    sqrt((1-ab)/ab), which reaches ~2e4 at t = 999 of the cosine schedule."""
    dt = compute_dtype(x_t, eps)
    a, s = _coefficients(ab, x_t, dt)
    return (x_t.to(dt) - s * eps.to(dt)) / a


def eps_from_x0(x_t: torch.Tensor, x0: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """eps_hat = (x_t - sqrt(ab) x0_hat) / sqrt(1-ab).  (M, D), (M, D), (M, 1) -> (M, D)"""
    dt = compute_dtype(x_t, x0)
    a, s = _coefficients(ab, x_t, dt)
    return (x_t.to(dt) - a * x0.to(dt)) / s


def training_target(
    kind: str, x0: torch.Tensor, eps: torch.Tensor, ab: torch.Tensor
) -> torch.Tensor:
    """What the head regresses for parameterisation ``kind``: eps, v or x0.  -> (M, D)"""
    _check_kind(kind)
    dt = compute_dtype(x0, eps)
    if kind == "v":
        return v_target(x0, eps, ab)
    return eps.to(dt) if kind == "eps" else x0.to(dt)


def predict_x0_and_eps(
    kind: str, output: torch.Tensor, x_t: torch.Tensor, ab: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0_hat, eps_hat) from the head's ``output`` under parameterisation ``kind``.

    output, x_t: (M, D); ab: (M, 1) or 0-d -> two (M, D) tensors in the working dtype.
    """
    _check_kind(kind)
    if output.shape != x_t.shape:
        raise ValueError(
            f"predict_x0_and_eps: output shape {tuple(output.shape)} != "
            f"x_t shape {tuple(x_t.shape)}"
        )
    dt = compute_dtype(output, x_t)
    if kind == "v":
        return x0_from_v(x_t, output, ab), eps_from_v(x_t, output, ab)
    if kind == "eps":
        return x0_from_eps(x_t, output, ab), output.to(dt)
    return output.to(dt), eps_from_x0(x_t, output, ab)
