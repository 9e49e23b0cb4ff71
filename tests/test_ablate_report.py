"""mmar ablate: variants, plan checks and the report (the smoke run is in test_ablate.py)."""

import json
import math
from pathlib import Path

import pytest
from PIL import Image

from mmar.ablation.report import markdown_table, mean_sd, summarize, write_report
from mmar.ablation.runner import AblationPlan
from mmar.ablation.variants import PAPER, select
from mmar.cli import main


def test_paper_suite_names_are_unique_and_shared_models_train_first():
    names = [v.name for v in PAPER]
    assert len(names) == len(set(names))
    for v in PAPER:
        if v.trained_as:
            trainer = next(u for u in PAPER if u.name == v.trained_as)
            assert trainer.trains and v.sampling  # a sampling-only variant changes sampling


def test_select_adds_the_variant_whose_model_is_evaluated():
    assert [v.name for v in select("paper", ["eps-bf16"])] == ["eps", "eps-bf16"]
    assert [v.name for v in select("paper", ["x0", "mmar"])] == ["mmar", "x0"]  # suite order
    assert len(select("paper")) == len(PAPER)


def test_select_raises_naming_the_known_variants():
    with pytest.raises(ValueError, match="unknown variant\\(s\\) epsilon .*known: mmar, eps"):
        select("paper", ["epsilon"])
    with pytest.raises(ValueError, match="unknown suite 'papers'; known: paper"):
        select("papers")


def test_plan_raises_on_bad_budget(tmp_path):
    kw = dict(variants=tuple(PAPER[:1]), bench="mnist", presets=("a", "b"), out=tmp_path)
    with pytest.raises(ValueError, match="exactly one of minutes and steps"):
        AblationPlan(**kw, minutes=None, steps=None)
    with pytest.raises(ValueError, match="exactly one of minutes and steps"):
        AblationPlan(**kw, minutes=1.0, steps=10)
    with pytest.raises(ValueError, match="--steps must be >= 2"):
        AblationPlan(**kw, minutes=None, steps=1)
    with pytest.raises(ValueError, match="--minutes must be > 0"):
        AblationPlan(**kw, minutes=0.0)


def fake_result(variant, seed, t2i, holes, fid=10.0, completion=None, losses=None):
    return {
        "variant": variant,
        "seed": seed,
        "bench": {"caption_accuracy": 0.5, "t2i_accuracy": t2i, "classifier_fid": fid},
        "holes": holes,
        "completion": completion or {"0.0": t2i, "0.9": holes},  # holes None: not measured
        "mask_ratio_losses": losses or {},
        "train": {"total_steps": 100 + seed, "train_seconds": 60.0},
    }


def test_summarize_gives_mean_and_sample_sd_over_seeds():
    variants = select("paper", ["mmar", "transfusion"])
    results = [
        fake_result("mmar", 0, 0.6, 0.8, losses={"0.0-0.2": 0.5}),
        fake_result("mmar", 1, 0.8, 0.9, losses={"0.0-0.2": 0.7}),
        fake_result("transfusion", 0, 0.1, None),
    ]
    rows = summarize(results, variants, "mnist")
    mmar, tf = rows
    assert mmar["seeds"] == [0, 1]
    assert mmar["t2i"] == pytest.approx([0.7, math.sqrt(0.02)])  # sd of (0.6, 0.8)
    assert mmar["steps"] == pytest.approx([100.5, math.sqrt(0.5)])
    assert mmar["mask_ratio_losses"]["0.0-0.2"] == pytest.approx([0.6, math.sqrt(0.02)])
    assert tf["holes"] is None  # missing, not 0
    assert tf["t2i"] == [0.1, 0.0] and tf["mask_ratio_losses"] == {}
    assert mean_sd([2.0]) == (2.0, 0.0)


def test_table_has_one_row_per_variant_in_the_papers_shape():
    variants = select("paper", ["mmar", "stage1-only"])
    results = [fake_result("mmar", 0, 0.7, 0.9), fake_result("stage1-only", 0, 0.65, 0.4)]
    table = markdown_table(summarize(results, variants, "mnist"), "mnist")
    lines = table.splitlines()
    assert lines[0] == (
        "| variant | caption accuracy | T2I accuracy | classifier-FID | holes (completion, "
        "f = 0.9) | steps | train min |"
    )
    assert lines[2] == "| mmar | 50.0% | 70.0% | 10.0 | 90.0% | 100 | 1.0 |"
    assert lines[3] == "| stage1-only | 50.0% | 65.0% | 10.0 | 40.0% | 100 | 1.0 |"
    assert "| stage1-only | 65.0% | 40.0% |" in table  # the completion table


def test_write_report_writes_table_chart_and_json(tmp_path: Path):
    variants = select("paper", ["mmar", "eps"])
    results = [fake_result(v, s, 0.5 + 0.1 * s, 0.7) for v in ("mmar", "eps") for s in (0, 1)]
    table, rows = write_report(results, variants, "mnist", tmp_path, "mmar ablate --seeds 2")
    assert "| mmar | 50.0% ± 0.0 | 55.0% ± 7.1 |" in table  # T2I sd of (50%, 60%)
    assert (tmp_path / "table.md").read_text().startswith("`mmar ablate --seeds 2`")
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["rows"] == rows and len(data["runs"]) == 4
    with Image.open(tmp_path / "chart.png") as png:
        assert png.width > 600 and png.height > 100


def test_cli_lists_the_suite(capsys):
    assert main(["ablate", "--list", "--bench", "mnist"]) == 0
    out = capsys.readouterr().out
    assert "eps-leading     evaluates eps's model; sampling timestep_spacing=leading" in out
    assert "transfusion     1 stage(s); model.image_head=transfusion" in out


def test_cli_raises_on_unknown_variant(capsys, tmp_path):
    assert main(["ablate", "--only", "nope", "--out", str(tmp_path / "a")]) == 2
    assert "unknown variant(s) nope" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
