"""kill -9 between checkpoints, --resume to the end: the same final weights, bit for bit.

Three subprocesses on the tiny preset (fp32, 12 steps, a checkpoint every 4): an uninterrupted
reference (`mmar train`); a run that blocks after step 10 (the same config through the Python
API, with a Trainer callback that sleeps) and is killed with SIGKILL once its step-8 checkpoint
exists; and its `mmar train --resume`, which must restart from step 8 (ignoring a half-written
checkpoint directory) and end with tensors equal to the reference.
"""

import json
import os
import signal
import subprocess
import sys
import time

import torch
from safetensors.torch import load_file

from mmar.training import checkpoint as ckpt

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
    victim = subprocess.Popen([sys.executable, "-c", BLOCKING_RUN, str(run)], env=_env(),
                              stderr=subprocess.PIPE)
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
    assert sorted(p.name for p in state.iterdir()) == ["optimizer.pt", "rng.pt", "scheduler.pt",
                                                        "state.json"]
    ema_ref, ema_run = (json.loads((d / "checkpoints/step_0000012" / ckpt.STATE_DIR /
                                    "state.json").read_text())["ema"] for d in (ref, run))
    assert ema_run == ema_ref and ema_run["num_updates"] == 12
    opt = "checkpoints/step_0000012/trainer_state/optimizer.pt"
    opt_a, opt_b = (torch.load(d / opt, weights_only=True) for d in (ref, run))
    assert all(torch.equal(opt_a["state"][i]["exp_avg_sq"], opt_b["state"][i]["exp_avg_sq"])
               for i in opt_a["state"])
