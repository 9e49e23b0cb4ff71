"""mmar.data: datasets of {"image": (C, H, W) in [-1, 1], "text": str, "label": int, "key"} items.

``key`` names the item within its split (its index, or a shard's member name): the trainer
seeds each sample's draws (its kind, its CFG prompt dropout) from it.

    build_dataset(DataConfig(name="mnist"), "train")   # 4,000 real digits, 32x32, 1 channel
    loader = DataLoader(ds, batch_size=64, shuffle=True, collate_fn=collate)
    batch = next(iter(loader))   # {"images": (B,1,32,32), "texts", "labels": (B,), "skipped",
                                 #  "unreadable"}

An item that cannot be read is an ``Unreadable(key, kind, detail)`` instead (see
``mmar.data.unreadable``); a data file that cannot be used at all raises
``mmar.config.DataError``.

Splits are "train" and "test" (a fixed held-out set, the same in every run). ``corpus(cfg)``
gives the caption strings a word-level text tokenizer is built from before training.
"""

from __future__ import annotations

from typing import Any

from mmar.data.captions import DIGIT_TEMPLATES, digit_caption, parse_digit
from mmar.data.collate import collate
from mmar.data.config import DataConfig
from mmar.data.scene import Scene, SceneObject, render_scene, sample_scene
from mmar.data.scene_text import (
    Group,
    SceneQuery,
    describe_scene,
    parse_scene_text,
    render_query,
)

SPLITS = ("train", "test")

__all__ = [
    "DIGIT_TEMPLATES",
    "DataConfig",
    "Group",
    "Scene",
    "SceneObject",
    "SceneQuery",
    "build_dataset",
    "collate",
    "corpus",
    "describe_scene",
    "digit_caption",
    "parse_digit",
    "parse_scene_text",
    "render_query",
    "render_scene",
    "sample_scene",
]


def build_dataset(
    cfg: DataConfig, split: str = "train", *, rank: int | None = None, world_size: int | None = None
) -> Any:
    """The dataset ``cfg`` names, for split "train" or "test".

    rank / world_size: webdataset only, to shard by hand (default: torch.distributed's);
    map-style datasets are sharded by the trainer's sampler instead.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    cfg.validate()
    if cfg.name == "mnist":
        from mmar.data.digits import mnist_dataset

        return mnist_dataset(cfg, split)
    if cfg.name == "digits":
        from mmar.data.digits import sklearn_digits_dataset

        return sklearn_digits_dataset(cfg, split)
    if cfg.name == "shapes":
        from mmar.data.shapes import ShapesDataset

        return ShapesDataset(cfg, split)
    if cfg.name == "folder":
        from mmar.data.folder import FolderDataset

        return FolderDataset(cfg, split)
    if cfg.name == "jsonl":
        from mmar.data.folder import JsonlDataset

        return JsonlDataset(cfg, split)
    if cfg.name == "webdataset":
        from mmar.data.webdataset import webdataset_dataset

        return webdataset_dataset(cfg, split, rank=rank, world_size=world_size)
    from mmar.data.latents import LatentDataset

    return LatentDataset(cfg.require_path(), split, flip=cfg.latent_flip, seed=cfg.seed)


def corpus(cfg: DataConfig) -> list[str]:
    """Every caption of the train split (digits: every caption they can produce; shapes: texts
    covering every word its captions, prompts, questions and answers use)."""
    return build_dataset(cfg, "train").captions()
