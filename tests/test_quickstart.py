"""`mmar quickstart` end to end on a very short run (what `make demo` runs, minus the minutes)."""

import json

from PIL import Image

from mmar.cli import main
from mmar.cli.quickstart import calibrate_steps
from mmar.training.config import load_preset


def test_quickstart_short_run_writes_every_output(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # judge trained afresh
    out = tmp_path / "qs"
    rc = main(
        [
            "quickstart",
            "--steps",
            "4",
            "--n-per-class",
            "1",
            "--samples-per-row",
            "2",
            "--out",
            str(out),
            "--set",
            "train.progress=false",
            "train.batch_size=8",
        ]
    )
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    for key in (
        "t2i_accuracy",
        "classifier_fid",
        "classifier_fid_real_floor",
        "caption_accuracy",
        "judge_heldout_accuracy",
        "images_per_second",
        "train_seconds",
        "total_seconds",
    ):
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
    # the presets' recommended sampling travels with the model and is what evaluation used
    assert model.sampling.scheduler == "ddpm" and model.sampling.temperature == 0.8
    assert res["sampling"] == model.sampling.to_dict()
    assert len(model.caption(model.generate_images([""], num_iter=2, num_steps=2))) == 1


def test_quickstart_refuses_existing_out(tmp_path, capsys):
    (tmp_path / "qs").mkdir()
    (tmp_path / "qs" / "x").write_text("keep me")
    assert main(["quickstart", "--steps", "2", "--out", str(tmp_path / "qs")]) == 2
    assert "--force" in capsys.readouterr().err
    assert (tmp_path / "qs" / "x").read_text() == "keep me"


def test_calibration_times_real_steps_of_stage_one(monkeypatch):
    """The probe trains the stage-1 run itself (same model, data, batch and precision) for
    probe_steps steps with no checkpoints and no warm-up, and the step count scales with the
    measured time per step (at least 2)."""
    import mmar.training.trainer as trainer_module

    runs = []

    class FakeTrainer:
        def __init__(self, cfg, out):
            runs.append(cfg)

        def fit(self):
            return {"elapsed_s": 3 * 0.25}  # 0.25 s per step

    monkeypatch.setattr(trainer_module, "Trainer", FakeTrainer)
    cfg = load_preset("quickstart_stage1", ["train.progress=false"])
    steps, sec_per_step = calibrate_steps(cfg, budget_s=100.0, probe_steps=3)
    assert (steps, sec_per_step) == (400, 0.25)
    assert calibrate_steps(cfg, budget_s=0.1, probe_steps=3)[0] == 2
    probe = runs[0]
    assert (probe.train.steps, probe.train.ckpt_every, probe.optim.warmup_steps) == (3, 0, 0)
    same = {k: v for k, v in probe.to_dict().items() if k not in ("train", "optim")}
    assert same == {k: v for k, v in cfg.to_dict().items() if k not in ("train", "optim")}
    assert probe.train.batch_size == cfg.train.batch_size
    assert probe.train.precision == cfg.train.precision
