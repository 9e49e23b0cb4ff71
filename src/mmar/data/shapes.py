"""The compositional ``shapes`` set: scenes of 1..4 coloured shapes with exact texts.

Item ``i`` of a split is drawn from the random streams (split tag, seed, i, 0) (the scene, see
``mmar.data.scene``) and (split tag, seed, i, 1) (its texts, see ``mmar.data.scene_text``):
the train split uses the run's seed, the test split the fixed ``TEST_STREAM_SEED``, so the two
never share a stream and the test set is the same in every run. Both hold seen compositions
only: no held-out (colour, shape) pair and no held-out relation triple, in images or texts.

    item = {"image": (3, H, W) in [-1, 1], "text": full caption, "prompt": T2I prompt,
            "qa": [[question, answer], ...], "label": -1, "key": i}

``benchmark_prompts(n_per_category, seed)``: the fixed T2I prompt sets in GenEval's categories
(``CATEGORIES``), seen and held-out, each with the ``SceneQuery`` a generated image must match.
``export_split`` writes a split as PNG + JSONL for other systems:

    python -m mmar.data.shapes export --split test --n 1000 --out DIR
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmar.data.config import DataConfig
from mmar.data.images import pil_to_tensor
from mmar.data.scene import (
    COLORS,
    HELDOUT_PAIRS,
    RELATIONS,
    SHAPES,
    SIZES,
    Scene,
    is_heldout_triple,
    render_scene,
    sample_scene,
)
from mmar.data.scene_text import (
    Group,
    SceneQuery,
    corpus_texts,
    render_query,
    scene_caption,
    scene_prompt,
    scene_questions,
)

TEST_STREAM_SEED = 0  # the test split ignores the run seed
_SPLIT_TAG = {"train": 0, "test": 1}
CATEGORIES = ("single_object", "two_objects", "counting", "colors", "position", "color_attr")
# single_object and two_objects state no colour and no relation: no composition to hold out
HELDOUT_CATEGORIES = ("counting", "colors", "position", "color_attr")


class ShapesDataset(torch.utils.data.Dataset):
    """Map-style, any length: item i is rendered from (split, seed, i) (see the module doc)."""

    def __init__(self, cfg: DataConfig, split: str):
        if split not in _SPLIT_TAG:
            raise ValueError(f"shapes: split must be one of {list(_SPLIT_TAG)}, got {split!r}")
        self.split = split
        self.size = cfg.image_size
        self.max_objects = cfg.max_objects
        self.length = cfg.length if split == "train" else cfg.test_length
        self.seed = cfg.seed if split == "train" else TEST_STREAM_SEED

    def __len__(self) -> int:
        return self.length

    def _rng(self, index: int, stream: int) -> np.random.Generator:
        if not 0 <= index < self.length:
            raise IndexError(f"shapes: index {index} out of range for length {self.length}")
        return np.random.default_rng((_SPLIT_TAG[self.split], self.seed, index, stream))

    def scene(self, index: int) -> Scene:
        """The scene of item ``index``."""
        return sample_scene(self._rng(index, 0), self.size, self.max_objects)

    def texts(self, index: int, scene: Scene | None = None) -> dict[str, Any]:
        """{"text": caption, "prompt": T2I prompt, "qa": [[question, answer], ...]} of item
        ``index`` (``scene``: its scene, when already drawn)."""
        scene = scene or self.scene(index)
        rng = self._rng(index, 1)
        caption, prompt = scene_caption(scene, rng), scene_prompt(scene, rng)
        qa = [[q.question, q.answer] for q in scene_questions(scene, rng)]
        return {"text": caption, "prompt": prompt, "qa": qa}

    def __getitem__(self, index: int) -> dict[str, Any]:
        scene = self.scene(index)
        image = pil_to_tensor([render_scene(scene)], 3)[0]  # (3, H, W)
        return {"image": image, **self.texts(index, scene), "label": -1, "key": index}

    def captions(self) -> list[str]:
        """Texts covering every word (and "," / "?") any caption, prompt, question or answer
        uses: what a word-level text tokenizer is built from (not the captions themselves)."""
        return corpus_texts()


@dataclasses.dataclass(frozen=True)
class BenchPrompt:
    """A T2I benchmark prompt: its GenEval category, whether it uses a held-out composition,
    its text and the query a generated image must match (``check_scene.matches``)."""

    category: str
    heldout: bool
    text: str
    query: SceneQuery


def _one(count: int, color: str | None, shape: str, size: str | None = None) -> Group:
    return Group(count, size, color, shape)


def category_queries(category: str, heldout: bool) -> list[SceneQuery]:
    """Every query of a category, seen or held-out (sorted, before any sampling)."""
    if category not in CATEGORIES:
        raise ValueError(
            f"benchmark category: expected one of {list(CATEGORIES)}, got {category!r}"
        )
    if heldout and category not in HELDOUT_CATEGORIES:
        raise ValueError(f"benchmark category {category!r} has no held-out compositions")
    pairs = [(c, s) for c in COLORS for s in SHAPES if ((c, s) in HELDOUT_PAIRS) == heldout]
    seen = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in HELDOUT_PAIRS]
    if category == "single_object":
        return [SceneQuery((_one(1, None, s, z),)) for s in SHAPES for z in (None, *SIZES)]
    if category == "two_objects":
        return [
            SceneQuery((_one(1, None, a), _one(1, None, b)))
            for a, b in itertools.permutations(SHAPES, 2)
        ]
    if category == "counting":
        return [SceneQuery((_one(k, c, s),)) for c, s in pairs for k in (2, 3, 4)]
    if category == "colors":
        return [SceneQuery((_one(1, c, s),)) for c, s in pairs]
    if category == "position":
        return [
            SceneQuery((_one(1, None, a), _one(1, None, b)), r)
            for a, b in itertools.permutations(SHAPES, 2)
            for r in RELATIONS
            if is_heldout_triple(a, r, b) == heldout
        ]
    return [  # color_attr: two colours on two shapes; held-out: one of the pairs is held out
        SceneQuery((_one(1, c1, s1), _one(1, c2, s2)))
        for (c1, s1), (c2, s2) in itertools.permutations(seen + list(HELDOUT_PAIRS), 2)
        if c1 != c2
        and s1 != s2
        and ((c1, s1) in HELDOUT_PAIRS) + ((c2, s2) in HELDOUT_PAIRS) == int(heldout)
    ]


def benchmark_prompts(n_per_category: int, seed: int = 0) -> list[BenchPrompt]:
    """n_per_category prompts per category and seen / held-out (10 x n_per_category in all).

    Each (category, held-out) set cycles through its queries in an order shuffled from
    (seed, category) (reshuffled each cycle), written in template 0 ("a red circle and a blue
    square", "a circle left of a square", "three red triangles").
    """
    if n_per_category < 1:
        raise ValueError(f"benchmark_prompts: n_per_category must be >= 1, got {n_per_category}")
    out = []
    for k, category in enumerate(CATEGORIES):
        for heldout in (False, True) if category in HELDOUT_CATEGORIES else (False,):
            queries = sorted(category_queries(category, heldout), key=render_query)
            rng = np.random.default_rng((3, seed, k, int(heldout)))
            order: list[int] = []
            while len(order) < n_per_category:
                order += [int(i) for i in rng.permutation(len(queries))]
            for i in order[:n_per_category]:
                q = queries[i]
                out.append(BenchPrompt(category, heldout, render_query(q), q))
    return out


def export_split(cfg: DataConfig, split: str, out_dir: str | Path, n: int | None = None) -> Path:
    """Write items 0..n-1 (default: the whole split) of a shapes split to ``out_dir``:
    ``images/{split}_{i:06d}.png`` and ``{split}.jsonl`` with one {"image" (relative to
    out_dir), "text", "prompt", "qa", "scene"} per line (readable back as ``name: jsonl``).
    Returns the JSONL path."""
    cfg.validate()
    if cfg.name != "shapes":
        raise ValueError(f"export_split: DataConfig.name must be 'shapes', got {cfg.name!r}")
    ds = ShapesDataset(cfg, split)
    n = len(ds) if n is None else n
    if not 1 <= n <= len(ds):
        raise ValueError(f"export_split: n must be in 1..{len(ds)} (the split's length), got {n}")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    path = out / f"{split}.jsonl"
    with open(path, "w") as f:
        for i in range(n):
            scene = ds.scene(i)
            name = f"images/{split}_{i:06d}.png"
            render_scene(scene).save(out / name)
            line = {"image": name, **ds.texts(i, scene), "scene": scene.to_dict()}
            f.write(json.dumps(line) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mmar.data.shapes")
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export", help="write a split as PNG + JSONL")
    e.add_argument("--split", choices=list(_SPLIT_TAG), default="test")
    e.add_argument("--n", type=int, default=None, help="items 0..N-1 of the split (default 1000)")
    e.add_argument("--out", required=True, metavar="DIR")
    e.add_argument("--image-size", type=int, default=32)
    e.add_argument("--max-objects", type=int, default=4)
    e.add_argument("--seed", type=int, default=0, help="train split's seed")
    args = p.parse_args(argv)
    n = args.n or 1000
    cfg = DataConfig(
        name="shapes",
        image_size=args.image_size,
        max_objects=args.max_objects,
        seed=args.seed,
        length=n,
        test_length=n,
    )
    try:
        path = export_split(cfg, args.split, args.out, n)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {n} {args.split} items to {path} (images in {Path(args.out) / 'images'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
