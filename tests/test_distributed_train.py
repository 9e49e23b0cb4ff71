"""DDP and FSDP2 on 2 CPU processes (gloo) train exactly what one process trains, and resume
at another world size.

`torchrun --standalone --nproc_per_node 2 -m mmar train` on the tiny preset with a global batch
of 8 (4 per rank) against `python -m mmar train` with batch 8, with the default kind mix (t2i,
i2t and img samples, CFG prompt dropout): every random draw that enters the loss (kind, prompt
dropout, mask ratio and order, diffusion t and noise) comes from the sample's own generator,
seeded by (run seed, epoch, item key), and both losses are normalised by the global token
counts, so the per-step losses and gradient norms agree up to float32 reduction order: 1e-5
relative. (Before the draws were made per sample, the masks and noise came from a per-rank
generator and the losses differed by up to 3%, the diffusion loss by up to 15%.)
"""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

STEPS = 4
RTOL = 1e-5
# Adam divides by sqrt(v): reduction-order noise on ~0 gradients can move a weight by ~lr a step
WEIGHT_ATOL = 1e-3 * STEPS


def _cmd(out, nproc, strategy, steps, resume):
    if nproc == 1 and strategy == "none":
        launcher = [sys.executable, "-m", "mmar", "train"]
    else:
        launcher = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(nproc),
            "-m",
            "mmar",
            "train",
        ]
    return [
        *launcher,
        "--config",
        "tiny",
        "--steps",
        str(steps),
        "--out",
        str(out),
        *(["--resume"] if resume else []),
        "--set",
        "train.precision=fp32",
        "train.progress=false",
        "train.batch_size=8",
        "train.ckpt_every=2",
        "train.log_every=1",
        "optim.warmup_steps=2",
        f"parallel.strategy={strategy}",
    ]


def train(out, nproc=1, strategy="none", steps=STEPS, resume=False):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        _cmd(out, nproc, strategy, steps, resume),
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ws1")
    return out, train(out)


def assert_same_run(out, metrics, ref_out, ref_metrics):
    assert [r["step"] for r in metrics] == list(range(1, STEPS + 1))  # rank 0 logs, once
    for a, b in zip(metrics, ref_metrics):
        for key in ("loss", "loss_text", "loss_diff", "grad_norm"):
            assert a[key] == pytest.approx(b[key], rel=RTOL), (a["step"], key, a[key], b[key])
    assert ref_metrics[-1]["loss"] < ref_metrics[0]["loss"]  # it trained
    a = load_file(str(out / "final/model.safetensors"))
    b = load_file(str(ref_out / "final/model.safetensors"))
    assert a.keys() == b.keys()  # full tensors under the unwrapped model's names
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=WEIGHT_ATOL, msg=k)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_ranks_match_one_process(tmp_path, reference, strategy):
    metrics = train(tmp_path, nproc=2, strategy=strategy)
    assert_same_run(tmp_path, metrics, *reference)


def test_fsdp_checkpoint_at_two_ranks_resumes_at_one(tmp_path, reference):
    train(tmp_path, nproc=2, strategy="fsdp", steps=2)  # checkpoint step 2, written by rank 0
    state = tmp_path / "checkpoints/step_0000002/trainer_state"
    assert len(torch.load(state / "rng.pt", weights_only=True)["ranks"]) == 2
    metrics = train(tmp_path, steps=STEPS, resume=True)  # one process, strategy none
    assert_same_run(tmp_path, metrics, *reference)
