"""Run configuration: ``RunConfig = {model, data, optim, train, parallel}`` from one YAML file.

Everything is checked before any work starts: unknown keys and wrong types by the Config base,
ranges by each ``validate()``, and the agreements between sections (image size and channels of
the data, or the tokenizer a latent cache was encoded with, vs the image tokenizer) by
``RunConfig.validate``. A warm-up longer than the run is
allowed (``--steps 5`` smoke runs of a real preset): the learning rate then never peaks.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from mmar.config import (
    Config,
    ConfigError,
    check,
    check_at_least_one,
    check_seed,
    read_yaml,
)
from mmar.data.config import QA_DATASETS, DataConfig
from mmar.model.config import MMARConfig
from mmar.training.parallel import ParallelConfig


@dataclass
class OptimConfig(Config):
    """AdamW, warm-up + cosine learning rate, gradient clipping and the EMA of the weights.

    lr: peak learning rate, reached after ``warmup_steps`` updates, cosine-decayed to ``min_lr``
      at the last step. weight_decay: on Linear/Conv weights only (see ``optim.param_groups``).
    grad_clip: max global gradient L2 norm (0 = no clipping). ema_decay: d of
      ``min(d, (1 + s) / (10 + s))``.
    """

    lr: float = 3e-4
    min_lr: float = 3e-5
    warmup_steps: int = 100
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.02
    grad_clip: float = 3.0
    ema_decay: float = 0.999

    def validate(self) -> None:
        super().validate()
        n = type(self).__name__
        check(self.lr > 0, f"{n}.lr", f"must be > 0, e.g. lr: 3.0e-4, got {self.lr}")
        check(
            0 <= self.min_lr <= self.lr,
            f"{n}.min_lr",
            f"must be in [0, lr={self.lr}], e.g. min_lr: {self.lr / 10:g}, got {self.min_lr}",
        )
        check(
            self.warmup_steps >= 0,
            f"{n}.warmup_steps",
            f"must be >= 0, e.g. warmup_steps: 100, got {self.warmup_steps}",
        )
        check(
            all(0 <= b < 1 for b in self.betas),
            f"{n}.betas",
            f"each must be in [0, 1), e.g. betas: [0.9, 0.95], got {list(self.betas)}",
        )
        check(self.eps > 0, f"{n}.eps", f"must be > 0, e.g. eps: 1.0e-8, got {self.eps}")
        check(
            self.weight_decay >= 0,
            f"{n}.weight_decay",
            f"must be >= 0, e.g. weight_decay: 0.02, got {self.weight_decay}",
        )
        check(
            self.grad_clip >= 0,
            f"{n}.grad_clip",
            f"must be >= 0 (0 = off), e.g. grad_clip: 3.0, got {self.grad_clip}",
        )
        check(
            0 <= self.ema_decay < 1,
            f"{n}.ema_decay",
            f"must be in [0, 1), e.g. ema_decay: 0.999, got {self.ema_decay}",
        )


@dataclass
class KindMix(Config):
    """Relative weights of the sample kinds drawn for each sample of a batch.

    t2i: [text][img], P(I|T) (diffusion loss + prompt CE); i2t: [img][text], P(T|I) (caption CE);
    img: [img] alone, P(I) (diffusion loss); vqa: [img][question][answer], P(A|I,Q) (CE on the
    answer only; one of the item's "qa" pairs, so the data must have them: data.name shapes, or
    jsonl lines with "qa"). An item without pairs draws among the other kinds.
    """

    t2i: float = 0.6
    i2t: float = 0.3
    img: float = 0.1
    vqa: float = 0.0

    def validate(self) -> None:
        super().validate()
        n = type(self).__name__
        weights = self.to_dict()
        for k, w in weights.items():
            check(w >= 0, f"{n}.{k}", f"must be >= 0, e.g. {k}: 0.3, got {w}")
        check(sum(weights.values()) > 0, n, "at least one weight must be > 0, e.g. t2i: 1.0")


@dataclass
class TrainConfig(Config):
    """The training loop.

    steps: optimiser updates; each sees ``batch_size * grad_accum`` samples.
    batch_size: the global micro-batch: under torchrun each of N ranks trains on batch_size / N.
    precision: "auto" (bf16 autocast where bf16 is measured faster than fp32 on this device: a GPU
      with bf16, a CPU with AVX-512 bf16 or AMX; else fp32; see mmar.compute_dtype), "bf16"
      or "fp32".
    device: "auto" (cuda when available, else cpu), or a torch device string.
    seed: model init; with the epoch and the item's key, every sample's draws (kind, CFG
      dropout, masks, diffusion noise; see training/batching.py). The data order uses data.seed.
    vqa_turns: how many of an item's question-answer pairs one vqa sample asks, one after the
      other after the image (``[img] q1 a1 [eos] q2 a2 [eos] ...``, CE on the answers; LLaVA's
      multi-turn conversations): more answers per image read, at a few text tokens each. The
      turns after the first are kept while the text fits model.max_text_len.
    ckpt_every / keep_last: checkpoint period (0 = only at the end) and how many to keep.
    init_from: a checkpoint or model directory whose weights start this run (stage 2 from
      stage 1); its optimizer state is not loaded. init_weights: which of its weights, "ema"
      (default: the weights one evaluates and samples with) or "raw".
    max_nan_in_row: stop after this many consecutive steps with a NaN/inf loss or gradient.
    max_minutes: time budget; the run stops cleanly after the step that exceeds it and saves.
    """

    steps: int = 1000
    batch_size: int = 32
    grad_accum: int = 1
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    device: str = "auto"
    seed: int = 0
    kinds: KindMix = field(default_factory=KindMix)
    vqa_turns: int = 1
    log_every: int = 10
    ckpt_every: int = 500
    keep_last: int = 3
    init_from: str | None = None
    init_weights: Literal["ema", "raw"] = "ema"
    max_nan_in_row: int = 10
    max_minutes: float | None = None
    progress: bool = True

    def validate(self) -> None:
        super().validate()
        n = type(self).__name__
        check_at_least_one(
            self,
            {
                "steps": 1000,
                "batch_size": 32,
                "grad_accum": 1,
                "log_every": 10,
                "keep_last": 3,
                "max_nan_in_row": 10,
                "vqa_turns": 1,
            },
        )
        check_seed(self)
        check(
            self.ckpt_every >= 0,
            f"{n}.ckpt_every",
            f"must be >= 0 (0 = only at the end), e.g. ckpt_every: 500, got {self.ckpt_every}",
        )
        check(
            self.max_minutes is None or self.max_minutes > 0,
            f"{n}.max_minutes",
            f"must be > 0 or null (no budget), e.g. max_minutes: 10, got {self.max_minutes}",
        )


@dataclass
class RunConfig(Config):
    """One training run: the model, its data, the optimiser, the loop and its parallelism."""

    model: MMARConfig = field(default_factory=MMARConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)

    def validate(self) -> None:
        super().validate()
        n = type(self).__name__
        tok = self.model.image_tokenizer
        check(
            self.train.kinds.vqa == 0 or self.data.name in QA_DATASETS,
            f"{n}.train.kinds.vqa",
            f"is {self.train.kinds.vqa} but dataset '{self.data.name}' has no question-answer "
            f"pairs; set train.kinds.vqa: 0, or use data.name: shapes (or jsonl lines with "
            f'"qa": [["question", "answer"], ...])',
        )
        if self.data.name == "latents":
            self._check_latent_cache()
        else:
            check(
                self.data.image_size == tok.image_size,
                f"{n}.data.image_size",
                f"is {self.data.image_size} but model.image_tokenizer.image_size is "
                f"{tok.image_size}: set both to the same value, e.g. data.image_size: "
                f"{tok.image_size}",
            )
            check(
                self.data.image_channels == tok.image_channels,
                f"{n}.data.channels",
                f"gives {self.data.image_channels}-channel images but "
                f"model.image_tokenizer.image_channels is {tok.image_channels}: set "
                f"data.channels: {tok.image_channels} (grey digits are repeated to RGB) or "
                f"change the tokenizer",
            )

    def _check_latent_cache(self) -> None:
        """The latent cache against model.image_tokenizer, as far as the config tells (kind,
        image size and channels, latent geometry, an explicit scale, a random KL-16's seed);
        the trainer compares the built tokenizer (default scale, shift, weights) once built.
        A cache that is not there yet is left to the dataset, which names the missing file."""
        from mmar.data.latent_manifest import MANIFEST, check_fits, read_manifest

        manifest = Path(self.data.require_path()) / MANIFEST
        if manifest.is_file():
            check_fits(read_manifest(manifest), manifest, self.model.image_tokenizer)


_SCIENTIFIC = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of the config dict with ``key.path=value`` overrides (values parsed as YAML)."""
    data = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key.path=value, e.g. train.steps=200")
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {p} is not a section")
            node = child
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ConfigError(
                f"--set {item!r}: the value is not valid YAML; quote a string, close brackets, "
                "e.g. --set model.mask.ratio_min=0.5 or train.init_from='runs/a b/final'"
            ) from None
        if isinstance(value, str) and _SCIENTIFIC.match(value):
            value = float(value)  # YAML 1.1 reads "2e-3" (no dot) as a string
        node[leaf] = value
    return data


def load_run_config(path: str | Path, overrides: Sequence[str] = ()) -> RunConfig:
    """Read a YAML run config, apply ``--set`` overrides, validate; errors name file and field."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; e.g. --config configs/tiny.yaml")
    data = read_yaml(path)  # a syntax error names the file and the line
    try:
        if not isinstance(data, dict):
            raise ConfigError(
                f"expected a mapping with sections model, data, optim, train, got "
                f"{type(data).__name__} {data!r:.60}"
            )
        return RunConfig.from_dict(apply_overrides(data, list(overrides)))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


PRESETS_DIR = Path(__file__).resolve().parent.parent / "presets"


def preset_path(name: str) -> Path:
    """The packaged YAML of a preset run: "tiny" (tests, seconds on CPU), "mnist_stage1/2"."""
    path = PRESETS_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))
        raise ConfigError(f"unknown preset {name!r}; known presets: {known}")
    return path


def load_preset(name: str, overrides: Sequence[str] = ()) -> RunConfig:
    return load_run_config(preset_path(name), overrides)
