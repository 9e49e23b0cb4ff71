"""The tiny preset's loss curve, stored as a test asset: a change of the training step (losses,
masking, kinds, dropout, the optimiser, the data order) moves it and must be a deliberate update.

    python tests/test_training_golden.py      # rewrites tests/assets/tiny_loss_curve.json

fp32 on the CPU, one thread. The tolerance (relative 1e-4) covers the rounding differences of
AVX2 and AVX-512 kernels over 12 steps; a real change of the step moves the curve by far more
(a different mask ratio, kind or loss weight changes the first loss already by > 1%).
"""

import json
from pathlib import Path

import pytest
import torch

from mmar.training.config import load_preset
from mmar.training.trainer import Trainer

ASSET = Path(__file__).parent / "assets" / "tiny_loss_curve.json"
KEYS = ("loss", "loss_text", "loss_diff", "grad_norm")


def loss_curve(out: Path) -> list[dict]:
    """12 steps of the tiny preset (fp32, no checkpoints) -> per step {loss, ..., grad_norm}."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = load_preset(
            "tiny",
            [
                "train.progress=false",
                "train.precision=fp32",
                "train.ckpt_every=0",
                "train.device=cpu",
            ],
        )
        records = []
        Trainer(cfg, out, callbacks=[lambda t, r: records.append({k: r[k] for k in KEYS})]).fit()
        return records
    finally:
        torch.set_num_threads(n)


def test_tiny_loss_curve_matches_the_stored_one(tmp_path):
    want = json.loads(ASSET.read_text())
    got = loss_curve(tmp_path)
    assert len(got) == len(want["steps"]) == 12
    for step, (g, w) in enumerate(zip(got, want["steps"]), 1):
        for k in KEYS:
            assert g[k] == pytest.approx(w[k], rel=1e-4, abs=1e-6), (step, k, g[k], w[k])
    assert got[-1]["loss"] < got[0]["loss"]  # and it trains


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        curve = loss_curve(Path(tmp))
    ASSET.write_text(
        json.dumps(
            {
                "preset": "tiny",
                "precision": "fp32",
                "cpu": torch.backends.cpu.get_cpu_capability(),
                "steps": curve,
            },
            indent=1,
        )
        + "\n"
    )
    print(f"wrote {ASSET}")
