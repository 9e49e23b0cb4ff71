"""WebDataset tar shards (.jpg/.png + .txt [+ .cls]) streamed as an IterableDataset.

The pipeline is the ``webdataset`` package's: shard list (brace patterns such as
``data/shard-{000..009}.tar``) -> split by rank -> split by DataLoader worker -> tar members
grouped into samples -> (train only) a seeded shuffle buffer -> our decoding. Every shard goes to
exactly one (rank, worker), so each sample comes out once per epoch across the whole job.

Rank / world size come from torch.distributed when it is initialised (``wds.split_by_node``),
or from the explicit ``rank``/``world_size`` arguments. A sample that cannot be used (an image
that cannot be decoded, no image or no .txt member, a .txt that is not UTF-8, a .cls that is not
an integer) comes out as an :class:`~mmar.data.unreadable.Unreadable` naming ``shard:key``; a tar
the reader cannot go on with (damaged, truncated, not a tar) comes out as one Unreadable naming
the shard (kind "damaged shard"), and the stream goes on with the next shard. ``collate`` drops
and counts them.
"""

from __future__ import annotations

import glob
import io
import random
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import torch

from mmar._versions import require
from mmar.data.config import DataConfig
from mmar.data.folder import ImageReadError, label_fits, load_image
from mmar.data.unreadable import (
    BAD_LABEL,
    DAMAGED_SHARD,
    MISSING_CAPTION,
    MISSING_IMAGE,
    NON_UTF8_CAPTION,
    UNREADABLE_IMAGE,
    Unreadable,
    one_line,
)

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")


def expand_shards(pattern: str | list[str]) -> list[str]:
    """A brace pattern, a directory (its *.tar), or a list -> shard paths, which must exist."""
    require("webdataset")
    import webdataset as wds

    if isinstance(pattern, (list, tuple)):
        urls = [u for p in pattern for u in expand_shards(p)]
    elif Path(pattern).is_dir():
        urls = sorted(glob.glob(str(Path(pattern) / "*.tar")))
        if not urls:
            raise FileNotFoundError(f"webdataset: no .tar shards in directory {pattern}")
    else:
        urls = wds.shardlists.expand_urls(pattern)
    missing = [u for u in urls if "://" not in u and not Path(u).is_file()]
    if missing:
        raise FileNotFoundError(
            f"webdataset: shard(s) not found: {missing[:3]}{' ...' if len(missing) > 3 else ''} "
            f"(from {pattern}); give local paths or a brace pattern like "
            "data/shard-{000..009}.tar"
        )
    return urls


class TarShardDataset(torch.utils.data.IterableDataset):
    """item: {"image": (C, H, W) in [-1, 1], "text": str, "label": int (.cls, else -1),
    "key": "shard:key"} or Unreadable."""

    def __init__(
        self,
        shards: str | list[str],
        image_size: int = 32,
        channels: int = 3,
        *,
        rank: int | None = None,
        world_size: int | None = None,
        shuffle_buffer: int = 0,
        seed: int = 0,
    ):
        super().__init__()
        self.urls = expand_shards(shards)
        self.image_size, self.channels = image_size, channels
        bad = (rank is None) != (world_size is None) or (
            rank is not None and world_size is not None and not 0 <= rank < world_size
        )
        if bad:
            raise ValueError(
                f"webdataset: give both rank and world_size with 0 <= rank < world_size "
                f"(got rank={rank}, world_size={world_size}), or neither to use torch.distributed"
            )
        self.rank, self.world_size = rank, world_size
        self.shuffle_buffer, self.seed = shuffle_buffer, seed
        self.epoch = 0
        self._errors: list[Unreadable] = []  # from the tar reader, yielded with the next sample

    def set_epoch(self, epoch: int) -> None:
        """Shard order and shuffle buffer change with the epoch (the same on every rank)."""
        self.epoch = epoch

    def _handler(self, exn: Exception) -> bool:
        """webdataset error handler: a damaged tar (member) becomes an Unreadable naming its
        shard, yielded by ``__iter__``; the stream goes on."""
        args = [a for a in exn.args if isinstance(a, str)]
        shard = next((a for a in reversed(args) if a in self.urls), "webdataset shard")
        detail = (args[0] if args else "").split(" @ ")[0]  # webdataset appends " @ <stream>"
        self._errors.append(Unreadable(shard, DAMAGED_SHARD, one_line(exn, detail or None)))
        return True  # continue with the next member or shard

    def _take_errors(self) -> list[Unreadable]:
        errors, self._errors = self._errors, []
        return errors

    def _split_by_rank(self, src: Iterable[str]) -> Iterator[str]:
        import webdataset as wds

        if self.rank is None:
            yield from wds.split_by_node(src)
        else:
            yield from islice(src, self.rank, None, self.world_size)

    def _decode(self, sample: dict[str, Any]) -> dict[str, Any] | Unreadable:
        key = f"{sample.get('__url__', '?')}:{sample.get('__key__', '?')}"
        image = next((sample[k] for k in IMAGE_KEYS if k in sample), None)
        if image is None:
            members = ", ".join(f".{k}" for k in IMAGE_KEYS)
            return Unreadable(key, MISSING_IMAGE, f"no image member ({members})")
        if "txt" not in sample:
            return Unreadable(key, MISSING_CAPTION, "no .txt member")
        try:
            text = sample["txt"].decode("utf-8").strip()
        except UnicodeDecodeError as e:
            return Unreadable(key, NON_UTF8_CAPTION, f".txt: {one_line(e)}")
        label = -1
        if "cls" in sample:
            try:
                label = int(sample["cls"].decode("utf-8").strip())
            except ValueError as e:  # not UTF-8, not an integer
                return Unreadable(key, BAD_LABEL, f".cls: {one_line(e)}")
            if not label_fits(label):
                return Unreadable(key, BAD_LABEL, f".cls: {label} does not fit 64 bits")
        try:
            x = load_image(io.BytesIO(image), self.channels, self.image_size)
        except ImageReadError as e:
            return Unreadable(key, UNREADABLE_IMAGE, e.detail)
        return {"image": x, "text": text, "label": label, "key": key}

    def _pipeline(self) -> Any:  # a webdataset.DataPipeline
        import webdataset as wds

        shard_seed = self.seed * 1_000_003 + self.epoch if self.shuffle_buffer else None
        stages = [
            wds.SimpleShardList(self.urls, seed=shard_seed),  # same order on every rank
            self._split_by_rank,
            wds.split_by_worker,
            wds.tarfile_to_samples(handler=self._handler),
        ]
        if self.shuffle_buffer:
            info = torch.utils.data.get_worker_info()
            worker = info.id if info is not None else 0
            # a str seed is hashed with sha512: the same stream in every run, a new one per worker
            rng = random.Random(f"{self.seed}-{self.epoch}-{self.rank or 0}-{worker}")
            stages.append(wds.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer, rng=rng))
        return wds.DataPipeline(*stages)

    def __iter__(self) -> Iterator[dict[str, Any] | Unreadable]:
        self._errors = []
        for sample in self._pipeline():
            yield from self._take_errors()  # what the reader met on its way to this sample
            yield self._decode(sample)
        yield from self._take_errors()

    def captions(self) -> list[str]:
        """Every caption in every shard that can be read (reads only the .txt members; no rank
        split). Damaged shards and non-UTF-8 captions are left out here; training names them."""
        import webdataset as wds

        pipe = wds.DataPipeline(
            wds.SimpleShardList(self.urls),
            wds.tarfile_to_samples(
                handler=wds.ignore_and_continue, select_files=lambda name: name.endswith(".txt")
            ),
        )
        texts = []
        for s in pipe:
            try:
                texts.append(s["txt"].decode("utf-8").strip())
            except (KeyError, UnicodeDecodeError):
                continue
        return texts


def webdataset_dataset(
    cfg: DataConfig, split: str, rank: int | None = None, world_size: int | None = None
) -> TarShardDataset:
    if split == "test" and cfg.test_path is None:
        raise ValueError(
            "webdataset: no held-out shards; set DataConfig.test_path, e.g. "
            "test_path: data/test-{000..001}.tar"
        )
    return TarShardDataset(
        cfg.test_path if split == "test" and cfg.test_path is not None else cfg.require_path(),
        cfg.image_size,
        cfg.image_channels,
        rank=rank,
        world_size=world_size,
        shuffle_buffer=cfg.shuffle_buffer if split == "train" else 0,
        seed=cfg.seed,
    )
