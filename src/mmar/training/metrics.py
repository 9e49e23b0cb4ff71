"""Training metrics: one JSON object per logged step in ``OUT/metrics.jsonl``, and ``loss.png``.

Keys: step, loss, loss_text, loss_diff, lr, grad_norm, samples_per_s, and the running totals
skipped (distinct unreadable items, each counted once) and nan_skipped (steps skipped for
NaN/inf).

Non-finite values (a skipped NaN step) are written as ``null`` so the file stays strict JSON.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class MetricsLog:
    """Appends records to a ``.jsonl`` file, flushing each line (a killed run loses nothing)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def append(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({k: _clean(v) for k, v in record.items()}) + "\n")

    def read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        with open(self.path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def truncate_after(self, step: int) -> None:
        """Drop records of steps > ``step``: a resumed run re-logs the steps it redoes."""
        kept = [r for r in self.read() if r.get("step", 0) <= step]
        with open(self.path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)


def plot_loss(records: list[dict], path: str | Path) -> None:
    """Total, text and diffusion loss against step, written to ``path`` (PNG, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label in (("loss", "total"), ("loss_text", "text CE"), ("loss_diff", "diffusion")):
        pts = [(r["step"], r[key]) for r in records if r.get(key) is not None]
        if pts:
            ax.plot(*zip(*pts), label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("MMAR training loss")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
