"""Bad input to training runs (issue 9): --resume says where it resumes and refuses too few
steps; kill -9 during a checkpoint save never loses the newest complete checkpoint.

The fault tests fork the test process (torch already imported: no interpreter start-up) into a
tiny training run and SIGKILL it at a chosen point inside the checkpoint writer, or at a random
moment of a run that spends most of its time saving; then every ``step_*`` directory left must
be complete, and ``--resume`` continues from the newest one to the weights of an uninterrupted
run, bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mmar.cli import main
from mmar.config import ConfigError
from mmar.training import checkpoint as ckpt
from mmar.training.config import load_preset
from mmar.training.trainer import Trainer

SETS = [
    "train.progress=false",
    "train.steps=8",
    "train.ckpt_every=2",
    "train.keep_last=2",
    "train.precision=fp32",
]


def tiny(*overrides: str):
    return load_preset("tiny", [*SETS, *overrides])


class Stop(Exception):
    pass


def stop_after(step: int):
    def callback(trainer, record):
        if record["step"] == step:
            raise Stop(step)

    return callback


def _stopped_run(out: Path, step: int = 4) -> None:
    """A run "killed" after its step-``step`` checkpoint (steps 2, 4, ... written)."""
    with pytest.raises(Stop):
        Trainer(tiny(), out, callbacks=[stop_after(step)]).fit()


# --- --resume says what it does, and refuses a run already past its end ----------------------
def test_resume_prints_the_step_and_the_checkpoint(tmp_path, capsys):
    _stopped_run(tmp_path)
    capsys.readouterr()
    t = Trainer(tiny(), tmp_path, resume=True)
    err = capsys.readouterr().err
    assert t.step == 4
    assert f"--resume: resuming from step 4 of 8 ({ckpt.checkpoint_path(tmp_path, 4)})" in err


def test_resume_with_fewer_steps_than_done_raises(tmp_path, capsys):
    _stopped_run(tmp_path)
    want = (
        r"train\.steps: 3 is fewer than the 4 steps .*step_0000004.*at least 4, e\.g\. --steps 8 "
    )
    with pytest.raises(ConfigError, match=want):
        Trainer(tiny("train.steps=3"), tmp_path, resume=True)
    # the checkpoint is left alone, and the same run with enough steps resumes
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [2, 4]
    capsys.readouterr()
    argv = ["train", "--config", "tiny", "--out", str(tmp_path), "--resume", "--steps", "3"]
    rc = main([*argv, "--set", *SETS])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert err.startswith("mmar train: RunConfig.train.steps: 3 is fewer than the 4 steps")
