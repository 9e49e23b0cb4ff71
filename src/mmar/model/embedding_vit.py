"""EmbeddingViT: continuous image tokens -> LLM-width embeddings (docs/method.md §2).

    tokens (B, N, D) --Linear--> (B, N, W) + pos (1, N, W) --depth x pre-norm block--> LayerNorm
    --projector Linear-GELU-Linear--> (B, N, out_dim = LLM width)

The blocks are bidirectional (every image token sees all N). The learned [MASK] vector is *not*
here: it lives in MMAR in token space (dim D) and replaces masked tokens before this module, so
the ViT sees the same kind of input (a D-vector per position) whether a token is known or not,
and the mask embedding gets the ViT's position embedding and mixing like any other token.
"""

from __future__ import annotations

import torch
from torch import nn

from mmar.model.config import ViTConfig


def sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    """MAE's 1-D sin-cos embedding: pos (M,) -> (M, dim), [sin(pos w_k), cos(pos w_k)],
    w_k = 1e4^(-2k/dim)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))  # (dim/2,)
    angles = pos.double()[:, None] * omega[None]  # (M, dim/2)
    return torch.cat([angles.sin(), angles.cos()], dim=1)  # (M, dim)


def sincos_2d(dim: int, grid_hw: tuple[int, int]) -> torch.Tensor:
    """2-D sin-cos position embedding (MAE): half the channels encode the row, half the column.

    -> (h*w, dim) float32 in row-major token order (the order of ``patchify``).
    """
    h, w = grid_hw
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    emb = torch.cat(
        [sincos_1d(dim // 2, rows.reshape(-1)), sincos_1d(dim // 2, cols.reshape(-1))], 1
    )
    return emb.float()  # (N, dim)


class EmbeddingViT(nn.Module):
    """Bidirectional transformer over the N image tokens, then an MLP projector to ``out_dim``.

    The blocks are ``nn.TransformerEncoderLayer`` (pre-norm, GELU, no dropout), whose attention
    is torch's scaled_dot_product_attention; no attention mask: all N positions see each other.
    """

    def __init__(
        self,
        token_dim: int,
        cfg: ViTConfig,
        num_tokens: int,
        grid_hw: tuple[int, int],
        out_dim: int,
    ):
        super().__init__()
        if grid_hw[0] * grid_hw[1] != num_tokens:
            raise ValueError(
                f"EmbeddingViT: grid_hw {grid_hw} does not hold num_tokens={num_tokens}"
            )
        self.num_tokens = num_tokens
        self.input_proj = nn.Linear(token_dim, cfg.width)
        if cfg.pos_emb == "learned":
            self.pos_emb = nn.Parameter(torch.randn(1, num_tokens, cfg.width) * 0.02)
        else:
            self.register_buffer("pos_emb", sincos_2d(cfg.width, grid_hw)[None], persistent=False)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                cfg.width,
                cfg.num_heads,
                int(cfg.width * cfg.mlp_ratio),
                dropout=0.0,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(cfg.width)
        self.projector = nn.Sequential(
            nn.Linear(cfg.width, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim)
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, N, D), masked positions already holding the mask vector -> (B, N, out_dim)."""
        if tokens.ndim != 3 or tokens.shape[1] != self.num_tokens:
            raise ValueError(
                f"EmbeddingViT: expected tokens (B, {self.num_tokens}, D), "
                f"got {tuple(tokens.shape)}"
            )
        x = self.input_proj(tokens) + self.pos_emb  # (B, N, W)
        for block in self.blocks:
            x = block(x)  # (B, N, W)
        return self.projector(self.norm(x))  # (B, N, out_dim)
