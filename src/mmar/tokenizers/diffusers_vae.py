"""Any diffusers `AutoencoderKL` directory as an ImageTokenizer (SD-VAE, FLUX-VAE, ...).

    latents = (z - shift_factor) * scale,  z = posterior mode or sample of vae.encode(x).latent_dist
    images  = clamp(vae.decode(latents / scale + shift_factor).sample, -1, 1)

scale defaults to the VAE's `config.scaling_factor`, shift to `config.shift_factor` (0 if unset),
the stride to 2^(len(block_out_channels) - 1) (diffusers' own `vae_scale_factor`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import torch

from mmar._versions import require
from mmar.config import ConfigError
from mmar.tokenizers.base import ImageTokenizer


def _read_vae_config(path: str | Path) -> dict:
    file = Path(path) / "config.json"
    if not file.is_file():
        raise ConfigError(
            f"ImageTokenizerConfig.path: {file} does not exist; give a local diffusers "
            "AutoencoderKL directory (saved with save_pretrained), e.g. path: /models/sd-vae"
        )
    with open(file) as f:
        return json.load(f)


def _stride(config: dict) -> int:
    return 2 ** (len(config.get("block_out_channels", (64,))) - 1)


def diffusers_vae_geometry(path: str | Path) -> tuple[int, int]:
    """(stride, latent channels) of the AutoencoderKL in `path`, from its config.json alone."""
    config = _read_vae_config(path)
    return _stride(config), int(config.get("latent_channels", 4))


class DiffusersVAETokenizer(ImageTokenizer):
    """Wraps `diffusers.AutoencoderKL.from_pretrained(path)` (local directory, no hub)."""

    def __init__(
        self,
        path: str | Path,
        image_size: int = 256,
        scale: float | None = None,
        posterior: Literal["sample", "mode"] = "mode",
    ):
        require("diffusers")
        from diffusers import AutoencoderKL  # heavy import, only when this tokenizer is used

        _read_vae_config(path)  # a clear error before diffusers' own
        vae = AutoencoderKL.from_pretrained(str(path), local_files_only=True)
        cfg = vae.config
        shift = getattr(cfg, "shift_factor", None) or 0.0
        super().__init__(
            cfg.in_channels,
            image_size,
            cfg.scaling_factor if scale is None else scale,
            shift,
            posterior,
        )
        self.vae = vae
        self._channels = int(cfg.latent_channels)
        self._stride = _stride(dict(cfg))

    @property
    def channels(self) -> int:
        return self._channels

    @property
    def stride(self) -> int:
        return self._stride

    def _encode_raw(self, images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        dist = self.vae.encode(images).latent_dist
        return dist.mode() if generator is None else dist.sample(generator=generator)

    def _decode_raw(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents).sample
