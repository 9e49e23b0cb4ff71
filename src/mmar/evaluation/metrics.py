"""The evaluation metrics, each a small function of images / texts (no model loop here).

digits (mnist, digits), judged by the CNN of ``judge.py``:
- T2I accuracy     = mean_i [judge.predict(x_i) == prompted digit_i]
- classifier-FID   = frechet_distance of judge features, generated vs held-out real (and the
                     floor: two disjoint held-out real sets). Not the Inception FID.
- caption accuracy = mean_i [parse_digit(caption_i) == label_i]
shapes, judged from pixels by ``mmar.evaluation.check_scene``:
- T2I accuracy     = per GenEval category (seen / held-out compositions) of ``benchmark_prompts``:
                     mean_i [matches(query_i, check_scene(x_i))]; overall = mean of categories
- caption exact    = mean_i [parse_scene_text(caption_i) states the image's scene exactly]
- VQA accuracy     = mean_i [normalize_answer(answer_i) == true answer_i], per question kind
both: text NLL of held-out captions given the image, nats per token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from mmar.data.captions import digit_caption, parse_digit
from mmar.data.scene import Scene
from mmar.data.scene_text import normalize_answer, parse_scene_text, question_kind
from mmar.data.shapes import BenchPrompt
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


def shapes_t2i_scores(
    prompts: Sequence[BenchPrompt], images: Sequence[Image.Image | torch.Tensor]
) -> dict[str, Any]:
    """GenEval-style T2I scores of images generated from ``benchmark_prompts``: per category,
    seen and held-out, and overall (see ``check_scene.t2i_scores``)."""
    from mmar.evaluation.check_scene import t2i_scores  # lazy: runnable as python -m

    return t2i_scores(prompts, images)


def shapes_caption_accuracy(captions: Sequence[str], scenes: Sequence[Scene]) -> dict[str, Any]:
    """Caption exact match: the share of captions whose parsed scene is the image's full
    description (``check_scene.caption_matches``); "parsed": the share inside the grammar.

    Returns {"exact": float, "parsed": float, "correct": [bool per caption]}.
    """
    if len(captions) != len(scenes) or not captions:
        raise ValueError(
            f"shapes_caption_accuracy: {len(captions)} captions for {len(scenes)} scenes"
        )
    from mmar.evaluation.check_scene import caption_matches  # lazy: runnable as python -m

    correct = [caption_matches(c, s) for c, s in zip(captions, scenes)]
    parsed = [parse_scene_text(c) is not None for c in captions]
    return {"exact": float(np.mean(correct)), "parsed": float(np.mean(parsed)), "correct": correct}


def shapes_vqa_accuracy(
    answers: Sequence[str], questions: Sequence[str], truths: Sequence[str]
) -> dict[str, Any]:
    """VQA exact match of normalised answers (``normalize_answer``), overall and per question
    kind (``question_kind``): {"accuracy": float, "per_kind": {kind: float}, "n_per_kind"}."""
    if not len(answers) == len(questions) == len(truths) or not answers:
        raise ValueError(
            f"shapes_vqa_accuracy: {len(answers)} answers, {len(questions)} questions, "
            f"{len(truths)} true answers"
        )
    hits: dict[str, list[bool]] = {}
    for a, q, t in zip(answers, questions, truths):
        hits.setdefault(question_kind(q), []).append(normalize_answer(a) == normalize_answer(t))
    return {
        "accuracy": float(np.mean([h for v in hits.values() for h in v])),
        "per_kind": {k: float(np.mean(v)) for k, v in sorted(hits.items())},
        "n_per_kind": {k: len(v) for k, v in sorted(hits.items())},
    }


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
