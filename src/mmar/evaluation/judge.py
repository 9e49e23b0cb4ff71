"""The judge: a small CNN digit classifier that scores generated digits.

No pretrained recogniser (or Inception network) can be had offline here, so the project trains its
own on the dataset's *training* split, reports its accuracy on the held-out split next to every
result, and uses it twice:
- ``predict(x)``: the digit it sees, for text-to-image accuracy;
- ``features(x)``: its penultimate layer (B, feature_dim), the space of "classifier-FID".
Trained once per (dataset, image size, config) and cached as safetensors under
``$XDG_CACHE_HOME/mmar/judges/<dataset>-<image_size>-<hash>.safetensors`` (~/.cache when unset).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file

from mmar.config import Config, check
from mmar.torch_utils import eval_mode, write_safetensors

# Bump when the network or its training changes, so stale cache files are not reused.
JUDGE_VERSION = 1


@dataclasses.dataclass
class JudgeConfig(Config):
    """What the judge is trained on and how.

    widths: channels of the two conv stages; feature_dim: width of the penultimate layer
    (the classifier-FID feature space; keep it well below the number of evaluated images so the
    covariance is estimated from enough samples).
    test_fraction: the data's held-out share (``DataConfig.test_fraction``): not used in training,
    but a different split is different training data, so it is part of the cache key.
    """

    dataset: str = "mnist"
    image_size: int = 28
    channels: int = 1
    test_fraction: float = 0.2
    num_classes: int = 10
    widths: tuple[int, int] = (16, 32)
    feature_dim: int = 64
    epochs: int = 3
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0
    # bf16 autocast is available but off: measured on this CPU, mnist-4k x 3 epochs takes 2.9 s in
    # fp32 and 6.6 s under bf16 autocast (convolutions this small gain nothing from bf16).
    bf16: bool = False
    # "single": one class per image (digits), cross-entropy, accuracy = argmax hit rate;
    # "multi": a multi-hot (N, num_classes) target per image (shapes: which (colour, shape, size)
    # kinds it shows), binary cross-entropy per class, accuracy = share of images whose whole
    # predicted set (logit > 0) is right.
    labels: Literal["single", "multi"] = "single"

    def validate(self) -> None:
        super().validate()
        n = type(self).__name__
        check(
            self.image_size >= 8,
            f"{n}.image_size",
            f"must be >= 8 (the judge pools twice), got {self.image_size}",
        )
        check(self.channels in (1, 3), f"{n}.channels", f"must be 1 or 3, got {self.channels}")
        check(self.num_classes >= 2, f"{n}.num_classes", f"must be >= 2, got {self.num_classes}")
        check(
            all(w > 0 for w in self.widths),
            f"{n}.widths",
            f"must be positive, e.g. (16, 32), got {self.widths}",
        )
        check(
            self.feature_dim > 0,
            f"{n}.feature_dim",
            f"must be > 0, e.g. 64, got {self.feature_dim}",
        )
        check(self.epochs > 0, f"{n}.epochs", f"must be > 0, e.g. 4, got {self.epochs}")
        check(
            self.batch_size > 0, f"{n}.batch_size", f"must be > 0, e.g. 64, got {self.batch_size}"
        )
        check(self.lr > 0, f"{n}.lr", f"must be > 0, e.g. 3e-3, got {self.lr}")

    def cache_key(self) -> str:
        """``<dataset>-<image_size>-<hash of the whole config and JUDGE_VERSION>``."""
        blob = json.dumps({"version": JUDGE_VERSION, **self.to_dict()}, sort_keys=True)
        return f"{self.dataset}-{self.image_size}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def _block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class Judge(nn.Module):
    """(conv-BN-ReLU) x2 -> maxpool -> (conv-BN-ReLU) x2 -> adaptive avg pool 4x4 -> MLP.

    x (B, C, H, W) in [-1, 1] -> features (B, feature_dim) -> logits (B, num_classes).
    The adaptive pool makes one network fit 8 px (sklearn digits) to 64 px images.
    """

    def __init__(self, config: JudgeConfig):
        super().__init__()
        self.config = config
        w0, w1 = config.widths
        self.body = nn.Sequential(
            *_block(config.channels, w0),
            *_block(w0, w0),
            nn.MaxPool2d(2),
            *_block(w0, w1),
            *_block(w1, w1),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(w1 * 16, config.feature_dim),
            nn.ReLU(),
        )
        self.head = nn.Linear(config.feature_dim, config.num_classes)
        self.heldout_accuracy: float | None = None  # set by train_judge / load_judge
        self.cache_path: Path | None = None  # set by get_judge
        self.from_cache = False

    def _check(self, x: torch.Tensor) -> None:
        c, s = self.config.channels, self.config.image_size
        if x.ndim != 4 or tuple(x.shape[1:]) != (c, s, s):
            raise ValueError(
                f"Judge({self.config.dataset}): expected images (B, {c}, {s}, {s}) in [-1, 1], "
                f"got {tuple(x.shape)}; train a judge for this image size (JudgeConfig.image_size)"
            )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer features (B, feature_dim), float32."""
        self._check(x)
        return self.body(x.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (B, num_classes)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Predicted labels in eval mode: (B,) long ("single"), or (B, num_classes) bool, the
        classes whose logit is > 0 ("multi")."""
        with eval_mode(self):
            logits = torch.cat([self(b) for b in x.split(batch_size)])
        return logits.argmax(-1) if self.config.labels == "single" else logits > 0

    @torch.no_grad()
    def accuracy(self, x: torch.Tensor, labels: torch.Tensor) -> float:
        """Share of images whose label ("single") or whole label set ("multi") is predicted."""
        pred = self.predict(x)
        hit = pred == labels.to(pred.device, pred.dtype)
        return (hit if hit.ndim == 1 else hit.all(-1)).float().mean().item()

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy on class ids (B,), or binary cross-entropy on multi-hot (B, K)."""
        if self.config.labels == "single":
            return F.cross_entropy(logits.float(), labels)
        return F.binary_cross_entropy_with_logits(logits.float(), labels.float())


def build_judge(config: JudgeConfig) -> Judge:
    """A freshly initialised judge, seeded by ``config.seed``.

    nn.Module initialisers draw from the global RNG; fork_rng confines the seeding to this call so
    callers' random streams are left untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return Judge(config)


@torch.enable_grad()  # callers (evaluate) may run under no_grad; training needs autograd
def train_judge(
    config: JudgeConfig,
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    log: Callable[[str], None] | None = None,
) -> Judge:
    """Train on (train_images (N, C, H, W) in [-1, 1], train_labels (N,) or multi-hot (N, K))
    only; measure accuracy on the held-out (test_images, test_labels). AdamW, one-cycle LR,
    optional bf16 autocast, batches shuffled from a generator seeded with ``config.seed``."""
    judge = build_judge(config).to(train_images.device)
    judge._check(train_images)
    g = torch.Generator().manual_seed(config.seed)
    n = train_images.shape[0]
    steps_per_epoch = -(-n // config.batch_size)
    opt = torch.optim.AdamW(judge.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, config.lr, total_steps=config.epochs * steps_per_epoch
    )
    dev = train_images.device.type
    t0 = time.perf_counter()
    judge.train()
    for epoch in range(config.epochs):
        perm = torch.randperm(n, generator=g).to(train_images.device)
        total = 0.0
        for idx in perm.split(config.batch_size):
            with torch.autocast(dev, dtype=torch.bfloat16, enabled=config.bf16):
                loss = judge.loss(judge(train_images[idx]), train_labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * idx.numel()
        if log:
            log(f"judge {config.dataset}: epoch {epoch + 1}/{config.epochs} loss {total / n:.4f}")
    judge.eval()
    judge.heldout_accuracy = judge.accuracy(test_images, test_labels)
    if log:
        log(
            f"judge {config.dataset}: held-out accuracy {judge.heldout_accuracy:.4f} "
            f"({time.perf_counter() - t0:.1f} s, {n} training images)"
        )
    return judge


def judge_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/mmar/judges`` (``~/.cache/mmar/judges`` when XDG_CACHE_HOME is unset)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mmar" / "judges"


def save_judge(judge: Judge, path: str | Path) -> None:
    """safetensors weights; config and held-out accuracy in its metadata. Written to a temporary
    file and renamed, so concurrent evaluations never read a half-written judge."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "config": json.dumps(judge.config.to_dict()),
        "heldout_accuracy": repr(judge.heldout_accuracy),
    }
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    write_safetensors({k: v.contiguous() for k, v in judge.state_dict().items()}, tmp, meta)
    os.replace(tmp, path)


def load_judge(path: str | Path) -> Judge:
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    judge = build_judge(JudgeConfig.from_dict(json.loads(meta["config"])))
    judge.load_state_dict(load_file(str(path)))
    judge.heldout_accuracy = float(meta["heldout_accuracy"])
    return judge.eval()


def get_judge(
    config: JudgeConfig,
    load_split: Callable[[str], tuple[torch.Tensor, torch.Tensor]],
    cache_dir: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> Judge:
    """The cached judge for ``config``, training (and caching) it first when there is none.

    load_split(split) -> (images (N, C, H, W) in [-1, 1], labels (N,) or multi-hot (N, K)) for
    split "train" / "test".
    ``judge.cache_path`` and ``judge.from_cache`` say where it lives and whether it was reused.
    """
    path = Path(cache_dir or judge_cache_dir()) / f"{config.cache_key()}.safetensors"
    if path.is_file():
        judge = load_judge(path)
        judge.from_cache = True
    else:
        judge = train_judge(config, *load_split("train"), *load_split("test"), log=log)
        save_judge(judge, path)
        judge.from_cache = False
    judge.cache_path = path
    return judge
