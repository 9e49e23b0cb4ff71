"""Sampling speed of a trained MMAR: images/s for the KV-cached vs the recomputed prefix, and for
several numbers of DDIM steps. Medians of --repeats runs, interleaved, all in this one process;
writes JSON with --json. The checkpoint's recommended SamplingConfig is the base of every row.

    python benchmarks/sampling.py --model runs/quickstart [--json FILE] [--batch 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from mmar.model.config import SamplingConfig
from mmar.pipelines.mmar import MMAR


def seconds(
    model: MMAR, prompts: list[str], sampling: SamplingConfig, seed: int, use_cache: bool
) -> float:
    t0 = time.perf_counter()
    model.generate_images(prompts, sampling, seed=seed, use_cache=use_cache)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--model", default="runs/quickstart")
    ap.add_argument("--batch", type=int, default=20, help="prompts per generate_images call")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--json", default=None, metavar="FILE")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = MMAR.from_pretrained(args.model)
    prompts = [f"a handwritten digit {d}" for d in range(10)] * (args.batch // 10 or 1)
    base = model.sampling.replace(
        scheduler="ddim", eta=0.0, temperature=1.0, batch_size=len(prompts)
    )
    rows = {f"ddim{n}_cached": (base.replace(num_steps=n), True) for n in (50, 25, 10)}
    rows["ddim50_uncached"] = (base.replace(num_steps=50), False)
    model.generate_images(prompts[:2], base.replace(num_steps=5))  # warm-up
    times: dict[str, list[float]] = {k: [] for k in rows}
    for r in range(args.repeats):  # interleaved: drift of the machine hits every row alike
        for name, (s, cached) in rows.items():
            times[name].append(seconds(model, prompts, s, r, cached))
    ips = {k: len(prompts) / statistics.median(v) for k, v in times.items()}
    res = {
        "model": args.model,
        "batch": len(prompts),
        "num_iter": base.num_iter,
        "guidance_scale": base.guidance_scale,
        "threads": torch.get_num_threads(),
        "cpu": torch.backends.cpu.get_cpu_capability(),
        "images_per_s": ips,
        "cache_speedup_ddim50": ips["ddim50_cached"] / ips["ddim50_uncached"],
    }
    for k, v in ips.items():
        print(f"{k:18s} {v:7.2f} images/s")
    print(
        f"KV cache speed-up at 50 DDIM steps: {res['cache_speedup_ddim50']:.2f}x "
        f"(CPU: {res['cpu']}, {res['threads']} threads)"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
