"""kill -9 between checkpoints, --resume to the end: the same final weights, bit for bit.

Three subprocesses on the tiny preset (fp32, 12 steps, a checkpoint every 4): an uninterrupted
reference (`mmar train`); a run that blocks after step 10 (the same config through the Python
API, with a Trainer callback that sleeps) and is killed with SIGKILL once its step-8 checkpoint
exists; and its `mmar train --resume`, which must restart from step 8 (ignoring a half-written
checkpoint directory) and end with tensors equal to the reference.

Also: a damaged newest checkpoint (truncated, overwritten, a trainer_state file missing) is
skipped with a message naming the file, and the run resumes from the one before, bit-exact.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from mmar.cli import main
from mmar.training import checkpoint as ckpt
from mmar.training.config import load_preset
from mmar.training.trainer import Trainer

SETS = ["train.ckpt_every=4", "train.keep_last=3", "train.precision=fp32", "train.progress=false"]
ARGS = ["--config", "tiny", "--steps", "12", "--set", *SETS]
# `mmar train --config tiny --steps 12 --set SETS` with a callback that blocks after step 10,
# so the test can kill -9 it at a known point (argv[1]: the output directory)
BLOCKING_RUN = f"""
import sys, time
from mmar.training.config import load_preset
from mmar.training.trainer import Trainer

def block_after_10(trainer, record):
    if record["step"] == 10:
        time.sleep(3600)

cfg = load_preset("tiny", {[*SETS, "train.steps=12"]!r})
Trainer(cfg, sys.argv[1], callbacks=[block_after_10]).fit()
"""


def _cmd(out, *extra):
    return [sys.executable, "-m", "mmar", "train", *ARGS, "--out", str(out), *extra]


def _env(**extra):
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **extra}


def _logged_steps(out):
    path = out / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["step"] for line in path.read_text().splitlines()]


def test_resume_after_kill9_gives_identical_final_weights(tmp_path):
    ref, run = tmp_path / "ref", tmp_path / "run"
    reference = subprocess.Popen(_cmd(ref), env=_env(), stderr=subprocess.PIPE)
    victim = subprocess.Popen(
        [sys.executable, "-c", BLOCKING_RUN, str(run)], env=_env(), stderr=subprocess.PIPE
    )
    deadline = time.time() + 120
    while not (10 in _logged_steps(run) and (run / "checkpoints" / "step_0000008").is_dir()):
        assert victim.poll() is None, victim.stderr.read().decode()
        assert time.time() < deadline, "the run never reached step 10"
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    assert not (run / "final").exists() and not (run / "checkpoints" / "step_0000012").exists()
    # as if killed while writing the step-12 checkpoint: must be ignored and removed
    stale = run / "checkpoints" / ".tmp-step_0000012-4242" / "trainer_state"
    stale.mkdir(parents=True)
    (stale / "state.json").write_text("{}")

    resumed = subprocess.run(_cmd(run, "--resume"), env=_env(), capture_output=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr.decode()
    assert reference.wait(timeout=120) == 0, reference.stderr.read().decode()
    assert not stale.parent.exists()
    assert _logged_steps(run) == list(range(1, 13))  # steps 9, 10 re-logged once, not twice

    assert any(k.startswith("ema.") for k in load_file(str(ref / "final/model.safetensors")))
    for name in ("final/model.safetensors", "checkpoints/step_0000012/model.safetensors"):
        a, b = load_file(str(ref / name)), load_file(str(run / name))
        assert a.keys() == b.keys()
        unequal = [k for k in a if not torch.equal(a[k], b[k])]
        assert not unequal, f"{name}: {unequal[:5]} differ after resume"
    # the EMA is stored once: "ema." tensors of model.safetensors, bookkeeping in state.json
    state = run / "checkpoints/step_0000012" / ckpt.STATE_DIR
    assert sorted(p.name for p in state.iterdir()) == [
        "optimizer.pt",
        "rng.pt",
        "scheduler.pt",
        "state.json",
    ]
    ema_ref, ema_run = (
        json.loads((d / "checkpoints/step_0000012" / ckpt.STATE_DIR / "state.json").read_text())[
            "ema"
        ]
        for d in (ref, run)
    )
    assert ema_run == ema_ref and ema_run["num_updates"] == 12
    opt = "checkpoints/step_0000012/trainer_state/optimizer.pt"
    opt_a, opt_b = (torch.load(d / opt, weights_only=True) for d in (ref, run))
    assert all(
        torch.equal(opt_a["state"][i]["exp_avg_sq"], opt_b["state"][i]["exp_avg_sq"])
        for i in opt_a["state"]
    )


# --- a damaged newest checkpoint: fall back to the one before it -----------------------------
class Stop(Exception):
    pass


def stop_after(step):
    def callback(trainer, record):
        if record["step"] == step:
            raise Stop(step)

    return callback


def tiny(*overrides):
    return load_preset(
        "tiny",
        [
            "train.progress=false",
            "train.steps=8",
            "train.ckpt_every=2",
            "train.keep_last=3",
            *overrides,
        ],
    )


@pytest.fixture(scope="module")
def reference_final(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    Trainer(tiny(), out).fit()
    return load_file(str(out / "final" / ckpt.WEIGHTS_FILE))


def _truncate(file):
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])


def _garbage(file):
    file.write_bytes(random.Random(0).randbytes(file.stat().st_size))


@pytest.mark.parametrize(
    "name, damage",
    [
        (ckpt.WEIGHTS_FILE, _truncate),
        (ckpt.WEIGHTS_FILE, _garbage),
        ("trainer_state/optimizer.pt", os.remove),
        ("trainer_state/state.json", _garbage),
        ("tokenizer/tokenizer.json", _truncate),  # the processor's part of the checkpoint
        ("backbone/config.json", os.remove),
    ],
)
def test_resume_skips_a_damaged_checkpoint(tmp_path, capsys, reference_final, name, damage):
    with pytest.raises(Stop):  # "killed" after the step-6 checkpoint
        Trainer(tiny(), tmp_path, callbacks=[stop_after(6)]).fit()
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [2, 4, 6]
    bad = ckpt.checkpoint_path(tmp_path, 6) / name
    damage(bad)
    capsys.readouterr()

    t = Trainer(tiny(), tmp_path, resume=True)
    err = capsys.readouterr().err
    assert f"skipping an unreadable checkpoint: {bad}: " in err
    assert f"resuming from step 4 of 8 ({ckpt.checkpoint_path(tmp_path, 4)})" in err
    assert t.step == 4
    t.fit()  # re-writes step 6 whole, then trains on to 8 as if never interrupted
    ckpt.check_checkpoint(ckpt.checkpoint_path(tmp_path, 6))
    final = load_file(str(tmp_path / "final" / ckpt.WEIGHTS_FILE))
    assert final.keys() == reference_final.keys()
    assert all(torch.equal(final[k], reference_final[k]) for k in final)


def test_resume_without_a_readable_checkpoint_names_the_files(tmp_path, capsys):
    with pytest.raises(Stop):
        Trainer(tiny(), tmp_path, callbacks=[stop_after(4)]).fit()
    bad = [
        ckpt.checkpoint_path(tmp_path, 4) / ckpt.WEIGHTS_FILE,
        ckpt.checkpoint_path(tmp_path, 2) / ckpt.STATE_DIR / "rng.pt",
    ]
    _truncate(bad[0])
    _garbage(bad[1])
    with pytest.raises(ckpt.CheckpointError) as e:
        Trainer(tiny(), tmp_path, resume=True)
    msg = str(e.value)
    assert msg.startswith(f"--resume: no readable checkpoint under {tmp_path}/checkpoints: ")
    assert f"{bad[0]}: SafetensorError" in msg and f"{bad[1]}: BadZipFile" in msg
    assert "start a new run with another --out" in msg
    # `mmar train` reports it as it reports a missing checkpoint (a FileNotFoundError)
    rc = main(["train", "--config", "tiny", "--out", str(tmp_path), "--resume"])
    assert (
        rc == 2
        and f"mmar train: --resume: no readable checkpoint under {tmp_path}"
        in capsys.readouterr().err
    )


def test_resume_with_data_workers_across_an_epoch_is_exact(tmp_path):
    """Two DataLoader workers (the collator draws kinds and CFG dropout in them), batches of 256
    of the ~1,437 training digits (5 per epoch): stopped mid-way through epoch 2 and resumed,
    the run ends with the weights of an uninterrupted one, bit for bit."""
    sets = ["data.num_workers=2", "train.batch_size=256", "train.steps=9", "train.ckpt_every=7"]
    Trainer(tiny(*sets), tmp_path / "ref").fit()
    with pytest.raises(Stop):
        Trainer(tiny(*sets), tmp_path / "run", callbacks=[stop_after(7)]).fit()
    resumed = Trainer(tiny(*sets), tmp_path / "run", resume=True)
    assert resumed.data_position.state_dict() == {"epoch": 1, "offset": 512}  # 7 = 5 + 2
    resumed.fit()
    a = load_file(str(tmp_path / "ref" / "final" / ckpt.WEIGHTS_FILE))
    b = load_file(str(tmp_path / "run" / "final" / ckpt.WEIGHTS_FILE))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
