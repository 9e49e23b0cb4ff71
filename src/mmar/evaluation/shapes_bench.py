"""The shapes benchmark: one model scored on text-to-image, captions, questions and image quality.

    res = evaluate_shapes(model, data_cfg, n_per_class=50, seed=0, sampling=model.sampling)

- T2I: images generated from ``benchmark_prompts(n_per_class, seed)`` (GenEval's six
  categories, seen and held-out compositions; 10 x n_per_class prompts), each read back from its
  pixels by ``check_scene`` and matched against its prompt (every stated attribute, exact
  counts, the relation). Overall = mean over categories, as GenEval's.
- captions: caption exact match on held-out test images (the caption, parsed by the grammar,
  is the image's full description and any relation it states holds).
- VQA: every question of the same test images, exact match of the normalised answer, overall
  and per question kind (colour, shape, count, exists, relation).
- classifier-FID: Fréchet distance in the features of a judge CNN trained here on real renders
  (multi-label: which of the 48 (colour, shape, size) kinds an image shows), between images
  generated from the test images' own prompts and those test images, with the real-vs-real
  floor (two disjoint halves of the test split) beside it. Not comparable with Inception FID.
- editing (``shapes_editing``): inpaint one object of a scene into another colour or shape;
  the share of edits that give exactly the edited scene, the requested object alone, and the
  other objects untouched.
- samples.png: prompted samples, one row per category (seen, then held-out), the prompt
  written under each image and a green (checker: right) or red (wrong) frame.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image, ImageDraw

from mmar.data import DataConfig, build_dataset
from mmar.data.images import pil_to_tensor, tensor_to_pil
from mmar.data.scene import COLORS, SHAPES, SIZES, Scene, render_scene
from mmar.data.shapes import CATEGORIES, BenchPrompt, ShapesDataset, benchmark_prompts
from mmar.evaluation import metrics
from mmar.evaluation.judge import Judge, JudgeConfig, get_judge
from mmar.evaluation.shapes_editing import evaluate_editing
from mmar.model.config import SamplingConfig

if TYPE_CHECKING:
    from mmar.pipelines.mmar import MMAR

JUDGE_TRAIN_ITEMS = 5000  # renders the shapes judge trains on (a fixed prefix of the train split)
KINDS = [(c, s, z) for c in COLORS for s in SHAPES for z in SIZES]  # the judge's 48 classes
EDITS_PER_CLASS = 5  # editing cases per n_per_class (100 at the default 20)
GRID_PER_ROW = 8  # samples.png: columns per category row
_CELL = 96  # samples.png: pixels per image side (nearest-neighbour upscaling)
_TEXT_COLS = 16  # characters per line of a prompt under its image (PIL's default font)


def scene_kinds(scene: Scene) -> torch.Tensor:
    """Multi-hot (48,) bool: which (colour, shape, size) kinds the scene shows (judge target)."""
    target = torch.zeros(len(KINDS), dtype=torch.bool)
    for o in scene.objects:
        target[KINDS.index((o.color, o.shape, o.size))] = True
    return target


def shapes_judge(
    data_cfg: DataConfig,
    test_images: torch.Tensor,
    test_scenes: Sequence[Scene],
    cache_dir: str | None,
    log: Callable[[str], None] | None,
) -> Judge:
    """The cached multi-label judge for this image size (trained on the first
    JUDGE_TRAIN_ITEMS renders of the train split, scored on the test split)."""
    cfg = JudgeConfig(
        dataset="shapes",
        image_size=data_cfg.image_size,
        channels=3,
        test_fraction=0.0,
        num_classes=len(KINDS),
        labels="multi",
        widths=(32, 64),
        feature_dim=64,
        # measured on the 1,000 test renders: 4 epochs 1.7% of whole label sets right (0.12 BCE),
        # 12 epochs 55.8% sets and 98.5% of single labels right, in ~2 min on 1 core (cached)
        epochs=12,
    )

    def split(name: str) -> tuple[torch.Tensor, torch.Tensor]:
        if name == "test":
            return test_images, torch.stack([scene_kinds(s) for s in test_scenes])
        ds = build_dataset(data_cfg.replace(length=JUDGE_TRAIN_ITEMS), "train")
        scenes = [ds.scene(i) for i in range(len(ds))]
        images = pil_to_tensor([render_scene(s) for s in scenes], 3)
        return images, torch.stack([scene_kinds(s) for s in scenes])

    return get_judge(cfg, split, cache_dir, log=log)


def evaluate_shapes(
    model: MMAR,
    data_cfg: DataConfig,
    n_per_class: int,
    seed: int,
    sampling: SamplingConfig,
    judge_cache_dir: str | None = None,
    log: Callable[[str], None] | None = print,
    samples_dir: str | Path | None = None,
    n_edits: int | None = None,
) -> dict[str, Any]:
    """Every shapes metric of ``model`` (see the module docstring) as one flat JSON-able dict.
    n_edits: editing cases (None: ``EDITS_PER_CLASS`` x n_per_class; 0: no editing measure)."""
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    ds = build_dataset(data_cfg, "test")
    if not isinstance(ds, ShapesDataset):
        raise ValueError(f"evaluate_shapes: expected data name 'shapes', got '{data_cfg.name}'")
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(ds), generator=g).tolist()
    n = min(10 * n_per_class, len(ds) // 2)  # captioned / questioned / FID images
    items = [ds[i] for i in perm[: 2 * n]]
    scenes = [ds.scene(i) for i in perm[: 2 * n]]
    real = torch.stack([it["image"] for it in items]).float()  # (2n, 3, H, W)
    res: dict[str, Any] = {
        "dataset": "shapes",
        "image_size": data_cfg.image_size,
        "seed": seed,
        "n_per_class": n_per_class,
        "sampling": sampling.to_dict(),
    }

    # T2I on the benchmark prompts
    bench = benchmark_prompts(n_per_class, seed)
    if log:
        log(f"eval shapes: generating {len(bench)} benchmark images ({sampling})")
    t0 = time.perf_counter()
    pil = model.generate_images([b.text for b in bench], sampling, seed=seed)
    timings["generate_s"] = time.perf_counter() - t0
    res["n_generated"] = len(pil)
    res["images_per_second"] = len(pil) / max(timings["generate_s"], 1e-9)
    t2i = metrics.shapes_t2i_scores(bench, pil)
    res.update(
        t2i_accuracy_seen=t2i["overall"]["seen"],
        t2i_accuracy_heldout=t2i["overall"]["heldout"],
        t2i_categories=t2i["categories"],
    )
    if samples_dir is not None:
        res["samples_png"] = str(
            write_samples_grid(bench, pil, t2i["correct"], Path(samples_dir) / "samples.png")
        )

    # classifier-FID: generated from the test images' prompts vs those images
    t0 = time.perf_counter()
    judge = shapes_judge(data_cfg, real, scenes, judge_cache_dir, log)
    timings["judge_s"] = time.perf_counter() - t0
    if log:
        log(f"eval shapes: generating {n} images from test prompts for classifier-FID")
    t0 = time.perf_counter()
    gen = pil_to_tensor(
        model.generate_images([it["prompt"] for it in items[:n]], sampling, seed=seed + 1), 3
    )
    timings["generate_fid_s"] = time.perf_counter() - t0
    res.update(
        judge_heldout_accuracy=judge.heldout_accuracy,
        judge_from_cache=judge.from_cache,
        judge_path=str(judge.cache_path),
        classifier_fid=metrics.classifier_fid(judge, gen, real[:n]),
        classifier_fid_real_floor=metrics.classifier_fid(judge, real[n:], real[:n]),
        n_real_reference=n,
    )

    # captions and questions on the first n test images
    images, texts = real[:n], [it["text"] for it in items[:n]]
    t0 = time.perf_counter()
    captions = model.caption(tensor_to_pil(images), sampling)
    timings["caption_s"] = time.perf_counter() - t0
    cap = metrics.shapes_caption_accuracy(captions, scenes[:n])
    res.update(
        caption_exact=cap["exact"],
        caption_parsed=cap["parsed"],
        n_captioned=n,
        caption_examples=[{"true": t, "generated": c} for t, c in zip(texts[:5], captions[:5])],
    )
    rows = [(i, q, a) for i, it in enumerate(items[:n]) for q, a in it["qa"]]
    pil_images = tensor_to_pil(images)
    t0 = time.perf_counter()
    answers = model.answer([pil_images[i] for i, _, _ in rows], [q for _, q, _ in rows], sampling)
    timings["answer_s"] = time.perf_counter() - t0
    vqa = metrics.shapes_vqa_accuracy(answers, [q for _, q, _ in rows], [a for _, _, a in rows])
    res.update(
        vqa_accuracy=vqa["accuracy"],
        vqa_per_kind=vqa["per_kind"],
        vqa_n_per_kind=vqa["n_per_kind"],
        vqa_examples=[
            {"question": q, "true": a, "generated": g} for (_, q, a), g in zip(rows[:5], answers)
        ],
    )
    t0 = time.perf_counter()
    res["text_nll_nats_per_token"] = metrics.text_nll_per_token(
        model, images, texts, sampling.batch_size
    )
    timings["nll_s"] = time.perf_counter() - t0
    n_edits = EDITS_PER_CLASS * n_per_class if n_edits is None else n_edits
    if n_edits > 0:
        if log:
            log(f"eval shapes: {n_edits} edits (inpaint one object into another colour or shape)")
        res["editing"] = evaluate_editing(model, n_edits, seed, sampling)
        timings["editing_s"] = res["editing"]["seconds"]
    timings["total_s"] = time.perf_counter() - t_start
    res["timings"] = timings
    return res


def write_samples_grid(
    bench: Sequence[BenchPrompt],
    images: Sequence[Image.Image],
    correct: Sequence[bool],
    out_png: Path,
    per_row: int = GRID_PER_ROW,
) -> Path:
    """samples.png: per category a row of up to ``per_row`` samples (half seen, half held-out
    where the category has held-out prompts), each upscaled to _CELL px with its prompt below
    and a green (right) / red (wrong) frame from the checker."""
    rows: list[list[int]] = []
    for cat in CATEGORIES:
        seen = [i for i, b in enumerate(bench) if b.category == cat and not b.heldout]
        held = [i for i, b in enumerate(bench) if b.category == cat and b.heldout]
        k = per_row // 2 if held else per_row
        row = seen[:k] + held[: per_row - min(k, len(seen))]
        if row:
            rows.append(row)
    text_h = 4 * 11  # up to 4 lines of PIL's default font
    cell_w, cell_h = _CELL + 8, _CELL + 8 + text_h
    grid = Image.new("RGB", (cell_w * per_row, cell_h * len(rows)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for r, row in enumerate(rows):
        for c, i in enumerate(row):
            x, y = c * cell_w, r * cell_h
            frame = (0, 160, 0) if correct[i] else (200, 0, 0)
            draw.rectangle([x + 1, y + 1, x + _CELL + 6, y + _CELL + 6], fill=frame)
            big = images[i].convert("RGB").resize((_CELL, _CELL), Image.Resampling.NEAREST)
            grid.paste(big, (x + 4, y + 4))
            label = ("[held-out] " if bench[i].heldout else "") + bench[i].text
            lines = textwrap.wrap(label, _TEXT_COLS)[:4]
            draw.multiline_text((x + 4, y + _CELL + 8), "\n".join(lines), fill=(0, 0, 0))
    out_png.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out_png)
    return out_png


def format_rows(res: dict[str, Any]) -> list[tuple[str, str]]:
    """The shapes rows of ``format_results``: the GenEval-style table, captions, VQA, FID."""

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.4f}"

    rows = []
    for cat, v in res["t2i_categories"].items():
        rows.append(
            (
                f"T2I {cat}",
                f"seen {pct(v['seen'])}  held-out {pct(v['heldout'])}  "
                f"(n={v['n_seen']}+{v['n_heldout']})",
            )
        )
    rows += [
        (
            "T2I overall",
            f"seen {pct(res['t2i_accuracy_seen'])}  held-out {pct(res['t2i_accuracy_heldout'])}"
            f"  (n={res['n_generated']})",
        ),
        (
            "caption exact match",
            f"{res['caption_exact']:.4f}  (n={res['n_captioned']}, in the grammar "
            f"{res['caption_parsed']:.4f})",
        ),
        (
            "VQA accuracy",
            f"{res['vqa_accuracy']:.4f}  ("
            + ", ".join(
                f"{k} {v:.3f} n={res['vqa_n_per_kind'][k]}" for k, v in res["vqa_per_kind"].items()
            )
            + ")",
        ),
        (
            "classifier-FID (judge features)",
            f"{res['classifier_fid']:.4f}  (real-vs-real floor "
            f"{res['classifier_fid_real_floor']:.4f}, n_ref={res['n_real_reference']}, judge "
            f"held-out set accuracy {res['judge_heldout_accuracy']:.4f})",
        ),
    ]
    if "editing" in res:
        e = res["editing"]
        rows.append(
            (
                "editing success",
                f"{e['success']:.4f}  (requested object {e['requested']:.4f}, others untouched "
                f"{e['others_untouched']:.4f}; colour {e['success_per_change']['colour']:.3f}, "
                f"shape {e['success_per_change']['shape']:.3f}; n={e['n']}, rendered targets "
                f"{e['control_rendered_targets']:.2f})",
            )
        )
    return rows
