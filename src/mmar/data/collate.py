"""collate: a list of dataset items (some Unreadable) -> one batch dict."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mmar.data.unreadable import UNKNOWN, Unreadable

Item = dict[str, Any] | Unreadable | None


def unreadable_items(items: Sequence[Item]) -> list[Unreadable]:
    """The items that are not readable, as Unreadable (a bare None, from a dataset of one's own
    that gives no reason, becomes ``Unreadable("?", "unreadable item")``)."""
    return [
        it if isinstance(it, Unreadable) else Unreadable("?", UNKNOWN)
        for it in items
        if not isinstance(it, dict)
    ]


def collate(items: Sequence[Item]) -> dict[str, Any]:
    """Stack the readable items; count the rest.

    items: [{"image": (C, H, W)} or {"latents": (C, h, w)}, with "text": str, "label": int, and
      optionally "qa": [[question, answer], ...]] or Unreadable (or None)
    returns {"images": (B, C, H, W)} or {"latents": (B, C, h, w)}, plus "texts": list[str] (B),
      "qa": list (B) of each item's question-answer pairs ([] for an item without),
      "labels": (B,) long, "skipped": int (the unreadable items) and "unreadable": the
      Unreadable items themselves (what and why, for the consumer to report). When no item was
      readable, B = 0 and the tensor is ``torch.empty(0)`` under "images".
    """
    good = [it for it in items if isinstance(it, dict)]
    unreadable = unreadable_items(items)
    batch = {
        "texts": [it["text"] for it in good],
        "qa": [[(str(q), str(a)) for q, a in it.get("qa") or ()] for it in good],
        "labels": torch.tensor([it["label"] for it in good], dtype=torch.long),
        "skipped": len(unreadable),
        "unreadable": unreadable,
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
