"""``mmar caption``: describe image files with a trained MMAR checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from mmar.cli.options import (
    CliError,
    add_model_options,
    add_sampling_options,
    load_model,
    sampling_from_args,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "caption",
        help="caption image files with a trained MMAR checkpoint",
        description="Encodes each image as one bidirectional image block and decodes text after "
        "it with the KV cache (greedy unless --text-temperature > 0). Images are converted to "
        "the checkpoint's channels and resized to its image size. Prints 'path<TAB>caption' per "
        "image.",
    )
    add_model_options(p)
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...)")
    p.add_argument(
        "--seed", type=int, default=0, help="image k uses seed + k when sampling (default 0)"
    )
    add_sampling_options(p, image=False, text=True)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from PIL import Image

    missing = [p for p in args.images if not Path(p).is_file()]
    if missing:
        raise CliError(f"image file(s) not found: {', '.join(missing)}")
    images = []
    for p in args.images:
        try:
            with Image.open(p) as im:
                images.append(im.copy())
        except OSError as e:
            raise CliError(f"cannot read {p} as an image: {e}") from None
    model = load_model(args)
    sampling = sampling_from_args(model.sampling, args)
    for path, text in zip(args.images, model.caption(images, sampling, seed=args.seed)):
        print(f"{path}\t{text}")
    return 0
