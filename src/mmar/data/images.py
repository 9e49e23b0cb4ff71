"""PIL images <-> float tensors in [-1, 1]: the one pair of conversions the processor, the data
sets and the evaluation share.

    pil_to_tensor([PIL, ...], channels, size=None) -> (B, C, H, W) float32 in [-1, 1]
    tensor_to_pil((B, C, H, W) in [-1, 1])          -> [PIL "L" (C = 1) or "RGB" (C = 3), ...]

value = pixel / 127.5 - 1 and back with rounding, so tensor_to_pil(pil_to_tensor(x)) == x for
8-bit images. Used by the processor (captioning inputs, generated outputs), the data sets and
the evaluation.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

MODES = {1: "L", 3: "RGB"}


def pil_to_tensor(
    images: list[Image.Image], channels: int, size: int | None = None
) -> torch.Tensor:
    """PIL images -> (B, channels, H, W) float32 in [-1, 1].

    Each image is converted to "L" (1 channel) or "RGB" (3); with ``size`` it is also resized
    (bicubic) to ``size`` x ``size`` when it has another size, so any file can be fed to a model.
    Without ``size`` the images must share one size.
    """
    if channels not in MODES:
        raise ValueError(f"pil_to_tensor: channels must be 1 or 3, got {channels}")
    arrays = []
    for im in images:
        im = im.convert(MODES[channels])
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
