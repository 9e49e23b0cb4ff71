"""`mmar eval`: score a checkpoint (T2I accuracy, classifier-FID, captions, text NLL, speed)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DESCRIPTION = """\
Evaluate an MMAR checkpoint on a built-in dataset's held-out split and print a table.

digits (mnist, digits): text-to-image accuracy (share of generated images a CNN judge, trained on
the training split and cached in $XDG_CACHE_HOME/mmar/judges, reads as the prompted digit; its
held-out accuracy is printed with the result), classifier-FID (Frechet distance in the judge's
feature space, generated vs held-out real, with the real-vs-real floor; NOT Inception FID),
caption accuracy, text NLL (nats/token), sampling speed.
shapes: T2I colour / shape / position / all-three accuracy read from pixels, caption exact match
and attribute accuracy, text NLL.
Standard FID needs Inception weights (not shipped): --inception-weights FILE.

examples:
  mmar eval --model runs/quickstart/final
  mmar eval --model runs/mnist_stage2/final --n-per-class 50 --cfg 3 --num-iter 16 --json eval.json
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval", help="evaluate a checkpoint: T2I accuracy, classifier-FID, captions, NLL",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="checkpoint directory (config.json + model.safetensors)")
    p.add_argument("--dataset", default=None, choices=["mnist", "digits", "shapes"],
                   help="held-out data to score on (default: the checkpoint's training data if "
                        "recorded, else mnist)")
    p.add_argument("--n-per-class", type=int, default=20,
                   help="digits: images generated per digit; shapes: 10 x N held-out captions "
                        "as prompts; as many held-out images are captioned (default 20)")
    p.add_argument("--seed", type=int, default=0, help="sampling and held-out subset seed (default 0)")
    p.add_argument("--num-iter", type=int, default=16, help="masked-AR iterations K (default 16)")
    p.add_argument("--cfg", type=float, default=3.0, help="classifier-free guidance scale (default 3.0)")
    p.add_argument("--temperature", type=float, default=None,
                   help="diffusion sampling temperature (default: the model's diffusion config)")
    p.add_argument("--num-steps", type=int, default=None,
                   help="diffusion sampling steps (default: the model's diffusion config)")
    p.add_argument("--sampler", choices=["ddim", "ddpm"], default=None,
                   help="diffusion sampler (default: the model's diffusion config)")
    p.add_argument("--batch-size", type=int, default=50, help="images per sampling / captioning batch")
    p.add_argument("--max-new-tokens", type=int, default=32, help="caption length limit (default 32)")
    p.add_argument("--inception-weights", default=None, metavar="FILE",
                   help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth: adds standard FID")
    p.add_argument("--no-ema", action="store_true", help="evaluate the raw weights, not the EMA")
    p.add_argument("--json", default=None, metavar="FILE",
                   help="write the results as JSON (default: MODEL/eval_<dataset>_seed<S>.json)")
    p.set_defaults(func=run)


def recorded_dataset(model_dir: Path) -> dict | None:
    """The training DataConfig (as a dict) of a checkpoint, if its run recorded one.

    Looked up in ``trainer_state/state.json`` ("run_config": a checkpoint of ``mmar train``), then
    in the run's ``config.yaml`` next to ``final/`` or two levels above ``checkpoints/step_*``.
    """
    import yaml

    state = model_dir / "trainer_state" / "state.json"
    if state.is_file():
        data = json.loads(state.read_text()).get("run_config", {}).get("data")
        if isinstance(data, dict):
            return data
    for run_yaml in (model_dir / "config.yaml", model_dir.parent / "config.yaml",
                     model_dir.parent.parent / "config.yaml"):
        if run_yaml.is_file():
            data = (yaml.safe_load(run_yaml.read_text()) or {}).get("data")
            if isinstance(data, dict):
                return data
    return None


def run(args: argparse.Namespace) -> int:
    from mmar.data import DataConfig
    from mmar.evaluation.evaluate import EVAL_DATASETS, eval_data_config, evaluate, format_results
    from mmar.model.mmar import MMAR

    model_dir = Path(args.model)
    if not (model_dir / "config.json").is_file():
        print(f"mmar eval: {model_dir} is not a checkpoint (no config.json); pass the directory "
              "written by save_pretrained, e.g. runs/quickstart/final", file=sys.stderr)
        return 2
    if args.n_per_class < 1:
        print(f"mmar eval: --n-per-class must be >= 1, got {args.n_per_class}", file=sys.stderr)
        return 2
    dataset: str | dict = args.dataset or "mnist"
    if args.dataset is None and (recorded := recorded_dataset(model_dir)) is not None:
        if recorded.get("name") not in EVAL_DATASETS:
            print(f"mmar eval: the model was trained on '{recorded.get('name')}', which has no "
                  f"built-in metrics; pass --dataset {{{','.join(EVAL_DATASETS)}}}", file=sys.stderr)
            return 2
        dataset = recorded
    model = MMAR.from_pretrained(model_dir, use_ema=not args.no_ema)
    try:
        data_cfg = eval_data_config(model, DataConfig.from_dict(dataset) if isinstance(dataset, dict) else dataset)
    except ValueError as e:  # ConfigError included: the data does not fit this model
        print(f"mmar eval: cannot evaluate {model_dir} on this data: {e}", file=sys.stderr)
        return 2
    log = lambda msg: print(msg, file=sys.stderr)  # noqa: E731  progress on stderr, table on stdout
    res = evaluate(model, data_cfg, n_per_digit=args.n_per_class, seed=args.seed, num_iter=args.num_iter,
                   cfg=args.cfg, temperature=args.temperature, num_steps=args.num_steps,
                   sampler=args.sampler, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                   inception_weights=args.inception_weights, log=log)
    res["model"] = str(model_dir)
    print(format_results(res))
    out = Path(args.json) if args.json else model_dir / f"eval_{res['dataset']}_seed{args.seed}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print(f"results written to {out}")
    return 0
