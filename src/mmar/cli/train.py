"""`mmar train`: train (or resume) an MMAR model from a YAML run config."""

from __future__ import annotations

import argparse
import sys

from mmar.cli.options import add_set_option, check_out_dir

DESCRIPTION = """\
Train an MMAR model from a run config {model, data, optim, train} (see configs/*.yaml and
mmar/presets/). The config is fully validated before anything starts. Writes OUT/config.yaml,
OUT/metrics.jsonl, OUT/loss.png, OUT/checkpoints/step_XXXXXXX/ (atomic, the last
train.keep_last kept) and OUT/final/ (EMA + raw weights; load it with MMAR.from_pretrained).
Unreadable items are skipped, named once and listed in OUT/skipped.jsonl; the run stops when
no item can be read, or more than data.max_unreadable_share (default 0.1) of them cannot.
Exit status: 0 done, 1 the run diverged (NaN/inf losses in a row), 2 a bad config, device or file.

examples:
  mmar train --config configs/mnist_stage1.yaml --out runs/mnist_stage1
  mmar train --config configs/mnist_stage2.yaml --out runs/mnist_stage2
  mmar train --config configs/tiny.yaml --out runs/tiny --set train.steps=50 optim.lr=2e-3
  mmar train --config configs/mnist_stage1.yaml --out runs/mnist_stage1 --resume
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train or resume an MMAR model from a YAML run config",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--config",
        required=True,
        help="run config YAML (a path, or a preset name: tiny, mnist_stage1, mnist_stage2)",
    )
    p.add_argument(
        "--out", default=None, help="output directory (default: runs/<config file name>)"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest readable checkpoint in OUT (optimizer, "
        "scheduler, EMA, RNG states and data position included) and print its step; a damaged "
        "newest checkpoint is reported by file and the one before it is used; train.steps "
        "(--steps) must be at least the step already done",
    )
    p.add_argument("--steps", type=int, default=None, help="override train.steps")
    add_set_option(
        p,
        "override config fields, values parsed as YAML, e.g. --set train.batch_size=16 "
        "model.mask.ratio_min=0.0",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mmar.training.config import PRESETS_DIR, load_run_config

    path = Path(args.config)
    if not path.is_file() and (PRESETS_DIR / f"{args.config}.yaml").is_file():
        path = PRESETS_DIR / f"{args.config}.yaml"
    out = check_out_dir(args.out if args.out else Path("runs") / path.stem)
    overrides = list(args.overrides)
    if args.steps is not None:
        overrides.append(f"train.steps={args.steps}")
    cfg = load_run_config(path, overrides)  # a ConfigError names the file and the field

    from mmar.training.trainer import Trainer, TrainingDiverged

    try:
        # a bad config, device or file (out dir, checkpoint, init_from): main's one line, status 2
        summary = Trainer(cfg, out, resume=args.resume).fit()
    except TrainingDiverged as e:  # the run failed, not its input: status 1
        print(f"mmar train: {e}", file=sys.stderr)
        return 1
    print(f"done: step {summary['step']} ({summary['stopped']}), final model in {summary['final']}")
    return 0
