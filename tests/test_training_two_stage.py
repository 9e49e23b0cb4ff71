"""The two-stage recipe sized to a budget (mmar.training.two_stage), with a fake clock."""

import pytest

from mmar.training.config import load_preset
from mmar.training.two_stage import calibrate_steps, train_two_stages


class FakeClock:
    """Stands in for the ``time`` module of mmar.training.two_stage (perf_counter reads ``now``)."""

    def __init__(self):
        self.now = 1000.0

    def perf_counter(self):
        return self.now


def test_calibration_times_real_steps_of_stage_one(monkeypatch):
    """The probe trains the stage-1 run itself (same model, data, batch and precision) for
    probe_steps steps with no checkpoints and no warm-up; the time per step is the median step
    interval after the warm-up steps (slow first steps and one slow step do not count), and the
    step count scales with it (at least 2)."""
    import mmar.training.trainer as trainer_module
    import mmar.training.two_stage as two_stage

    clock = FakeClock()
    monkeypatch.setattr(two_stage, "time", clock)
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
    import mmar.training.trainer as trainer_module
    import mmar.training.two_stage as two_stage

    clock = FakeClock()
    monkeypatch.setattr(two_stage, "time", clock)
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
