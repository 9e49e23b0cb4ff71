"""Sampling speed of a trained MMAR: images/s for the KV-cached vs the recomputed prefix, and for
several numbers of DDIM steps. Medians of --repeats runs, all measured in this one process.

    python benchmarks/sampling.py --model runs/quickstart [--json FILE] [--batch 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from mmar.model.mmar import MMAR


def images_per_s(model, prompts, repeats: int, **kw) -> float:
    times = []
    for r in range(repeats):
        t0 = time.perf_counter()
        model.generate_images(prompts, seed=r, **kw)
        times.append(time.perf_counter() - t0)
    return len(prompts) / statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="runs/quickstart")
    ap.add_argument("--batch", type=int, default=20, help="prompts per generate_images call")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--num-iter", type=int, default=16)
    ap.add_argument("--cfg", type=float, default=3.0)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = MMAR.from_pretrained(args.model)
    prompts = [f"a handwritten digit {d}" for d in range(10)] * (args.batch // 10 or 1)
    common = dict(num_iter=args.num_iter, cfg=args.cfg, sampler="ddim")
    model.generate_images(prompts[:2], num_steps=5, **common)  # warm-up
    rows = {}
    for steps in (50, 25, 10):
        rows[f"ddim{steps}_cached"] = images_per_s(model, prompts, args.repeats, num_steps=steps,
                                                   **common)
    rows["ddim50_uncached"] = images_per_s(model, prompts, args.repeats, num_steps=50,
                                           use_cache=False, **common)
    res = {"model": args.model, "batch": len(prompts), "num_iter": args.num_iter, "cfg": args.cfg,
           "threads": torch.get_num_threads(), "images_per_s": rows,
           "cache_speedup_ddim50": rows["ddim50_cached"] / rows["ddim50_uncached"]}
    for k, v in rows.items():
        print(f"{k:18s} {v:7.2f} images/s")
    print(f"KV cache speed-up at 50 DDIM steps: {res['cache_speedup_ddim50']:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
