"""Masking for masked autoregression: mask ratios, random orders, the reveal schedule, the
guidance ramp.

Training (MAR's recipe): each sample draws a mask ratio r, a random permutation `order` of its N
positions, and masks the first ``ceil(N r)`` positions of that order (at least one).
Sampling: K iterations; after step k, ``m_k = floor(N cos(pi/2 (k+1)/K))`` tokens stay masked
(clamped to [1, remaining - 1]; the last step reveals the rest). Tokens are revealed from the end
of the order backwards, so "the first m positions of the order are masked" holds in both.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from mmar.model.config import MaskConfig


def sample_mask_ratio(
    batch_size: int,
    cfg: MaskConfig,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Per-sample mask ratios r in [ratio_min, ratio_max], shape (B,) float32.

    truncnorm: r ~ N(mode, std^2) truncated to [r_min, r_max], drawn by inverse CDF
    r = mode + std * Phi^-1(u), u ~ U(Phi(a), Phi(b)), a,b = (r_min|r_max - mode) / std
    (exact, one draw per sample; rejection sampling would need a data-dependent loop).
    uniform: r ~ U(r_min, r_max).
    """
    u = torch.rand(batch_size, generator=generator, device=device, dtype=torch.float64)
    return mask_ratio(u, cfg)


def mask_ratio(u: torch.Tensor, cfg: MaskConfig) -> torch.Tensor:
    """The mask ratios of uniform draws u (B,) float64 in [0, 1) (``sample_mask_ratio``'s
    transform, for draws made elsewhere, e.g. one per sample generator) -> (B,) float32."""
    lo, hi = cfg.ratio_min, cfg.ratio_max
    if cfg.distribution == "uniform":
        r = lo + (hi - lo) * u
    else:
        a = torch.tensor((lo - cfg.mode) / cfg.std, dtype=torch.float64, device=u.device)
        b = torch.tensor((hi - cfg.mode) / cfg.std, dtype=torch.float64, device=u.device)
        cdf_a, cdf_b = torch.special.ndtr(a), torch.special.ndtr(b)
        r = cfg.mode + cfg.std * torch.special.ndtri(cdf_a + (cdf_b - cdf_a) * u)
    return r.clamp(lo, hi).float()  # clamp: ndtri rounding at the interval ends


def num_masked_from_ratio(ratio: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """Masked count per sample: ceil(N r), at least 1 and at most N. (B,) float -> (B,) long."""
    return torch.ceil(ratio.double() * num_tokens).long().clamp(1, num_tokens)


def random_orders(
    batch_size: int,
    num_tokens: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """One uniformly random permutation of range(N) per sample, (B, N) long (argsort of noise)."""
    noise = torch.rand(batch_size, num_tokens, generator=generator, device=device)
    return noise.argsort(dim=1)


def mask_from_orders(orders: torch.Tensor, num_masked: torch.Tensor | int) -> torch.Tensor:
    """Bool mask (B, N): position orders[b, i] is masked iff i < num_masked[b].

    orders: (B, N) permutations; num_masked: int or (B,) long.
    """
    rank = torch.empty_like(orders)
    rank.scatter_(1, orders, torch.arange(orders.shape[1], device=orders.device).expand_as(orders))
    num_masked = torch.as_tensor(num_masked, device=orders.device).reshape(-1, 1)
    return rank < num_masked  # (B, N)


def _masked_after_revealing_steps(num_tokens: int, num_iter: int) -> Iterator[int]:
    """m_k of the steps of ``reveal_schedule`` that reveal at least one token, ending with 0.

    Only the steps after one token is left can reveal nothing (the clamp keeps m_k < m_{k-1}
    while m_{k-1} > 1), so the loop stops there: at most N iterations of work, however large K.
    """
    if num_tokens < 1 or num_iter < 1:
        raise ValueError(
            f"reveal_schedule needs num_tokens >= 1 and num_iter >= 1, got N={num_tokens}, "
            f"K={num_iter}; e.g. reveal_schedule(16, 8)"
        )
    remaining = num_tokens
    for k in range(num_iter - 1):
        if remaining == 1:
            break
        m = math.floor(num_tokens * math.cos(math.pi / 2 * (k + 1) / num_iter))
        remaining = max(1, min(remaining - 1, m))
        yield remaining
    yield 0


def reveal_schedule(num_tokens: int, num_iter: int) -> list[int]:
    """Tokens still masked after each of the K steps, [m_0, ..., m_{K-1}] with m_{K-1} = 0.

    m_k = floor(N cos(pi/2 (k+1)/K)) clamped to [1, m_{k-1} - 1] (so every step but a forced one
    reveals at least one token); the last step reveals the rest. When K > N the clamp cannot hold
    and steps that would reveal nothing keep m_k = m_{k-1} (``reveal_steps`` skips them). Since
    N cos(pi/2 j/K) >= N - j for K >= N, every K >= N reveals one token per step: the same N
    revealing steps as K = N.
    """
    steps = list(_masked_after_revealing_steps(num_tokens, num_iter))
    return steps[:-1] + [1] * (num_iter - len(steps)) + [0]


def reveal_steps(orders: torch.Tensor, num_iter: int) -> Iterator[tuple[int, torch.Tensor]]:
    """The positions each sampling iteration reveals: ``(m_k, orders[:, m_k : m_{k-1}])`` for
    every k of ``reveal_schedule`` that reveals at least one token (K > N skips the others; at
    most N blocks, so any K costs at most N iterations).

    orders: (B, N) permutations. Together the yielded (B, r_k) blocks partition every row of
    ``orders``: each token is revealed exactly once.
    """
    prev = orders.shape[1]
    for m in _masked_after_revealing_steps(prev, num_iter):
        yield m, orders[:, m:prev]
        prev = m


def guidance_ramp(guidance_scale: float, num_tokens: int, num_masked: int) -> float:
    """Guidance scale ramped with the revealed fraction (MAR/Muse): w_k = 1 + (w - 1)(N - m_k)/N,
    with m_k the tokens still masked after step k."""
    return 1.0 + (guidance_scale - 1.0) * (num_tokens - num_masked) / num_tokens


def annealed_steps(num_steps: int, num_steps_final: int | None, iterations: int) -> list[int]:
    """Diffusion steps per masked-AR iteration (DiSA's linear annealing): round(S0 + (S1 - S0)
    k / (I - 1)) for k = 0..I-1, from S0 = num_steps to S1 = num_steps_final; every iteration
    num_steps when num_steps_final is None (or I = 1).

    iterations: the iterations that reveal tokens (``len(list(reveal_steps(...)))``, at most N).
    """
    if num_steps_final is None or iterations == 1:
        return [num_steps] * iterations
    span = num_steps_final - num_steps
    return [round(num_steps + span * k / (iterations - 1)) for k in range(iterations)]
