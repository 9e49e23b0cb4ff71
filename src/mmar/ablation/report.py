"""The ablation's report: mean and spread over seeds, the table in the paper's shape, a chart.

Spread is the sample standard deviation over the seeds (0 with one seed). Metrics missing for a
variant (e.g. the loss per mask ratio of the Transfusion variant, which masks nothing) are left
out of its mean and shown as "-".
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mmar.ablation.variants import Variant


@dataclasses.dataclass(frozen=True)
class Column:
    """A column of the table: ``get`` reads it from a result record; ``percent`` shows it x 100."""

    key: str
    title: str
    measures: str
    get: Callable[[dict[str, Any]], float | None]
    percent: bool = True
    higher_is_better: bool = True
    digits: int = 1


def _bench(key: str) -> Callable[[dict[str, Any]], float | None]:
    return lambda r: r["bench"].get(key)


HOLES = Column("holes", "holes (completion, f = 0.9)", "stage 2", lambda r: r.get("holes"))
STEPS = Column(
    "steps", "steps", "budget", lambda r: r["train"]["total_steps"], percent=False, digits=0
)
MINUTES = Column(
    "train_min", "train min", "budget", lambda r: r["train"]["train_seconds"] / 60, percent=False
)
FID = Column(
    "classifier_fid",
    "classifier-FID",
    "visual quality",
    _bench("classifier_fid"),
    percent=False,
    higher_is_better=False,
)
COLUMNS: dict[str, tuple[Column, ...]] = {
    "shapes": (
        Column("vqa", "VQA accuracy", "understanding", _bench("vqa_accuracy")),
        Column("caption", "caption exact match", "understanding", _bench("caption_exact")),
        Column("t2i_seen", "T2I seen", "generation", _bench("t2i_accuracy_seen")),
        Column("t2i_heldout", "T2I held-out", "generation", _bench("t2i_accuracy_heldout")),
        FID,
        HOLES,
        STEPS,
        MINUTES,
    ),
    "mnist": (
        Column("caption", "caption accuracy", "understanding", _bench("caption_accuracy")),
        Column("t2i", "T2I accuracy", "generation", _bench("t2i_accuracy")),
        FID,
        HOLES,
        STEPS,
        MINUTES,
    ),
}


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """(mean, sample standard deviation; 0 for one value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(
    results: Sequence[dict[str, Any]], variants: Sequence[Variant], bench: str
) -> list[dict[str, Any]]:
    """One row per variant (the suite's order): {variant, about, paper, seeds, COLUMN: [mean, sd]
    or None, completion: {f: [mean, sd]}, mask_ratio_losses: {bucket: [mean, sd]}}."""
    rows = []
    for v in variants:
        mine = [r for r in results if r["variant"] == v.name]
        row: dict[str, Any] = {
            "variant": v.name,
            "about": v.about,
            "paper": v.paper,
            "seeds": sorted(r["seed"] for r in mine),
        }
        for c in COLUMNS[bench]:
            vals = [x for x in (c.get(r) for r in mine) if x is not None]
            row[c.key] = list(mean_sd(vals)) if vals else None
        for part in ("completion", "mask_ratio_losses"):
            keys = sorted({k for r in mine for k in (r.get(part) or {})}, key=float_or_first)
            values = {k: [(r.get(part) or {}).get(k) for r in mine] for k in keys}
            row[part] = {
                k: list(mean_sd([x for x in xs if x is not None]))
                for k, xs in values.items()
                if any(x is not None for x in xs)
            }
        rows.append(row)
    return rows


def float_or_first(key: str) -> float:
    """Sort key of "0.25" and of bucket names "0.2-0.4": their first number."""
    return float(key.split("-")[0])


def _cell(ms: Sequence[float] | None, percent: bool, n_seeds: int, digits: int = 1) -> str:
    if ms is None:
        return "-"
    m, sd = ms
    scale, unit = (100.0, "%") if percent else (1.0, "")
    text = f"{m * scale:.{digits}f}{unit}"
    return text + (f" ± {sd * scale:.{digits}f}" if n_seeds > 1 else "")


def markdown_table(rows: Sequence[dict[str, Any]], bench: str) -> str:
    """The table in the paper's shape (one row per variant) and the completion and loss tables."""
    cols = COLUMNS[bench]
    n = max((len(r["seeds"]) for r in rows), default=1)
    out = [
        "| variant | " + " | ".join(c.title for c in cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for r in rows:
        cells = [_cell(r[c.key], c.percent, n, c.digits) for c in cols]
        out.append(f"| {r['variant']} | " + " | ".join(cells) + " |")
    for part, title, percent, digits in (
        ("completion", "completion accuracy with a fraction f of the tokens given", True, 1),
        ("mask_ratio_losses", "image loss per mask-ratio bucket (held-out)", False, 3),
    ):
        keys = sorted({k for r in rows for k in r[part]}, key=float_or_first)
        if not keys:
            continue
        label = "f = " if part == "completion" else "ratio "
        out += ["", f"{title}:", ""]
        out.append("| variant | " + " | ".join(label + k for k in keys) + " |")
        out.append("|---|" + "---|" * len(keys))
        for r in rows:
            if r[part]:
                cells = [_cell(r[part].get(k), percent, n, digits) for k in keys]
                out.append(f"| {r['variant']} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def write_chart(rows: Sequence[dict[str, Any]], bench: str, file: Path) -> Path:
    """A bar chart PNG: one panel per metric column, one bar per variant, seed sd as error bars."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on servers
    import matplotlib.pyplot as plt

    cols = [c for c in COLUMNS[bench] if c.measures != "budget"]
    fig, axes = plt.subplots(1, len(cols), figsize=(3.2 * len(cols), 0.35 * len(rows) + 1.6))
    names = [r["variant"] for r in rows]
    for ax, c in zip(axes, cols, strict=True):
        scale = 100.0 if c.percent else 1.0
        means = [(r[c.key] or [0.0, 0.0])[0] * scale for r in rows]
        sds = [(r[c.key] or [0.0, 0.0])[1] * scale for r in rows]
        ax.barh(range(len(rows)), means, xerr=sds, color="#4c72b0", capsize=2)
        ax.set_yticks(range(len(rows)), names if ax is axes[0] else [""] * len(rows))
        ax.invert_yaxis()
        better = "higher" if c.higher_is_better else "lower"
        ax.set_title(f"{c.title}\n({c.measures}; {better} is better)", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    file.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(file, dpi=120)
    plt.close(fig)
    return file


def write_report(
    results: Sequence[dict[str, Any]],
    variants: Sequence[Variant],
    bench: str,
    out: Path,
    command: str,
) -> tuple[str, list[dict[str, Any]]]:
    """OUT/results.json (every run and the summary rows), OUT/table.md and OUT/chart.png ->
    (the markdown table, the rows)."""
    rows = summarize(results, variants, bench)
    table = markdown_table(rows, bench)
    with open(out / "results.json", "w") as f:
        json.dump({"command": command, "bench": bench, "rows": rows, "runs": results}, f, indent=1)
    (out / "table.md").write_text(f"`{command}`\n\n{table}")
    write_chart(rows, bench, out / "chart.png")
    return table, rows
