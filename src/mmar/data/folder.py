"""User data: a folder of images with same-named .txt captions, or a JSONL list of pairs.

Images are converted to the configured channels (PIL "L" or "RGB"; 16-bit grey by its depth,
see ``mmar.data.images.to_eight_bit``), center-cropped to a square and resized to
``image_size`` (``PIL.ImageOps.fit``), and scaled to [-1, 1]. An item that cannot be read is
never fatal: ``dataset[i]`` is then an :class:`~mmar.data.unreadable.Unreadable` naming the
image file and the reason (an unreadable image, a missing caption file, a caption file that is
not UTF-8), which ``collate`` drops and counts.

A malformed JSONL file is another matter: a line that is not a JSON object with string "image"
and "text" raises :class:`~mmar.config.DataError` naming the file and line when the dataset is
built, before any work starts.

Held-out split: ``DataConfig.test_path`` when given, else the files whose relative path hashes
(crc32) below ``test_fraction``: stable when files are added, independent of the run seed.
"""

from __future__ import annotations

import io
import json
import warnings
import zlib
from pathlib import Path

import torch
from PIL import Image, ImageOps

from mmar.config import DataError
from mmar.data.config import DataConfig
from mmar.data.images import pil_to_tensor, to_eight_bit
from mmar.data.unreadable import (
    MISSING_CAPTION,
    NON_UTF8_CAPTION,
    UNREADABLE_IMAGE,
    Unreadable,
    one_line,
)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_HASH_BUCKETS = 10_000
JSONL_EXAMPLE = '{"image": "images/0001.png", "text": "a caption", "label": 3}'
QA_EXAMPLE = '"qa": [["what colour is the circle?", "red"], ["how many squares are there?", "two"]]'


class ImageReadError(ValueError):
    """An image file could not be decoded; ``detail`` says why (one line), the message also
    names the file."""

    def __init__(self, source: str, detail: str):
        super().__init__(f"{source}: {detail}")
        self.detail = detail


def load_image(source: str | Path | io.BytesIO, channels: int, size: int) -> torch.Tensor:
    """An image file -> (channels, size, size) in [-1, 1]; raises ImageReadError if bad."""
    try:
        # PIL warns about files it can still decode (corrupt EXIF, a short TIFF read): the
        # image is used, and a warning printed from a DataLoader worker would break the
        # progress bar's line
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(source) as f:
                im = to_eight_bit(ImageOps.exif_transpose(f))
            im = im.convert("L" if channels == 1 else "RGB")
            im = ImageOps.fit(im, (size, size), method=Image.Resampling.BICUBIC)  # crop, resize
    # The file is at fault, whatever the decoders raise on it: OSError (truncated, not an
    # image), ValueError and DecompressionBombError in the fuzz tests, and Pillow's plugins have
    # raised SyntaxError, EOFError, SystemError or struct.error on crafted files. A file we did
    # not write is never a reason to stop training with a traceback.
    except Exception as e:
        name = "image bytes" if isinstance(source, io.BytesIO) else str(source)
        detail = one_line(e).replace(f" {str(source)!r}", "").replace(f" {source!r}", "")
        raise ImageReadError(name, detail) from e  # the file is named once, by the caller
    return pil_to_tensor([im], channels)[0]  # (C, H, W)


def label_fits(label: int) -> bool:
    """Whether ``label`` fits the int64 tensor ``collate`` puts labels in."""
    return -(2**63) <= label < 2**63


def read_caption(path: Path) -> str | Unreadable:
    """The stripped text of a caption file, or why it cannot be used (missing, not UTF-8)."""
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return Unreadable("", MISSING_CAPTION, f"no caption file {path.name}")
    except UnicodeDecodeError as e:
        return Unreadable("", NON_UTF8_CAPTION, f"{path.name}: {one_line(e)}")
    except OSError as e:  # a directory named x.txt, no permission, ...
        return Unreadable("", MISSING_CAPTION, f"{path.name}: {one_line(e)}")


def in_test_split(relative_path: str, test_fraction: float) -> bool:
    bucket = zlib.crc32(relative_path.replace("\\", "/").encode()) % _HASH_BUCKETS
    return bucket < test_fraction * _HASH_BUCKETS


class _UserImages(torch.utils.data.Dataset):
    """Shared by the folder and JSONL datasets: ``self.entries`` = [(image, caption, label)],
    ``self.qa`` = {entry index: its question-answer pairs} (JSONL lines with "qa")."""

    def __init__(self, cfg: DataConfig):
        self.channels = cfg.image_channels
        self.size = cfg.image_size
        self.entries: list[tuple[Path, str | Path, int]] = []  # (image, text or .txt path, label)
        self.qa: dict[int, list[tuple[str, str]]] = {}

    @property
    def has_qa(self) -> bool:
        """Whether some item has a question-answer pair (what train.kinds.vqa needs)."""
        return any(self.qa.values())

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict | Unreadable:
        image_path, caption, label = self.entries[index]
        text = read_caption(caption) if isinstance(caption, Path) else caption
        if isinstance(text, Unreadable):
            return Unreadable(str(image_path), text.kind, text.detail)
        try:
            image = load_image(image_path, self.channels, self.size)
        except ImageReadError as e:
            return Unreadable(str(image_path), UNREADABLE_IMAGE, e.detail)
        item = {"image": image, "text": text, "label": label, "key": index}
        if index in self.qa:
            item["qa"] = [list(pair) for pair in self.qa[index]]
        return item

    def captions(self) -> list[str]:
        """The caption of every item whose caption can be read, then every question and answer
        (the text corpus)."""
        texts = (read_caption(t) if isinstance(t, Path) else t for _, t, _ in self.entries)
        pairs = [t for qa in self.qa.values() for pair in qa for t in pair]
        return [t for t in texts if isinstance(t, str)] + pairs


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
        raise DataError(f"{cfg.name} dataset {root}: no items in split '{split}': {hint}")


class FolderDataset(_UserImages):
    """Every image under ``root`` (recursive) with the caption in the same-named .txt file.

    item: {"image": (C, H, W) in [-1, 1], "text": str, "label": -1, "key": index} or Unreadable
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
            raise DataError(
                f"folder dataset {root}: no images found (looked for {', '.join(IMAGE_EXTENSIONS)} "
                "recursively); put image files with same-named .txt captions there"
            )
        for p in images:
            if _keep(p.relative_to(root).as_posix(), split, fraction):
                self.entries.append((p, p.with_suffix(".txt"), -1))
        _check_nonempty(len(self.entries), root, split, cfg, "images")


class JsonlDataset(_UserImages):
    """Lines of {"image": path (relative to the .jsonl's folder), "text": str, "label"?: int,
    "qa"?: [[question, answer], ...]} (``mmar.data.shapes``' exported splits have "qa").

    item: {"image": (C, H, W) in [-1, 1], "text": str, "label": int (-1 if absent), "key"}, and
    "qa" where the line has it; or Unreadable. A line that is not such an object raises
    DataError naming the file and line.
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
        with open(path, "rb") as f:  # decoded per line, so a bad byte is named by its line
            for lineno, raw in enumerate(f, 1):
                line = self._decode(raw, path, lineno)
                if not line.strip():
                    continue
                image, text, label = self._parse(line, path, lineno)
                if _keep(image, split, fraction):
                    qa = self._parse_qa(line, path, lineno)
                    if qa is not None:
                        self.qa[len(self.entries)] = qa
                    self.entries.append((path.parent / image, text, label))
        _check_nonempty(len(self.entries), path, split, cfg, "lines")

    @staticmethod
    def _decode(raw: bytes, path: Path, lineno: int) -> str:
        try:  # utf-8-sig: a byte-order mark some editors write at the start is not an error
            return raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
        except UnicodeDecodeError as e:
            raise DataError(
                f"{path}:{lineno}: not UTF-8 ({e.reason} at byte {e.start}); save the file as "
                f"UTF-8, one object per line, e.g. {JSONL_EXAMPLE}"
            ) from None

    @staticmethod
    def _parse(line: str, path: Path, lineno: int) -> tuple[str, str, int]:
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(
                f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno}); expected one "
                f"object per line, e.g. {JSONL_EXAMPLE}"
            ) from None
        label = row.get("label", -1) if isinstance(row, dict) else None
        if not (
            isinstance(row, dict)
            and isinstance(row.get("image"), str)
            and row["image"] != ""
            and isinstance(row.get("text"), str)
            and isinstance(label, int)
            and not isinstance(label, bool)  # true / false are not labels
            and label_fits(label)
        ):
            got = " ".join(line.split())
            raise DataError(
                f"{path}:{lineno}: expected an object with a non-empty string 'image' and a "
                f"string 'text' (and an optional integer 'label'), e.g. {JSONL_EXAMPLE}; got "
                f"{got[:200]}{'...' if len(got) > 200 else ''}"
            )
        for field in ("image", "text"):
            try:
                row[field].encode("utf-8")
            except UnicodeEncodeError:
                raise DataError(
                    f"{path}:{lineno}: '{field}' holds a lone surrogate escape (e.g. \\ud800), "
                    f"which is not text; write the characters themselves, e.g. {JSONL_EXAMPLE}"
                ) from None
        return row["image"], row["text"], label

    @staticmethod
    def _parse_qa(line: str, path: Path, lineno: int) -> list[tuple[str, str]] | None:
        """The line's "qa" pairs (None when it has no "qa"); DataError when they are not a list
        of [question, answer] string pairs."""
        qa = json.loads(line).get("qa")
        if qa is None:
            return None
        ok = isinstance(qa, list) and all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(t, str) for t in p) for p in qa
        )
        if ok:
            try:
                "".join(t for p in qa for t in p).encode("utf-8")
            except UnicodeEncodeError:
                ok = False  # a lone surrogate escape (e.g. \ud800) is not text
        if not ok:
            got = json.dumps(qa)
            raise DataError(
                f"{path}:{lineno}: 'qa' must be a list of [question, answer] string pairs, e.g. "
                f"{QA_EXAMPLE}; got {got[:200]}{'...' if len(got) > 200 else ''}"
            )
        return [(q, a) for q, a in qa]
