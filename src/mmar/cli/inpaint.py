"""``mmar inpaint``: inpainting, outpainting and variations of one image file (mmar.pipelines.
editing), written as PNGs."""

from __future__ import annotations

import argparse
import math
import re
from typing import TYPE_CHECKING

from mmar.cli.caption import open_image, unreadable
from mmar.cli.generate import check_out
from mmar.cli.options import CliError, add_model_options, add_sampling_options, load_model
from mmar.cli.options import sampling_from_args as sampling_of

if TYPE_CHECKING:
    from PIL import Image

OUTPUT_NAME = "s{sample:03d}.png"
OUTPUT_RE = re.compile(r"s\d{3,}\.png|input\.png|keep_mask\.png")

DESCRIPTION = """\
Edit an image by masked autoregression: the tokens outside the region are kept (visible from
the first iteration, never resampled) and the region is generated, conditioned on --prompt and
on the kept part. Give the region one way:

  --box x0,y0,x1,y1   a box in the input image's pixels (x1, y1 exclusive)
  --mask FILE         a mask image of the input's size: white (>= 128) = regenerate, black = keep
  --outpaint DIR      shift the image away from DIR (left/right/up/down) by --amount of the canvas
                      and generate the uncovered side (inpainting on the model's fixed canvas)
  --vary FRACTION     regenerate that share of the tokens, chosen at random (from --seed; the
                      same tokens in every sample)

The image (and the mask) are resized to the model's size first. A token is regenerated when any
of its pixels is in the region; the kept pixels come back bit-identical. Writes --out/input.png
(the image as the model sees it), --out/keep_mask.png (white = kept) and one sSSS.png per
sample (sample k uses seed --seed + k), and prints their paths. --out must be a new or empty
directory (--force: replace the files this command writes there).

examples:
  mmar inpaint --model runs/quickstart --image seven.png --box 8,8,24,24 \\
      --prompt "a handwritten digit one" --n 4 --out edits
  mmar inpaint --model runs/shapes --image scene.png --mask mask.png --prompt "a red circle" --out e
  mmar inpaint --model runs/shapes --image scene.png --outpaint right --amount 0.5 --out wider
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "inpaint",
        help="inpaint, outpaint or vary an image with a trained MMAR checkpoint",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_options(p)
    p.add_argument("--image", required=True, metavar="FILE", help="the image to edit")
    region = p.add_mutually_exclusive_group(required=True)
    region.add_argument("--box", metavar="x0,y0,x1,y1", help="the region to regenerate")
    region.add_argument("--mask", metavar="FILE", help="white = regenerate, black = keep")
    region.add_argument(
        "--outpaint", choices=("left", "right", "up", "down"), help="extend towards this side"
    )
    region.add_argument(
        "--vary", type=float, metavar="FRACTION", help="regenerate this share of tokens at random"
    )
    p.add_argument(
        "--amount", type=float, default=0.5, help="--outpaint: share of the canvas (default 0.5)"
    )
    p.add_argument("--prompt", default="", metavar="TEXT", help="the prompt ('' = unconditional)")
    p.add_argument("--n", type=int, default=1, help="samples (default 1)")
    p.add_argument("--seed", type=int, default=0, help="sample k uses seed + k (default 0)")
    add_sampling_options(p, image=True, text=False)
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (new or empty)")
    p.add_argument("--force", action="store_true", help="write into a non-empty --out")
    p.set_defaults(func=run)


def read_file_image(path: str, flag: str) -> Image.Image:
    """A PIL image of ``path``, or CliError naming the flag, the file and the reason."""
    try:
        return open_image(path)
    except unreadable() as e:
        raise CliError(f"{flag} {path}: cannot read it as an image: {e}") from None


def parse_box(text: str, width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """--box "x0,y0,x1,y1" in the input's pixels -> the box on the model's size x size canvas
    (outward rounding, so that the region never shrinks)."""
    try:
        x0, y0, x1, y1 = (float(v) for v in text.split(","))
    except ValueError:
        raise CliError(
            f"--box {text!r}: expected four numbers x0,y0,x1,y1, e.g. 8,8,24,24"
        ) from None
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise CliError(
            f"--box {text}: not a non-empty box inside the {width} x {height} input image "
            f"(need 0 <= x0 < x1 <= {width}, 0 <= y0 < y1 <= {height})"
        )
    sx, sy = size / width, size / height
    return (
        math.floor(x0 * sx),
        math.floor(y0 * sy),
        min(math.ceil(x1 * sx), size),
        min(math.ceil(y1 * sy), size),
    )


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    from PIL import Image

    from mmar.pipelines.editing import box_keep_mask

    if args.n < 1:
        raise CliError(f"--n must be >= 1, got {args.n}")
    out = check_out(args.out, args.force)  # before the model is loaded
    image = read_file_image(args.image, "--image")
    mask_image = read_file_image(args.mask, "--mask") if args.mask else None
    if mask_image is not None and mask_image.size != image.size:
        raise CliError(
            f"--mask {args.mask} is {mask_image.size[0]} x {mask_image.size[1]} but --image "
            f"{args.image} is {image.size[0]} x {image.size[1]}; give a mask of the image's size"
        )
    model = load_model(args)
    sampling = sampling_of(model.sampling, args)
    size = model.editor.size
    pixels = model.processor.preprocess([image])  # (1, C, S, S)
    editor = model.editor
    try:
        if args.outpaint:
            pixels, keep = editor.outpaint_canvas(pixels, args.outpaint, args.amount)
            keep = keep[0]
        elif args.vary is not None:
            keep = editor.variation_mask(1, args.vary, args.seed)[0]
        elif args.box:
            keep = box_keep_mask(size, parse_box(args.box, *image.size, size))
        else:
            assert mask_image is not None  # the region group is required
            small = mask_image.convert("L").resize((size, size), Image.Resampling.NEAREST)
            keep = torch.from_numpy(np.asarray(small) < 128)
            if keep.all():
                raise CliError(
                    f"--mask {args.mask}: no white (>= 128) pixel, nothing to regenerate"
                )
        images = model.inpaint(
            pixels.expand(args.n, -1, -1, -1), keep, args.prompt, sampling, seed=args.seed
        )
    except ValueError as e:  # ConfigError included
        raise CliError(str(e)) from None
    keep_px, _ = editor.keep_masks(keep, 1)
    try:
        out.mkdir(parents=True, exist_ok=True)
        for old in out.iterdir():  # only with --force (check_out): this command's earlier files
            if OUTPUT_RE.fullmatch(old.name) and old.is_file():
                old.unlink()
        paths = [out / "input.png", out / "keep_mask.png"]
        model.processor.postprocess(pixels)[0].save(paths[0])
        Image.fromarray(keep_px[0].numpy().astype(np.uint8) * 255).save(paths[1])
        for k, im in enumerate(images):
            paths.append(out / OUTPUT_NAME.format(sample=k))
            im.save(paths[-1])
    except OSError as e:
        raise CliError(f"cannot write the images to --out {out}: {e}") from None
    for path in paths:
        print(path)
    return 0
