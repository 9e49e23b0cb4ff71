"""collate: a list of dataset items (some None: unreadable files) -> one batch dict."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def collate(items: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
    """Stack the readable items; count the rest.

    items: [{"image": (C, H, W)} or {"latents": (C, h, w)}, with "text": str, "label": int] | None
    returns {"images": (B, C, H, W)} or {"latents": (B, C, h, w)}, plus "texts": list[str] (B),
      "labels": (B,) long, "skipped": int (the Nones). When every item was None, B = 0 and the
      tensor is ``torch.empty(0)`` under "images".
    """
    good = [it for it in items if it is not None]
    batch = {
        "texts": [it["text"] for it in good],
        "labels": torch.tensor([it["label"] for it in good], dtype=torch.long),
        "skipped": len(items) - len(good),
    }
    if not good:
        batch["images"] = torch.empty(0)
        return batch
    key = "latents" if "latents" in good[0] else "image"
    missing = [i for i, it in enumerate(good) if key not in it]
    if missing:
        raise ValueError(
            f"collate: items {missing[:5]} have no {key!r}; do not mix image and latent datasets"
        )
    batch["latents" if key == "latents" else "images"] = torch.stack([it[key] for it in good])
    return batch
