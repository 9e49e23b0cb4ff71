"""What a web request may send, checked before the model sees it (pure functions, no gradio).

Every refusal is an ``InputError`` whose message says what was wrong and what to send instead;
the app shows it in the page (gr.Error) and logs it. What can be fixed is fixed and reported as
a ``Notice`` (an image of another size is resized to the model's).

    image = read_image_file(path, max_bytes=10 * 2**20, max_pixels=4096 * 4096)
    image, notice = fit_to_model(image, 32)            # (32, 32), "resized from ..." or None
    prompt = check_prompt(text, max_chars=1024)
    keep = keep_mask(32, parse_box("8,8,24,24", 32), painted=None)   # (32, 32) bool, True = keep
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from mmar.data.images import to_eight_bit
from mmar.pipelines.editing import box_keep_mask

Level = Literal["info", "warning"]


class InputError(ValueError):
    """A request the app refuses: the message names the field, what was wrong and an example."""


@dataclasses.dataclass(frozen=True)
class Notice:
    """Something the app changed or wants the user to know (shown as gr.Info / gr.Warning)."""

    level: Level
    message: str


def _mb(n: float) -> str:
    return f"{n / 2**20:.1f} MB"


def check_prompt(
    text: str | None, max_chars: int, what: str = "prompt", required: bool = False
) -> str:
    """``text`` stripped; InputError when longer than ``max_chars`` characters, or empty and
    ``required`` (a text-to-image prompt may be empty: an unconditional sample)."""
    text = (text or "").strip()
    if len(text) > max_chars:
        raise InputError(
            f"the {what} has {len(text)} characters; at most {max_chars} are accepted (the model "
            f"reads only its first tokens anyway): shorten it, e.g. 'a red circle'"
        )
    if required and not text:
        raise InputError(f"the {what} is empty; type one, e.g. 'what colour is the circle?'")
    return text


def check_pixels(width: int, height: int, max_pixels: int, what: str = "the image") -> None:
    """InputError when ``width`` x ``height`` exceeds ``max_pixels``."""
    if width * height > max_pixels:
        raise InputError(
            f"{what} is {width} x {height} = {width * height} pixels; at most {max_pixels} are "
            "accepted: scale it down (the model works at a few dozen pixels per side anyway)"
        )


def read_image_file(path: str | Path, max_bytes: int, max_pixels: int) -> Image.Image:
    """The image in file ``path``, decoded, in a mode PIL converts to L / RGB. InputError for a
    file over ``max_bytes``, a file that is not an image, an image of more than ``max_pixels``
    (checked from the header, before the pixels are decoded) or pixels of no standard range."""
    name = Path(path).name
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise InputError(f"the upload {name} cannot be read ({e.strerror}); upload it again") from e
    if size > max_bytes:
        raise InputError(
            f"the upload {name} is {_mb(size)}; at most {_mb(max_bytes)} is accepted: upload a "
            "smaller image, e.g. a PNG of at most 1024 x 1024 pixels"
        )
    try:
        with Image.open(path) as im:
            check_pixels(*im.size, max_pixels, what=f"the upload {name}")
            im.load()
            return to_eight_bit(im)
    except InputError:
        raise
    except ValueError as e:  # to_eight_bit: 32-bit / float pixels
        raise InputError(f"the upload {name}: {e}") from e
    except Exception as e:  # UnidentifiedImageError, a truncated file, a decompression bomb
        raise InputError(
            f"the upload {name} is not an image this app can read ({type(e).__name__}); "
            "upload a PNG, JPEG, WebP, GIF or BMP file"
        ) from e


def fit_to_model(image: Image.Image, size: int) -> tuple[Image.Image, Notice | None]:
    """``image`` as ``size`` x ``size`` pixels and a notice when it had to be resized: a square
    image whose side is a multiple of ``size`` is reduced by averaging (exact for an image the
    app enlarged itself), any other is resized (bicubic; a non-square one is stretched)."""
    w, h = image.size
    if (w, h) == (size, size):
        return image, None
    if w == h and w % size == 0:
        k = w // size
        out = image.reduce(k)
        return out, Notice("info", f"the image is {w} x {h} pixels: scaled down {k}x to the "
                                   f"model's {size} x {size}")  # fmt: skip
    out = image.resize((size, size), Image.Resampling.BICUBIC)
    level: Level = "info" if w == h else "warning"
    stretched = "" if w == h else " (stretched: it is not square; crop it first to keep its shape)"
    return out, Notice(
        level, f"the image is {w} x {h} pixels: resized to the model's {size} x {size}{stretched}"
    )


def parse_box(text: str | None, size: int) -> tuple[int, int, int, int] | None:
    """A box ``"x0,y0,x1,y1"`` in the model's pixel coordinates (x1, y1 exclusive) inside a
    ``size`` x ``size`` image, or None for an empty field."""
    text = (text or "").strip()
    if not text:
        return None
    example = f"e.g. {size // 4},{size // 4},{3 * size // 4},{3 * size // 4}"
    parts = [p for p in text.replace(" ", ",").split(",") if p]
    try:
        box = tuple(int(p) for p in parts)
    except ValueError:
        box = ()
    if len(box) != 4:
        raise InputError(f"box {text!r}: expected four whole numbers x0,y0,x1,y1; {example}")
    try:
        box_keep_mask(size, box)
    except ValueError:
        raise InputError(
            f"box {text!r} is not a non-empty box inside the {size} x {size} image (need 0 <= x0 "
            f"< x1 <= {size} and 0 <= y0 < y1 <= {size}, in the model's pixels); {example}"
        ) from None
    x0, y0, x1, y1 = box
    return x0, y0, x1, y1


def painted_mask(layers: Sequence[Image.Image], size: int) -> np.ndarray | None:
    """(size, size) bool, True where any layer is painted (alpha > 0; a model pixel counts as
    painted when any of the layer pixels it covers is), or None without layers."""
    if not layers:
        return None
    painted = np.zeros((size, size), dtype=bool)
    for layer in layers:
        alpha = layer.getchannel("A") if "A" in layer.getbands() else layer.convert("L")
        ys, xs = np.nonzero(np.asarray(alpha))  # the painted layer pixels
        painted[ys * size // alpha.height, xs * size // alpha.width] = True  # their model pixels
    return painted


def keep_mask(size: int, box: Sequence[int] | None, painted: np.ndarray | None) -> np.ndarray:
    """(size, size) bool keep mask (True = keep) regenerating the ``box`` and the ``painted``
    pixels; InputError when that is nothing."""
    regenerate = np.zeros((size, size), dtype=bool)
    if box is not None:
        regenerate |= ~box_keep_mask(size, box).numpy()
    if painted is not None:
        regenerate |= painted
    if not regenerate.any():
        raise InputError(
            "the mask is empty: paint the region to regenerate with the brush, or give a box "
            f"x0,y0,x1,y1, e.g. {size // 4},{size // 4},{3 * size // 4},{3 * size // 4}"
        )
    return ~regenerate


def upscale(image: Image.Image, display_size: int) -> Image.Image:
    """``image`` enlarged by the largest whole factor that keeps it within ``display_size``
    pixels per side (at least 1), nearest neighbour: every model pixel a sharp square."""
    k = max(1, display_size // max(image.size))
    if k == 1:
        return image
    return image.resize((image.width * k, image.height * k), Image.Resampling.NEAREST)
