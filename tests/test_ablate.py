"""The CI smoke of `mmar ablate`: every variant of the paper suite trains a few steps through the
real runner (its own code path: its parameterisation, stages, tokenizer, head) and is evaluated
by the shapes bench, then a second call resumes without redoing anything."""

import json
from pathlib import Path

import pytest

from mmar.ablation.variants import PAPER
from mmar.cli import main
from mmar.evaluation import shapes_bench
from mmar.model.files import read_config

TINY = [
    "model.backbone.hidden_size=32",
    "model.backbone.num_layers=1",
    "model.backbone.num_heads=2",
    "model.backbone.num_kv_heads=1",
    "model.backbone.intermediate_size=64",
    "model.vit.width=32",
    "model.vit.depth=1",
    "model.vit.num_heads=2",
    "model.diffusion.head_width=32",
    "model.diffusion.head_depth=1",
    "model.diffusion.diffusion_batch_mul=1",
    "model.sampling.num_steps=3",
    "model.sampling.num_iter=4",
    "model.sampling.max_new_tokens=6",
    "train.batch_size=4",
    "train.log_every=1",
]
TOKENIZER = ["steps=2", "minutes=null", "batch_size=2", "eval_images=4", "scale_images=4"]
ARGS = ["ablate", "--bench", "shapes", "--steps", "4", "--seeds", "1", "--n-per-class", "1"]
ARGS += ["--completion-images", "2", "--tokenizer-set", *TOKENIZER, "--set", *TINY]


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """The whole paper suite at 4 steps (2 + 2, or 4 in one stage), run once for the module."""
    out = tmp_path_factory.mktemp("ablate") / "out"
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(cache))  # the judge, trained once for the module
        mp.setattr(shapes_bench, "JUDGE_TRAIN_ITEMS", 200)  # a quick judge: seconds
        assert main([*ARGS, "--out", str(out)]) == 0
        first = (out / "ablate.log").read_text().splitlines()
        stamps = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/seed0/result.json")}
        assert main([*ARGS, "--out", str(out)]) == 0
        again = (out / "ablate.log").read_text().splitlines()[len(first) :]
    return out, again, stamps


def result(out: Path, name: str) -> dict:
    return json.loads((out / "runs" / name / "seed0" / "result.json").read_text())


def trained_config(out: Path, name: str):
    return read_config(Path(result(out, name)["train"]["final"]))


@pytest.mark.parametrize("variant", [v.name for v in PAPER])
def test_every_variant_trains_and_is_evaluated(suite, variant):
    out, _, _ = suite
    r = result(out, variant)
    bench = r["bench"]
    for key in ("vqa_accuracy", "caption_exact", "t2i_accuracy_seen", "t2i_accuracy_heldout"):
        assert 0.0 <= bench[key] <= 1.0
    assert bench["classifier_fid"] > 0
    assert set(r["completion"]) == {"0.0", "0.25", "0.5", "0.75", "0.9"}
    assert r["holes"] == r["completion"]["0.9"]
    assert r["train"]["total_steps"] == 4


def test_each_variant_runs_its_own_code_path(suite):
    out, _, _ = suite
    param = {n: trained_config(out, n).diffusion.parameterization for n in ("mmar", "eps", "x0")}
    assert param == {"mmar": "v", "eps": "eps", "x0": "x0"}
    assert result(out, "mmar")["train"]["steps"] == [2, 2]
    assert result(out, "stage1-only")["train"]["steps"] == [4]
    assert not (out / "runs" / "stage1-only" / "seed0" / "stage2").exists()
    stage2 = (out / "runs" / "stage2-uniform" / "seed0" / "stage2" / "config.yaml").read_text()
    assert "distribution: uniform" in stage2
    for name, field, value in (
        ("eps-leading", "timestep_spacing", "leading"),
        ("eps-bf16", "precision", "bf16"),
        ("mmar-bf16", "precision", "bf16"),
    ):
        r = result(out, name)
        assert r["sampling"][field] == value
        assert r["trained_as"] == name.split("-")[0]
        assert r["train"] == result(out, r["trained_as"])["train"]  # no training of its own
        assert not (out / "runs" / name / "seed0" / "stage1").exists()
    assert result(out, "mmar")["sampling"]["timestep_spacing"] == "linspace"
    vq, kl, tf = (trained_config(out, n) for n in ("vq", "kl", "transfusion"))
    assert (vq.image_head, vq.image_tokenizer.kind) == ("codebook", "diffusers_vq")
    assert vq.image_tokenizer.path == str(out / "tokenizers" / "vq")
    assert (kl.image_head, kl.image_tokenizer.kind) == ("diffusion", "diffusers")
    assert tf.image_head == "transfusion"
    assert result(out, "transfusion")["mask_ratio_losses"] == {}  # it masks nothing
    losses = result(out, "mmar")["mask_ratio_losses"]
    assert len(losses) == 5 and all(v > 0 for v in losses.values())


def test_report_has_one_row_per_variant(suite):
    out, _, _ = suite
    table = (out / "table.md").read_text()
    for v in PAPER:
        assert f"| {v.name} | " in table
    assert (out / "chart.png").stat().st_size > 1000
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["variant"] for r in rows] == [v.name for v in PAPER]


def test_a_second_call_resumes_without_redoing_anything(suite):
    _, log, stamps = suite
    kept = [line for line in log if "done before, kept" in line]
    assert len(kept) == len(PAPER)
    assert stamps and all(p.stat().st_mtime_ns == t for p, t in stamps.items())
