"""``evaluate(model, dataset)``: every metric of ``metrics.py`` for one model, as one dict.

Digits (mnist, digits): T2I accuracy and classifier-FID of 10 x n_per_class generated images
(prompts from the caption templates), caption accuracy and text NLL on as many held-out images.
Shapes: the benchmark of ``shapes_bench.evaluate_shapes`` (GenEval-style T2I per category, seen
and held-out compositions; caption exact match; VQA per question kind; classifier-FID).
The judge's held-out accuracy, the sampling speed and the timings go with every result.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mmar.data import DataConfig, build_dataset
from mmar.data.images import pil_to_tensor, tensor_to_pil
from mmar.evaluation import metrics
from mmar.evaluation.frechet import InceptionFeatures, feature_statistics, frechet_distance
from mmar.evaluation.judge import Judge, JudgeConfig, get_judge
from mmar.evaluation.shapes_bench import evaluate_shapes, format_rows
from mmar.model.config import SamplingConfig
from mmar.pipelines.mmar import MMAR
from mmar.torch_utils import eval_mode

DIGIT_DATASETS = ("mnist", "digits")
EVAL_DATASETS = (*DIGIT_DATASETS, "shapes")


def load_split(data_cfg: DataConfig, split: str) -> dict[str, Any]:
    """All items of a split, stacked: {"images": (N, C, H, W) in [-1, 1], "labels": (N,),
    "texts"}."""
    ds = build_dataset(data_cfg, split)
    items = [ds[i] for i in range(len(ds))]
    return {
        "images": torch.stack([it["image"] for it in items]).float(),
        "labels": torch.tensor([it["label"] for it in items]),
        "texts": [it["text"] for it in items],
    }


def eval_data_config(model: MMAR, dataset: str | DataConfig) -> DataConfig:
    """The held-out data at the model's image size and channel count."""
    tok = model.config.image_tokenizer
    if isinstance(dataset, DataConfig):
        cfg = dataset.replace(image_size=tok.image_size, channels=tok.image_channels)
    else:
        cfg = DataConfig.from_dict(
            {"name": dataset, "image_size": tok.image_size, "channels": tok.image_channels}
        )
    if cfg.name not in EVAL_DATASETS:
        raise ValueError(
            f"evaluate: no built-in metrics for dataset '{cfg.name}'; use one of "
            f"{list(EVAL_DATASETS)}"
        )
    cfg.validate()
    return cfg


@torch.no_grad()
def evaluate(
    model: MMAR,
    dataset: str | DataConfig = "mnist",
    n_per_class: int = 20,
    seed: int = 0,
    sampling: SamplingConfig | None = None,
    judge_cache_dir: str | None = None,
    inception_weights: str | None = None,
    log: Callable[[str], None] | None = print,
    samples_dir: str | Path | None = None,
    n_edits: int | None = None,
) -> dict[str, Any]:
    """All metrics for ``model`` on ``dataset``'s held-out split.

    n_per_class: digits: images generated per digit (10 x n_per_class in all); shapes: prompts
      per category and seen / held-out (``benchmark_prompts``, 10 x n_per_class in all). As many
      held-out images are captioned (shapes: and asked their questions).
    sampling: the settings of generation and captioning (batch_size included); default the
      checkpoint's recommended ``model.sampling``. Recorded in the result.
    inception_weights: digits: a pt_inception .pth file to add the standard FID
      (``fid_inception``).
    samples_dir: shapes: write samples.png there (prompted samples with the checker's verdicts).
    n_edits: shapes: editing cases (``shapes_editing``; None: 5 x n_per_class, 0: none).
    Returns a flat JSON-serialisable dict (its keys are checked by tests/test_evaluation_cli.py).
    """
    with eval_mode(model.model):
        return _evaluate(
            model,
            dataset,
            n_per_class,
            seed,
            sampling or model.sampling,
            judge_cache_dir,
            inception_weights,
            log,
            samples_dir,
            n_edits,
        )


def digit_judge(
    data_cfg: DataConfig,
    cache_dir: str | None = None,
    log: Callable[[str], None] | None = None,
    test: dict[str, Any] | None = None,
) -> Judge:
    """The cached judge CNN of a digit data config (trained on its train split on first use,
    scored on its test split); ``test``: that split when already loaded (``load_split``)."""
    jcfg = JudgeConfig(
        dataset=data_cfg.name,
        image_size=data_cfg.image_size,
        channels=data_cfg.image_channels,
        test_fraction=data_cfg.test_fraction,
    )

    def judge_split(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        s = test if split == "test" and test is not None else load_split(data_cfg, split)
        return s["images"], s["labels"]

    return get_judge(jcfg, judge_split, cache_dir, log=log)


def _evaluate(
    model: MMAR,
    dataset: str | DataConfig,
    n_per_class: int,
    seed: int,
    sampling: SamplingConfig,
    judge_cache_dir: str | None,
    inception_weights: str | None,
    log: Callable[[str], None] | None,
    samples_dir: str | Path | None,
    n_edits: int | None,
) -> dict[str, Any]:
    data_cfg = eval_data_config(model, dataset)
    if data_cfg.name == "shapes":
        if inception_weights is not None:
            raise ValueError("evaluate: Inception FID is for digits; shapes report classifier-FID")
        return evaluate_shapes(
            model, data_cfg, n_per_class, seed, sampling, judge_cache_dir, log, samples_dir,
            n_edits,
        )  # fmt: skip
    t_start = time.perf_counter()
    g = torch.Generator().manual_seed(seed)
    test = load_split(data_cfg, "test")
    n = 10 * n_per_class
    perm = torch.randperm(len(test["texts"]), generator=g)  # test splits are sorted by label
    res: dict[str, Any] = {
        "dataset": data_cfg.name,
        "image_size": data_cfg.image_size,
        "seed": seed,
        "n_per_class": n_per_class,
        "sampling": sampling.to_dict(),
    }
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    judge = digit_judge(data_cfg, judge_cache_dir, log, test)
    timings["judge_s"] = time.perf_counter() - t0
    res.update(
        judge_heldout_accuracy=judge.heldout_accuracy,
        judge_from_cache=judge.from_cache,
        judge_path=str(judge.cache_path),
    )
    prompts, labels = metrics.digit_prompts(n_per_class)
    if log:
        log(f"eval {data_cfg.name}: generating {len(prompts)} images ({sampling})")
    t0 = time.perf_counter()
    pil = model.generate_images(prompts, sampling, seed=seed)
    timings["generate_s"] = time.perf_counter() - t0
    res["n_generated"] = len(pil)
    res["images_per_second"] = len(pil) / max(timings["generate_s"], 1e-9)
    gen = pil_to_tensor(pil, data_cfg.image_channels)  # (n, C, H, W)

    # held-out reference / caption sets: disjoint, each the size of the generated set when possible
    m = min(len(gen), len(perm) // 2)
    real_a, real_b = test["images"][perm[:m]], test["images"][perm[m : 2 * m]]
    t0 = time.perf_counter()
    t2i = metrics.t2i_digit_accuracy(judge, gen, labels)
    res.update(
        t2i_accuracy=t2i["accuracy"],
        t2i_accuracy_per_digit=t2i["per_digit"],
        classifier_fid=metrics.classifier_fid(judge, gen, real_a),
        classifier_fid_real_floor=metrics.classifier_fid(judge, real_b, real_a),
        n_real_reference=m,
    )
    if inception_weights is not None:
        inception = InceptionFeatures(inception_weights)
        mu_r, s_r = feature_statistics(inception, real_a, 32)
        res["fid_inception"] = frechet_distance(*feature_statistics(inception, gen, 32), mu_r, s_r)
    timings["metrics_s"] = time.perf_counter() - t0

    idx = perm[: min(n, len(perm))]
    images, texts = test["images"][idx], [test["texts"][i] for i in idx]
    t0 = time.perf_counter()
    captions = model.caption(tensor_to_pil(images), sampling)
    timings["caption_s"] = time.perf_counter() - t0
    res["n_captioned"] = len(captions)
    res["caption_examples"] = [{"true": t, "generated": c} for t, c in zip(texts[:5], captions[:5])]
    res["caption_accuracy"] = metrics.caption_digit_accuracy(captions, test["labels"][idx])
    t0 = time.perf_counter()
    res["text_nll_nats_per_token"] = metrics.text_nll_per_token(
        model, images, texts, sampling.batch_size
    )
    timings["nll_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - t_start
    res["timings"] = timings
    return res


def format_results(res: dict[str, Any]) -> str:
    """A readable two-column table of ``evaluate``'s result."""
    s = res["sampling"]
    steps = str(s["num_steps"])
    if s.get("num_steps_final") is not None:  # annealed over the masked-AR iterations
        steps += f">{s['num_steps_final']}"
    rows = [
        ("dataset", f"{res['dataset']} ({res['image_size']} px), seed {res['seed']}"),
        (
            "sampling",
            f"K={s['num_iter']} guidance={s['guidance_scale']} "
            f"{s['scheduler']} steps={steps} eta={s['eta']} "
            f"T={s['temperature']}",
        ),
    ]
    if res["dataset"] != "shapes":
        judge = f"judge held-out acc {res['judge_heldout_accuracy']:.4f}"
        rows += [
            (
                "judge held-out accuracy",
                f"{res['judge_heldout_accuracy']:.4f}"
                + (" (cached)" if res["judge_from_cache"] else " (trained now)"),
            ),
            ("T2I accuracy", f"{res['t2i_accuracy']:.4f}  (n={res['n_generated']}, {judge})"),
            (
                "classifier-FID (judge features)",
                f"{res['classifier_fid']:.4f}  "
                f"(real-vs-real floor {res['classifier_fid_real_floor']:.4f}, "
                f"n_ref={res['n_real_reference']})",
            ),
            ("caption accuracy", f"{res['caption_accuracy']:.4f}  (n={res['n_captioned']})"),
        ]
    else:
        rows += format_rows(res)
    if "fid_inception" in res:
        rows.append(("FID (Inception)", f"{res['fid_inception']:.4f}"))
    rows += [
        ("text NLL (nats/token)", f"{res['text_nll_nats_per_token']:.4f}"),
        ("sampling speed", f"{res['images_per_second']:.2f} images/s"),
        ("time", ", ".join(f"{k[:-2]} {v:.1f} s" for k, v in res["timings"].items())),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
