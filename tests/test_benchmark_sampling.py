"""benchmarks/sampling.py end to end on a tiny saved model (speed rows; the judge is skipped)."""

import json
import subprocess
import sys
from pathlib import Path

from helpers_model import tiny_model

ROOT = Path(__file__).resolve().parent.parent


def test_sampling_benchmark_writes_every_row(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path / "m")
    out = tmp_path / "s.json"
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "sampling.py"),
        "--model",
        str(tmp_path / "m"),
        "--rows",
        "ddpm:4,dpm++2m:3,ddpm:4>2",
        "--n-per-class",
        "1",
        "--rounds",
        "2",
        "--threads",
        "1",
        "--no-judge",
        "--json",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(out.read_text())
    assert set(res["rows"]) == {"ddpm 4 T=1", "dpm++2m 3", "ddpm 4>2 T=1", "ddpm 4 T=1 uncached"}
    annealed = res["rows"]["ddpm 4>2 T=1"]["sampling"]
    assert (annealed["num_steps"], annealed["num_steps_final"]) == (4, 2)
    assert all(r["images_per_s"] > 0 for r in res["rows"].values())
    assert res["cache_speedup"] > 0 and "dpm++2m 3" in proc.stdout
