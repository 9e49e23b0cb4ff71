"""Resumable data order: which items each step trains on, and where a resumed run goes on.

Data order: epoch ``e`` visits the dataset in ``randperm(n)`` drawn from a generator seeded with
``(seed, e)``, cut into batches of ``batch_size`` (the ragged tail of an epoch is dropped so every
step sees the same batch size). The position is therefore just ``(epoch, offset)``: a checkpoint
stores it and a resumed run yields exactly the batches the interrupted one would have.
Written by hand because ``torch.utils.data`` samplers keep no resumable position. A dataset
smaller than one batch is refused (``DataError``) rather than trained on with smaller or
repeated batches: the global batch is split evenly over the ranks, and a step of repeated items
would weight them twice without saying so.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from mmar.config import DataError


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The visiting order (n,) of epoch ``epoch``: a function of ``(seed, epoch)`` only."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


class ResumableBatchSampler:
    """Batches of dataset indices for one epoch at a time, resumable from ``(epoch, offset)``.

    ``iter()`` yields the rest of the current epoch from the *consumed* position without moving
    it (a data loader reads ahead); the trainer calls ``advance()`` once per batch it actually
    trained on and iterates again when an epoch ends, so it can call ``dataset.set_epoch`` before
    a new epoch's loader (and its workers) start. ``state_dict()`` is that position.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int, source: str = "the dataset"):
        if batch_size > num_items:  # every step trains on a full batch of distinct items
            raise DataError(
                f"train.batch_size = {batch_size} is larger than the dataset: {source} has "
                f"{num_items} training item{'s' * (num_items != 1)}, and a step trains on "
                f"{batch_size} different items; lower train.batch_size to at most {num_items} "
                f"(e.g. --set train.batch_size={1 << max(0, num_items.bit_length() - 1)}) or "
                "add data"
            )
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.epoch, self.offset = 0, 0

    @property
    def batches_per_epoch(self) -> int:
        return self.num_items // self.batch_size

    def advance(self) -> None:
        """Mark one batch as consumed; the ragged tail of an epoch is skipped."""
        self.offset += self.batch_size
        if self.offset + self.batch_size > self.num_items:
            self.epoch, self.offset = self.epoch + 1, 0

    def __len__(self) -> int:
        return self.batches_per_epoch - self.offset // self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        perm = epoch_permutation(self.num_items, self.seed, self.epoch)
        for start in range(self.offset, self.batches_per_epoch * self.batch_size, self.batch_size):
            yield perm[start : start + self.batch_size].tolist()

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "offset": self.offset}

    def load_state_dict(self, state: dict) -> None:
        epoch, offset = int(state["epoch"]), int(state["offset"])
        if offset % self.batch_size or offset + self.batch_size > self.num_items:
            raise ValueError(
                f"data position offset {offset} does not fit batch size {self.batch_size} and "
                f"{self.num_items} items: was the checkpoint made with another batch size or data?"
            )
        self.epoch, self.offset = epoch, offset


class StreamPosition:
    """The same ``(epoch, offset)`` position for a stream (an ``IterableDataset``, e.g. tar
    shards) whose order is a function of its epoch (``set_epoch``): a resumed run replays the
    epoch and skips the ``offset`` items already trained on."""

    def __init__(self, batch_size: int):
        self.batch_size = batch_size
        self.epoch, self.offset = 0, 0

    def advance(self) -> None:
        self.offset += self.batch_size

    def next_epoch(self) -> None:
        self.epoch, self.offset = self.epoch + 1, 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "offset": self.offset}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.offset = int(state["epoch"]), int(state["offset"])
