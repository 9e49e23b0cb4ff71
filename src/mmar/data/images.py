"""PIL images <-> float tensors in [-1, 1]: the one pair of conversions the processor, the data
sets and the evaluation share.

    pil_to_tensor([PIL, ...], channels, size=None) -> (B, C, H, W) float32 in [-1, 1]
    tensor_to_pil((B, C, H, W) in [-1, 1])          -> [PIL "L" (C = 1) or "RGB" (C = 3), ...]

value = pixel / 127.5 - 1 and back with rounding, so tensor_to_pil(pil_to_tensor(x)) == x for
8-bit images. Used by the processor (captioning inputs, generated outputs), the data sets and
the evaluation.

Pixel formats (``to_eight_bit``): 16-bit grey (PIL modes I;16, I;16B, ...: 16-bit PNG and TIFF) is
scaled by its real depth (65535 -> 255); 16-bit RGB(A) and grey+alpha PNGs PIL already reads as
8-bit RGB(A). 32-bit integer (mode I) and floating-point (mode F) pixels have no standard range
and are refused with a ValueError naming the mode, never guessed. Palette, CMYK, 1-bit and the
other modes go through PIL's ``convert``; an alpha channel is dropped (the colour stored under a
transparent pixel is kept, as ``convert`` does).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

MODES = {1: "L", 3: "RGB"}
# 16-bit single-channel modes (PNG, TIFF), scaled to 8 bits by their depth
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def to_eight_bit(im: Image.Image) -> Image.Image:
    """``im`` in a mode PIL's ``convert("L" / "RGB")`` maps correctly.

    16-bit grey -> "L" as round(value / 257) (0 -> 0, 65535 -> 255; ``convert`` would clip every
    value above 255 to white). Modes I (32-bit integer) and F (floating point) raise ValueError:
    their range is unknown (an HDR float, a depth map), so any scaling would be a guess. Every
    other mode is returned unchanged.
    """
    if im.mode in SIXTEEN_BIT_MODES:
        a = np.asarray(im).astype(np.float64)  # (H, W) in [0, 65535]
        return Image.fromarray(np.round(a / 257.0).astype(np.uint8))
    if im.mode[0] in "IF":
        kind = "floating-point" if im.mode[0] == "F" else "32-bit integer"
        raise ValueError(
            f"{kind} pixels (PIL mode {im.mode}) have no standard range; save the image as an "
            "8- or 16-bit PNG"
        )
    return im


def pil_to_tensor(
    images: list[Image.Image], channels: int, size: int | None = None
) -> torch.Tensor:
    """PIL images -> (B, channels, H, W) float32 in [-1, 1].

    Each image is converted to "L" (1 channel) or "RGB" (3) (16-bit grey scaled by its depth;
    modes I and F refused: see ``to_eight_bit``); with ``size`` it is also resized
    (bicubic) to ``size`` x ``size`` when it has another size, so any file can be fed to a model.
    Without ``size`` the images must share one size.
    """
    if channels not in MODES:
        raise ValueError(f"pil_to_tensor: channels must be 1 or 3, got {channels}")
    arrays = []
    for im in images:
        im = to_eight_bit(im).convert(MODES[channels])
        if size is not None and im.size != (size, size):
            im = im.resize((size, size), Image.Resampling.BICUBIC)
        a = np.asarray(im, dtype=np.float32).reshape(im.size[1], im.size[0], channels)
        arrays.append(a.transpose(2, 0, 1))  # (C, H, W)
    sizes = {a.shape for a in arrays}
    if len(sizes) > 1:
        raise ValueError(f"pil_to_tensor: images of different sizes {sorted(sizes)}; pass size=")
    return torch.from_numpy(np.stack(arrays)) / 127.5 - 1.0  # (B, C, H, W)


def tensor_to_pil(images: torch.Tensor) -> list[Image.Image]:
    """(B, C, H, W) in [-1, 1] (clamped) -> PIL images, mode "L" for C = 1 and "RGB" for C = 3."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    arr = x.permute(0, 2, 3, 1).numpy()  # (B, H, W, C)
    return [
        Image.fromarray(a[..., 0] if a.shape[-1] == 1 else np.ascontiguousarray(a)) for a in arr
    ]
