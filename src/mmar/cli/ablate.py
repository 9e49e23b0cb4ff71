"""`mmar ablate`: the paper's ablation table, reproduced small (docs/ablations.md).

Trains every variant of a suite (one config switch each: eps- and x0-prediction, stage 1 only,
a uniform stage-2 mask ratio, VQ tokens with a softmax head, a Transfusion-style model, KL
latents) with one budget per variant and seed, evaluates each with the bench, and writes
OUT/table.md (the paper's shape: understanding, generation, classifier-FID, holes, with mean ±
sd over the seeds), OUT/chart.png and OUT/results.json. It resumes: a finished run is kept, a
trained one is only evaluated. It is a benchmark, not a test: the paper suite at 5 minutes and
2 seeds takes hours on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from mmar.cli.options import (
    CliError,
    add_device_option,
    add_set_option,
    add_tokenizer_set_option,
    check_out_dir,
)

DESCRIPTION = (__doc__ or "").split("\n", 2)[2]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "ablate",
        help="train and evaluate the paper's ablation variants, write the table and a chart",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--suite", default="paper", help="the variants to run (default: %(default)s)")
    p.add_argument(
        "--bench",
        choices=["shapes", "mnist"],
        default="shapes",
        help="the presets and evaluation: shapes (T2I seen / held-out, captions, VQA) or mnist "
        "(T2I, captions) (default: %(default)s)",
    )
    p.add_argument("--out", default=None, help="output directory (default: runs/ablate-BENCH)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="training wall time per variant and seed; the steps that fit are calibrated on "
        "each variant's own step (default: 5)",
    )
    budget.add_argument(
        "--steps", type=int, default=None, help="the same optimisation steps for every variant"
    )
    p.add_argument("--seeds", type=int, default=2, help="seeds 0..N-1 (default: %(default)s)")
    p.add_argument(
        "--only", nargs="+", default=None, metavar="NAME", help="run these variants only"
    )
    p.add_argument(
        "--n-per-class",
        type=int,
        default=10,
        help="the bench's evaluation size (as `mmar eval`) (default: %(default)s)",
    )
    p.add_argument(
        "--completion-images",
        type=int,
        default=50,
        help="held-out images of the completion curve and the loss per mask ratio "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--tokenizer-minutes",
        type=float,
        default=3.0,
        help="training budget of each image tokenizer (kl, vq) (default: %(default)s)",
    )
    add_tokenizer_set_option(p, "override fields of the tokenizers' `mmar train-tokenizer` configs")
    p.add_argument("--list", action="store_true", help="print the suite's variants and exit")
    add_device_option(p)
    add_set_option(
        p, "override fields of every variant's run configs, e.g. --set train.batch_size=32"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mmar.ablation.report import write_report
    from mmar.ablation.runner import AblationPlan, AblationRunner, plan_summary
    from mmar.ablation.variants import select
    from mmar.cli.quickstart import BENCHES
    from mmar.torch_utils import resolve_device

    try:
        variants = select(args.suite, args.only)
    except ValueError as e:
        raise CliError(str(e)) from None
    out = check_out_dir(args.out or f"runs/ablate-{args.bench}")
    if args.seeds < 1:
        raise CliError(f"--seeds must be >= 1, got {args.seeds}")
    minutes = 5.0 if args.minutes is None and args.steps is None else args.minutes
    try:
        plan = AblationPlan(
            variants=tuple(variants),
            bench=args.bench,
            presets=BENCHES[args.bench].presets,
            out=out,
            seeds=tuple(range(args.seeds)),
            minutes=minutes,
            steps=args.steps,
            overrides=tuple(args.overrides),
            n_per_class=args.n_per_class,
            completion_images=args.completion_images,
            tokenizer_minutes=args.tokenizer_minutes,
            tokenizer_overrides=tuple(args.tokenizer_set),
            device=str(resolve_device(args.device)),
        )
    except ValueError as e:
        raise CliError(str(e)) from None
    print(f"suite {args.suite}, bench {args.bench}:\n{plan_summary(plan)}")
    if args.list:
        return 0
    runner = AblationRunner(plan)
    runner.check()  # every config, before any training
    results = runner.run()
    table, _ = write_report(results, variants, args.bench, out, command_line(args, out))
    print(table)
    print(f"wrote {out}/table.md, chart.png and results.json")
    return 0


def command_line(args: argparse.Namespace, out: Path) -> str:
    """The command that reproduces this run (recorded in table.md and results.json)."""
    parts = ["mmar", "ablate", "--suite", args.suite, "--bench", args.bench]
    parts += ["--steps", str(args.steps)] if args.steps is not None else []
    parts += ["--minutes", f"{args.minutes:g}"] if args.minutes is not None else []
    parts += ["--seeds", str(args.seeds), "--out", str(out)]
    parts += ["--only", *args.only] if args.only else []
    parts += ["--n-per-class", str(args.n_per_class)]
    parts += ["--completion-images", str(args.completion_images)]
    parts += ["--tokenizer-minutes", f"{args.tokenizer_minutes:g}"]
    parts += ["--tokenizer-set", *args.tokenizer_set] if args.tokenizer_set else []
    parts += ["--set", *args.overrides] if args.overrides else []
    return " ".join(shlex.quote(p) for p in parts)
