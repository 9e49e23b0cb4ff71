"""TokenizerTrainConfig: what `mmar train-tokenizer` trains, on which data, for how long.

    kind: kl                      # or vq (a VQModel: discrete codes, its settings under vq:)
    data: {name: shapes, image_size: 32, channels: 3}
    kl: {block_out_channels: [16, 32], latent_channels: 4, kl_weight: 1.0e-6}
    vq: {block_out_channels: [16, 32], latent_channels: 4, num_vq_embeddings: 256, beta: 0.25}
    loss: {l1: 1.0, l2: 1.0}
    lr: 2.0e-3
    batch_size: 8
    steps: 2000                   # and/or minutes: 5 (the run stops at whichever comes first)

Everything is checked before any work starts (unknown keys and wrong types by the Config base,
ranges and the agreement of the data with the autoencoder by ``validate``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mmar.config import Config, ConfigError, check, check_at_least_one, check_seed, read_yaml
from mmar.data.config import DataConfig
from mmar.training.config import apply_overrides


@dataclass
class AutoencoderGeometry(Config):
    """The geometry shared by the KL and the VQ autoencoder (fields as KLAutoencoderConfig's)."""

    block_out_channels: tuple[int, ...] = (16, 32)
    latent_channels: int = 4
    layers_per_block: int = 1
    norm_num_groups: int = 8
    attention: bool = False

    @property
    def stride(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)

    def diffusers_kwargs(self, image_size: int) -> dict[str, Any]:
        """The constructor arguments of this geometry that diffusers' ``AutoencoderKL`` and
        ``VQModel`` share: RGB in and out, one encoder / decoder block per level."""
        levels = len(self.block_out_channels)
        return {
            "in_channels": 3,
            "out_channels": 3,
            "down_block_types": ("DownEncoderBlock2D",) * levels,
            "up_block_types": ("UpDecoderBlock2D",) * levels,
            "block_out_channels": tuple(self.block_out_channels),
            "layers_per_block": self.layers_per_block,
            "latent_channels": self.latent_channels,
            "norm_num_groups": self.norm_num_groups,
            "sample_size": image_size,
            "mid_block_add_attention": self.attention,
            "scaling_factor": 1.0,
        }

    def validate(self) -> None:
        super().validate()
        n = type(self).__name__
        check(
            len(self.block_out_channels) >= 1 and all(c >= 1 for c in self.block_out_channels),
            f"{n}.block_out_channels",
            "must be a non-empty list of positive channel counts, e.g. block_out_channels: "
            f"[16, 32] (stride 2), got {list(self.block_out_channels)}",
        )
        check_at_least_one(self, {"latent_channels": 4, "layers_per_block": 1})
        check(
            self.norm_num_groups >= 1
            and all(c % self.norm_num_groups == 0 for c in self.block_out_channels),
            f"{n}.norm_num_groups",
            f"must divide every entry of block_out_channels {list(self.block_out_channels)} "
            f"(GroupNorm), got {self.norm_num_groups}; e.g. norm_num_groups: "
            f"{_common_divisor(self.block_out_channels)}",
        )


@dataclass
class KLAutoencoderConfig(AutoencoderGeometry):
    """The geometry of a diffusers ``AutoencoderKL`` and the weight of its KL term.

    block_out_channels: channels of each resolution level; L levels downsample L - 1 times, so
      the stride is 2^(L - 1): [16, 32] -> stride 2 (32 px -> 16x16 latents), [16, 32, 32] ->
      stride 4 (8x8). The defaults are small on purpose: on a CPU a narrow VAE takes many more
      steps per minute, which mattered more than width in the measurements of docs/scaling.md.
    latent_channels: C of the latents (B, C, H / stride, W / stride).
    layers_per_block: ResNet blocks per level (the decoder has one more, as in diffusers).
    norm_num_groups: GroupNorm groups; must divide every entry of block_out_channels.
    attention: a self-attention layer in the encoder's and decoder's middle block (at the
      latent resolution), as in SD's VAE; off by default (slower, no better in a short run).
    kl_weight: weight of KL(q(z|x) || N(0, I)), summed over the latent elements of an image and
      divided by its pixel elements (C_img * H * W): the same ratio to the L1 term as LDM's
      loss, whose autoencoders use 1e-6; more (1e-4) gives smoother, more Gaussian latents at
      some cost in reconstruction.
    """

    kl_weight: float = 1e-6

    def validate(self) -> None:
        super().validate()
        check(
            self.kl_weight >= 0,
            f"{type(self).__name__}.kl_weight",
            f"must be >= 0, e.g. kl_weight: 1.0e-6, got {self.kl_weight}",
        )


@dataclass
class VQAutoencoderConfig(AutoencoderGeometry):
    """The geometry of a diffusers ``VQModel`` (`mmar train-tokenizer --kind vq`, the Show-o-like
    ablation's tokenizer) and the weight of its commitment term. The geometry fields are
    KLAutoencoderConfig's, with the same defaults (the same size as the KL autoencoder).

    latent_channels: D of the codebook vectors (VQModel's vq_embed_dim = latent_channels).
    num_vq_embeddings: K, the codebook size.
    beta: weight of the commitment term of the VQ-VAE loss (van den Oord et al. 2017):
      ||sg[h] - e||^2 + beta ||h - sg[e]||^2, h the encoder output and e its nearest code.
    """

    num_vq_embeddings: int = 256
    beta: float = 0.25

    def validate(self) -> None:
        super().validate()
        n = type(self).__name__
        check(
            self.num_vq_embeddings >= 2,
            f"{n}.num_vq_embeddings",
            f"must be >= 2 (the codebook size), e.g. num_vq_embeddings: 256, got "
            f"{self.num_vq_embeddings}",
        )
        check(self.beta >= 0, f"{n}.beta", f"must be >= 0, e.g. beta: 0.25, got {self.beta}")


def _common_divisor(channels: Sequence[int]) -> int:
    """The largest divisor of every entry that is at most 32 (a valid group count)."""
    from math import gcd

    g = 0
    for c in channels:
        g = gcd(g, max(c, 1))
    return max(d for d in range(1, min(g, 32) + 1) if g % d == 0)


@dataclass
class ReconstructionLoss(Config):
    """Weights of the per-pixel reconstruction terms, each a mean over the pixels of [-1, 1]
    images: l1 (LDM's choice: sharper edges) and l2 (the MSE, what PSNR measures). With L1
    alone, small objects on a plain background were reconstructed as background for minutes
    (the per-pixel median); the L2 term fixes that. No LPIPS and no GAN term: both need
    pretrained networks (VGG, a discriminator's features) that cannot be downloaded offline, so
    reconstructions are somewhat blurrier than LDM's."""

    l1: float = 1.0
    l2: float = 1.0

    def validate(self) -> None:
        super().validate()
        n = type(self).__name__
        for k in ("l1", "l2"):
            v = getattr(self, k)
            check(v >= 0, f"{n}.{k}", f"must be >= 0, e.g. {k}: 1.0, got {v}")
        check(self.l1 + self.l2 > 0, n, "at least one of l1, l2 must be > 0, e.g. l1: 1.0")


@dataclass
class TokenizerTrainConfig(Config):
    """`mmar train-tokenizer`: an image tokenizer trained on a dataset mmar reads.

    kind: "kl", a diffusers ``AutoencoderKL`` (continuous latents, MMAR's kind); its geometry
      and KL weight are in ``kl``. "vq", a diffusers ``VQModel`` (discrete codes: the
      ``diffusers_vq`` image tokenizer of the codebook head); its geometry, codebook size and
      commitment weight are in ``vq`` (the section of the other kind is ignored).
    data: any image dataset (mnist, digits, shapes, folder, jsonl, webdataset; not latents), RGB
      (``channels: 3``: grey images are repeated to 3 channels, as the diffusers tokenizer
      takes RGB), ``image_size`` divisible by the stride. Its "test" split is the held-out set
      of the metrics; data with none (webdataset without test_path, a folder with
      test_fraction 0) is measured on training images, and the metrics say so.
    loss: reconstruction weights (L1 / L2). The loss is
      ``l1 * |x - x'| + l2 * (x - x')^2 + kl.kl_weight * KL / (C_img H W)``, x' decoded from a
      reparameterised sample of q(z|x); vq: ``l1 * |x - x'| + l2 * (x - x')^2 + ||sg[h] - e||^2
      + vq.beta ||h - sg[e]||^2`` (means over elements), x' decoded from the straight-through
      z_q = h + sg[e - h].
    lr: AdamW (no weight decay), constant after a linear warm-up of ``warmup_steps``.
    grad_clip: max global gradient L2 norm (0 = no clipping).
    steps / minutes: the run stops after ``steps`` updates or after the update that passes
      ``minutes`` of training, whichever comes first; either may be null, not both.
    seed: the weight init, the posterior samples and the images the latent scale is measured on
      (torch Generators; the global RNG is left alone). The data order (and shapes' images)
      follow ``data.seed``, as in `mmar train`.
    device: "auto" (cuda when available, else cpu) or a torch device string.
    log_every: a log line (step, losses, time) every this many steps.
    eval_images: held-out images of the reconstruction metrics (the first of the split).
    scale_images: training images the latent scale and shift are measured on.
    """

    kind: Literal["kl", "vq"] = "kl"
    data: DataConfig = field(default_factory=lambda: DataConfig(channels=3))
    kl: KLAutoencoderConfig = field(default_factory=KLAutoencoderConfig)
    vq: VQAutoencoderConfig = field(default_factory=VQAutoencoderConfig)
    loss: ReconstructionLoss = field(default_factory=ReconstructionLoss)
    lr: float = 2e-3
    warmup_steps: int = 50
    grad_clip: float = 1.0
    batch_size: int = 8
    steps: int | None = 2000
    minutes: float | None = None
    seed: int = 0
    device: str = "auto"
    log_every: int = 50
    eval_images: int = 512
    scale_images: int = 256

    @property
    def autoencoder(self) -> AutoencoderGeometry:
        """The section of ``kind``: ``kl`` or ``vq``."""
        return self.vq if self.kind == "vq" else self.kl

    @property
    def stride(self) -> int:
        return self.autoencoder.stride

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, h, w) of one image's latents."""
        h = self.data.image_size // self.stride
        return (self.autoencoder.latent_channels, h, h)

    def validate(self) -> None:
        super().validate()
        n = type(self).__name__
        check_at_least_one(
            self, {"batch_size": 8, "log_every": 50, "eval_images": 512, "scale_images": 256}
        )
        check_seed(self)
        check(self.lr > 0, f"{n}.lr", f"must be > 0, e.g. lr: 2.0e-3, got {self.lr}")
        check(
            self.warmup_steps >= 0,
            f"{n}.warmup_steps",
            f"must be >= 0, e.g. warmup_steps: 50, got {self.warmup_steps}",
        )
        check(
            self.grad_clip >= 0,
            f"{n}.grad_clip",
            f"must be >= 0 (0 = off), e.g. grad_clip: 1.0, got {self.grad_clip}",
        )
        check(
            self.steps is None or self.steps >= 1,
            f"{n}.steps",
            f"must be >= 1 or null (only the minutes budget), e.g. steps: 2000, got {self.steps}",
        )
        check(
            self.minutes is None or self.minutes > 0,
            f"{n}.minutes",
            f"must be > 0 or null (only the steps), e.g. minutes: 5, got {self.minutes}",
        )
        check(
            self.steps is not None or self.minutes is not None,
            f"{n}.steps",
            "steps and minutes are both null: set at least one, e.g. minutes: 5",
        )
        d = self.data
        check(
            d.name != "latents",
            f"{n}.data.name",
            "a tokenizer trains on images, not on a latent cache: give an image dataset, e.g. "
            "data: {name: folder, path: data/my_images}",
        )
        check(
            d.image_channels == 3,
            f"{n}.data.channels",
            f"the {d.name} data gives {d.image_channels}-channel images; the tokenizer takes "
            "RGB: set data.channels: 3 (grey images are repeated to 3 channels)",
        )
        check(
            d.image_size % self.stride == 0,
            f"{n}.data.image_size",
            f"must be divisible by the stride {self.stride} of {self.kind}.block_out_channels "
            f"{list(self.autoencoder.block_out_channels)}, got {d.image_size}; e.g. image_size: "
            f"{max(self.stride, d.image_size // self.stride * self.stride)}",
        )


def load_tokenizer_train_config(
    path: str | Path | None = None, overrides: Sequence[str] = ()
) -> TokenizerTrainConfig:
    """A YAML file's config (or the defaults when ``path`` is None) with ``--set key=value``
    overrides applied, validated; a ConfigError names the file and the field. ``data.channels``
    is 3 unless the file or an override sets it (grey data are then repeated to RGB)."""
    data = {} if path is None else read_yaml(path)  # a syntax error names the file and line
    try:
        if not isinstance(data, dict):
            raise ConfigError(
                f"expected a mapping with fields such as data, kl, steps, got "
                f"{type(data).__name__} {data!r:.60}"
            )
        section = data.get("data", {})
        if isinstance(section, dict) and "channels" not in section:
            data = {**data, "data": {**section, "channels": 3}}  # RGB unless the file says
        return TokenizerTrainConfig.from_dict(apply_overrides(data, list(overrides)))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path is not None else str(e)) from None
