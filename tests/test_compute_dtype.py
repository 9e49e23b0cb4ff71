"""precision: auto: bf16 only where it is measured faster; the per-machine cache; the warning on
an explicit slow bf16; the trainer uses and reports the choice."""

import json
import os
import subprocess
import sys
import warnings

import pytest
import torch

from mmar import compute_dtype
from mmar.compute_dtype import MatmulSpeed, cpu_matmul_speed, measure_cpu_matmul, resolve_precision
from mmar.training.config import load_preset
from mmar.training.trainer import Trainer

CPU = torch.device("cpu")


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MMAR_CACHE_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture
def fake_speed(cache_dir, monkeypatch):
    """Replace the measurement; count how often it runs."""
    state = {"speed": MatmulSpeed(fp32_gflops=160.0, bf16_gflops=1.5), "calls": 0}

    def measure():
        state["calls"] += 1
        return state["speed"]

    monkeypatch.setattr(compute_dtype, "measure_cpu_matmul", measure)
    return state


def test_measurement_is_real_and_fast():
    speed = measure_cpu_matmul(size=64, rounds=2, min_time_s=0.001)
    assert speed.fp32_gflops > 0 and speed.bf16_gflops > 0
    assert speed.bf16_speedup == pytest.approx(speed.bf16_gflops / speed.fp32_gflops)


def test_measurement_draws_no_random_numbers():
    before = torch.random.get_rng_state()
    measure_cpu_matmul(size=32, rounds=1, min_time_s=0.001)
    assert torch.equal(torch.random.get_rng_state(), before)


def test_auto_picks_fp32_on_an_emulated_avx2_cpu(tmp_path):
    """The real measurement, no mock: with oneDNN capped at AVX2 (and ATen's kernels at AVX2),
    bf16 matmul falls to a few GFLOP/s, as on an AVX2-only CPU, and auto picks fp32."""
    env = {
        **os.environ,
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "ATEN_CPU_CAPABILITY": "avx2",
        "MMAR_CACHE_DIR": str(tmp_path),
    }
    code = (
        "import torch; from mmar.compute_dtype import resolve_precision; "
        "print(resolve_precision('auto', torch.device('cpu')).reason)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("auto: fp32 on this CPU"), out.stdout
    assert "CPU capability AVX2" in out.stdout


def test_auto_picks_fp32_where_bf16_is_slow(fake_speed):
    choice = resolve_precision("auto", CPU)
    assert choice.precision == "fp32"
    assert "bf16 matmul 1.5 GFLOP/s vs fp32 160.0 GFLOP/s" in choice.reason


def test_auto_picks_bf16_where_bf16_is_faster(fake_speed):
    fake_speed["speed"] = MatmulSpeed(fp32_gflops=180.0, bf16_gflops=400.0)
    assert resolve_precision("auto", CPU).precision == "bf16"


def test_auto_keeps_fp32_on_a_tie(fake_speed):
    fake_speed["speed"] = MatmulSpeed(fp32_gflops=180.0, bf16_gflops=185.0)  # < MIN_SPEEDUP
    assert resolve_precision("auto", CPU).precision == "fp32"


def test_measured_once_per_machine_then_cached(fake_speed, cache_dir):
    first = resolve_precision("auto", CPU)
    second = resolve_precision("auto", CPU)
    assert fake_speed["calls"] == 1
    assert "measured now" in first.reason and "cached in" in second.reason
    cached = json.loads((cache_dir / "compute_dtype.json").read_text())
    assert cached == {compute_dtype.machine_key(): {"fp32_gflops": 160.0, "bf16_gflops": 1.5}}


def test_measurement_runs_on_one_thread_and_restores_the_count(monkeypatch):
    seen = []
    real_mm = torch.mm
    monkeypatch.setattr(
        torch, "mm", lambda a, b: seen.append(torch.get_num_threads()) or real_mm(a, b)
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        measure_cpu_matmul(size=16, rounds=1, min_time_s=0.0)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    assert seen and set(seen) == {1}


def test_damaged_cache_is_measured_again(fake_speed, cache_dir):
    (cache_dir / "compute_dtype.json").write_text("{not json")
    speed, cached = cpu_matmul_speed()
    assert not cached and speed.bf16_gflops == 1.5 and fake_speed["calls"] == 1
    assert json.loads((cache_dir / "compute_dtype.json").read_text())  # rewritten


def test_unwritable_cache_does_not_stop_the_run(fake_speed, cache_dir, monkeypatch):
    monkeypatch.setenv("MMAR_CACHE_DIR", str(cache_dir / "a_file" / "sub"))
    (cache_dir / "a_file").write_text("")
    assert resolve_precision("auto", CPU).precision == "fp32"


def test_explicit_slow_bf16_warns_with_the_figures(fake_speed):
    with pytest.warns(UserWarning, match=r"107x slower than fp32: bf16 matmul 1\.5 GFLOP/s"):
        choice = resolve_precision("bf16", CPU)
    assert choice.precision == "bf16"  # kept: the user's call


def test_explicit_fast_bf16_does_not_warn(fake_speed):
    fake_speed["speed"] = MatmulSpeed(fp32_gflops=180.0, bf16_gflops=400.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_precision("bf16", CPU).precision == "bf16"


def test_explicit_fp32_measures_nothing(fake_speed):
    assert resolve_precision("fp32", CPU).precision == "fp32"
    assert fake_speed["calls"] == 0


def test_cuda_uses_its_bf16_support(fake_speed, monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
    for supported, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda s=supported: s)
        choice = resolve_precision("auto", torch.device("cuda"))
        assert (choice.precision, choice.reason.split(":")[0]) == (expected, "auto")
    assert fake_speed["calls"] == 0


def test_other_devices_default_to_fp32(fake_speed):
    assert resolve_precision("auto", torch.device("mps")).precision == "fp32"


@pytest.mark.parametrize(
    ("speed", "expected"),
    [(MatmulSpeed(160.0, 1.5), "fp32"), (MatmulSpeed(180.0, 400.0), "bf16")],
)
def test_trainer_trains_in_the_chosen_precision(fake_speed, tmp_path, speed, expected, capsys):
    fake_speed["speed"] = speed
    cfg = load_preset("tiny", ["train.progress=false", "train.steps=1", "train.precision=auto"])
    trainer = Trainer(cfg, tmp_path / "run")
    seen = []
    forward = trainer.train_model.forward

    def spy(*args, **kwargs):
        seen.append(torch.is_autocast_enabled("cpu"))
        return forward(*args, **kwargs)

    trainer.train_model.forward = spy
    summary = trainer.fit()
    assert summary["precision"] == expected
    assert seen and all(s == (expected == "bf16") for s in seen)
    assert f"precision: auto: {expected} on this CPU" in capsys.readouterr().err


def test_presets_default_to_auto():
    assert load_preset("mnist_stage1").train.precision == "auto"
    for name in ("mnist_stage2", "quickstart_stage1", "quickstart_stage2"):
        assert load_preset(name).train.precision == "auto", name
