"""`mmar quickstart` end to end on a very short run (what `make demo` runs, minus the minutes)."""

import json

import pytest
from PIL import Image

from mmar.cli import main
from mmar.cli.quickstart import calibrate_steps, train_two_stages, write_model_card
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

    card = (out / "README.md").read_text()  # the final model's card carries the evaluation
    assert json.loads((out / "metrics.json").read_text()) == res
    assert "| t2i_accuracy |" in card and "](samples.png)" in card

    import mmar

    model = mmar.MMAR.from_pretrained(out)  # the final model sits at the top of OUT
    # the presets' recommended sampling travels with the model and is what evaluation used
    assert model.sampling.scheduler == "ddpm" and model.sampling.temperature == 0.8
    assert res["sampling"] == model.sampling.to_dict()
    assert len(model.caption(model.generate_images([""], num_iter=2, num_steps=2))) == 1


def test_quickstart_shapes_bench_trains_all_three_tasks_and_scores_them(tmp_path, monkeypatch):
    """--bench shapes: the shapes presets (vqa samples included), the shapes benchmark."""
    from mmar.evaluation import shapes_bench

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(shapes_bench, "JUDGE_TRAIN_ITEMS", 200)  # a quick judge: seconds
    out = tmp_path / "qs"
    small = [  # the presets' structure at a test's size
        "model.backbone.hidden_size=32",
        "model.backbone.intermediate_size=64",
        "model.backbone.num_layers=1",
        "model.vit.width=32",
        "model.vit.depth=1",
        "model.diffusion.head_width=32",
        "model.diffusion.head_depth=1",
        "model.sampling.num_steps=2",
        "model.sampling.num_iter=2",
    ]
    args = ["quickstart", "--bench", "shapes", "--steps", "4", "--n-per-class", "1"]
    rc = main(
        [*args, "--out", str(out), "--set", "train.progress=false", "train.batch_size=8", *small]
    )
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert res["bench"] == "shapes" and res["train_steps"] == {"stage1": 2, "stage2": 2}
    assert set(res["targets"]) == {
        "t2i_overall_seen",
        "t2i_overall_heldout",
        "vqa_accuracy",
        "caption_exact",
    }
    for key in ("t2i_accuracy_seen", "t2i_accuracy_heldout", "caption_exact", "vqa_accuracy"):
        assert 0.0 <= res[key] <= 1.0, key
    assert res["n_generated"] == 10 and sum(res["vqa_n_per_kind"].values()) >= 10
    assert (out / "samples.png").is_file()
    run = load_preset("shapes_stage2", [])
    assert run.train.kinds.vqa > 0 and run.data.name == "shapes"


def test_final_model_card_carries_the_evaluation(tmp_path):
    """OUT as quickstart leaves it before its card: stage 2's final/ files (whose card says "not
    evaluated"), then the evaluation's samples.png; the card step adds the metrics (also in
    metrics.json) and shows the grid, and leaves the model and the grid as they were."""
    from helpers_model import tiny_model
    from mmar.pipelines.mmar import MMAR

    out = tmp_path / "qs"
    tiny_model().save_pretrained(out)
    assert "**Not evaluated**" in (out / "README.md").read_text()
    grid = Image.new("L", (32, 20), 200)
    grid.save(out / "samples.png")
    weights = (out / "model.safetensors").read_bytes()
    results = {"t2i_accuracy": 0.75, "train_steps": {"stage1": 2, "stage2": 2}, "bench": "mnist"}
    model = MMAR.from_pretrained(out)
    assert write_model_card(model, out, results) == out / "README.md"
    card = (out / "README.md").read_text()
    assert "Not evaluated" not in card and "already" not in card
    assert "| t2i_accuracy | 0.75 |" in card and "| train_steps.stage2 | 2 |" in card
    assert "![samples generated by this model](samples.png)" in card
    assert json.loads((out / "metrics.json").read_text()) == results
    assert Image.open(out / "samples.png").tobytes() == grid.tobytes()
    assert (out / "model.safetensors").read_bytes() == weights


def test_quickstart_refuses_existing_out(tmp_path, capsys):
    (tmp_path / "qs").mkdir()
    (tmp_path / "qs" / "x").write_text("keep me")
    assert main(["quickstart", "--steps", "2", "--out", str(tmp_path / "qs")]) == 2
    assert "--force" in capsys.readouterr().err
    assert (tmp_path / "qs" / "x").read_text() == "keep me"


class FakeClock:
    """Stands in for the ``time`` module of mmar.cli.quickstart: perf_counter() reads ``now``."""

    def __init__(self):
        self.now = 1000.0

    def perf_counter(self):
        return self.now


def test_calibration_times_real_steps_of_stage_one(monkeypatch):
    """The probe trains the stage-1 run itself (same model, data, batch and precision) for
    probe_steps steps with no checkpoints and no warm-up; the time per step is the median step
    interval after the warm-up steps (slow first steps and one slow step do not count), and the
    step count scales with it (at least 2)."""
    import mmar.cli.quickstart as quickstart
    import mmar.training.trainer as trainer_module

    clock = FakeClock()
    monkeypatch.setattr(quickstart, "time", clock)
    # step durations: a slow start (model build, first batches), then 0.25 s with one 3 s step
    durations = [9.0, 2.0, 1.0, 0.5, 0.25, 0.25, 3.0, 0.25, 0.25]
    runs = []

    class FakeTrainer:
        def __init__(self, cfg, out, callbacks=()):
            runs.append(cfg)
            self.callbacks = callbacks

        def fit(self):
            for d in durations[: runs[-1].train.steps]:
                clock.now += d
                for cb in self.callbacks:
                    cb(self, {})
            clock.now += 7.0  # final save and loss plot: outside the measurement
            return {}

    monkeypatch.setattr(trainer_module, "Trainer", FakeTrainer)
    cfg = load_preset("quickstart_stage1", ["train.progress=false"])
    steps, sec_per_step = calibrate_steps(cfg, budget_s=100.0, probe_steps=9, warmup=4)
    assert (steps, sec_per_step) == (400, 0.25)
    assert calibrate_steps(cfg, budget_s=0.1, probe_steps=9, warmup=4)[0] == 2
    probe = runs[0]
    assert (probe.train.steps, probe.train.ckpt_every, probe.optim.warmup_steps) == (9, 0, 0)
    same = {k: v for k, v in probe.to_dict().items() if k not in ("train", "optim")}
    assert same == {k: v for k, v in cfg.to_dict().items() if k not in ("train", "optim")}
    assert probe.train.batch_size == cfg.train.batch_size
    assert probe.train.precision == cfg.train.precision


def test_calibrate_steps_raises_on_too_few_probe_steps():
    cfg = load_preset("quickstart_stage1", ["train.progress=false"])
    with pytest.raises(ValueError, match="probe_steps must be >= warmup \\+ 2 = 6, got 5"):
        calibrate_steps(cfg, budget_s=100.0, probe_steps=5, warmup=4)


def test_stage_two_fills_the_time_left_at_stage_one_speed(monkeypatch, tmp_path, capsys):
    """With a deadline, stage 2 gets the steps that fit the time left at stage 1's measured speed
    (whatever the calibration planned), starts from stage 1's final weights, and keeps its
    warm-up within a tenth of its steps; without one it gets the planned 40%."""
    import mmar.cli.quickstart as quickstart
    import mmar.training.trainer as trainer_module

    clock = FakeClock()
    monkeypatch.setattr(quickstart, "time", clock)
    runs = []

    class FakeTrainer:
        def __init__(self, cfg, out, callbacks=()):
            runs.append(cfg)
            self.out = out

        def fit(self):
            steps = runs[-1].train.steps
            clock.now += 0.5 * steps  # 0.5 s per step, build and save included
            return {"step": steps, "elapsed_s": 0.5 * steps, "final": str(self.out / "final")}

    monkeypatch.setattr(trainer_module, "Trainer", FakeTrainer)
    stage1 = load_preset("quickstart_stage1", ["train.progress=false"])
    # planned 1000 steps (600 + 400), but only 600 s: stage 1 takes 300 s, 300 s buy 600 steps
    s1, s2 = train_two_stages(stage1, [], tmp_path, 1000, deadline=clock.now + 600.0)
    assert (s1["step"], s2["step"]) == (600, 600)
    assert "stage 2: 600 steps (planned 400)" in capsys.readouterr().out
    stage2 = runs[1]
    assert stage2.train.init_from == str(tmp_path / "stage1" / "final")
    assert stage2.optim.warmup_steps <= 60
    runs.clear()
    s1, s2 = train_two_stages(stage1, [], tmp_path, 1000)
    assert (s1["step"], s2["step"]) == (600, 400)
