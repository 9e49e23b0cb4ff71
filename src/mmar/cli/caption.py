"""``mmar caption``: describe image files with a trained MMAR checkpoint."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmar.cli.options import (
    CliError,
    add_json_option,
    add_model_options,
    add_sampling_options,
    human_output,
    load_model,
    sampling_from_args,
    write_json,
)

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from mmar.model.processor import MMARProcessor

DESCRIPTION = """\
Encodes each image as one bidirectional image block and decodes text after it with the KV cache
(greedy unless --text-temperature > 0). Images are converted to the checkpoint's channels and
resized to its image size.

Prints one line per image, PATH<TAB>CAPTION, in the order given. A backslash, tab, newline or
carriage return in the path or the caption is written as \\\\, \\t, \\n or \\r, so that every
line holds exactly one tab. --json FILE also writes the results unescaped: a list in the order
given of {"image": PATH, "caption": TEXT}, or {"image": PATH, "error": REASON} for a file that
could not be read.

A file that is missing or not a readable image is reported on stderr ("mmar caption: skipped
PATH: REASON"); the others are still captioned, and the exit status is then 1. Image k of the
arguments uses seed --seed + k, whether or not the files before it could be read.

examples:
  mmar caption --model runs/quickstart digit.png photo.jpg
  mmar caption --model runs/mnist_stage2/final scans/*.png --json captions.json
"""

# backslash first: str.translate maps each character once, so no escape is escaped again
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def escape(text: str) -> str:
    """``text`` on one line without tabs: backslash, tab, newline, CR -> \\\\, \\t, \\n, \\r."""
    return text.translate(_ESCAPES)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "caption",
        help="caption image files with a trained MMAR checkpoint",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_options(p)
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...)")
    p.add_argument(
        "--seed", type=int, default=0, help="image k uses seed + k when sampling (default 0)"
    )
    add_sampling_options(p, image=False, text=True)
    add_json_option(p, "the captions")
    p.set_defaults(func=run)


def open_image(path: str) -> Image.Image:
    """The decoded image of file ``path``; raises one of ``unreadable()`` for a file it cannot
    read (missing, a directory, not an image)."""
    from PIL import Image

    if not Path(path).exists():
        raise FileNotFoundError("no such file")
    if Path(path).is_dir():
        raise IsADirectoryError("is a directory, not an image file")
    with Image.open(path) as im:
        im.load()
        return im.copy()


def unreadable() -> tuple[type[Exception], ...]:
    """Whatever Pillow raises on a file it cannot decode (as mmar.data.folder.load_image
    catches)."""
    from PIL import Image

    return (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def read_image(path: str, processor: MMARProcessor) -> torch.Tensor:
    """One image file -> (1, C, H, W) as the model takes it; raises one of ``unreadable()``
    for a file it cannot read."""
    return processor.preprocess([open_image(path)])


def read_images(
    paths: list[str], processor: MMARProcessor, seed: int
) -> tuple[list[torch.Tensor], list[int], list[str | None]]:
    """Read every file that can be read: (the readable images, each (1, C, H, W); their seeds,
    ``seed`` + the file's position, so a file's result does not depend on the others; per path
    the reason it could not be read, or None)."""
    pixels: list[torch.Tensor] = []
    seeds: list[int] = []
    errors: list[str | None] = []
    for k, path in enumerate(paths):
        try:
            pixels.append(read_image(path, processor))
            seeds.append(seed + k)
            errors.append(None)
        except unreadable() as e:
            errors.append(str(e))
    return pixels, seeds, errors


def run(args: argparse.Namespace) -> int:
    import torch

    model = load_model(args)
    sampling = sampling_from_args(model.sampling, args)
    pixels, seeds, errors = read_images(args.images, model.processor, args.seed)
    results: list[dict[str, Any]] = [
        {"image": p} if e is None else {"image": p, "error": e} for p, e in zip(args.images, errors)
    ]
    try:
        texts = model.caption(torch.cat(pixels), sampling, seed=seeds) if pixels else []
    except ValueError as e:  # ConfigError included: a sampling value this model cannot take
        raise CliError(str(e)) from None
    return report(args, "caption", results, texts, ("image", "caption"))


def report(
    args: argparse.Namespace,
    command: str,
    results: list[dict[str, Any]],
    texts: list[str],
    columns: tuple[str, ...],
) -> int:
    """Give each readable result its text (under ``columns[-1]``), print one escaped line of
    ``columns`` per result (a skipped file to stderr, named), write --json; the exit status: 1
    when a file was skipped, else 0."""
    produced = iter(texts)
    human = human_output(args)
    for r in results:
        if "error" in r:
            print(
                f"mmar {command}: skipped {escape(r['image'])}: {escape(r['error'])}",
                file=sys.stderr,
            )
        else:
            r[columns[-1]] = next(produced)
            print("\t".join(escape(r[c]) for c in columns), file=human)
    write_json(results, args.json)
    return 1 if len(texts) < len(results) else 0
