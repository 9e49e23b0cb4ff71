"""``mmar caption``: describe image files with a trained MMAR checkpoint."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "caption",
        help="caption image files with a trained MMAR checkpoint",
        description="Encodes each image as one bidirectional image block and decodes text after "
        "it with the KV cache (greedy unless --temperature > 0). Images are converted to the "
        "checkpoint's channels and resized to its image size. Prints 'path<TAB>caption' per image.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", required=True, metavar="DIR",
                   help="checkpoint directory written by save_pretrained / mmar train")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...)")
    p.add_argument("--max-new-tokens", type=int, default=32, help="longest caption in tokens")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy decoding")
    p.add_argument("--seed", type=int, default=0, help="seed when sampling")
    p.add_argument("--batch-size", type=int, default=64, help="images per batch")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights, not the EMA")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not (Path(args.model) / "config.json").is_file():
        print(f"mmar caption: --model {args.model} is not a checkpoint directory "
              "(no config.json); e.g. --model runs/quickstart", file=sys.stderr)
        return 2
    missing = [p for p in args.images if not Path(p).is_file()]
    if missing:
        print(f"mmar caption: image file(s) not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    import torch
    from PIL import Image

    from mmar.model.mmar import MMAR

    images = []
    for p in args.images:
        try:
            with Image.open(p) as im:
                images.append(im.copy())
        except OSError as e:
            print(f"mmar caption: cannot read {p} as an image: {e}", file=sys.stderr)
            return 2
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = MMAR.from_pretrained(args.model, device=device, use_ema=not args.no_ema)
    for i in range(0, len(images), args.batch_size):
        chunk = images[i:i + args.batch_size]
        texts = model.caption(chunk, max_new_tokens=args.max_new_tokens,
                              temperature=args.temperature, seed=args.seed)
        for path, text in zip(args.images[i:i + args.batch_size], texts):
            print(f"{path}\t{text}")
    return 0
