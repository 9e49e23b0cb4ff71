"""Benchmark scores against training minutes: every checkpoint of a two-stage quickstart run.

    python benchmarks/accuracy_vs_minutes.py --run runs/shapes --bench shapes --n-per-class 10 \\
        --json curve.json

A run directory of `mmar quickstart` holds stage1/ and stage2/, each with checkpoints/step_*/
(keep them: `--set train.keep_last=30 --set train.ckpt_every=200`) and final/. A checkpoint's
training minutes are the wall time from its stage-1 run's start (the mtime of stage1/config.yaml,
written before the first step) to its weights' mtime, so they include checkpoint saves and
stage 2's start-up. Each checkpoint (EMA weights) is scored with `evaluate` on the benchmark's
held-out data at the checkpoint's recommended sampling; one row per checkpoint, in order.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mmar.evaluation.evaluate import evaluate
from mmar.pipelines.mmar import MMAR

COLUMNS = {  # bench -> the result keys shown as columns
    "shapes": (
        "t2i_accuracy_seen",
        "t2i_accuracy_heldout",
        "caption_exact",
        "vqa_accuracy",
        "classifier_fid",
    ),
    "mnist": ("t2i_accuracy", "caption_accuracy", "classifier_fid"),
}
WEIGHTS = "model.safetensors"


def checkpoints(run: Path) -> list[tuple[str, Path]]:
    """(label, directory) of every checkpoint with weights, stage 1 then stage 2, by step; a
    stage's last step checkpoint is left out when its final/ (the same weights) is there."""
    out = []
    for stage in ("stage1", "stage2"):
        steps = sorted(
            (run / stage / "checkpoints").glob("step_*"), key=lambda p: int(p.name.split("_")[1])
        )
        steps = [p for p in steps if (p / WEIGHTS).is_file()]
        if (run / stage / "final" / WEIGHTS).is_file():
            steps = [*steps[:-1], run / stage / "final"]
        out += [(f"{stage}/{p.name}", p) for p in steps]
    if not out:
        raise SystemExit(f"{run}: no stage1/ or stage2/ checkpoint with {WEIGHTS}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--run", required=True, type=Path, help="a quickstart output directory")
    ap.add_argument("--bench", choices=list(COLUMNS), default="shapes")
    ap.add_argument("--n-per-class", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", nargs="*", default=None, help="labels to score, e.g. stage2/final")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    start = (args.run / "stage1" / "config.yaml").stat().st_mtime
    rows: list[dict[str, Any]] = []
    for label, ckpt in checkpoints(args.run):
        if args.only is not None and label not in args.only:
            continue
        minutes = ((ckpt / WEIGHTS).stat().st_mtime - start) / 60
        model = MMAR.from_pretrained(ckpt)
        res = evaluate(model, args.bench, n_per_class=args.n_per_class, seed=args.seed, log=None)
        row = {"checkpoint": label, "minutes": round(minutes, 2)}
        row |= {k: res[k] for k in COLUMNS[args.bench]}
        rows.append(row)
        print(
            f"{label:<22} {minutes:6.1f} min  "
            + "  ".join(
                f"{k} {'n/a' if row[k] is None else f'{row[k]:.3f}'}" for k in COLUMNS[args.bench]
            ),
            flush=True,
        )
    if args.json is not None:
        args.json.write_text(json.dumps({"run": str(args.run), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
