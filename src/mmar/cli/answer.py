"""``mmar answer``: answer questions about image files with a trained MMAR checkpoint."""

from __future__ import annotations

import argparse
from typing import Any

from mmar.cli.caption import read_images, report
from mmar.cli.options import (
    CliError,
    add_json_option,
    add_model_options,
    add_sampling_options,
    load_model,
    sampling_from_args,
)

DESCRIPTION = """\
Encodes each image as one bidirectional image block, reads the question after it and decodes
the answer with the KV cache (greedy unless --text-temperature > 0; at most --max-new-tokens
tokens). The model answers well only if it was trained with question-answer samples
(train.kinds.vqa > 0, e.g. on data.name: shapes). Images are converted to the checkpoint's
channels and resized to its image size.

Give --question once to ask it of every image, or once per --image (in the same order).
Prints one line per image, PATH<TAB>QUESTION<TAB>ANSWER, in the order given. A backslash, tab,
newline or carriage return in a field is written as \\\\, \\t, \\n or \\r, so that every line
holds exactly two tabs. --json FILE also writes the results unescaped: a list in the order
given of {"image": PATH, "question": Q, "answer": TEXT}, or {"image": PATH, "question": Q,
"error": REASON} for a file that could not be read.

A file that is missing or not a readable image is reported on stderr ("mmar answer: skipped
PATH: REASON"); the others are still answered, and the exit status is then 1. Image k of the
arguments uses seed --seed + k, whether or not the files before it could be read.

examples:
  mmar answer --model runs/shapes/final --image scene.png --question "how many circles are there?"
  mmar answer --model runs/shapes/final --image a.png --image b.png \\
      --question "what colour is the square?" --json answers.json
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "answer",
        help="answer a question about image files with a trained MMAR checkpoint",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_options(p)
    p.add_argument(
        "--image",
        dest="images",
        action="append",
        required=True,
        metavar="FILE",
        help="an image file (PNG, JPEG, ...); repeat for several",
    )
    p.add_argument(
        "--question",
        dest="questions",
        action="append",
        required=True,
        metavar="Q",
        help="the question: once (asked of every image) or once per --image, in order",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="image k uses seed + k when sampling (default 0)"
    )
    add_sampling_options(p, image=False, text=True)
    add_json_option(p, "the answers")
    p.set_defaults(func=run)


def _questions(args: argparse.Namespace) -> list[str]:
    """One question per image (CliError unless given once or once per image)."""
    qs, n = args.questions, len(args.images)
    if len(qs) == 1:
        return qs * n
    if len(qs) != n:
        raise CliError(
            f"--question given {len(qs)} times for {n} --image files; give it once (asked of "
            f"every image) or once per --image ({n} times)"
        )
    return list(qs)


def run(args: argparse.Namespace) -> int:
    import torch

    questions = _questions(args)  # before the model loads: a usage error costs nothing
    model = load_model(args)
    sampling = sampling_from_args(model.sampling, args)
    pixels, seeds, errors = read_images(args.images, model.processor, args.seed)
    asked = [q for q, e in zip(questions, errors) if e is None]
    results: list[dict[str, Any]] = [
        {"image": p, "question": q} | ({} if e is None else {"error": e})
        for p, q, e in zip(args.images, questions, errors)
    ]
    try:
        texts = model.answer(torch.cat(pixels), asked, sampling, seed=seeds) if pixels else []
    except ValueError as e:  # ConfigError included: a sampling value this model cannot take
        raise CliError(str(e)) from None
    return report(args, "answer", results, texts, ("image", "question", "answer"))
