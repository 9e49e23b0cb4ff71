"""benchmarks/accuracy_vs_minutes.py: which checkpoints of a quickstart run it scores, in order."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def curve():
    spec = importlib.util.spec_from_file_location("avm", ROOT / "benchmarks/accuracy_vs_minutes.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_checkpoints_in_training_order(curve, tmp_path):
    for d in (
        "stage1/checkpoints/step_0001000",
        "stage1/checkpoints/step_0000200",
        "stage1/final",
        "stage2/checkpoints/step_0000400",
        "stage2/final",
        "stage2/checkpoints/step_0000600",  # no weights (a save cut short): left out
    ):
        (tmp_path / d).mkdir(parents=True)
        if not d.endswith("0600"):
            (tmp_path / d / "model.safetensors").write_bytes(b"")
    labels = [label for label, _ in curve.checkpoints(tmp_path)]
    # a stage's last step checkpoint holds final/'s weights: scored once, as final
    assert labels == ["stage1/step_0000200", "stage1/final", "stage2/final"]


def test_checkpoints_raises_without_any(curve, tmp_path):
    with pytest.raises(SystemExit, match="no stage1/ or stage2/ checkpoint"):
        curve.checkpoints(tmp_path)
