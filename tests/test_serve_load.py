"""benchmarks/serve_load.py on the tiny model with a small queue: a burst of 20 clients must get
an image or a clean "busy, try again" each (no error), and the server must answer afterwards."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("gradio_client", reason="gradio is not installed: pip install -e '.[serve]'")

ROOT = Path(__file__).resolve().parent.parent
CLIENTS, MAX_QUEUE = 20, 4


def test_burst_beyond_the_queue_gets_images_or_busy_and_the_server_survives(tmp_path):
    out = tmp_path / "load.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "serve_load.py"), "--tiny",
           "--clients", str(CLIENTS), "--requests-per-client", "1", "--concurrency", "1",
           "--max-queue", str(MAX_QUEUE), "--num-steps", "2", "--threads", "1",
           "--timeout", "50", "--json", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = json.loads(out.read_text())
    counts = res["counts"]
    assert counts["error"] == 0, [r for r in res["requests"] if r["outcome"] == "error"]
    assert counts["ok"] + counts["busy"] == CLIENTS == len(res["requests"])
    assert counts["ok"] >= 1 + MAX_QUEUE  # the first arrivals: one running, MAX_QUEUE waiting
    assert counts["busy"] >= 1  # 20 at once cannot all fit in 1 + 4 places
    busy = {r["message"] for r in res["requests"] if r["outcome"] == "busy"}
    assert busy == {"Queue is full! Please try again."}
    assert all(r["message"] == "iteration 16 / 16" for r in res["requests"] if r["outcome"] == "ok")
    assert res["after"]["outcome"] == "ok"
    assert res["wall_s"] < 60
    assert f"{CLIENTS} requests from {CLIENTS} clients" in proc.stdout
