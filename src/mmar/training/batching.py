"""The training collator: dataset items -> ``ModelInputs``, in the DataLoader workers.

Each sample's kind (t2i: [text][img], i2t: [img][text], img: [img]; ``train.kinds`` weights) and
its CFG prompt dropout are drawn from a generator of its own, seeded by (run seed, epoch, the
item's key); so is a second seed per sample, ``draw_seed``, from which the training step seeds
the sample's generator on the device for every draw the model makes (VAE posterior, mask ratio
and order, diffusion t and noise). An (epoch, key) pair names one visit of one item, so the draws
are the same whatever batch, worker, rank or world size the sample lands in, and a resumed run
(which replays the data position) draws them again exactly.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from mmar.data.collate import collate, unreadable_items
from mmar.model.processor import MMARProcessor, ModelInputs

KINDS = ("t2i", "i2t", "img")  # P(I|T), P(T|I), P(I)


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


def draw_kind(weights: dict[str, float], generator: torch.Generator) -> str:
    """One kind with probability proportional to ``weights`` (one uniform draw)."""
    names = [k for k in KINDS if weights.get(k, 0.0) > 0]
    total = sum(weights[k] for k in names)
    u = float(torch.rand((), generator=generator, dtype=torch.float64)) * total
    for name in names:
        u -= weights[name]
        if u < 0:
            return name
    return names[-1]  # u == total up to rounding


class TrainingCollator:
    """``collate_fn`` of the training DataLoader: stack the readable items, draw each sample's
    kind and prompt dropout, and let the processor tokenize and pack.

    Returns {"inputs": ModelInputs | None (None when no item was readable), "n": samples,
    "skipped": the number of unreadable items, "unreadable": those items (``Unreadable``: what
    and why, for the trainer to count once and report), "seeds": one ``draw_seed`` per sample,
    in batch order}. Call ``set_epoch`` before each epoch's loader is made (its workers take a
    copy of the collator).
    """

    def __init__(self, processor: MMARProcessor, kinds: dict[str, float], seed: int):
        self.processor, self.kinds, self.seed = processor, dict(kinds), seed
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
        kinds = [draw_kind(self.kinds, g) for g in gens]
        inputs: ModelInputs = self.processor(
            stacked["texts"],
            kinds,
            images=stacked.get("images"),
            latents=stacked.get("latents"),
            generators=gens,
        )
        seeds = [draw_seed(self.seed, self.epoch, it["key"]) for it in good]
        return {"inputs": inputs, "n": len(good), **skipped, "seeds": seeds}
