"""`mmar quickstart` end to end on a very short run (what `make demo` runs, minus the minutes)."""

import json

import pytest
from PIL import Image

from mmar.cli import main
from mmar.cli.quickstart import calibrate_steps
from mmar.training.config import load_preset


def test_quickstart_short_run_writes_every_output(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # judge trained afresh
    out = tmp_path / "qs"
    rc = main(["quickstart", "--steps", "4", "--n-per-digit", "1", "--samples-per-row", "2",
               "--out", str(out), "--set", "train.progress=false", "train.batch_size=8"])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    for key in ("t2i_accuracy", "classifier_fid", "classifier_fid_real_floor", "caption_accuracy",
                "judge_heldout_accuracy", "images_per_second", "train_seconds", "total_seconds"):
        assert key in res, key
    assert 0.0 <= res["t2i_accuracy"] <= 1.0 and 0.0 <= res["caption_accuracy"] <= 1.0
    assert res["train_steps"] == {"stage1": 2, "stage2": 2}
    assert res["judge_heldout_accuracy"] > 0.9  # a real judge, not a stand-in
    grid = Image.open(out / "samples.png")
    assert grid.size == (2 * 32 * 2, 10 * 32 * 2)  # 2 columns x 10 digits, drawn at 2x
    lines = (out / "captions.txt").read_text().splitlines()
    assert len(lines) == 20 and all(line.startswith("test[") for line in lines)

    import mmar

    model = mmar.MMAR.from_pretrained(out)  # the final model sits at the top of OUT
    assert len(model.caption(model.generate_images([""], num_iter=2, num_steps=2))) == 1


def test_quickstart_refuses_existing_out(tmp_path, capsys):
    (tmp_path / "qs").mkdir()
    (tmp_path / "qs" / "x").write_text("keep me")
    assert main(["quickstart", "--steps", "2", "--out", str(tmp_path / "qs")]) == 2
    assert "--force" in capsys.readouterr().err
    assert (tmp_path / "qs" / "x").read_text() == "keep me"


def test_calibration_gives_steps_that_fit_the_budget(tmp_path):
    cfg = load_preset("tiny", ["train.progress=false"])
    steps, sec_per_step = calibrate_steps(cfg, budget_s=5.0, probe_steps=3)
    assert sec_per_step > 0
    assert steps == max(2, int(5.0 / sec_per_step))
