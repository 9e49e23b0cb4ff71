"""The unreadable items of a training run: each counted and named once, and when to stop.

The datasets give an :class:`~mmar.data.unreadable.Unreadable` (key, kind, detail) in place of an
item they cannot read, in every epoch and in whichever DataLoader worker reads it; the trainer
hands every batch's list here. An item is counted and printed the first time its key is seen,
never again (``count``, ``by_kind()``; the first ``LISTED`` are printed, ``write()`` lists all in
OUT/skipped.jsonl).

When to stop (``check()``, ``DataError``): the share of unreadable items is measured over the
*first pass*, the first epoch of the data order (a shuffled map-style dataset: a random sample
of the data without repeats; a stream: its shards in order), against
``DataConfig.max_unreadable_share`` (s):

- end of the first pass: no item was readable, or more than s of the pass's items were not;
- earlier, map-style datasets only (pass size P known, order random), after n reads of which k
  were unreadable: k > s P (the share of the pass is already certain to exceed s), or
  k / n - sqrt(ln(1 / delta) / (2 n)) > s with delta = 1e-9 (Hoeffding's bound, which holds for
  sampling without replacement: a share at or below s gives this with probability < delta per
  check, one check per step, so < 1e-4 even over 100,000 steps). Every item unreadable stops a
  run after 13 reads at s = 0.1; half of them after 65; 12% vs s = 0.1 needs ~26,000 reads.
- a stream stops only at the end of its first pass: its shards come in order, and a shard that
  is damaged as a whole would make the early rule stop a run whose overall share is fine.
After the first pass nothing new is measured (later epochs read the same items), but items first
read later (the ragged tail the first pass dropped) are still counted and named.

Under torchrun the counts are summed over the ranks before they are added (see the trainer), so
every rank takes the same decision at the same step.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mmar.config import DataError
from mmar.data.unreadable import Unreadable

FALSE_ALARM = 1e-9  # delta of the early rule, per check
LISTED = 20  # items printed one line each; the rest are counted (and written by ``write``)
SKIPPED_FILE = "skipped.jsonl"


class UnreadableLog:
    """Distinct unreadable items and the first-pass share of a run.

    max_share: ``DataConfig.max_unreadable_share``. source: the data, for messages ("folder
    data/cats"). pass_total: items of the first pass when known (map-style: batches per epoch x
    batch size), None for a stream (no early rule). out_dir: the run's, where ``write`` lists
    the items (``skipped.jsonl``).
    """

    def __init__(self, max_share: float, source: str, pass_total: int | None, out_dir: Path):
        self.max_share, self.source, self.pass_total = max_share, source, pass_total
        self.listing = Path(out_dir) / SKIPPED_FILE
        self.items: dict[str, Unreadable] = {}  # key -> the first report of it
        self.pass_reads = 0  # items read in the first pass, readable or not
        self.pass_unreadable = 0  # of which unreadable
        self.pass_done = False

    @property
    def count(self) -> int:
        """Distinct unreadable items so far."""
        return len(self.items)

    def by_kind(self) -> dict[str, int]:
        return dict(Counter(u.kind for u in self.items.values()))

    def add(self, unreadable: Iterable[Unreadable]) -> list[str]:
        """Record a batch's unreadable items; returns the lines to print: one per item seen for
        the first time while fewer than ``LISTED`` are known, then one saying the rest are only
        counted."""
        lines = []
        for u in unreadable:
            if u.key in self.items:
                continue
            self.items[u.key] = u
            if self.count <= LISTED:
                lines.append(f"skipping {u}")
            if self.count == LISTED + 1:
                lines.append(
                    f"more than {LISTED} unreadable items: the rest are counted, not printed "
                    f"(all are listed in {self.listing})"
                )
        return lines

    def add_pass(self, reads: int, unreadable: int, done: bool) -> None:
        """Count ``reads`` items of the first pass, ``unreadable`` of them unreadable; ``done``:
        the first pass has ended (on every rank)."""
        if not self.pass_done:
            self.pass_reads += reads
            self.pass_unreadable += unreadable
            self.pass_done = done

    def check(self) -> None:
        """Raise DataError when a stop rule of the module docstring holds."""
        n, k, s, total = self.pass_reads, self.pass_unreadable, self.max_share, self.pass_total
        if k == 0:
            return
        limit = f"data.max_unreadable_share = {s:g}"
        if self.pass_done:
            if k == n:
                what = f"none of the {n} items of the first pass over the data could be read"
            elif k > s * n:
                what = (
                    f"{k} of the {n} items of the first pass over the data ({k / n:.0%}) could "
                    f"not be read, more than {limit}"
                )
            else:
                return
        elif total is not None and (
            k > s * total or k / n - math.sqrt(math.log(1 / FALSE_ALARM) / (2 * n)) > s
        ):
            how = "certainly" if k > s * total else "beyond chance"
            what = (
                f"{k} of the first {n} items read ({k / n:.0%}) could not be read: {how} more "
                f"than {limit} of the {total} items of the first pass"
            )
        else:
            return
        kinds = ", ".join(f"{c} {kind}" for kind, c in sorted(self.by_kind().items()))
        examples = "; ".join(str(u) for u in list(self.items.values())[:3])
        raise DataError(
            f"{self.source}: {what} ({kinds}; e.g. {examples}). Fix or remove these files (all "
            f"are listed in {self.listing}), check data.path"
            + ("" if k == n else ", or raise data.max_unreadable_share if the rest will do")
        )

    def write(self) -> None:
        """``OUT/skipped.jsonl``: one {"item", "kind", "detail"} per unreadable item (nothing
        when there is none)."""
        if not self.items:
            return
        self.listing.parent.mkdir(parents=True, exist_ok=True)
        with open(self.listing, "w", encoding="utf-8") as f:
            for u in self.items.values():
                f.write(json.dumps({"item": u.key, "kind": u.kind, "detail": u.detail}) + "\n")

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable: the items and the first-pass counts (kept by checkpoints)."""
        return {
            "items": [[u.key, u.kind, u.detail] for u in self.items.values()],
            "pass_reads": self.pass_reads,
            "pass_unreadable": self.pass_unreadable,
            "pass_done": self.pass_done,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.items = {key: Unreadable(key, kind, detail) for key, kind, detail in state["items"]}
        self.pass_reads = int(state["pass_reads"])
        self.pass_unreadable = int(state["pass_unreadable"])
        self.pass_done = bool(state["pass_done"])


class StepUnreadable:
    """One rank's unreadable items of the current step and its first-pass reads, until the
    trainer sums them over the ranks and adds them to the :class:`UnreadableLog`."""

    def __init__(self) -> None:
        self.items: list[Unreadable] = []
        self.reads = 0
        self.unreadable = 0

    def note(self, batch: dict[str, Any]) -> None:
        """A micro-batch of the training collator, marked ``first_pass`` by the trainer."""
        self.items += batch["unreadable"]
        if batch["first_pass"]:
            self.reads += batch["n"] + batch["skipped"]
            self.unreadable += batch["skipped"]
