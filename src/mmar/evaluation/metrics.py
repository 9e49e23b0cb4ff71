"""The evaluation metrics, each a small function of images / texts (no model loop here).

digits (mnist, digits), judged by the CNN of ``judge.py``:
- T2I accuracy     = mean_i [judge.predict(x_i) == prompted digit_i]
- classifier-FID   = frechet_distance of judge features, generated vs held-out real (and the
                     floor: two disjoint held-out real sets). Not the Inception FID.
- caption accuracy = mean_i [parse_digit(caption_i) == label_i]
shapes, judged from pixels by ``mmar.data.shapes.check_shapes``:
- attribute accuracy (colour, shape, position, all three) of generated images and of captions,
  caption exact match.
both: text NLL of held-out captions given the image, nats per token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from mmar.data.captions import digit_caption, parse_digit
from mmar.data.shapes import ShapeSpec, check_shapes, parse_shapes_caption
from mmar.evaluation.frechet import feature_statistics, frechet_distance
from mmar.evaluation.judge import Judge

if TYPE_CHECKING:
    from mmar.pipelines.mmar import MMAR


def digit_prompts(n_per_class: int) -> tuple[list[str], list[int]]:
    """n_per_class prompts for each of the ten digits, cycling through the caption templates."""
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be >= 1, got {n_per_class}")
    pairs = [(digit_caption(d, k), d) for d in range(10) for k in range(n_per_class)]
    return [p for p, _ in pairs], [d for _, d in pairs]


def t2i_digit_accuracy(
    judge: Judge, images: torch.Tensor, labels: Sequence[int] | torch.Tensor
) -> dict[str, Any]:
    """Share of generated images (B, C, H, W) whose judged digit is the prompted one.

    Returns {"accuracy": float, "per_digit": [accuracy of digit d or None if never prompted]}.
    """
    labels = torch.as_tensor(labels)
    hit = (judge.predict(images).cpu() == labels).float()  # (B,)
    per = [
        hit[labels == d].mean().item() if (labels == d).any() else None
        for d in range(judge.config.num_classes)
    ]
    return {"accuracy": hit.mean().item(), "per_digit": per}


def classifier_fid(
    judge: Judge, images_a: torch.Tensor, images_b: torch.Tensor, batch_size: int = 256
) -> float:
    """Fréchet distance between two image sets (N, C, H, W) in the judge's feature space.

    Called "classifier-FID" everywhere: it is *not* comparable with Inception FID numbers.
    """
    judge.eval()
    mu_a, s_a = feature_statistics(judge.features, images_a, batch_size)
    mu_b, s_b = feature_statistics(judge.features, images_b, batch_size)
    return frechet_distance(mu_a, s_a, mu_b, s_b)


def caption_digit_accuracy(captions: list[str], labels: Sequence[int] | torch.Tensor) -> float:
    """Share of captions that name exactly the right digit (``parse_digit``)."""
    if len(captions) != len(labels) or not captions:
        raise ValueError(
            f"caption_digit_accuracy: {len(captions)} captions for {len(labels)} labels"
        )
    return float(np.mean([parse_digit(c) == int(y) for c, y in zip(captions, labels)]))


def spec_agreement(found: list[ShapeSpec] | None, target: list[ShapeSpec]) -> dict[str, bool]:
    """Which attributes of an image's objects match the target's.

    Compared as multisets over the objects, so one- and two-object images are scored alike:
    colour / shape right iff the sorted colours / shapes agree, position iff the set of quadrants
    does, "all" iff the objects are exactly the target's. ``found`` None (an unparseable caption)
    gets nothing right.
    """
    if found is None:
        return {"color": False, "shape": False, "position": False, "all": False}
    return {
        "color": sorted(s.color for s in found) == sorted(s.color for s in target),
        "shape": sorted(s.shape for s in found) == sorted(s.shape for s in target),
        "position": sorted(s.position for s in found) == sorted(s.position for s in target),
        "all": sorted(found, key=lambda s: s.position) == sorted(target, key=lambda s: s.position),
    }


def _mean_agreement(
    found_lists: Sequence[list[ShapeSpec] | None], target_lists: Sequence[list[ShapeSpec]]
) -> dict[str, float]:
    if len(found_lists) != len(target_lists) or not target_lists:
        raise ValueError(
            f"shapes metrics: {len(found_lists)} results for {len(target_lists)} targets"
        )
    rows = [spec_agreement(f, t) for f, t in zip(found_lists, target_lists)]
    return {k: float(np.mean([r[k] for r in rows])) for k in ("color", "shape", "position", "all")}


def _target_specs(text: str) -> list[ShapeSpec]:
    specs = parse_shapes_caption(text)
    if specs is None:
        raise ValueError(
            f"shapes metrics: {text!r} is not a shapes caption ('a red circle in the top left')"
        )
    return specs


def shapes_t2i_accuracy(
    images: Sequence[Image.Image | torch.Tensor], prompts: list[str]
) -> dict[str, float]:
    """Attribute accuracy of generated shapes images (PIL or (3, H, W) in [-1, 1]), read back
    from pixels by ``check_shapes``, against the specs their prompts describe."""
    return _mean_agreement([check_shapes(im) for im in images], [_target_specs(p) for p in prompts])


def _normalise(text: str) -> str:
    return " ".join(text.lower().replace("-", " ").strip(" .!").split())


def shapes_caption_accuracy(captions: list[str], true_captions: list[str]) -> dict[str, float]:
    """Caption exact match (case, spacing, hyphens and final punctuation ignored) and attribute
    accuracy of what ``parse_shapes_caption`` reads from each caption."""
    scores = _mean_agreement(
        [parse_shapes_caption(c) for c in captions], [_target_specs(t) for t in true_captions]
    )
    exact = float(
        np.mean([_normalise(c) == _normalise(t) for c, t in zip(captions, true_captions)])
    )
    return {"exact": exact, **scores}


def text_nll_per_token(
    model: MMAR, images: torch.Tensor, texts: list[str], batch_size: int = 64
) -> float:
    """sum NLL / sum tokens (nats per token) of ``texts`` given ``images`` (B, C, H, W), summed
    over batches of ``model.text_nll``."""
    nats, tokens = 0.0, 0
    for i in range(0, len(texts), batch_size):
        n, t = model.text_nll(images[i : i + batch_size], texts[i : i + batch_size])
        nats, tokens = nats + n, tokens + t
    if tokens == 0:
        raise ValueError("text_nll_per_token: the texts have no tokens")
    return nats / tokens
