"""WebDataset shards: each good sample once across ranks x workers; corrupt ones counted."""

import io

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from mmar.data import DataConfig, build_dataset, collate
from mmar.data.unreadable import Unreadable
from mmar.data.webdataset import TarShardDataset

N_SHARDS, PER_SHARD = 4, 5
CORRUPT_KEY = "s001_0002"


def _image_bytes(value: int, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((12, 12, 3), value, dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    for s in range(N_SHARDS):
        with wds.TarWriter(str(root / f"shard-{s:03d}.tar")) as sink:
            for i in range(PER_SHARD):
                key = f"s{s:03d}_{i:04d}"
                ext = "png" if i % 2 else "jpg"
                data = _image_bytes(10 * i + s, "PNG" if ext == "png" else "JPEG")
                if key == CORRUPT_KEY:
                    data = data[:20]  # a truncated jpg
                sink.write({"__key__": key, ext: data, "txt": f"caption {key}", "cls": str(i)})
    return root


def _good_texts():
    return {
        f"caption s{s:03d}_{i:04d}"
        for s in range(N_SHARDS)
        for i in range(PER_SHARD)
        if f"s{s:03d}_{i:04d}" != CORRUPT_KEY
    }


def test_two_ranks_two_workers_each_sample_once_and_corrupt_counted(shards):
    pattern = str(shards / "shard-{000..003}.tar")
    texts, skipped = [], 0
    for rank in range(2):
        ds = TarShardDataset(
            pattern, image_size=8, channels=3, rank=rank, world_size=2, shuffle_buffer=4, seed=1
        )
        loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2, collate_fn=collate)
        for batch in loader:
            assert batch["images"].shape[1:] == (3, 8, 8)
            assert batch["images"].min() >= -1 and batch["images"].max() <= 1
            assert len(batch["labels"]) == len(batch["texts"])
            texts += batch["texts"]
            skipped += batch["skipped"]
    assert sorted(texts) == sorted(_good_texts())  # exactly once each
    assert skipped == 1


def test_in_process_iteration_counts_skipped_and_reads_labels(shards):
    ds = TarShardDataset(str(shards / "shard-001.tar"), image_size=8, channels=1)
    items = list(ds)
    bad = [it for it in items if isinstance(it, Unreadable)]
    assert len(items) == PER_SHARD and len(bad) == 1
    assert bad[0].key.endswith(f"shard-001.tar:{CORRUPT_KEY}") and bad[0].kind == "unreadable image"
    good = [it for it in items if isinstance(it, dict)]
    assert [it["label"] for it in good] == [0, 1, 3, 4]
    assert good[0]["image"].shape == (1, 8, 8)


def test_explicit_rank_split_is_disjoint(shards):
    seen = []
    for rank in range(2):
        ds = TarShardDataset(str(shards), rank=rank, world_size=2)  # a directory of shards
        seen.append({it["text"] for it in ds if isinstance(it, dict)})
    assert not seen[0] & seen[1] and seen[0] | seen[1] == _good_texts()


def test_shuffle_changes_with_epoch_but_keeps_the_samples(shards):
    ds = TarShardDataset(str(shards), shuffle_buffer=8, seed=0)
    order0 = [it["text"] for it in ds if isinstance(it, dict)]
    ds.set_epoch(1)
    order1 = [it["text"] for it in ds if isinstance(it, dict)]
    assert order0 != order1 and sorted(order0) == sorted(order1) == sorted(_good_texts())
    ds.set_epoch(0)
    assert [it["text"] for it in ds if isinstance(it, dict)] == order0


def test_build_dataset_and_captions(shards):
    cfg = DataConfig(name="webdataset", path=str(shards / "shard-{000..003}.tar"))
    ds = build_dataset(cfg, "train")
    assert set(ds.captions()) == _good_texts() | {f"caption {CORRUPT_KEY}"}
    with pytest.raises(ValueError, match="test_path"):
        build_dataset(cfg, "test")


def test_missing_shard_raises_with_path(shards):
    with pytest.raises(FileNotFoundError, match="shard-009.tar"):
        TarShardDataset(str(shards / "shard-{008..009}.tar"))


def test_bad_rank_raises(shards):
    with pytest.raises(ValueError, match="rank"):
        TarShardDataset(str(shards), rank=2, world_size=2)
