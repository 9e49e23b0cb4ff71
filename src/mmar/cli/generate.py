"""``mmar generate``: text-to-image sampling from a checkpoint directory, written as PNGs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "generate",
        help="generate images from text prompts with a trained MMAR checkpoint",
        description="Masked-autoregressive text-to-image sampling (K iterations, CFG on the "
        "diffusion head's prediction, KV-cached prompt). Writes one PNG per (prompt, sample), "
        "named p{prompt index}_s{sample index}.png, and prints their paths.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", required=True, metavar="DIR",
                   help="checkpoint directory written by save_pretrained / mmar train")
    p.add_argument("--prompt", action="append", required=True, metavar="TEXT",
                   help="a prompt; repeat for several ('' = unconditional)")
    p.add_argument("--n", type=int, default=1, help="samples per prompt")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    p.add_argument("--num-iter", type=int, default=16, help="masked-AR iterations K")
    p.add_argument("--cfg", type=float, default=3.0, help="classifier-free guidance scale w")
    p.add_argument("--temperature", type=float, default=None,
                   help="diffusion sampling temperature (default: the model's diffusion config)")
    p.add_argument("--num-steps", type=int, default=None,
                   help="diffusion sampling steps (default: the checkpoint's config)")
    p.add_argument("--sampler", choices=["ddim", "ddpm"], default=None,
                   help="diffusion sampler (default: the checkpoint's config)")
    p.add_argument("--batch-size", type=int, default=None, help="prompts per batch (default: all)")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights, not the EMA")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory for the PNGs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not (Path(args.model) / "config.json").is_file():
        print(f"mmar generate: --model {args.model} is not a checkpoint directory "
              "(no config.json); e.g. --model runs/quickstart", file=sys.stderr)
        return 2
    if args.n < 1:
        print(f"mmar generate: --n must be >= 1, got {args.n}", file=sys.stderr)
        return 2
    import torch

    from mmar.model.mmar import MMAR

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = MMAR.from_pretrained(args.model, device=device, use_ema=not args.no_ema)
    prompts = [p for p in args.prompt for _ in range(args.n)]
    try:
        images = model.generate_images(prompts, num_iter=args.num_iter, cfg=args.cfg,
                                       temperature=args.temperature, num_steps=args.num_steps,
                                       sampler=args.sampler, seed=args.seed,
                                       batch_size=args.batch_size)
    except ValueError as e:
        print(f"mmar generate: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for k, image in enumerate(images):
        path = out / f"p{k // args.n:03d}_s{k % args.n:03d}.png"
        image.save(path)
        print(path)
    return 0
