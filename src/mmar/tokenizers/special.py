"""The structural token ids a model needs from its text tokenizer (no heavy imports here)."""

from __future__ import annotations

from typing import NamedTuple

BOI, EOI = "<boi>", "<eoi>"  # begin / end of an image block


class SpecialTokenIds(NamedTuple):
    """Ids of the structural tokens; ``bos`` is None where the vocabulary has none (Qwen2)."""

    boi: int
    eoi: int
    pad: int
    eos: int
    bos: int | None
