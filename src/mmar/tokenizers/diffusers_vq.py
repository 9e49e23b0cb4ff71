"""Any diffusers `VQModel` directory as an ImageTokenizer: discrete tokens (Show-o-like ablation).

    h       = quant_conv(encoder(x))                       (B, C, h, w), C = vq_embed_dim
    code_ij = argmin_k ||h_ij - e_k||^2                    one code per latent cell
    latents = e_{code}  (the codebook rows themselves: z_q, exactly)
    images  = clamp(decoder(post_quant_conv(latents)), -1, 1)

The latents are codebook vectors, so scale is 1 and shift 0 (a scale would take them off the
codebook), and one token must be one code: the model's patch_size must be 1
(``ImageTokenizerConfig.validate``). Geometry and codebook size come from config.json alone:
stride 2^(len(block_out_channels) - 1), channels vq_embed_dim (or latent_channels),
K = num_vq_embeddings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

from mmar._versions import require
from mmar.tokenizers.base import ImageTokenizer
from mmar.tokenizers.diffusers_vae import _read_vae_config, _stride


def diffusers_vq_geometry(path: str | Path) -> tuple[int, int, int]:
    """(stride, channels, codebook size K) of the VQModel in ``path``, from its config.json."""
    config = _read_vae_config(path)
    channels = config.get("vq_embed_dim") or config.get("latent_channels", 3)
    return _stride(config), int(channels), int(config.get("num_vq_embeddings", 256))


def nearest_codes(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """code_i = argmin_k ||x_i - e_k||^2: x (M, D), codebook (K, D) -> (M,) long.

    Distances are computed from the differences, not as |x|^2 - 2 x.e + |e|^2: a token that is a
    codebook row then has distance exactly 0 to it, so the code of z_q is recovered exactly."""
    d = torch.cdist(x.float(), codebook.float(), compute_mode="donot_use_mm_for_euclid_dist")
    return d.argmin(dim=1)


class DiffusersVQTokenizer(ImageTokenizer):
    """Wraps ``diffusers.VQModel.from_pretrained(path, local_files_only=True)``.

    ``posterior`` is accepted for the common interface and has no effect (quantisation is
    deterministic; a generator is ignored)."""

    def __init__(
        self,
        path: str | Path,
        image_size: int = 32,
        posterior: Literal["sample", "mode"] = "mode",
    ):
        require("diffusers")
        from diffusers.models.autoencoders.vq_model import VQModel  # heavy import, on use only

        _read_vae_config(path)  # a clear error before diffusers' own
        vq = VQModel.from_pretrained(str(path), local_files_only=True)
        super().__init__(int(vq.config.in_channels), image_size, 1.0, 0.0, posterior)
        self.vq = vq
        self._stride, self._channels, self._codebook_size = diffusers_vq_geometry(path)

    @property
    def channels(self) -> int:
        return self._channels

    @property
    def stride(self) -> int:
        return self._stride

    @property
    def codebook_size(self) -> int:
        return self._codebook_size

    @property
    def codebook(self) -> torch.Tensor:
        """The codebook e (K, D): every latent vector this tokenizer gives is one of its rows."""
        return self.vq.quantize.embedding.weight

    def codes(self, latents: torch.Tensor) -> torch.Tensor:
        """latents (B, D, h, w) -> their codes (B, h, w) long (nearest codebook rows)."""
        self.check_latents(latents)
        B, D, h, w = latents.shape
        flat = latents.permute(0, 2, 3, 1).reshape(-1, D)  # (B h w, D)
        return nearest_codes(flat, self.codebook).view(B, h, w)

    def embed_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, h, w) long -> latents (B, D, h, w): the codebook rows."""
        return self.codebook[codes].permute(0, 3, 1, 2).contiguous()

    def _encode_raw(self, images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        h = self.vq.encode(images).latents  # (B, D, h, w), not quantised
        return self.embed_codes(self.codes(h))

    def _decode_raw(self, latents: torch.Tensor) -> torch.Tensor:
        # the latents are z_q already: decode without quantising them a second time
        return self.vq.decode(latents, force_not_quantize=True).sample
