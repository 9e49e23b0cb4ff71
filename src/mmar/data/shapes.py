"""Procedural coloured shapes with exact captions, checkable from pixels.

An image shows one or two objects on black, each a (colour, shape, quadrant) ``ShapeSpec``:
6 colours x 3 shapes x 4 positions, caption "a red circle in the top left" (two objects joined
with " and ", in quadrant order). Item ``i`` of a split is rendered from the random stream
(split tag, seed, i): the train stream uses the run's seed, the test stream a fixed one, so
the two never share a stream and the test set is the same in every run.

``check_shapes`` reads the specs back from pixels, to score generated images: colour = nearest
palette colour of the object's mean pixel, shape = fill ratio of its bounding box (square ~1,
circle ~pi/4, triangle ~1/2), position = quadrant of its centroid.
"""

from __future__ import annotations

import dataclasses
import itertools
import re

import numpy as np
import torch
from PIL import Image, ImageDraw

from mmar.data.config import DataConfig
from mmar.data.images import pil_to_tensor

COLORS = {  # the corners of the RGB cube: far apart, so the nearest colour is unambiguous
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "cyan": (0, 255, 255),
    "magenta": (255, 0, 255),
}
SHAPES = ("circle", "square", "triangle")
POSITIONS = ("top left", "top right", "bottom left", "bottom right")
TEST_STREAM_SEED = 0  # the test split ignores the run seed
_SPLIT_TAG = {"train": 0, "test": 1}

# fill ratio of the bounding box: square 1, circle pi/4 ~ 0.785, triangle 1/2 (+ edge pixels)
_SQUARE_MIN_FILL = 0.9
_CIRCLE_MIN_FILL = 0.63  # rendered: triangles <= 0.59, circles >= 0.66 at 16 px
_FOREGROUND = 128  # max channel above this (in 0..255) is an object pixel; the background is 0


@dataclasses.dataclass(frozen=True)
class ShapeSpec:
    color: str
    shape: str
    position: str

    def __post_init__(self) -> None:
        for field, allowed in (("color", COLORS), ("shape", SHAPES), ("position", POSITIONS)):
            if getattr(self, field) not in allowed:
                raise ValueError(
                    f"ShapeSpec.{field}: expected one of {list(allowed)}, "
                    f"got {getattr(self, field)!r}"
                )

    @property
    def label(self) -> int:
        """0..71: colour-major index of the single-object class."""
        c, s = list(COLORS).index(self.color), SHAPES.index(self.shape)
        p = POSITIONS.index(self.position)
        return (c * len(SHAPES) + s) * len(POSITIONS) + p


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where an object sits in its quadrant: side = scale * quadrant, offsets dx, dy in [-1, 1]."""

    scale: float = 0.7
    dx: float = 0.0
    dy: float = 0.0


def _box(spec: ShapeSpec, size: int, layout: Layout) -> tuple[int, int, int, int]:
    """Pixel box (x0, y0, x1, y1), x1/y1 exclusive, inside the quadrant with a 1 px margin."""
    half = size // 2
    p = POSITIONS.index(spec.position)
    qx, qy = (p % 2) * half, (p // 2) * half
    s = max(5, round(half * layout.scale))
    free = max(0, half - 2 - s)  # room to move inside the margins
    x0 = qx + 1 + round(free * (1 + layout.dx) / 2)
    y0 = qy + 1 + round(free * (1 + layout.dy) / 2)
    return x0, y0, x0 + s, y0 + s


def render_shapes(
    specs: list[ShapeSpec], size: int = 32, layouts: list[Layout] | None = None
) -> Image.Image:
    """An RGB image of ``specs`` on black (no antialiasing, so every object pixel is its colour)."""
    positions = [s.position for s in specs]
    if len(set(positions)) != len(positions):
        raise ValueError(f"render_shapes: two objects in the same quadrant: {positions}")
    layouts = layouts or [Layout()] * len(specs)
    img = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(img)
    for spec, layout in zip(specs, layouts):
        x0, y0, x1, y1 = _box(spec, size, layout)
        color = COLORS[spec.color]
        if spec.shape == "square":
            draw.rectangle([x0, y0, x1 - 1, y1 - 1], fill=color)
        elif spec.shape == "circle":
            draw.ellipse([x0, y0, x1 - 1, y1 - 1], fill=color)
        else:  # an upright isosceles triangle filling its box
            draw.polygon([(x0, y1 - 1), (x1 - 1, y1 - 1), ((x0 + x1 - 1) / 2, y0)], fill=color)
    return img


def caption_for(specs: list[ShapeSpec]) -> str:
    return " and ".join(f"a {s.color} {s.shape} in the {s.position}" for s in specs)


_PART = re.compile(
    rf"^an? ({'|'.join(COLORS)}) ({'|'.join(SHAPES)}) in the ({'|'.join(POSITIONS)})$"
)


def parse_shapes_caption(text: str) -> list[ShapeSpec] | None:
    """The specs a caption describes, or None if any part is not "a COLOUR SHAPE in the POSITION".

    Case, punctuation and hyphens ("top-left") are ignored.
    """
    clean = " ".join(re.sub(r"[^a-z ]+", " ", text.lower().replace("-", " ")).split())
    specs = []
    for part in clean.split(" and "):
        m = _PART.match(part.strip())
        if m is None:
            return None
        specs.append(ShapeSpec(*m.groups()))
    positions = [s.position for s in specs]
    return specs if len(set(positions)) == len(positions) else None


def _to_uint8_hwc(image: Image.Image | np.ndarray | torch.Tensor) -> np.ndarray:
    """PIL image, (H, W, 3) array in 0..255, or (3, H, W) tensor in [-1, 1] -> (H, W, 3) 0..255."""
    if isinstance(image, torch.Tensor):
        return ((image.detach().float().cpu().permute(1, 2, 0) + 1) * 127.5).numpy()
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    return np.asarray(image, dtype=np.float64)


def check_shapes(
    image: Image.Image | np.ndarray | torch.Tensor, min_pixels: int | None = None
) -> list[ShapeSpec]:
    """Read the objects of an image back from its pixels, in quadrant order.

    image: PIL RGB, (H, W, 3) array in 0..255, or (3, H, W) tensor in [-1, 1].
    Objects are the 8-connected components of pixels brighter than half scale; components smaller
    than ``min_pixels`` (default: 1/16 of a quadrant's area) are noise and ignored.
    """
    from scipy import ndimage  # a scikit-learn dependency

    rgb = _to_uint8_hwc(image)  # (H, W, 3)
    size = rgb.shape[0]
    min_pixels = min_pixels if min_pixels is not None else max(4, (size // 2) ** 2 // 16)
    components, n = ndimage.label(rgb.max(axis=2) > _FOREGROUND, structure=np.ones((3, 3)))
    palette = np.array(list(COLORS.values()), dtype=np.float64)  # (6, 3)
    found = []
    for k in range(1, n + 1):
        ys, xs = np.nonzero(components == k)
        if len(ys) < min_pixels:
            continue
        mean = rgb[ys, xs].mean(axis=0)  # (3,)
        color = list(COLORS)[int(((palette - mean) ** 2).sum(axis=1).argmin())]
        fill = len(ys) / ((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1))
        shape = (
            "square"
            if fill >= _SQUARE_MIN_FILL
            else "circle"
            if fill >= _CIRCLE_MIN_FILL
            else "triangle"
        )
        row, col = int(ys.mean() >= size / 2), int(xs.mean() >= size / 2)
        found.append(ShapeSpec(color, shape, POSITIONS[2 * row + col]))
    return sorted(found, key=lambda s: POSITIONS.index(s.position))


def sample_specs(
    rng: np.random.Generator, two_objects: bool
) -> tuple[list[ShapeSpec], list[Layout]]:
    """One or (with two_objects, half of the time) two objects in distinct quadrants."""
    n = 1 + int(two_objects and rng.random() < 0.5)
    quadrants = np.sort(rng.choice(len(POSITIONS), size=n, replace=False))
    specs, layouts = [], []
    for q in quadrants:
        specs.append(
            ShapeSpec(
                list(COLORS)[rng.integers(len(COLORS))],
                SHAPES[rng.integers(len(SHAPES))],
                POSITIONS[q],
            )
        )
        layouts.append(Layout(float(rng.uniform(0.55, 0.8)), *map(float, rng.uniform(-1, 1, 2))))
    return specs, layouts


class ShapesDataset(torch.utils.data.Dataset):
    """item: {"image": (3, H, W) in [-1, 1], "text": exact caption, "label": 0..71 or -1 (two)}."""

    def __init__(self, cfg: DataConfig, split: str):
        self.split = split
        self.size = cfg.image_size
        self.two_objects = cfg.two_objects
        self.length = cfg.length if split == "train" else cfg.test_length
        self.seed = cfg.seed if split == "train" else TEST_STREAM_SEED

    def __len__(self) -> int:
        return self.length

    def specs(self, index: int) -> tuple[list[ShapeSpec], list[Layout]]:
        if not 0 <= index < self.length:
            raise IndexError(f"shapes: index {index} out of range for length {self.length}")
        rng = np.random.default_rng((_SPLIT_TAG[self.split], self.seed, index))
        return sample_specs(rng, self.two_objects)

    def __getitem__(self, index: int) -> dict:
        specs, layouts = self.specs(index)
        image = pil_to_tensor([render_shapes(specs, self.size, layouts)], 3)[0]  # (3, H, W)
        label = specs[0].label if len(specs) == 1 else -1
        return {"image": image, "text": caption_for(specs), "label": label, "key": index}

    def captions(self) -> list[str]:
        """Every caption this dataset can produce (all singles; all pairs with two_objects)."""
        singles = [ShapeSpec(c, s, p) for c, s, p in itertools.product(COLORS, SHAPES, POSITIONS)]
        out = [caption_for([s]) for s in singles]
        if self.two_objects:
            out += [
                caption_for([a, b])
                for a, b in itertools.product(singles, singles)
                if POSITIONS.index(a.position) < POSITIONS.index(b.position)
            ]
        return out
