"""Training-step time of a preset run (default: the quickstart's stage 1) under several settings,
interleaved in one process so that the machine's drift hits every setting alike; optionally a
torch.profiler table of where one setting's time goes. Writes JSON with --json.

    python benchmarks/train_step.py --setting recipe --setting mul2 \\
        model.diffusion.diffusion_batch_mul=2 [--profile] [--json FILE]

An AVX2-only CPU can be emulated on an AVX-512 one (docs/performance.md):

    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python benchmarks/train_step.py ...
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from mmar.training.config import load_preset
from mmar.training.trainer import Trainer


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--preset", default="quickstart_stage1")
    ap.add_argument(
        "--setting",
        nargs="+",
        action="append",
        metavar="NAME [KEY.PATH=VALUE ...]",
        help="a named setting: the preset with these overrides (repeat; default: the preset)",
    )
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per setting")
    ap.add_argument("--steps", type=int, default=8, help="timed steps per setting and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--profile", action="store_true", help="profile 10 steps of the first setting")
    ap.add_argument("--json", default=None, metavar="FILE")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = {s[0]: s[1:] for s in (args.setting or [["preset"]])}
    fixed = ["train.steps=100000", "train.ckpt_every=0", "train.progress=false"]
    with tempfile.TemporaryDirectory() as tmp:
        runs = {}
        for name, overrides in settings.items():
            trainer = Trainer(load_preset(args.preset, [*fixed, *overrides]), Path(tmp) / name)
            batches = trainer._batches()
            for _ in range(args.warmup):
                trainer._train_step(batches)
            runs[name] = (trainer, batches)
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.rounds):
            for name, (trainer, batches) in runs.items():
                for _ in range(args.steps):
                    t0 = time.perf_counter()
                    trainer._train_step(batches)
                    times[name].append(time.perf_counter() - t0)
        table = None
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            trainer, batches = next(iter(runs.values()))
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(10):
                    trainer._train_step(batches)
            table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
        res = {
            "preset": args.preset,
            "cpu": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(),
            "settings": {
                name: {
                    "overrides": settings[name],
                    "precision": runs[name][0].precision.reason,
                    "batch_size": runs[name][0].cfg.train.batch_size,
                    "median_step_ms": 1000 * statistics.median(times[name]),
                }
                for name in runs
            },
        }
    print(f"{res['preset']}: CPU {res['cpu']}, {res['threads']} threads")
    for name, r in res["settings"].items():
        print(f"{name:16s} {r['median_step_ms']:8.1f} ms/step   ({r['precision']})")
    if table is not None:
        print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
