"""Packing text/image samples into one padded batch for the backbone.

Layouts per kind (``[bos]`` only where the vocabulary has one; ``img`` = N placeholder slots):

    t2i:   [bos] prompt [boi] img_1..img_N [eoi]          P(I | T), CE on the prompt (weighted)
    i2t:   [bos] [boi] img_1..img_N [eoi] text [eos]      P(T | I), CE on text and eos
    img:   [bos] [boi] img_1..img_N [eoi]                 P(I)
    text:  [bos] text [eos]                               plain LM (CE on text and eos)
    vqa:   [bos] [boi] img_1..img_N [eoi] question answer [eos] (question answer [eos])*
                                                          P(A | I, Q), CE on answers and eos only
    gen:   [bos] prompt [boi] img_1..img_N                generation: prefix + image block
    ask:   [bos] [boi] img_1..img_N [eoi] question        answering: the prefix decoded after

In the vqa kind the question is context, not a target (weight 0): the loss is
-sum_t log p(a_t | img, q, a_<t) over the answer tokens a_1..a_T and eos. Its text is the
question; the answer comes separately (``answer_ids``). A vqa sample may ask further questions of
the same image after the first answer's eos (``turn_ids``: LLaVA's multi-turn conversations),
each again with CE on its answer and eos only; every turn after the first also sees the turns
before it. Answering asks one question, the first turn's layout. The image block of i2t / vqa /
ask is never masked or diffused: it is what the text is conditioned on.

Labels follow the transformers convention: ``labels[b, j]`` is token j where token j is a CE
target (predicted from position j - 1), else -100; ``label_weights`` holds the weight of each.
Image slots hold the pad id (their embeddings are replaced by the EmbeddingViT's outputs).
The packing loop is per sample (short python lists, clarity first); the mask is vectorised.
It runs in the data pipeline (``MMARProcessor``, DataLoader workers): no model needed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mmar.model.attention_mask import build_attention_mask
from mmar.tokenizers.special import SpecialTokenIds

LAYOUTS = {
    "t2i": ("bos", "prompt", "boi", "image", "eoi"),
    "i2t": ("bos", "boi", "image", "eoi", "text", "eos"),
    "img": ("bos", "boi", "image", "eoi"),
    "text": ("bos", "text", "eos"),
    "vqa": ("bos", "boi", "image", "eoi", "question", "answer", "eos"),
    "gen": ("bos", "gen_prompt", "boi", "image"),
    "ask": ("bos", "boi", "image", "eoi", "question"),
}
NEEDS_ANSWER = ("vqa",)  # kinds whose sample has an answer beside its text (the question)
GENERATIVE_KINDS = ("t2i", "img", "gen")  # their image block is masked and diffused


@dataclass
class PackedBatch:
    """One padded batch (B samples, length L): what ``MMARModel`` takes instead of strings."""

    input_ids: torch.Tensor  # (B, L) long, pad id at image slots and padding
    valid: torch.Tensor  # (B, L) bool, False at padding
    is_image: torch.Tensor  # (B, L) bool, True at the N image slots
    block_ids: torch.Tensor  # (B, L) long, 1 inside the image block, else 0
    position_ids: torch.Tensor  # (B, L) long, 0.. over the valid tokens (0 at padding)
    labels: torch.Tensor  # (B, L) long, target token or -100
    label_weights: torch.Tensor  # (B, L) float32, CE weight of each target (0 elsewhere)
    attention_mask: torch.Tensor  # (B, 1, L, L) bool, see build_attention_mask
    image_start: torch.Tensor  # (B,) long, index of img_1, -1 for samples without an image
    generative: torch.Tensor  # (B,) bool, True where the image is generated (t2i/img/gen)

    @property
    def has_image(self) -> torch.Tensor:
        return self.image_start >= 0  # (B,)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def to(self, device: torch.device | str) -> PackedBatch:
        """The same batch with every tensor on ``device``."""
        return dataclasses.replace(
            self, **{f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self)}
        )


def _layout(
    kind: str,
    ids: list[int],
    num_image_tokens: int,
    sp: SpecialTokenIds,
    prompt_ce_weight: float,
    answer: list[int] | None = None,
    turns: Sequence[tuple[list[int], list[int]]] = (),
) -> tuple[list[int], list[bool], list[float]]:
    """(token ids, is_image, CE weight of each token as a target) of one sample; ``answer``:
    the answer ids of a vqa sample (its ``ids`` are the question); ``turns``: its further
    (question ids, answer ids), each laid out as ``question answer [eos]`` after the layout."""
    toks, img, w = [], [], []

    def add(seq: list[int], is_img: bool, weight: float) -> None:
        toks.extend(seq)
        img.extend([is_img] * len(seq))
        w.extend([weight] * len(seq))

    for seg in LAYOUTS[kind]:
        if seg == "bos":
            add([] if sp.bos is None else [sp.bos], False, 0.0)
        elif seg == "prompt":
            add(ids, False, prompt_ce_weight)
        elif seg in ("gen_prompt", "question"):
            add(ids, False, 0.0)
        elif seg == "answer":
            add(answer or [], False, 1.0)
        elif seg in ("text", "eos"):
            add(ids if seg == "text" else [sp.eos], False, 1.0)
        elif seg == "image":
            add([sp.pad] * num_image_tokens, True, 0.0)
        else:  # boi / eoi: structural, fixed by the layout, so not a prediction target
            add([sp.boi if seg == "boi" else sp.eoi], False, 0.0)
    for question, turn_answer in turns:
        add(question, False, 0.0)
        add([*turn_answer, sp.eos], False, 1.0)
    if w:
        w[0] = 0.0  # the first token has no predecessor to predict it from
    return toks, img, w


def pack_sequences(
    text_ids: list[list[int]],
    kinds: list[str],
    num_image_tokens: int,
    special: SpecialTokenIds,
    prompt_ce_weight: float = 1.0,
    padding_side: str = "right",
    device: torch.device | str | None = None,
    answer_ids: Sequence[list[int] | None] | None = None,
    turn_ids: Sequence[Sequence[tuple[list[int], list[int]]] | None] | None = None,
) -> PackedBatch:
    """Pack B samples into one batch; ``text_ids[b]`` is the prompt/text/question of sample b
    (no specials).

    padding_side "right" for training and captioning; "left" for generation (every sample's
    image block then occupies the same last N columns) and answering (every question ends in
    the last column). answer_ids: per sample, the answer ids of a vqa sample (None elsewhere);
    needed when a kind is "vqa". turn_ids: per sample, a vqa sample's further (question ids,
    answer ids) turns (None or empty elsewhere).
    """
    if len(text_ids) != len(kinds):
        raise ValueError(f"pack_sequences: {len(text_ids)} texts but {len(kinds)} kinds")
    unknown = sorted(set(kinds) - set(LAYOUTS))
    if unknown:
        raise ValueError(
            f"pack_sequences: unknown kind(s) {unknown}; expected one of {list(LAYOUTS)}"
        )
    answers = list(answer_ids) if answer_ids is not None else [None] * len(kinds)
    if len(answers) != len(kinds):
        raise ValueError(f"pack_sequences: {len(answers)} answers but {len(kinds)} kinds")
    lacking = [b for b, (k, a) in enumerate(zip(kinds, answers)) if k in NEEDS_ANSWER and a is None]
    if lacking:
        raise ValueError(
            f"pack_sequences: vqa samples {lacking[:5]} have no answer ids; pass "
            "answer_ids[b] (a list of ids, [] for an empty answer) for every vqa sample b"
        )
    turns = list(turn_ids) if turn_ids is not None else [None] * len(kinds)
    misplaced = [b for b, (k, t) in enumerate(zip(kinds, turns)) if t and k not in NEEDS_ANSWER]
    if len(turns) != len(kinds) or misplaced:
        raise ValueError(
            f"pack_sequences: turn_ids must hold one entry per sample ({len(kinds)}, got "
            f"{len(turns)}), with turns only on vqa samples (not at {misplaced[:5]})"
        )
    samples = [
        _layout(k, ids, num_image_tokens, special, prompt_ce_weight, a, t or ())
        for ids, k, a, t in zip(text_ids, kinds, answers, turns)
    ]
    B, L = len(samples), max(len(s[0]) for s in samples)
    input_ids = torch.full((B, L), special.pad, dtype=torch.long)
    valid = torch.zeros(B, L, dtype=torch.bool)
    is_image = torch.zeros(B, L, dtype=torch.bool)
    weights = torch.zeros(B, L, dtype=torch.float32)
    for b, (toks, img, w) in enumerate(samples):
        cols = slice(0, len(toks)) if padding_side == "right" else slice(L - len(toks), L)
        input_ids[b, cols] = torch.tensor(toks, dtype=torch.long)
        valid[b, cols] = True
        is_image[b, cols] = torch.tensor(img, dtype=torch.bool)
        weights[b, cols] = torch.tensor(w, dtype=torch.float32)
    position_ids = (valid.long().cumsum(1) - 1).clamp(min=0)  # (B, L)
    labels = torch.where(weights > 0, input_ids, torch.full_like(input_ids, -100))
    block_ids = is_image.long()  # one image per sample
    image_start = torch.where(is_image.any(1), is_image.long().argmax(1), torch.full((B,), -1))
    return PackedBatch(
        input_ids=input_ids.to(device),
        valid=valid.to(device),
        is_image=is_image.to(device),
        block_ids=block_ids.to(device),
        position_ids=position_ids.to(device),
        labels=labels.to(device),
        label_weights=weights.to(device),
        attention_mask=build_attention_mask(block_ids, valid).to(device),
        image_start=image_start.to(device),
        generative=torch.tensor([k in GENERATIVE_KINDS for k in kinds], device=device),
    )
