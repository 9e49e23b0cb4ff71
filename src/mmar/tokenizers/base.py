"""The image tokenizer interface: images <-> continuous latents (never quantised, except by the
diffusers_vq tokenizer, whose latents are the rows of its codebook).

    encode: images (B, C_img, H, W) in [-1, 1] -> latents (B, C, h, w) = (z - shift) * scale
    decode: latents (B, C, h, w) -> images (B, C_img, H, W) = clamp(D(latents / scale + shift))

with h = H / stride. `scale` makes the latents roughly unit variance (the diffusion head's
schedule assumes x0 ~ unit scale); `shift` is the per-tokenizer mean some VAEs define (0 here
except for diffusers VAEs that set `shift_factor`).
"""

from __future__ import annotations

import abc
import hashlib
from typing import Literal

import torch
from torch import nn


class ImageTokenizer(nn.Module, abc.ABC):
    """Base class: subclasses implement `channels`, `stride`, `_encode_raw` and `_decode_raw`."""

    def __init__(
        self,
        image_channels: int,
        image_size: int,
        scale: float,
        shift: float = 0.0,
        posterior: Literal["sample", "mode"] = "mode",
    ):
        super().__init__()
        self._image_channels = image_channels
        self._image_size = image_size
        self._scale = float(scale)
        self._shift = float(shift)
        self.posterior = posterior

    # --- geometry -------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def channels(self) -> int:
        """C: channels of a latent."""

    @property
    @abc.abstractmethod
    def stride(self) -> int:
        """H / h: pixels per latent cell along each side."""

    @property
    def scale(self) -> float:
        return self._scale

    @property
    def shift(self) -> float:
        return self._shift

    @property
    def image_channels(self) -> int:
        return self._image_channels

    @property
    def image_size(self) -> int:
        return self._image_size

    @property
    def latent_size(self) -> int:
        return self._image_size // self.stride

    # --- subclass hooks (unscaled latents) -------------------------------------------------
    @abc.abstractmethod
    def _encode_raw(self, images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """(B, C_img, H, W) -> raw latents (B, C, h, w): the posterior mode when ``generator`` is
        None, else a sample drawn from it."""

    @abc.abstractmethod
    def _decode_raw(self, latents: torch.Tensor) -> torch.Tensor:
        """raw latents (B, C, h, w) -> images (B, C_img, H, W), not clamped."""

    # --- public API -----------------------------------------------------------------------
    def check_images(self, images: torch.Tensor) -> None:
        """Raise ValueError unless images is (B, image_channels, image_size, image_size)."""
        expected = (self.image_channels, self.image_size, self.image_size)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"{type(self).__name__}: expected images of shape (B, C_img, H, W) = "
                f"(B, {expected[0]}, {expected[1]}, {expected[2]}), got {tuple(images.shape)}. "
                "Resizing and channel conversion are the data pipeline's job: set the dataset's "
                "image_size/channels to match the tokenizer config."
            )

    def check_latents(self, latents: torch.Tensor) -> None:
        """Raise ValueError unless latents is (B, channels, h, w) with h, w > 0."""
        if latents.ndim != 4 or latents.shape[1] != self.channels:
            raise ValueError(
                f"{type(self).__name__}: expected latents of shape (B, C, h, w) with "
                f"C = {self.channels}, got {tuple(latents.shape)}"
            )

    def encode(
        self,
        images: torch.Tensor,
        generator: torch.Generator | None = None,
        posterior: Literal["sample", "mode"] | None = None,
    ) -> torch.Tensor:
        """images (B, C_img, H, W) in [-1, 1] -> latents (B, C, H/stride, W/stride), scaled.

        posterior: "mode" or "sample" for this call (default: the tokenizer's own). With
        "sample" the draw comes from `generator` (required: no global RNG).
        """
        self.check_images(images)
        posterior = posterior or self.posterior
        if posterior == "sample" and generator is None:
            raise ValueError(
                f"{type(self).__name__}: posterior 'sample' needs a torch.Generator, e.g. "
                "encode(images, generator=torch.Generator().manual_seed(0)); "
                "or use posterior 'mode'"
            )
        z = self._encode_raw(images, generator if posterior == "sample" else None)  # (B, C, h, w)
        return (z - self.shift) * self.scale

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """latents (B, C, h, w) as encode returns them -> images (B, C_img, H, W) in [-1, 1]."""
        self.check_latents(latents)
        images = self._decode_raw(latents / self.scale + self.shift)  # (B, C_img, H, W)
        return images.clamp(-1.0, 1.0)

    def weights_sha256(self) -> str | None:
        """A fingerprint of the weights (None without any): sha256 over every tensor of the state
        dict in key order (name, dtype, shape, bytes), whatever device it is on. A latent cache
        records it, so that the trainer can tell whether it decodes with the VAE that encoded."""
        state = self.state_dict()
        if not state:
            return None
        h = hashlib.sha256()
        for key in sorted(state):
            t = state[key].detach().cpu().contiguous()
            h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy())  # the buffer, not a copy
        return h.hexdigest()

    def extra_repr(self) -> str:
        return (
            f"image=({self.image_channels}, {self.image_size}, {self.image_size}), "
            f"channels={self.channels}, stride={self.stride}, scale={self.scale:g}, "
            f"shift={self.shift:g}, posterior={self.posterior}"
        )
