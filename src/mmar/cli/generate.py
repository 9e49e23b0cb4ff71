"""``mmar generate``: text-to-image sampling from a checkpoint directory, written as PNGs."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from mmar.cli.options import (
    CliError,
    add_model_options,
    add_sampling_options,
    check_out_dir,
    load_model,
    sampling_from_args,
)

# p{prompt index}_s{sample index}.png, zero-padded to 3 digits (more for the 1000th on)
OUTPUT_NAME = "p{prompt:03d}_s{sample:03d}.png"
OUTPUT_RE = re.compile(r"p\d{3,}_s\d{3,}\.png")

DESCRIPTION = """\
Masked-autoregressive text-to-image sampling (K iterations, CFG on the diffusion head's
prediction, KV-cached prompt). Writes one PNG per (prompt, sample) into --out and prints their
paths, named pPPP_sSSS.png: prompt index PPP and sample index SSS, counted from 0 and
zero-padded to 3 digits (p000_s000.png p000_s001.png p001_s000.png ...).

--out must be a new or empty directory, so that it never mixes two runs' images; --force
writes into a non-empty one after deleting the pPPP_sSSS.png files already there (other files
are kept). Image k of the call (prompts in order, --n samples each) uses seed --seed + k, so an
image does not depend on --batch-size or on the other prompts. Words the model's vocabulary
lacks, and prompt words past its max_text_len tokens, are named in one warning.

examples:
  mmar generate --model runs/quickstart --prompt "a handwritten digit seven" --n 4 --out sevens
  mmar generate --model runs/mnist_stage2/final --prompt "a handwritten digit one" --prompt "" \
      --seed 7 --num-steps 25 --out samples --force
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "generate",
        help="generate images from text prompts with a trained MMAR checkpoint",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    p.add_argument(
        "--out", required=True, metavar="DIR", help="output directory for the PNGs (new or empty)"
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="write into a non-empty --out, deleting the pPPP_sSSS.png files already there",
    )
    p.set_defaults(func=run)


def check_out(path: str, force: bool) -> Path:
    """Refuse an --out that is a file, or a non-empty directory without --force."""
    out = check_out_dir(path)
    if out.is_dir() and not force and any(out.iterdir()):
        raise CliError(
            f"--out {out} is not empty; give a new or empty directory, or pass --force to "
            "delete the pPPP_sSSS.png files there and write the new ones (other files are kept)"
        )
    return out


def run(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise CliError(f"--n must be >= 1, got {args.n}")
    out = check_out(args.out, args.force)  # before the model is loaded
    model = load_model(args)
    sampling = sampling_from_args(model.sampling, args)
    prompts = [p for p in args.prompt for _ in range(args.n)]
    try:
        images = model.generate_images(prompts, sampling, seed=args.seed)
    except ValueError as e:  # ConfigError included: a sampling value this model cannot take
        raise CliError(str(e)) from None
    try:
        out.mkdir(parents=True, exist_ok=True)
        for old in out.iterdir():  # only with --force (check_out): the earlier run's images
            if OUTPUT_RE.fullmatch(old.name) and old.is_file():
                old.unlink()
        paths = []
        for k, image in enumerate(images):
            paths.append(out / OUTPUT_NAME.format(prompt=k // args.n, sample=k % args.n))
            image.save(paths[-1])
    except OSError as e:
        raise CliError(f"cannot write the images to --out {out}: {e}") from None
    for path in paths:
        print(path)
    return 0
