"""The per-token diffusion head: MAR's SimpleMLPAdaLN shape (docs/method.md §4).

    h  = Linear(D, W)(x_t)                                    input projection
    y  = MLP(sinusoid_256(t)) + Linear(C, W)(z)               timestep + condition
    h <- h + gate * MLP(LN(h) (1 + scale) + shift)            depth times
         (shift, scale, gate) = Linear(SiLU(y))
    out = Linear(W, D)(LN(h) (1 + scale) + shift)             final layer, LN without affine

AdaLN-zero (DiT): every modulation and the output projection start at zero, so each block is
the identity and the head outputs exactly 0 at initialisation.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def timestep_embedding(
    t: torch.Tensor, dim: int = 256, max_period: float = 10000.0
) -> torch.Tensor:
    """Sinusoidal embedding [cos(t w_k), sin(t w_k)], w_k = max_period^(-k/(dim/2)).

    t: (M,) -> (M, dim) float32. Written here rather than taken from diffusers, which the core
    package does not require.
    """
    half = dim // 2
    k = torch.arange(half, dtype=torch.float32, device=t.device)
    args = t.float()[:, None] * torch.exp(-math.log(max_period) * k / half)[None]  # (M, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (M, 2 half)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb  # (M, dim)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """AdaLN: x (1 + scale) + shift."""
    return x * (1 + scale) + shift


class TimestepEmbedder(nn.Module):
    """t -> sinusoid(256) -> Linear -> SiLU -> Linear -> (M, W)."""

    def __init__(self, width: int, frequency_dim: int = 256):
        super().__init__()
        self.frequency_dim = frequency_dim
        self.mlp = nn.Sequential(
            nn.Linear(frequency_dim, width), nn.SiLU(), nn.Linear(width, width)
        )

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        freq = timestep_embedding(t, self.frequency_dim)  # (M, 256)
        return self.mlp(freq.to(self.dtype))  # (M, W)


class AdaLNBlock(nn.Module):
    """Residual MLP block whose LayerNorm is modulated by y; gated (AdaLN-zero)."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))

    def forward(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.modulation(y).chunk(3, dim=-1)  # 3 x (M, W)
        return h + gate * self.mlp(modulate(self.norm(h), shift, scale))  # (M, W)


class FinalLayer(nn.Module):
    """LayerNorm (no affine) modulated by y, then Linear(W, D)."""

    def __init__(self, width: int, token_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.linear = nn.Linear(width, token_dim)

    def forward(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shift, scale = self.modulation(y).chunk(2, dim=-1)  # 2 x (M, W)
        return self.linear(modulate(self.norm(h), shift, scale))  # (M, D)


class DiffusionHead(nn.Module):
    """MLP denoiser p(x_i | z_i): (x_t (M, D), t, cond (M, C)) -> (M, D) (v, eps or x0)."""

    def __init__(self, token_dim: int, cond_dim: int, width: int = 256, depth: int = 3):
        super().__init__()
        for name, v in (
            ("token_dim", token_dim),
            ("cond_dim", cond_dim),
            ("width", width),
            ("depth", depth),
        ):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"DiffusionHead: {name} must be a positive int, got {v!r}")
        self.token_dim, self.cond_dim, self.width, self.depth = token_dim, cond_dim, width, depth
        self.input_proj = nn.Linear(token_dim, width)
        self.time_embed = TimestepEmbedder(width)
        self.cond_proj = nn.Linear(cond_dim, width)
        self.blocks = nn.ModuleList(AdaLNBlock(width) for _ in range(depth))
        self.final_layer = FinalLayer(width, token_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier linears, N(0, 0.02) timestep MLP, zeros for every modulation and the output."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for layer in self.time_embed.mlp:
            if isinstance(layer, nn.Linear):
                nn.init.normal_(layer.weight, std=0.02)
        zeroed: list[nn.Module] = [
            block.modulation for block in self.blocks if isinstance(block, AdaLNBlock)
        ]
        zeroed += [self.final_layer.modulation, self.final_layer.linear]
        for module in zeroed:
            for layer in module.modules():  # the Linear of each modulation / the output
                if isinstance(layer, nn.Linear):
                    nn.init.zeros_(layer.weight)
                    nn.init.zeros_(layer.bias)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor | int, cond: torch.Tensor) -> torch.Tensor:
        """x_t (M, D), t (M,) long or a python int / 0-d tensor shared by all rows, cond (M, C).

        A shared t is embedded once, (1, W), and broadcast over the M rows: during sampling all
        rows are at the same step, so this saves the timestep MLP on M - 1 rows
        (docs/performance.md).
        """
        # fmt: off
        self._check_inputs(x_t, t, cond)
        if isinstance(t, int):
            t = torch.full((1,), t, device=x_t.device)                                # (1,)
        elif t.ndim == 0:
            t = t.reshape(1)                                                          # (1,)
        # a bf16 LLM may hand its hidden states to a float32 head: run in the head's dtype
        dtype = self.input_proj.weight.dtype
        y = self.time_embed(t) + self.cond_proj(cond.to(dtype))                       # (M, W)
        h = self.input_proj(x_t.to(dtype))                                            # (M, W)
        for block in self.blocks:
            h = block(h, y)                                                           # (M, W)
        return self.final_layer(h, y)                                                 # (M, D)
        # fmt: on

    def _check_inputs(self, x_t: torch.Tensor, t: torch.Tensor | int, cond: torch.Tensor) -> None:
        if x_t.ndim != 2 or x_t.shape[1] != self.token_dim:
            raise ValueError(
                f"DiffusionHead: x_t must be (M, {self.token_dim}), got {tuple(x_t.shape)}"
            )
        if cond.ndim != 2 or cond.shape != (x_t.shape[0], self.cond_dim):
            raise ValueError(
                f"DiffusionHead: cond must be ({x_t.shape[0]}, {self.cond_dim}), "
                f"got {tuple(cond.shape)}"
            )
        if isinstance(t, torch.Tensor) and t.ndim > 0 and t.shape != (x_t.shape[0],):
            raise ValueError(
                f"DiffusionHead: t must be an int, a 0-d tensor or ({x_t.shape[0]},),"
                f" got shape {tuple(t.shape)}"
            )
