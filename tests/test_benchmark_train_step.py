"""benchmarks/train_step.py end to end on the tiny preset: every setting timed, JSON written."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_train_step_benchmark_times_every_setting(tmp_path):
    out = tmp_path / "t.json"
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "train_step.py"),
        "--preset",
        "tiny",
        "--setting",
        "base",
        "--setting",
        "mul1",
        "model.diffusion.diffusion_batch_mul=1",
        "--warmup",
        "1",
        "--steps",
        "2",
        "--rounds",
        "1",
        "--threads",
        "1",
        "--json",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(out.read_text())
    assert set(res["settings"]) == {"base", "mul1"}
    assert res["settings"]["mul1"]["overrides"] == ["model.diffusion.diffusion_batch_mul=1"]
    assert all(s["median_step_ms"] > 0 for s in res["settings"].values())
    assert "fp32 (as configured)" in res["settings"]["base"]["precision"]  # tiny: fp32
