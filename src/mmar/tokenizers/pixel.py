"""PixelTokenizer: the identity on [-1, 1] pixels (lossless; latents are the pixels).

For tiny runs where no VAE is available: every pixel is a latent cell (stride 1), C = C_img.
"""

from __future__ import annotations

import torch

from mmar.tokenizers.base import ImageTokenizer
from mmar.tokenizers.config import PIXEL_STRIDE

PIXEL_SCALE = 1.0  # [-1, 1] pixels are already near unit scale


class PixelTokenizer(ImageTokenizer):
    """latents = scale * images; decode divides back and clamps to [-1, 1]."""

    def __init__(self, image_channels: int = 1, image_size: int = 32, scale: float | None = None):
        super().__init__(image_channels, image_size, PIXEL_SCALE if scale is None else scale)

    @property
    def channels(self) -> int:
        return self.image_channels

    @property
    def stride(self) -> int:
        return PIXEL_STRIDE

    def _encode_raw(self, images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return images

    def _decode_raw(self, latents: torch.Tensor) -> torch.Tensor:
        return latents
