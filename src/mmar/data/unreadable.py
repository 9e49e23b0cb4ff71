"""Unreadable: what a dataset returns in place of an item it cannot read, and why.

A damaged file is never fatal to a dataset: ``dataset[i]`` (or the stream) gives
``Unreadable(key, kind, detail)`` instead of the item, ``collate`` drops it and counts it, and
the consumer reports it (the trainer names each file once, however many epochs and DataLoader
workers see it, and stops when too many are unreadable: ``DataConfig.max_unreadable_share``).
It is a small picklable value, so it crosses from DataLoader workers to the main process with
the batch; datasets log nothing themselves (a worker's log line would break the progress bar).
"""

from __future__ import annotations

import dataclasses

# the kinds, for the per-kind counts ("skipped 3: 2 unreadable image, 1 missing caption")
UNREADABLE_IMAGE = "unreadable image"  # not an image, damaged, or an unsupported pixel format
MISSING_CAPTION = "missing caption"  # folder: no same-named .txt; webdataset: no .txt member
NON_UTF8_CAPTION = "non-UTF-8 caption"
MISSING_IMAGE = "missing image"  # webdataset: a sample with a .txt but no image member
BAD_LABEL = "bad label"  # webdataset: a .cls member that is not an integer
DAMAGED_SHARD = "damaged shard"  # webdataset: a tar (member) the tar reader could not read
UNKNOWN = "unreadable item"  # a None from a dataset of one's own, which gives no reason
KINDS = (
    UNREADABLE_IMAGE,
    MISSING_CAPTION,
    NON_UTF8_CAPTION,
    MISSING_IMAGE,
    BAD_LABEL,
    DAMAGED_SHARD,
    UNKNOWN,
)


@dataclasses.dataclass(frozen=True)
class Unreadable:
    """An item that could not be read.

    key: the item's file (folder / jsonl: the image path) or shard member (``shard.tar:key``),
      the same string every epoch, so the item is counted once.
    kind: one of ``KINDS``.
    detail: the error, one line (e.g. "cannot identify image file").
    """

    key: str
    kind: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.key}: {self.kind}" + (f" ({self.detail})" if self.detail else "")


def one_line(error: BaseException, message: str | None = None) -> str:
    """An exception as one short line: its type and message (or ``message``), newlines folded,
    cut at 200 characters."""
    text = " ".join(f"{type(error).__name__}: {error if message is None else message}".split())
    return text if len(text) <= 200 else text[:197] + "..."
