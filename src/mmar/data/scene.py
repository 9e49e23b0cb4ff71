"""Compositional scenes: 1..4 coloured shapes on black, exact from their specification.

A ``Scene`` is a tuple of ``SceneObject(color, shape, size, cx, cy)`` at one ``image_size``:
6 colours (the corners of the RGB cube) x 4 shapes (circle, square, upright isosceles
triangle, diamond) x 2 sizes (small, large), each centred at an integer pixel (cx, cy) anywhere
the object fits. Objects never overlap: at least ``object_gap`` background pixels separate the
bounding boxes, so 8-connected components never merge.

Object sides are odd (a centre pixel, symmetric masks) and scale with the image:
``side = odd(base * image_size / 32)`` with base 7 (small) and 11 (large). 7 px is the smallest
odd side at which the four masks all differ (at 3 px a circle is a square, at 5 px the diamond
and circle differ by one pixel per corner); 11 px keeps the two sizes 4 px apart, so a generated
object one or two pixels off its side is still read as the right size, while four large objects
still fit a 32 px image with room to move. The checker is exact from image_size 32.

Relations (``relation_holds``, the one definition used by texts, sampler and checker), with
margin M = ``relation_margin(image_size)`` (3 px at 32 px) and image y pointing down:
  A "left of" B  iff  cx_B - cx_A >= M;      A "right of" B  iff  cx_A - cx_B >= M;
  A "above" B    iff  cy_B - cy_A >= M;      A "below" B     iff  cy_A - cy_B >= M.
A horizontal and a vertical relation can both hold.

Held-out compositions (never in a training image nor text, used on purpose by test prompts):
``HELDOUT_PAIRS`` (colour, shape) and ``HELDOUT_TRIPLES`` (shape, relation, shape) -- a triple
and its mirror ("square right of circle" for "circle left of square") are the same fact.
``sample_scene`` draws scenes free of both by construction (pairs) and by rejection (triples).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Protocol

import numpy as np
from PIL import Image

COLORS = {  # the corners of the RGB cube: far apart, so the nearest colour is unambiguous
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "cyan": (0, 255, 255),
    "magenta": (255, 0, 255),
}
SHAPES = ("circle", "square", "triangle", "diamond")
SIZES = ("small", "large")
RELATIONS = ("left of", "right of", "above", "below")
INVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
MAX_OBJECTS = 4
BASE_SIDES = {"small": 7, "large": 11}  # object sides at image_size 32 (see the module doc)

HELDOUT_PAIRS = frozenset(
    {("red", "triangle"), ("green", "diamond"), ("blue", "circle"), ("yellow", "square")}
)
HELDOUT_TRIPLES = (("circle", "left of", "square"), ("triangle", "above", "diamond"))

_REPEAT = 0.4  # P(an object repeats the previous one's colour and shape): counting needs groups
_SAME_SIZE = 0.75  # P(a repeat also keeps the size)
_PLACE_TRIES = 200  # random placements of one draw of objects before drawing new objects
_DRAWS = 100  # draws of objects before giving up (never reached at image_size >= 16)


def object_side(size: str, image_size: int) -> int:
    """The odd side in pixels of a ``size`` ("small" / "large") object in an image_size image."""
    if size not in BASE_SIDES:
        raise ValueError(f"object size: expected one of {list(SIZES)}, got {size!r}")
    return 2 * int((BASE_SIDES[size] * image_size / 32 - 1) / 2 + 0.5) + 1


def relation_margin(image_size: int) -> int:
    """M of the relations: 3 px at 32 px, scaled with the image (at least 1)."""
    return max(1, round(3 * image_size / 32))


def object_gap(image_size: int) -> int:
    """Background pixels between two objects' boxes: 2 at 32 px, image_size / 16 above."""
    return max(2, image_size // 16)


class Placed(Protocol):
    """Anything with a centre in pixels (SceneObject, the checker's DetectedObject)."""

    @property
    def cx(self) -> float: ...

    @property
    def cy(self) -> float: ...


def relation_holds(a: Placed, relation: str, b: Placed, image_size: int) -> bool:
    """Whether "a RELATION b" holds (see the module doc for the rule and the margin)."""
    m = relation_margin(image_size)
    if relation == "left of":
        return b.cx - a.cx >= m
    if relation == "right of":
        return a.cx - b.cx >= m
    if relation == "above":
        return b.cy - a.cy >= m
    if relation == "below":
        return a.cy - b.cy >= m
    raise ValueError(f"relation: expected one of {list(RELATIONS)}, got {relation!r}")


def relations_between(a: Placed, b: Placed, image_size: int) -> list[str]:
    """Every relation r with "a r b" (0, 1 or 2 of them), in RELATIONS order."""
    return [r for r in RELATIONS if relation_holds(a, r, b, image_size)]


def is_heldout_triple(shape_a: str, relation: str, shape_b: str) -> bool:
    """Whether "a SHAPE_A RELATION a SHAPE_B" is a held-out triple (or the mirror of one)."""
    return (shape_a, relation, shape_b) in HELDOUT_TRIPLES or (
        shape_b,
        INVERSE[relation],
        shape_a,
    ) in HELDOUT_TRIPLES


def _check_name(where: str, value: str, allowed: Any) -> None:
    if value not in allowed:
        raise ValueError(f"{where}: expected one of {list(allowed)}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class SceneObject:
    """One object: palette colour, shape, size and the integer pixel (cx, cy) of its centre."""

    color: str
    shape: str
    size: str
    cx: int
    cy: int

    def __post_init__(self) -> None:
        _check_name("SceneObject.color", self.color, COLORS)
        _check_name("SceneObject.shape", self.shape, SHAPES)
        _check_name("SceneObject.size", self.size, SIZES)

    def box(self, image_size: int) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) with x1, y1 exclusive: the side x side square centred at (cx, cy)."""
        half = object_side(self.size, image_size) // 2
        return self.cx - half, self.cy - half, self.cx + half + 1, self.cy + half + 1


def _gap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> int:
    """Background pixels between two boxes along the axis where they are farthest apart."""
    return max(b[0] - a[2], a[0] - b[2], b[1] - a[3], a[1] - b[3])


@dataclasses.dataclass(frozen=True)
class Scene:
    """The objects of one image; validated: every object inside, boxes ``object_gap`` apart."""

    objects: tuple[SceneObject, ...]
    image_size: int = 32

    def __post_init__(self) -> None:
        if not 1 <= len(self.objects) <= MAX_OBJECTS:
            raise ValueError(f"Scene: expected 1..{MAX_OBJECTS} objects, got {len(self.objects)}")
        boxes = [o.box(self.image_size) for o in self.objects]
        for o, (x0, y0, x1, y1) in zip(self.objects, boxes):
            if x0 < 0 or y0 < 0 or x1 > self.image_size or y1 > self.image_size:
                raise ValueError(f"Scene: {o} does not fit a {self.image_size} px image")
        gap = object_gap(self.image_size)
        for i in range(len(boxes)):
            for j in range(i):
                if _gap(boxes[i], boxes[j]) < gap:
                    raise ValueError(
                        f"Scene: objects {j} and {i} are closer than {gap} px: "
                        f"{self.objects[j]}, {self.objects[i]}"
                    )

    def to_dict(self) -> dict[str, Any]:
        return {
            "image_size": self.image_size,
            "objects": [dataclasses.asdict(o) for o in self.objects],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scene:
        return cls(tuple(SceneObject(**o) for o in data["objects"]), int(data["image_size"]))


def heldout_violations(scene: Scene) -> list[str]:
    """What in ``scene`` is held out: "(red, triangle)" pairs and "circle left of square" facts."""
    out = [f"({o.color}, {o.shape})" for o in scene.objects if (o.color, o.shape) in HELDOUT_PAIRS]
    for a in scene.objects:
        for b in scene.objects:
            for r in relations_between(a, b, scene.image_size) if a is not b else []:
                if (a.shape, r, b.shape) in HELDOUT_TRIPLES:
                    out.append(f"{a.shape} {r} {b.shape}")
    return out


@functools.lru_cache(maxsize=4096)
def shape_mask(shape: str, width: int, height: int) -> np.ndarray:
    """(height, width) bool mask of ``shape`` filling a width x height box (read-only).

    With u, v the pixel column / row, du = u - (width-1)/2, dv = v - (height-1)/2,
    a = width / 2, b = height / 2:
      square: every pixel;  circle: (du/a)^2 + (dv/b)^2 <= 1;  diamond: |du|/a + |dv|/b <= 1;
      triangle (apex up, base on the last row): |du| <= a (v + 1) / height.
    Every row and column of the box holds a pixel, so the mask's bounding box is the box.
    """
    _check_name("shape_mask shape", shape, SHAPES)
    du = np.arange(width) - (width - 1) / 2
    dv = (np.arange(height) - (height - 1) / 2)[:, None]
    a, b, eps = width / 2, height / 2, 1e-9
    if shape == "square":
        mask = np.ones((height, width), dtype=bool)
    elif shape == "circle":
        mask = (du / a) ** 2 + (dv / b) ** 2 <= 1 + eps
    elif shape == "diamond":
        mask = np.abs(du) / a + np.abs(dv) / b <= 1 + eps
    else:
        mask = np.abs(du) <= a * (np.arange(height)[:, None] + 1) / height + eps
    mask = np.broadcast_to(mask, (height, width)).copy()
    mask.flags.writeable = False
    return mask


def render_scene(scene: Scene) -> Image.Image:
    """The RGB image of ``scene`` on black, no antialiasing: every object pixel is its colour."""
    s = scene.image_size
    rgb = np.zeros((s, s, 3), dtype=np.uint8)
    for o in scene.objects:
        x0, y0, x1, y1 = o.box(s)
        rgb[y0:y1, x0:x1][shape_mask(o.shape, x1 - x0, y1 - y0)] = COLORS[o.color]
    return Image.fromarray(rgb)


def _draw_kinds(
    rng: np.random.Generator, n: int, allow_heldout: bool
) -> list[tuple[str, str, str]]:
    """n (colour, shape, size): each after the first repeats the previous colour and shape
    w.p. 0.4 (and its size w.p. 0.75 of that), else is drawn uniformly over the allowed pairs."""
    pairs = [(c, s) for c in COLORS for s in SHAPES if allow_heldout or (c, s) not in HELDOUT_PAIRS]
    kinds: list[tuple[str, str, str]] = []
    for j in range(n):
        if j and rng.random() < _REPEAT:
            c, s, size = kinds[-1]
            if rng.random() >= _SAME_SIZE:
                size = SIZES[int(rng.integers(len(SIZES)))]
        else:
            c, s = pairs[int(rng.integers(len(pairs)))]
            size = SIZES[int(rng.integers(len(SIZES)))]
        kinds.append((c, s, size))
    return kinds


def _place(
    rng: np.random.Generator, kinds: list[tuple[str, str, str]], image_size: int
) -> Scene | None:
    """Centres drawn uniformly where each object fits, in turn; None when one finds no room."""
    gap, objects = object_gap(image_size), []
    boxes: list[tuple[int, int, int, int]] = []
    for c, s, size in kinds:
        half = object_side(size, image_size) // 2
        for _ in range(_PLACE_TRIES):
            cx, cy = (int(v) for v in rng.integers(half, image_size - half, size=2))
            o = SceneObject(c, s, size, cx, cy)
            box = o.box(image_size)
            if all(_gap(box, other) >= gap for other in boxes):
                objects.append(o)
                boxes.append(box)
                break
        else:
            return None
    return Scene(tuple(objects), image_size)


def sample_scene(
    rng: np.random.Generator,
    image_size: int = 32,
    max_objects: int = MAX_OBJECTS,
    allow_heldout: bool = False,
) -> Scene:
    """A random scene of 1..max_objects objects (uniform count), all randomness from ``rng``.

    Without ``allow_heldout`` no object is a held-out pair (they are never drawn) and no pair of
    objects holds a held-out triple (the placement is redrawn until none does).
    """
    if not 1 <= max_objects <= MAX_OBJECTS:
        raise ValueError(
            f"sample_scene: max_objects must be in 1..{MAX_OBJECTS}, got {max_objects}"
        )
    n = int(rng.integers(1, max_objects + 1))
    for _ in range(_DRAWS):
        kinds = _draw_kinds(rng, n, allow_heldout)
        for _ in range(_PLACE_TRIES):
            scene = _place(rng, kinds, image_size)
            if scene is None:
                break  # no room for these objects: draw others
            if allow_heldout or not heldout_violations(scene):
                return scene
    raise RuntimeError(f"sample_scene: no scene of {n} objects fits a {image_size} px image")
