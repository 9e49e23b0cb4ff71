"""Editing success on the shapes benchmark: erase one object of a scene and ask for another
colour or shape in its place (inpainting, mmar.pipelines.editing).

    res = evaluate_editing(model, n=100, seed=0, sampling=model.sampling)

Each case (``editing_cases``) takes a random test-like scene of 2 to 4 objects, picks one object
and changes its colour or its shape (half the cases each; never to a held-out pair). The region
to regenerate is that object's box grown by ``MARGIN`` px on every side (so the model must also
draw clean background around the new object); everything else is kept. The prompt is the edited
scene's full description in the training grammar ("a small red square and a large blue circle"),
so the model is told the whole target, as when it generates.

Read back by ``check_scene`` from the inpainted pixels:
- ``requested``: an object of the requested colour, shape and size whose centre is within
  ``TOLERANCE`` px of the erased one's;
- ``others_untouched``: every other object of the scene is still found with its colour, shape,
  size and centre (within 1 px);
- ``success``: the image is exactly the edited scene (``agrees``: the same objects, nothing
  else, every centre within ``TOLERANCE`` px): the measure the issue asks for.
Kept pixels come back bit-identical, so the other objects can only be disturbed through the
margin (a stray blob that touches them, or one the checker counts as an extra object).
Two controls are reported with it: the rendered edited scenes (the checker's ceiling, 1.0 when
the cases are valid) and the unedited sources (requested 0 by construction).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mmar.data.scene import (
    COLORS,
    HELDOUT_PAIRS,
    SHAPES,
    Scene,
    SceneObject,
    heldout_violations,
    render_scene,
    sample_scene,
)
from mmar.data.scene_text import canonical_text, describe_scene
from mmar.evaluation.check_scene import agrees, check_scene, same_object
from mmar.model.config import SamplingConfig

if TYPE_CHECKING:
    from mmar.pipelines.mmar import MMAR

MARGIN = 2  # px around the erased object's box that are regenerated too
TOLERANCE = 2.0  # px: how far the new object's centre may be from the erased one's


@dataclasses.dataclass(frozen=True)
class EditCase:
    """One edit: ``source`` with object ``index`` replaced by ``target.objects[index]``."""

    source: Scene
    target: Scene
    index: int
    change: str  # "colour" | "shape"
    box: tuple[int, int, int, int]  # (x0, y0, x1, y1) regenerated, x1/y1 exclusive
    prompt: str

    def keep_mask(self) -> torch.Tensor:
        """(H, W) bool, False in ``box``."""
        s = self.source.image_size
        keep = torch.ones(s, s, dtype=torch.bool)
        x0, y0, x1, y1 = self.box
        keep[y0:y1, x0:x1] = False
        return keep


def _changed(obj: SceneObject, change: str, rng: np.random.Generator) -> SceneObject:
    """``obj`` with another colour or shape, never a held-out (colour, shape) pair."""
    if change == "colour":
        options = [c for c in COLORS if c != obj.color and (c, obj.shape) not in HELDOUT_PAIRS]
        return dataclasses.replace(obj, color=options[int(rng.integers(len(options)))])
    options = [s for s in SHAPES if s != obj.shape and (obj.color, s) not in HELDOUT_PAIRS]
    return dataclasses.replace(obj, shape=options[int(rng.integers(len(options)))])


def editing_cases(n: int, seed: int = 0, image_size: int = 32) -> list[EditCase]:
    """``n`` edit cases (module doc), all randomness from ``seed``; none holds a held-out
    composition before or after the edit."""
    if n < 1:
        raise ValueError(f"editing_cases: n must be >= 1, got {n}")
    rng = np.random.default_rng((7, seed))
    cases: list[EditCase] = []
    while len(cases) < n:
        source = sample_scene(rng, image_size)
        if len(source.objects) < 2:
            continue
        index = int(rng.integers(len(source.objects)))
        change = ("colour", "shape")[len(cases) % 2]
        objects = list(source.objects)
        objects[index] = _changed(objects[index], change, rng)
        target = Scene(tuple(objects), image_size)
        if heldout_violations(target):
            continue  # e.g. a new shape makes a held-out relation triple
        x0, y0, x1, y1 = source.objects[index].box(image_size)
        box = (
            max(0, x0 - MARGIN),
            max(0, y0 - MARGIN),
            min(image_size, x1 + MARGIN),
            min(image_size, y1 + MARGIN),
        )
        prompt = canonical_text(describe_scene(target))
        cases.append(EditCase(source, target, index, change, box, prompt))
    return cases


def score_edits(cases: Sequence[EditCase], images: Sequence[Any]) -> dict[str, Any]:
    """requested / others_untouched / success shares (module doc) of one image per case."""
    requested = untouched = success = 0
    per_change = {"colour": [0, 0], "shape": [0, 0]}  # [successes, cases]
    for case, image in zip(cases, images, strict=True):
        found = check_scene(image)
        new = case.target.objects[case.index]
        others = [o for i, o in enumerate(case.target.objects) if i != case.index]
        requested += any(same_object(d, new, TOLERANCE) for d in found)
        untouched += all(any(same_object(d, o, 1.0) for d in found) for o in others)
        ok = agrees(case.target, found, TOLERANCE)
        success += ok
        per_change[case.change][0] += ok
        per_change[case.change][1] += 1
    n = len(cases)
    return {
        "success": success / n,
        "requested": requested / n,
        "others_untouched": untouched / n,
        "success_per_change": {k: s / max(c, 1) for k, (s, c) in per_change.items()},
        "n": n,
    }


def evaluate_editing(
    model: MMAR, n: int, seed: int, sampling: SamplingConfig | None = None
) -> dict[str, Any]:
    """Editing scores of ``model`` on ``n`` cases (module doc) with the controls, as one
    JSON-able dict. Case i is inpainted with seed ``seed + i``."""
    size = model.config.image_tokenizer.image_size
    cases = editing_cases(n, seed, size)
    sources = [render_scene(c.source) for c in cases]
    keep = torch.stack([c.keep_mask() for c in cases])  # (n, H, W)
    t0 = time.perf_counter()
    edited = model.inpaint(sources, keep, [c.prompt for c in cases], sampling, seed=seed)
    seconds = time.perf_counter() - t0
    res = score_edits(cases, edited)
    res.update(
        seconds=seconds,
        images_per_second=n / max(seconds, 1e-9),
        control_rendered_targets=score_edits(cases, [render_scene(c.target) for c in cases])[
            "success"
        ],
        control_unedited_requested=score_edits(cases, sources)["requested"],
        examples=[{"prompt": c.prompt, "change": c.change, "box": list(c.box)} for c in cases[:3]],
    )
    return res
