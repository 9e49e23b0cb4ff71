"""Sampling speed and judged quality of a trained MMAR, one row per sampling setting: images/s
(median of interleaved rounds, all in this one process) and, for an MNIST model, the T2I
accuracy of the judge CNN of `mmar eval` on the same images (the accuracy-vs-steps curve of
docs/performance.md). The checkpoint's recommended SamplingConfig is the base of every row;
a row changes its scheduler, steps (``S``, or ``S>F``: annealed from S at the first masked-AR
iteration to F at the last) and temperature. One more row times the recomputed (uncached) text
prefix against the KV-cached one. Writes JSON with --json.

    python benchmarks/sampling.py --model runs/quickstart [--rows ddpm:50,dpm++2m:10] \\
        [--n-per-class 10] [--rounds 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import torch
from vs_mar import parse_rows, resolve_temperature

from mmar.model.config import SamplingConfig
from mmar.pipelines.mmar import MMAR

DEFAULT_ROWS = (
    "ddpm:50,ddpm:25,ddpm:10,ddim:50,ddim:25,ddim:10,dpm++2m:25,dpm++2m:10,dpm++2m:5,"
    "ddpm:50>10,ddpm:25>5,dpm++2m:10>5"
)


def row_sampling(base: SamplingConfig, spec: str) -> tuple[str, SamplingConfig]:
    """``scheduler:steps[:temperature]`` -> (its name, the SamplingConfig it samples with)."""
    (row,) = parse_rows("mmar", spec)
    row = resolve_temperature(row, base.temperature)
    s = base.replace(
        scheduler=row.scheduler,
        num_steps=row.steps,
        num_steps_final=row.steps_final,
        eta=0.0,
        temperature=1.0 if row.temperature is None else row.temperature,
    )
    return row.name.removeprefix("mmar "), s


def judge_for(model: MMAR) -> object | None:
    """The cached judge of `mmar eval` for an MNIST model, else None (no accuracy column)."""
    from mmar.data import DataConfig
    from mmar.evaluation.evaluate import load_split
    from mmar.evaluation.judge import JudgeConfig, get_judge

    tok = model.config.image_tokenizer
    if tok.kind != "pixels" or tok.image_channels != 1:
        return None
    data_cfg = DataConfig(name="mnist", image_size=tok.image_size)
    return get_judge(
        JudgeConfig(dataset="mnist", image_size=tok.image_size, channels=1),
        lambda split: (lambda s: (s["images"], s["labels"]))(load_split(data_cfg, split)),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--model", default="runs/quickstart")
    ap.add_argument("--rows", default=DEFAULT_ROWS, help="scheduler:steps[:temperature],...")
    ap.add_argument("--n-per-class", type=int, default=10, help="judged images per digit per row")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (one batch each)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--no-judge", action="store_true", help="speed only (no accuracy column)")
    ap.add_argument("--json", default=None, metavar="FILE")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from mmar.evaluation import metrics

    model = MMAR.from_pretrained(args.model)
    judge = None if args.no_judge else judge_for(model)
    prompts, labels = metrics.digit_prompts(args.n_per_class)
    chunks = [list(range(len(prompts)))[r :: args.rounds] for r in range(args.rounds)]
    base = model.sampling.replace(batch_size=max(len(c) for c in chunks))
    rows = dict(row_sampling(base, spec) for spec in args.rows.split(",") if spec.strip())
    first = next(iter(rows))
    model.generate_images(prompts[:2], base.replace(num_steps=5))  # warm-up
    ips: dict[str, list[float]] = {k: [] for k in [*rows, f"{first} uncached"]}
    images: dict[str, list[torch.Tensor]] = {k: [] for k in rows}
    for r, idx in enumerate(chunks):  # interleaved: the machine's drift hits every row alike
        batch = [prompts[i] for i in idx]
        for name, s in rows.items():
            t0 = time.perf_counter()
            tokens = model.generate_tokens(batch, s, seed=1000 * r)
            pixels = model.processor.decode_tokens(tokens)
            ips[name].append(len(batch) / (time.perf_counter() - t0))
            images[name].append(pixels)
        t0 = time.perf_counter()
        model.generate_tokens(batch, rows[first], seed=1000 * r, use_cache=False)
        ips[f"{first} uncached"].append(len(batch) / (time.perf_counter() - t0))
    order = torch.tensor([i for idx in chunks for i in idx])
    results = {}
    for name, per_round in ips.items():
        row: dict[str, object] = {"images_per_s": statistics.median(per_round)}
        if name in rows:
            row["sampling"] = rows[name].to_dict()
            if judge is not None:
                acc = metrics.t2i_digit_accuracy(
                    judge, torch.cat(images[name]), [labels[i] for i in order]
                )["accuracy"]
                row["accuracy"] = acc
                row["accuracy_se"] = math.sqrt(acc * (1 - acc) / len(order))
        results[name] = row
    res = {
        "model": args.model,
        "prompts": len(prompts),
        "rounds": args.rounds,
        "batch": len(chunks[0]),
        "num_iter": base.num_iter,
        "guidance_scale": base.guidance_scale,
        "threads": torch.get_num_threads(),
        "cpu": torch.backends.cpu.get_cpu_capability(),
        "rows": results,
        "cache_speedup": results[first]["images_per_s"]  # type: ignore[operator]
        / results[f"{first} uncached"]["images_per_s"],
    }
    print(
        f"{res['cpu']}, {res['threads']} threads, fp32; K = {base.num_iter}, guidance "
        f"{base.guidance_scale}, batches of {res['batch']}, medians of {args.rounds} rounds"
    )
    for name, row in results.items():
        acc = (
            f"   T2I accuracy {row['accuracy']:.3f} ± {row['accuracy_se']:.3f}"
            if "accuracy" in row
            else ""
        )
        print(f"{name:22s} {row['images_per_s']:7.2f} images/s{acc}")
    print(f"KV cache speed-up ({first}): {res['cache_speedup']:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
