"""Group p x p latent cells into one token, and back (row-major token order).

    patchify:   (B, C, h, w) -> (B, N, D),  N = (h/p)(w/p),  D = C * p * p
    token n = (i, j) with n = i * (w/p) + j holds latents[:, :, i*p:(i+1)*p, j*p:(j+1)*p],
    flattened channel-major: D index = c * p * p + di * p + dj  (MAR's layout).

Written by hand (two reshapes) because it must match MAR's order exactly and be its own inverse.
"""

from __future__ import annotations

import torch


def _check_divisible(h: int, w: int, p: int) -> None:
    if p < 1 or h % p or w % p:
        raise ValueError(
            f"patchify: latent size (h, w) = ({h}, {w}) must be divisible by the patch size "
            f"p = {p}; "
            "choose image_size divisible by stride * patch_size, e.g. 256 px with KL-16 (h = 16) "
            "and patch_size 4"
        )


def patchify(latents: torch.Tensor, p: int) -> torch.Tensor:
    """latents (B, C, h, w) -> tokens (B, N = (h/p)(w/p), D = C*p*p), row-major."""
    if latents.ndim != 4:
        raise ValueError(f"patchify: expected latents (B, C, h, w), got {tuple(latents.shape)}")
    b, c, h, w = latents.shape
    _check_divisible(h, w, p)
    x = latents.reshape(b, c, h // p, p, w // p, p)  # (B, C, h/p, p, w/p, p)
    x = x.permute(0, 2, 4, 1, 3, 5)  # (B, h/p, w/p, C, p, p)
    return x.reshape(b, (h // p) * (w // p), c * p * p)  # (B, N, D)


def unpatchify(tokens: torch.Tensor, p: int, h: int, w: int) -> torch.Tensor:
    """tokens (B, N, D) -> latents (B, C = D/(p*p), h, w); the exact inverse of `patchify`."""
    _check_divisible(h, w, p)
    if tokens.ndim != 3 or tokens.shape[1] != (h // p) * (w // p) or tokens.shape[2] % (p * p):
        raise ValueError(
            f"unpatchify: expected tokens (B, N = {(h // p) * (w // p)}, D = C*{p * p}) for "
            f"latents of size ({h}, {w}) and p = {p}, got {tuple(tokens.shape)}"
        )
    b, _, d = tokens.shape
    c = d // (p * p)
    x = tokens.reshape(b, h // p, w // p, c, p, p)  # (B, h/p, w/p, C, p, p)
    x = x.permute(0, 3, 1, 4, 2, 5)  # (B, C, h/p, p, w/p, p)
    return x.reshape(b, c, h, w)  # (B, C, h, w)
