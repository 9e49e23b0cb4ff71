"""User data: a folder of images with same-named .txt captions, or a JSONL list of pairs.

Images are converted to the configured channels (PIL "L" or "RGB"), center-cropped to a square
and resized to ``image_size`` (``PIL.ImageOps.fit``), and scaled to [-1, 1]. A file that cannot be
read (corrupt image, missing caption) is never fatal: the item is ``None`` (``collate`` drops and
counts it), its path is appended to ``dataset.skipped`` and logged once. With DataLoader workers
each worker has its own ``skipped`` list, so the batch's ``"skipped"`` count is the one to sum.

Held-out split: ``DataConfig.test_path`` when given, else the files whose relative path hashes
(crc32) below ``test_fraction``: stable when files are added, independent of the run seed.
"""

from __future__ import annotations

import io
import json
import logging
import zlib
from pathlib import Path

import torch
from PIL import Image, ImageOps

from mmar.data.config import DataConfig
from mmar.data.images import pil_to_tensor

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_HASH_BUCKETS = 10_000


def load_image(source: str | Path | io.BytesIO, channels: int, size: int) -> torch.Tensor:
    """An image file -> (channels, size, size) in [-1, 1]; raises one of UNREADABLE if bad."""
    with Image.open(source) as f:
        im = ImageOps.exif_transpose(f).convert("L" if channels == 1 else "RGB")
    im = ImageOps.fit(im, (size, size), method=Image.Resampling.BICUBIC)  # center crop + resize
    return pil_to_tensor([im], channels)[0]  # (C, H, W)


# what a damaged or non-image file raises inside PIL (UnidentifiedImageError is an OSError)
UNREADABLE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def in_test_split(relative_path: str, test_fraction: float) -> bool:
    bucket = zlib.crc32(relative_path.replace("\\", "/").encode()) % _HASH_BUCKETS
    return bucket < test_fraction * _HASH_BUCKETS


class _UserImages(torch.utils.data.Dataset):
    """Shared by the folder and JSONL datasets: ``self.entries`` = [(image, caption, label)]."""

    def __init__(self, cfg: DataConfig):
        self.channels = cfg.image_channels
        self.size = cfg.image_size
        self.skipped: list[str] = []
        self.entries: list[tuple[Path, str | Path, int]] = []  # (image, text or .txt path, label)

    def __len__(self) -> int:
        return len(self.entries)

    def _skip(self, path: Path, why: str) -> None:
        self.skipped.append(str(path))
        log.warning("skipping %s: %s", path, why)

    def _text(self, text: str | Path) -> str:
        return text.read_text(encoding="utf-8").strip() if isinstance(text, Path) else text

    def __getitem__(self, index: int) -> dict | None:
        image_path, text, label = self.entries[index]
        if isinstance(text, Path) and not text.is_file():
            self._skip(image_path, f"no caption file {text.name}")
            return None
        try:
            image = load_image(image_path, self.channels, self.size)
        except UNREADABLE as e:
            self._skip(image_path, f"unreadable image ({e})")
            return None
        return {"image": image, "text": self._text(text), "label": label, "key": index}

    def captions(self) -> list[str]:
        """The caption of every item that has one (the text corpus)."""
        return [self._text(t) for _, t, _ in self.entries if not isinstance(t, Path) or t.is_file()]


def _pick_split(cfg: DataConfig, split: str) -> tuple[Path, float | None]:
    """(root to read, hash-split fraction or None for "take every file")."""
    path = cfg.require_path()
    if cfg.test_path is not None:
        return Path(cfg.test_path if split == "test" else path), None
    return Path(path), cfg.test_fraction


def _keep(rel: str, split: str, fraction: float | None) -> bool:
    return fraction is None or in_test_split(rel, fraction) == (split == "test")


def _check_nonempty(n: int, root: Path, split: str, cfg: DataConfig, what: str) -> None:
    if n == 0:
        hint = (
            f"the '{split}' split took none of them (test_fraction={cfg.test_fraction}); set "
            "DataConfig.test_path, or test_fraction > 0 for a held-out split"
            if cfg.test_path is None
            else f"add {what}"
        )
        raise ValueError(f"{cfg.name} dataset {root}: no items in split '{split}': {hint}")


class FolderDataset(_UserImages):
    """Every image under ``root`` (recursive) with the caption in the same-named .txt file.

    item: {"image": (C, H, W) in [-1, 1], "text": str, "label": -1} or None (skipped)
    """

    def __init__(self, cfg: DataConfig, split: str):
        super().__init__(cfg)
        root, fraction = _pick_split(cfg, split)
        if not root.is_dir():
            raise FileNotFoundError(
                f"folder dataset: {root} is not a directory; set DataConfig.path to a folder of "
                "images with same-named .txt captions, e.g. data/my_images/cat.png + cat.txt"
            )
        images = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not images:
            raise ValueError(
                f"folder dataset {root}: no images found (looked for {', '.join(IMAGE_EXTENSIONS)} "
                "recursively); put image files with same-named .txt captions there"
            )
        for p in images:
            if _keep(p.relative_to(root).as_posix(), split, fraction):
                self.entries.append((p, p.with_suffix(".txt"), -1))
        _check_nonempty(len(self.entries), root, split, cfg, "images")


class JsonlDataset(_UserImages):
    """Lines of {"image": path (relative to the .jsonl's folder), "text": str, "label"?: int}.

    item: {"image": (C, H, W) in [-1, 1], "text": str, "label": int (-1 if absent)} or None
    """

    def __init__(self, cfg: DataConfig, split: str):
        super().__init__(cfg)
        path, fraction = _pick_split(cfg, split)
        if not path.is_file():
            raise FileNotFoundError(
                f"jsonl dataset: {path} does not exist; set DataConfig.path to a file of lines "
                "like "
                '{"image": "images/0001.png", "text": "a red circle"}'
            )
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                image, text, label = self._parse(line, path, lineno)
                if _keep(image, split, fraction):
                    self.entries.append((path.parent / image, text, label))
        _check_nonempty(len(self.entries), path, split, cfg, "lines")

    @staticmethod
    def _parse(line: str, path: Path, lineno: int) -> tuple[str, str, int]:
        example = '{"image": "images/0001.png", "text": "a caption"}'
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(
                f"{path}:{lineno}: not valid JSON ({e.msg}); expected {example}"
            ) from None
        ok = (
            isinstance(row, dict)
            and isinstance(row.get("image"), str)
            and isinstance(row.get("text"), str)
            and isinstance(row.get("label", -1), int)
        )
        if not ok:
            raise ValueError(
                f"{path}:{lineno}: expected an object with string 'image' and 'text' (and an "
                f"optional integer 'label'), e.g. {example}; got {line.strip()[:200]}"
            )
        return row["image"], row["text"], row.get("label", -1)
