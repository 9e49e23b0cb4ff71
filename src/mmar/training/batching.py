"""The training collator: dataset items -> ``ModelInputs``, in the DataLoader workers.

Each sample's kind (t2i: [text][img], i2t: [img][text], img: [img], vqa: [img][question][answer];
``train.kinds`` weights), the question-answer pair of a vqa sample and its CFG prompt dropout are
drawn from a generator of its own, seeded by (run seed, epoch, the item's key), in that order: one
uniform for the kind, then for a vqa sample one integer for the pair (of the item's own "qa" list;
with ``vqa_turns`` > 1 a random permutation of the list instead, whose first ``vqa_turns`` pairs
the sample asks in turns), then one uniform for the dropout (unused outside t2i). An item without
pairs draws its kind among the others, with the same one uniform (and is i2t when only vqa has
weight). So is a second seed per sample, ``draw_seed``, from which the training step seeds the
sample's generator on the device for every draw the model makes (VAE posterior, mask ratio and
order, diffusion t and noise). An (epoch, key) pair names one visit of one item, so the draws are
the same whatever batch, worker, rank or world size the sample lands in, and a resumed run (which
replays the data position) draws them again exactly.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from mmar.data.collate import collate, unreadable_items
from mmar.model.processor import MMARProcessor, ModelInputs

KINDS = ("t2i", "i2t", "img", "vqa")  # P(I|T), P(T|I), P(I), P(A|I,Q)


def _stable_seed(*parts: object) -> int:
    """A 63-bit seed from a stable hash of ``parts`` (Python's ``hash`` of a str changes between
    processes, so it is not used)."""
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def sample_generator(seed: int, epoch: int, key: object) -> torch.Generator:
    """A CPU generator for one sample's kind and prompt dropout, seeded by (seed, epoch, key)."""
    return torch.Generator().manual_seed(_stable_seed(seed, epoch, key))


def draw_seed(seed: int, epoch: int, key: object) -> int:
    """The seed of one sample's generator for the model's draws (a stream apart from
    ``sample_generator``'s)."""
    return _stable_seed(seed, epoch, key, "draws")


def draw_kind(weights: dict[str, float], generator: torch.Generator, has_qa: bool = True) -> str:
    """One kind with probability proportional to ``weights`` (one uniform draw).

    has_qa: False for an item without question-answer pairs: the kind is drawn among the other
    kinds (the same one uniform), and is "i2t" when only vqa has weight."""
    u = float(torch.rand((), generator=generator, dtype=torch.float64))
    names = [k for k in KINDS if weights.get(k, 0.0) > 0 and (has_qa or k != "vqa")]
    if not names:
        return "i2t"
    total = sum(weights[k] for k in names)
    u *= total
    for name in names:
        u -= weights[name]
        if u < 0:
            return name
    return names[-1]  # u == total up to rounding


def has_question_answers(dataset: Any, probe: int = 16) -> bool:
    """Whether a dataset's items carry question-answer pairs (a "qa" field): its ``has_qa``
    attribute when it has one (JsonlDataset: some line has pairs), else whether one of its
    first ``probe`` items has the field (a map-style dataset: shapes); a stream: False."""
    flag = getattr(dataset, "has_qa", None)
    if flag is not None:
        return bool(flag)
    if isinstance(dataset, torch.utils.data.IterableDataset) or not hasattr(dataset, "__len__"):
        return False
    for i in range(min(probe, len(dataset))):
        item = dataset[i]
        if isinstance(item, dict):
            return "qa" in item
    return False


def draw_questions(
    texts: list[str],
    kinds: list[str],
    qa: list[list[tuple[str, str]]],
    generators: list[torch.Generator],
    turns: int = 1,
) -> tuple[list[str], list[str | None] | None, list[list[tuple[str, str]] | None] | None]:
    """(texts, answers, further turns) for the processor: a vqa sample's text becomes the
    question of one of its item's pairs, drawn uniformly from its generator (one integer), and
    its answer is set; the other samples keep their text and have no answer. With ``turns`` > 1
    a vqa sample asks up to ``turns`` distinct pairs (the first of a random permutation: one
    draw of ``randperm``); the pairs after the first are its further turns. answers is None when
    no sample is vqa (the batch the kinds before vqa packed); further turns is None unless
    ``turns`` > 1."""
    if "vqa" not in kinds:
        return texts, None, None
    texts = list(texts)
    answers: list[str | None] = [None] * len(kinds)
    more: list[list[tuple[str, str]] | None] = [None] * len(kinds)
    for b, (kind, pairs, g) in enumerate(zip(kinds, qa, generators, strict=True)):
        if kind != "vqa":
            continue
        if turns == 1:
            order = [int(torch.randint(len(pairs), (), generator=g))]
        else:
            order = torch.randperm(len(pairs), generator=g)[:turns].tolist()
        (texts[b], answers[b]), *rest = [tuple(pairs[j]) for j in order]
        more[b] = [(q, a) for q, a in rest]
    return texts, answers, (more if turns > 1 else None)


class TrainingCollator:
    """``collate_fn`` of the training DataLoader: stack the readable items, draw each sample's
    kind, its question-answer pair (vqa) and its prompt dropout, and let the processor tokenize
    and pack.

    Returns {"inputs": ModelInputs | None (None when no item was readable), "n": samples,
    "skipped": the number of unreadable items, "unreadable": those items (``Unreadable``: what
    and why, for the trainer to count once and report), "seeds": one ``draw_seed`` per sample,
    in batch order}. Call ``set_epoch`` before each epoch's loader is made (its workers take a
    copy of the collator).
    """

    def __init__(
        self, processor: MMARProcessor, kinds: dict[str, float], seed: int, vqa_turns: int = 1
    ):
        self.processor, self.kinds, self.seed = processor, dict(kinds), seed
        self.vqa_turns = vqa_turns  # question-answer pairs one vqa sample asks (train.vqa_turns)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __call__(self, items: list[Any]) -> dict[str, Any]:
        good = [it for it in items if isinstance(it, dict)]
        unreadable = unreadable_items(items)
        skipped = {"skipped": len(unreadable), "unreadable": unreadable}
        if not good:
            return {"inputs": None, "n": 0, **skipped, "seeds": []}
        missing = [i for i, it in enumerate(good) if "key" not in it]
        if missing:
            raise ValueError(
                f"TrainingCollator: items {missing[:5]} have no 'key'; a dataset "
                "item must name itself (see mmar.data)"
            )
        stacked = collate(good)
        gens = [sample_generator(self.seed, self.epoch, it["key"]) for it in good]
        kinds = [draw_kind(self.kinds, g, bool(qa)) for g, qa in zip(gens, stacked["qa"])]
        texts, answers, turns = draw_questions(
            stacked["texts"], kinds, stacked["qa"], gens, self.vqa_turns
        )
        inputs: ModelInputs = self.processor(
            texts,
            kinds,
            images=stacked.get("images"),
            latents=stacked.get("latents"),
            generators=gens,
            answers=answers,
            turns=turns,
        )
        seeds = [draw_seed(self.seed, self.epoch, it["key"]) for it in good]
        return {"inputs": inputs, "n": len(good), **skipped, "seeds": seeds}
