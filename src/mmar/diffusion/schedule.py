"""The cosine noise schedule (IDDPM, Nichol & Dhariwal 2021) as float64 tables (docs/method.md §4).

    f(t)      = cos^2( ((t/T) + s) / (1 + s) * pi/2 ),   s = 0.008
    beta_t    = min(1 - f(t+1)/f(t), 0.999),             t = 0 .. T-1
    alpha_bar = cumprod(1 - beta)       (= f(t+1)/f(0) wherever the clip is inactive)

Index t holds alpha_bar after t + 1 noising steps (IDDPM's convention), so t = 0 is already
slightly noisy and t = T-1 is almost pure noise.

The tables are float64 because 1 - alpha_bar near t = 0 is tiny (4e-5): formed from a float32
alpha_bar it keeps only ~3 significant digits, and so would sqrt(1 - alpha_bar). They stay
torch tensors on the data's device so that a sampling step gathers its coefficients without a
host round trip (docs/performance.md: MAR indexes numpy tables at every step).
"""

from __future__ import annotations

import math

import torch

COSINE_S = 0.008  # IDDPM's offset: keeps beta_0 from being vanishingly small
MAX_BETA = 0.999  # IDDPM's clip: keeps the last beta below 1 (alpha_bar_T > 0)


def cosine_alpha_bar(num_timesteps: int) -> torch.Tensor:
    """alpha_bar_t for t = 0 .. T-1 of the IDDPM cosine schedule -> float64 (T,).

    Strictly decreasing in (0, 1): alpha_bar_0 ~ 1 - 4e-5 (almost clean), alpha_bar_{T-1} ~ 2e-9
    for T = 1000 (almost pure noise; only the 0.999 clip keeps it above 0).
    """
    if not isinstance(num_timesteps, int) or num_timesteps < 2:
        raise ValueError(
            f"cosine_alpha_bar: num_timesteps must be an int >= 2, "
            f"got {num_timesteps!r} (e.g. 1000)"
        )
    steps = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps  # (T+1,)
    f = torch.cos((steps + COSINE_S) / (1 + COSINE_S) * math.pi / 2) ** 2  # (T+1,)
    betas = (1 - f[1:] / f[:-1]).clamp(max=MAX_BETA)  # (T,)
    return torch.cumprod(1 - betas, dim=0)  # (T,)


class NoiseSchedule:
    """The training process's alpha_bar table and its gathers at integer timesteps.

    ``alphas_cumprod``: float64 (T,) on ``device``. ``ab(t)`` returns alpha_bar_t as (M, 1) in
    float64 so that the conversions in :mod:`mmar.diffusion.parameterization` can take square
    roots at full precision before casting to the data's float32 (docs/method.md §3 "precision").
    """

    def __init__(self, num_timesteps: int = 1000, device: torch.device | str | None = None):
        self.num_timesteps = num_timesteps
        self.alphas_cumprod = cosine_alpha_bar(num_timesteps).to(device)  # (T,)
        # sqrt(1 - ab) from the float64 table: exact even where ab ~ 1 (t ~ 0)
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()  # (T,)
        self.sqrt_one_minus_alphas_cumprod = (1 - self.alphas_cumprod).sqrt()  # (T,)

    @property
    def device(self) -> torch.device:
        return self.alphas_cumprod.device

    def to(self, device: torch.device | str) -> NoiseSchedule:
        """A copy whose tables live on ``device``."""
        return NoiseSchedule(self.num_timesteps, device)

    def _gather(
        self, table: torch.Tensor, t: torch.Tensor | int, dtype: torch.dtype
    ) -> torch.Tensor:
        if isinstance(t, int):
            if not 0 <= t < self.num_timesteps:
                raise ValueError(f"NoiseSchedule: t={t} outside [0, {self.num_timesteps})")
            return table[t].reshape(1, 1).to(dtype)  # (1, 1)
        if t.dtype not in (torch.int64, torch.int32) or t.ndim > 1:
            raise ValueError(
                f"NoiseSchedule: t must be an int or a (M,) integer tensor, "
                f"got dtype {t.dtype} shape {tuple(t.shape)}"
            )
        return table[t.to(table.device).reshape(-1)][:, None].to(t.device, dtype)  # (M, 1)

    def ab(self, t: torch.Tensor | int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """alpha_bar_t gathered at integer t (M,) -> (M, 1), float64 by default."""
        return self._gather(self.alphas_cumprod, t, dtype)

    def sqrt_ab(self, t: torch.Tensor | int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """sqrt(alpha_bar_t) at integer t (M,) -> (M, 1), float32 for float32/bf16 data."""
        return self._gather(self.sqrt_alphas_cumprod, t, dtype)

    def sqrt_one_minus_ab(
        self, t: torch.Tensor | int, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """sqrt(1 - alpha_bar_t) at integer t (M,) -> (M, 1), float32 for float32/bf16 data."""
        return self._gather(self.sqrt_one_minus_alphas_cumprod, t, dtype)

    def __repr__(self) -> str:
        return f"NoiseSchedule(num_timesteps={self.num_timesteps}, device={self.device})"
