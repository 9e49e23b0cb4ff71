"""Read a scene back from pixels and score images against texts, with no learned model.

``check_scene(image)`` -> [DetectedObject(color, shape, size, cx, cy, bbox, n_pixels)]:
- foreground: pixels whose largest channel is above half scale (128 of 255); the background
  of a scene is black, every object pixel a corner of the RGB cube;
- objects: the 8-connected components of the foreground, those below ``min_pixels`` (default
  half the smallest object's area) dropped as noise;
- colour: the palette colour nearest (Euclidean, RGB) the component's mean pixel;
- size: "small" / "large", whichever nominal side is nearer max(box width, box height);
- shape: the shape whose ``shape_mask`` drawn in the component's box has the largest IoU with
  the component (the renderer's own masks, so a rendered object scores IoU 1 on its shape);
- (cx, cy): the centre of the box, which is the rendered object's (cx, cy) exactly.

``matches(query, objects)``: the image holds exactly ``query.n_objects`` objects, one per slot
of the query (a bipartite assignment where each slot's stated size / colour / shape agree), and
the stated relation holds (``relation_holds``) for some such assignment.

``t2i_scores(prompts, images)`` scores a ``benchmark_prompts`` set per GenEval category.
``python -m mmar.evaluation.check_scene --n 5000 --json FILE`` validates the checker on rendered
test scenes: agreement = same multiset of (colour, shape, size) and centres within 1 px.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from mmar.data.images import pil_to_tensor
from mmar.data.scene import (
    COLORS,
    SHAPES,
    Scene,
    object_side,
    relation_holds,
    render_scene,
    sample_scene,
    shape_mask,
)
from mmar.data.scene_text import Group, SceneQuery, parse_scene_text

_FOREGROUND = 128  # max channel above this (0..255) is an object pixel; the background is 0
_PALETTE = np.array(list(COLORS.values()), dtype=np.float64)  # (6, 3)


@dataclasses.dataclass(frozen=True)
class DetectedObject:
    """An object read from pixels; bbox = (x0, y0, x1, y1), x1 / y1 exclusive."""

    color: str
    shape: str
    size: str
    cx: float
    cy: float
    bbox: tuple[int, int, int, int]
    n_pixels: int


class Described(Protocol):
    """An object with attributes and a centre: SceneObject or DetectedObject."""

    @property
    def color(self) -> str: ...
    @property
    def shape(self) -> str: ...
    @property
    def size(self) -> str: ...
    @property
    def cx(self) -> float: ...
    @property
    def cy(self) -> float: ...


def to_rgb_array(image: Image.Image | np.ndarray | torch.Tensor) -> np.ndarray:
    """PIL image, (H, W, 3) array in 0..255 or (3, H, W) tensor in [-1, 1] -> (H, W, 3) float."""
    if isinstance(image, torch.Tensor):
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"check_scene: expected a (3, H, W) tensor, got {tuple(image.shape)}")
        return ((image.detach().float().cpu().permute(1, 2, 0) + 1) * 127.5).numpy()
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    arr = np.asarray(image, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"check_scene: expected an (H, W, 3) RGB array, got {arr.shape}")
    return arr


def check_scene(
    image: Image.Image | np.ndarray | torch.Tensor, min_pixels: int | None = None
) -> list[DetectedObject]:
    """The objects of an image, read from its pixels (see the module doc), sorted by (cy, cx).

    image: PIL RGB, (H, W, 3) array in 0..255 or (3, H, W) tensor in [-1, 1]; H is the
    image_size the object sides are judged at.
    """
    from scipy import ndimage  # a scikit-learn dependency

    rgb = to_rgb_array(image)
    size = rgb.shape[0]
    small, large = object_side("small", size), object_side("large", size)
    if min_pixels is None:
        min_pixels = max(2, int(min(shape_mask(s, small, small).sum() for s in SHAPES)) // 2)
    labels, _ = ndimage.label(rgb.max(axis=2) > _FOREGROUND, structure=np.ones((3, 3)))
    found = []
    for k, (sy, sx) in enumerate(ndimage.find_objects(labels), start=1):
        comp = labels[sy, sx] == k  # (h, w) the component in its box
        n_pixels = int(comp.sum())
        if n_pixels < min_pixels:
            continue
        mean = rgb[sy, sx][comp].mean(axis=0)  # (3,)
        color = list(COLORS)[int(((_PALETTE - mean) ** 2).sum(axis=1).argmin())]
        h, w = comp.shape
        ious = [
            (comp & shape_mask(s, w, h)).sum() / (comp | shape_mask(s, w, h)).sum() for s in SHAPES
        ]
        side = max(w, h)
        found.append(
            DetectedObject(
                color=color,
                shape=SHAPES[int(np.argmax(ious))],
                size="small" if abs(side - small) <= abs(side - large) else "large",
                cx=(sx.start + sx.stop - 1) / 2,
                cy=(sy.start + sy.stop - 1) / 2,
                bbox=(sx.start, sy.start, sx.stop, sy.stop),
                n_pixels=n_pixels,
            )
        )
    return sorted(found, key=lambda o: (o.cy, o.cx))


def _fits(slot: Group, obj: Described) -> bool:
    return (
        slot.shape == obj.shape
        and (slot.size is None or slot.size == obj.size)
        and (slot.color is None or slot.color == obj.color)
    )


def _perfect_matching(fits: list[list[bool]]) -> bool:
    """Whether every slot (row) gets its own object (column): Kuhn's augmenting paths."""
    owner: dict[int, int] = {}

    def augment(slot: int, seen: set[int]) -> bool:
        for obj, ok in enumerate(fits[slot]):
            if ok and obj not in seen:
                seen.add(obj)
                if obj not in owner or augment(owner[obj], seen):
                    owner[obj] = slot
                    return True
        return False

    return all(augment(s, set()) for s in range(len(fits)))


def matches(query: SceneQuery, objects: Sequence[Described], image_size: int = 32) -> bool:
    """Whether ``objects`` (detected, or a Scene's) are exactly what ``query`` states."""
    if len(objects) != query.n_objects:
        return False
    if query.relation is not None:  # two single objects: try both assignments
        a, b = query.groups
        return any(
            _fits(a, objects[i])
            and _fits(b, objects[1 - i])
            and relation_holds(objects[i], query.relation, objects[1 - i], image_size)
            for i in (0, 1)
        )
    return _perfect_matching([[_fits(s, o) for o in objects] for s in query.slots()])


def caption_matches(caption: str, scene: Scene) -> bool:
    """Whether ``caption`` states ``scene`` exactly: it parses, every group states size and
    colour, its objects are the scene's (``matches``) and any relation it states holds."""
    query = parse_scene_text(caption)
    if query is None or any(g.size is None or g.color is None for g in query.groups):
        return False
    return matches(query, scene.objects, scene.image_size)


def same_object(a: Described, b: Described, tolerance: float) -> bool:
    """Same colour, shape and size, centres within ``tolerance`` px on each axis."""
    return (a.color, a.shape, a.size) == (b.color, b.shape, b.size) and (
        abs(a.cx - b.cx) <= tolerance and abs(a.cy - b.cy) <= tolerance
    )


def agrees(scene: Scene, detected: Sequence[Described], tolerance: float = 1.0) -> bool:
    """Same multiset of (colour, shape, size) as ``scene``, each object's centre within
    ``tolerance`` px of its counterpart's (matched as a bipartite assignment)."""
    if len(detected) != len(scene.objects):
        return False
    return _perfect_matching(
        [[same_object(o, d, tolerance) for d in detected] for o in scene.objects]
    )


def t2i_scores(prompts: Sequence[Any], images: Sequence[Any]) -> dict[str, Any]:
    """GenEval-style scores of images generated from ``benchmark_prompts``.

    prompts: BenchPrompt(category, heldout, text, query); images: one per prompt (PIL, array or
    (3, H, W) tensor). Returns {"categories": {category: {"seen": acc, "heldout": acc | None,
    "n_seen": int, "n_heldout": int}}, "overall": {"seen": mean of the categories' seen accs,
    "heldout": mean over the categories that have held-out prompts (None if none)}, "correct":
    [bool per prompt]}.
    """
    if len(prompts) != len(images) or not prompts:
        raise ValueError(f"t2i_scores: {len(images)} images for {len(prompts)} prompts")
    correct = [
        matches(p.query, check_scene(im), to_rgb_array(im).shape[0])
        for p, im in zip(prompts, images)
    ]
    cats: dict[str, Any] = {}
    for p, ok in zip(prompts, correct):
        cats.setdefault(p.category, {"seen": [], "heldout": []})[
            "heldout" if p.heldout else "seen"
        ].append(ok)
    out: dict[str, Any] = {}
    for cat, hits in cats.items():
        out[cat] = {
            k: float(np.mean(hits[k])) if hits[k] else None for k in ("seen", "heldout")
        } | {"n_seen": len(hits["seen"]), "n_heldout": len(hits["heldout"])}

    def overall(k: str) -> float | None:
        vals = [v[k] for v in out.values() if v[k] is not None]
        return float(np.mean(vals)) if vals else None

    return {
        "categories": out,
        "overall": {"seen": overall("seen"), "heldout": overall("heldout")},
        "correct": correct,
    }


def validate_checker(
    n: int, image_size: int = 32, noise: float = 0.0, seed: int = 0, allow_heldout: bool = False
) -> dict[str, Any]:
    """Agreement of ``check_scene`` with the specification of n rendered scenes.

    Scenes are those of the test split (``ShapesDataset(test)``, item i) or, with
    ``allow_heldout``, drawn with every composition allowed from (seed, i); ``noise``: Gaussian
    noise of that standard deviation in [-1, 1] units added to each image (generator seed).
    """
    from mmar.data.config import DataConfig
    from mmar.data.shapes import ShapesDataset

    ds = ShapesDataset(
        DataConfig(name="shapes", image_size=image_size, test_length=max(n, 1)), "test"
    )
    g = torch.Generator().manual_seed(seed)
    failures: list[dict[str, Any]] = []
    t0, agree = time.perf_counter(), 0
    for i in range(n):
        if allow_heldout:
            scene = sample_scene(
                np.random.default_rng((2, seed, i)), image_size, allow_heldout=True
            )
        else:
            scene = ds.scene(i)
        x = pil_to_tensor([render_scene(scene)], 3)[0]  # (3, H, W) in [-1, 1]
        if noise:
            x = x + noise * torch.randn(x.shape, generator=g)
        found = check_scene(x)
        if agrees(scene, found):
            agree += 1
        elif len(failures) < 20:
            failures.append(
                {
                    "index": i,
                    "scene": scene.to_dict(),
                    "found": [dataclasses.asdict(o) for o in found],
                }
            )
    return {
        "n": n,
        "agree": agree,
        "agreement": agree / max(n, 1),
        "image_size": image_size,
        "noise": noise,
        "compositions": "all" if allow_heldout else "test split",
        "seconds": time.perf_counter() - t0,
        "failures": failures,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m mmar.evaluation.check_scene",
        description="Validate check_scene on rendered test scenes: agreement with the scene "
        "specification (same colour/shape/size multiset, centres within 1 px).",
    )
    p.add_argument("--n", type=int, default=5000, help="scenes to render (default 5000)")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--noise", type=float, default=0.0, help="Gaussian noise std in [-1, 1] units")
    p.add_argument("--all-compositions", action="store_true", help="held-out ones included")
    p.add_argument("--json", default=None, metavar="FILE", help="write the result as JSON")
    args = p.parse_args(argv)
    if args.n < 1:
        p.error(f"--n must be >= 1, got {args.n}")
    res = validate_checker(args.n, args.image_size, args.noise, allow_heldout=args.all_compositions)
    print(
        f"check_scene agreement: {res['agree']}/{res['n']} = {100 * res['agreement']:.2f}% "
        f"({res['compositions']}, {res['image_size']} px, noise {res['noise']}, "
        f"{res['seconds']:.1f} s)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
