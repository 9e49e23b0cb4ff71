"""``mmar generate``: text-to-image sampling from a checkpoint directory, written as PNGs."""

from __future__ import annotations

import argparse
from pathlib import Path

from mmar.cli.options import (
    CliError,
    add_model_options,
    add_sampling_options,
    check_out_dir,
    load_model,
    sampling_from_args,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "generate",
        help="generate images from text prompts with a trained MMAR checkpoint",
        description="Masked-autoregressive text-to-image sampling (K iterations, CFG on the "
        "diffusion head's prediction, KV-cached prompt). Writes one PNG per (prompt, sample), "
        "named p{prompt index}_s{sample index}.png, and prints their paths. Image k of the "
        "call (prompts in order, --n samples each) uses seed --seed + k, so an image does not "
        "depend on --batch-size or on the other prompts.",
    )
    add_model_options(p)
    p.add_argument(
        "--prompt",
        action="append",
        required=True,
        metavar="TEXT",
        help="a prompt; repeat for several ('' = unconditional)",
    )
    p.add_argument("--n", type=int, default=1, help="samples per prompt (default 1)")
    p.add_argument("--seed", type=int, default=0, help="image k uses seed + k (default 0)")
    add_sampling_options(p, image=True, text=False)
    p.add_argument("--out", required=True, metavar="DIR", help="output directory for the PNGs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise CliError(f"--n must be >= 1, got {args.n}")
    check_out_dir(args.out)  # before the model is loaded
    model = load_model(args)
    sampling = sampling_from_args(model.sampling, args)
    prompts = [p for p in args.prompt for _ in range(args.n)]
    try:
        images = model.generate_images(prompts, sampling, seed=args.seed)
    except ValueError as e:
        raise CliError(str(e)) from None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for k, image in enumerate(images):
        path = out / f"p{k // args.n:03d}_s{k % args.n:03d}.png"
        image.save(path)
        print(path)
    return 0
