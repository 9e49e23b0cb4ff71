"""Captions for the digit datasets: label -> text with several templates, and text -> label.

Every template names the digit once, as a word ("seven") or a numeral ("7"), so
``parse_digit(digit_caption(d, k)) == d`` for every digit d and template k; caption accuracy of a
captioning model is ``parse_digit(caption) == label``.

Template choice (``template_index``):
- test split: ``index % len(DIGIT_TEMPLATES)``: fixed, so evaluations compare across runs;
- train split: a hash of ``(caption_seed, epoch, index)``: every item sees varied templates across
  epochs (``dataset.set_epoch(e)``), the same ones for the same seed (resumable, reproducible).
"""

from __future__ import annotations

import re

import numpy as np

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

# {name}: the digit as a word, {num}: as a numeral. No template word may contain a digit name.
DIGIT_TEMPLATES = (
    "a handwritten digit {name}",
    "the number {num}, written by hand",
    "a picture of the digit {name}",
    "a hand-drawn {num}",
    "the digit {name} in white on black",
    "an image of a handwritten {name}",
    "a scanned digit {num}",
    "a photo of the number {name}",
)

_WORD_TO_DIGIT = {name: d for d, name in enumerate(DIGIT_NAMES)}
_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def digit_caption(label: int, template: int = 0) -> str:
    """The caption of digit ``label`` (0..9) with template ``template`` (mod #templates)."""
    if not 0 <= label <= 9:
        raise ValueError(f"digit label must be in 0..9, got {label}")
    text = DIGIT_TEMPLATES[template % len(DIGIT_TEMPLATES)]
    return text.format(name=DIGIT_NAMES[label], num=label)


def all_digit_captions() -> list[str]:
    """Every caption a digit dataset can produce (10 x #templates): the text corpus."""
    return [digit_caption(d, k) for d in range(10) for k in range(len(DIGIT_TEMPLATES))]


def template_index(index: int, split: str, caption_seed: int = 0, epoch: int = 0) -> int:
    """Which template item ``index`` uses: fixed per index on "test", hashed on "train"."""
    n = len(DIGIT_TEMPLATES)
    if split == "test":
        return index % n
    # numpy's SeedSequence hashes the tuple, so neighbouring indices get unrelated templates
    return int(np.random.default_rng((caption_seed, epoch, index)).integers(n))


def parse_digit(text: str) -> int | None:
    """The digit a caption names, or None when it names none or several different ones.

    Case and punctuation are ignored ("Seven!", "the number 7," both give 7); a numeral token
    counts each of its digits ("77" -> 7, "12" -> None).
    """
    found: set[int] = set()
    for token in _NON_ALNUM.sub(" ", text.lower()).split():
        if token in _WORD_TO_DIGIT:
            found.add(_WORD_TO_DIGIT[token])
        elif token.isdigit():
            found.update(int(c) for c in token)
    return found.pop() if len(found) == 1 else None
