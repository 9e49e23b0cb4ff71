"""`mmar eval`: score a checkpoint (T2I accuracy, classifier-FID, captions, text NLL, speed)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from mmar.cli.options import (
    CliError,
    add_json_option,
    add_model_options,
    add_sampling_options,
    check_model_dir,
    human_output,
    load_model,
    sampling_from_args,
    write_json,
)

DESCRIPTION = """\
Evaluate an MMAR checkpoint on a built-in dataset's held-out split and print a table.

digits (mnist, digits): text-to-image accuracy (share of generated images a CNN judge, trained on
the training split and cached in $XDG_CACHE_HOME/mmar/judges, reads as the prompted digit; its
held-out accuracy is printed with the result), classifier-FID (Frechet distance in the judge's
feature space, generated vs held-out real, with the real-vs-real floor; NOT Inception FID),
caption accuracy, text NLL (nats/token), sampling speed.
shapes (--bench shapes): the compositional benchmark. T2I accuracy read back from pixels
(check_scene, no learned model) per GenEval category (single object, two objects, counting,
colours, position, colour attribution; overall = their mean), for seen and held-out
compositions; caption exact match; VQA accuracy per question kind (colour, shape, count, exists,
relation); classifier-FID in the features of a judge trained on real renders, with the
real-vs-real floor; text NLL; samples.png (prompted samples, the prompt under each image, a
green / red frame for the checker's verdict) in --samples-dir.
Standard FID (digits) needs Inception weights (not shipped): --inception-weights FILE.

Sampling (generation and captioning) defaults to the checkpoint's recommended SamplingConfig;
the flags below override single fields. The table goes to stdout; --json FILE writes the whole
result (per-digit accuracies, caption examples, timings, the sampling used).

examples:
  mmar eval --model runs/quickstart
  mmar eval --model runs/mnist_stage2/final --n-per-class 50 --guidance-scale 3 --json eval.json
  mmar eval --model runs/shapes --bench shapes --json shapes.json
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="evaluate a checkpoint: T2I accuracy, classifier-FID, captions, NLL",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_options(p)
    p.add_argument(
        "--bench",
        "--dataset",
        dest="dataset",
        default=None,
        choices=["mnist", "digits", "shapes"],
        help="held-out data to score on (default: the checkpoint's training data if "
        "recorded, else mnist)",
    )
    p.add_argument(
        "--n-per-class",
        type=int,
        default=20,
        help="digits: images generated per digit; shapes: N benchmark prompts per "
        "category, seen and held-out (10 x N); as many held-out images are captioned "
        "(default 20)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="sampling and held-out subset seed (default 0)"
    )
    add_sampling_options(p)
    p.add_argument(
        "--edits",
        type=int,
        default=None,
        metavar="N",
        help="shapes: editing cases, one object inpainted into another colour or shape "
        "(default 5 x --n-per-class; 0 skips it)",
    )
    p.add_argument(
        "--samples-dir",
        default=None,
        metavar="DIR",
        help="shapes: where samples.png goes (default: the current directory)",
    )
    p.add_argument(
        "--inception-weights",
        default=None,
        metavar="FILE",
        help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth: adds standard FID",
    )
    add_json_option(p)
    p.set_defaults(func=run)


def recorded_dataset(model_dir: Path) -> dict[str, Any] | None:
    """The training DataConfig (as a dict) of a checkpoint, if its run recorded one.

    Looked up in ``trainer_state/state.json`` ("run_config": a checkpoint of ``mmar train``), then
    in the run's ``config.yaml`` next to ``final/`` or two levels above ``checkpoints/step_*``.
    """
    from mmar.config import read_json, read_yaml  # errors name the file and the line

    state = model_dir / "trainer_state" / "state.json"
    if state.is_file():
        run = read_json(state)
        run = run.get("run_config") if isinstance(run, dict) else None
        data = run.get("data") if isinstance(run, dict) else None
        if isinstance(data, dict):
            return data
    for run_yaml in (
        model_dir / "config.yaml",
        model_dir.parent / "config.yaml",
        model_dir.parent.parent / "config.yaml",
    ):
        if run_yaml.is_file():
            run = read_yaml(run_yaml)
            data = run.get("data") if isinstance(run, dict) else None
            if isinstance(data, dict):
                return data
    return None


def run(args: argparse.Namespace) -> int:
    from mmar.data import DataConfig
    from mmar.evaluation.evaluate import EVAL_DATASETS, eval_data_config, evaluate, format_results

    model_dir = check_model_dir(args.model)
    if args.n_per_class < 1:
        raise CliError(f"--n-per-class must be >= 1, got {args.n_per_class}")
    if args.edits is not None and args.edits < 0:
        raise CliError(f"--edits must be >= 0, got {args.edits}")
    dataset: str | DataConfig = args.dataset or "mnist"
    if args.dataset is None and (recorded := recorded_dataset(model_dir)) is not None:
        if recorded.get("name") not in EVAL_DATASETS:
            raise CliError(
                f"the model was trained on '{recorded.get('name')}', which has no "
                f"built-in metrics; pass --dataset {{{','.join(EVAL_DATASETS)}}}"
            )
        dataset = DataConfig.from_dict(recorded)
    model = load_model(args)
    sampling = sampling_from_args(model.sampling, args)
    try:
        data_cfg = eval_data_config(model, dataset)
    except ValueError as e:  # ConfigError included: the data does not fit this model
        raise CliError(f"cannot evaluate {model_dir} on this data: {e}") from None
    log = lambda msg: print(msg, file=sys.stderr)  # noqa: E731  progress on stderr, table on stdout
    res = evaluate(
        model,
        data_cfg,
        n_per_class=args.n_per_class,
        seed=args.seed,
        sampling=sampling,
        inception_weights=args.inception_weights,
        log=log,
        samples_dir=(args.samples_dir or ".") if data_cfg.name == "shapes" else None,
        n_edits=args.edits,
    )
    res["model"] = str(model_dir)
    print(format_results(res), file=human_output(args))
    write_json(res, args.json)
    return 0
