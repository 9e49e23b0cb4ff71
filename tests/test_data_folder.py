"""User data: a folder of images + .txt captions, and JSONL lists; skipping and clear errors."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from mmar.data import DataConfig, build_dataset, collate, corpus
from mmar.data.unreadable import Unreadable


def _write_png(path, size=(40, 24), value=200, mode="RGB"):
    arr = np.full((size[1], size[0], 3), value, dtype=np.uint8)
    arr[:, : size[0] // 2] = 0  # left half black: checks the crop keeps the centre
    Image.fromarray(arr).convert(mode).save(path)


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "sub").mkdir()
    _write_png(tmp_path / "a.png")
    (tmp_path / "a.txt").write_text("a grey card\n")
    _write_png(tmp_path / "sub" / "b.jpg", mode="L")
    (tmp_path / "sub" / "b.txt").write_text("a nested one")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (tmp_path / "broken.txt").write_text("never read")
    _write_png(tmp_path / "nocaption.png")
    return tmp_path


def test_folder_items_skips_and_counts(folder):
    cfg = DataConfig(name="folder", path=str(folder), test_fraction=0.0, image_size=16)
    ds = build_dataset(cfg)
    assert len(ds) == 4  # a, broken, nocaption, sub/b (sorted by path)
    items = [ds[i] for i in range(len(ds))]
    good = [it for it in items if isinstance(it, dict)]
    assert sorted(it["text"] for it in good) == ["a grey card", "a nested one"]
    for it in good:
        x = it["image"]
        assert x.shape == (3, 16, 16) and x.min() >= -1 and x.max() <= 1 and it["label"] == -1
        # 40x24 center-cropped to 24x24: columns 8..19 of the original; left part still black
        assert x[:, :, 0].max() == -1 and x[:, :, -1].min() > 0
    bad = [it for it in items if isinstance(it, Unreadable)]
    assert [(u.key.split("/")[-1], u.kind) for u in bad] == [
        ("broken.png", "unreadable image"),
        ("nocaption.png", "missing caption"),
    ]
    batch = collate(items)
    assert batch["images"].shape == (2, 3, 16, 16) and batch["skipped"] == 2
    assert batch["unreadable"] == bad
    assert sorted(corpus(DataConfig(name="folder", path=str(folder), test_fraction=0.0))) == [
        "a grey card",
        "a nested one",
        "never read",
    ]


def test_folder_grey_channels(folder):
    ds = build_dataset(DataConfig(name="folder", path=str(folder), test_fraction=0.0, channels=1))
    assert ds[0]["image"].shape == (1, 32, 32)


def test_folder_skipped_through_dataloader_workers(folder):
    ds = build_dataset(DataConfig(name="folder", path=str(folder), test_fraction=0.0))
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=0, collate_fn=collate)
    assert sum(b["skipped"] for b in loader) == 2


def test_folder_hash_split_is_disjoint_and_complete(tmp_path):
    for i in range(30):
        _write_png(tmp_path / f"{i:02d}.png", size=(8, 8))
        (tmp_path / f"{i:02d}.txt").write_text(f"image {i}")
    cfg = DataConfig(name="folder", path=str(tmp_path), test_fraction=0.3)
    train, test = build_dataset(cfg, "train"), build_dataset(cfg, "test")
    tr, te = {e[0] for e in train.entries}, {e[0] for e in test.entries}
    assert not tr & te and len(tr | te) == 30 and 0 < len(te) < 30
    assert {e[0] for e in build_dataset(cfg.replace(seed=9), "test").entries} == te


def test_folder_test_path(tmp_path, folder):
    other = tmp_path / "heldout"
    other.mkdir()
    _write_png(other / "t.png")
    (other / "t.txt").write_text("held out")
    cfg = DataConfig(name="folder", path=str(folder), test_path=str(other))
    assert [build_dataset(cfg, "test")[0]["text"]] == ["held out"]
    assert len(build_dataset(cfg, "train")) == 5  # includes heldout/t.png: tmp_path is the root


def test_empty_folder_raises_with_path(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match=str(tmp_path)):
        build_dataset(DataConfig(name="folder", path=str(tmp_path)))


def test_missing_folder_raises_with_path(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        build_dataset(DataConfig(name="folder", path=str(missing)))


def test_empty_split_raises(tmp_path):
    _write_png(tmp_path / "a.png")
    with pytest.raises(ValueError, match="no items in split 'test'"):
        build_dataset(DataConfig(name="folder", path=str(tmp_path), test_fraction=0.0), "test")


def test_jsonl_items_relative_paths_and_skips(tmp_path):
    (tmp_path / "img").mkdir()
    _write_png(tmp_path / "img" / "x.png")
    rows = [
        {"image": "img/x.png", "text": "first", "label": 3},
        {"image": "img/missing.png", "text": "gone"},
        {"image": str(tmp_path / "img" / "x.png"), "text": "absolute"},
    ]
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    ds = build_dataset(DataConfig(name="jsonl", path=str(path), test_fraction=0.0))
    items = [ds[i] for i in range(len(ds))]
    assert items[0]["text"] == "first" and items[0]["label"] == 3
    assert isinstance(items[1], Unreadable) and items[1].key.endswith("missing.png")
    assert items[2]["label"] == -1 and torch.equal(items[0]["image"], items[2]["image"])
    assert ds.captions() == ["first", "gone", "absolute"]


@pytest.mark.parametrize(
    "bad",
    [
        '{"image": "a.png", "text": ',
        '{"image": "a.png"}',
        '["a.png", "text"]',
        '{"image": "a.png", "text": "t", "label": "x"}',
    ],
)
def test_bad_jsonl_line_raises_with_file_and_line(tmp_path, bad):
    path = tmp_path / "data.jsonl"
    path.write_text('{"image": "a.png", "text": "fine"}\n\n' + bad + "\n")
    with pytest.raises(ValueError, match=f"{path}:3"):
        build_dataset(DataConfig(name="jsonl", path=str(path)))


def test_missing_jsonl_raises_with_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.jsonl"):
        build_dataset(DataConfig(name="jsonl", path=str(tmp_path / "nothere.jsonl")))
