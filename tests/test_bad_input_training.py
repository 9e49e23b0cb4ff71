"""Bad input to training runs (issue 9): --resume says where it resumes and refuses too few
steps; a sample's training draws do not depend on its batch or rank (so N processes compute the
step of one); kill -9 during a checkpoint save never loses the newest complete checkpoint.

The fault tests fork the test process (torch already imported: no interpreter start-up) into a
tiny training run and SIGKILL it at a chosen point inside the checkpoint writer, or at a random
moment of a run that spends most of its time saving; then every ``step_*`` directory left must
be complete, and ``--resume`` continues from the newest one to the weights of an uninterrupted
run, bit for bit.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import random
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import safetensors.torch
import torch
from safetensors.torch import load_file

from helpers_model import one_thread, random_images, tiny_model, training_inputs  # noqa: F401
from mmar.cli import main
from mmar.config import ConfigError
from mmar.pipelines.mmar import MMAR
from mmar.tokenizers import KL16Tokenizer
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


# --- N processes compute the step of one: every draw of a sample is its own ---------------------
# (tests/test_distributed_train.py checks it end to end under torchrun with the default kind mix)
def _gens(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


TEXTS = ["digit seven", "a red circle", "digit one", "a small green triangle"]
KINDS = ["t2i", "img", "t2i", "i2t"]


def test_a_samples_masks_and_noise_do_not_depend_on_its_batch():
    net = tiny_model().model
    batch, _ = training_inputs(tiny_model().processor, TEXTS, KINDS, random_images(4))
    tail, _ = training_inputs(tiny_model().processor, TEXTS[2:], KINDS[2:], random_images(4)[2:])
    masked = net.draw_mask(batch, _gens(1, 2, 3, 4))  # (4, 16)
    assert masked[:3].any(1).all() and not masked[3].any()  # i2t: nothing to generate
    assert torch.equal(net.draw_mask(tail, _gens(3, 4)), masked[2:])
    t, noise = net.draw_diffusion_noise(masked, _gens(1, 2, 3, 4))
    t_tail, noise_tail = net.draw_diffusion_noise(masked[2:], _gens(3, 4))
    mul, m, m_tail = (
        net.config.diffusion.diffusion_batch_mul,
        int(masked.sum()),
        int(masked[2:].sum()),
    )
    assert t.shape == (mul * m,) and noise.shape == (mul * m, 4)
    # repetition r holds rows r*M .. (r+1)*M - 1, sample by sample: the tail's rows end each one
    assert torch.equal(t.view(mul, m)[:, m - m_tail :], t_tail.view(mul, m_tail))
    assert torch.equal(noise.view(mul, m, 4)[:, m - m_tail :], noise_tail.view(mul, m_tail, 4))


def test_two_halves_of_a_batch_give_the_losses_of_the_whole():
    """What DDP / FSDP compute: per-rank losses, weighted by the global token counts
    (parallel.global_mean_loss), equal one process's losses on the whole batch."""
    model = tiny_model()
    seeds, images = [11, 12, 13, 14], random_images(4)

    def losses(i: int, j: int) -> dict:
        inputs = training_inputs(model.processor, TEXTS[i:j], KINDS[i:j], images[i:j])
        with torch.no_grad():
            return model.model(*inputs, generator=_gens(*seeds[i:j]))

    whole, halves = losses(0, 4), [losses(0, 2), losses(2, 4)]
    for loss, weight in (("loss_text", "text_weight"), ("loss_diff", "n_masked")):
        total = sum(h[weight] for h in halves)
        assert total == pytest.approx(whole[weight])
        combined = sum(float(h[loss]) * h[weight] for h in halves) / total
        assert combined == pytest.approx(float(whole[loss]), rel=1e-6), loss


def test_a_vae_posterior_sample_per_image_does_not_depend_on_its_batch():
    processor = tiny_model().processor
    processor.image_tokenizer = KL16Tokenizer(image_size=32, _width=32, posterior="sample").eval()
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    batched = processor.encode_images(images, generator=_gens(5, 6, 7))
    alone = processor.encode_images(images[2:], generator=_gens(7))
    torch.testing.assert_close(batched[2:], alone, rtol=0, atol=1e-6)
    assert not torch.allclose(batched, processor.encode_images(images))  # the mode: no draw


# --- kill -9 inside a checkpoint save ---------------------------------------------------------
def _hold(ready: Path) -> None:
    """Tell the test the victim is where it should be killed, then wait for the kill."""
    ready.touch()
    time.sleep(3600)


def _write_in_chunks(data: bytes, file: str | Path, pause: float, ready: Path | None) -> None:
    """Write ``data`` in 4 chunks, ``pause`` s apart; ``ready``: hold after the first half."""
    with open(file, "wb") as f:
        for i in range(4):
            f.write(data[i * len(data) // 4 : (i + 1) * len(data) // 4])
            f.flush()
            if i == 1 and ready is not None:
                os.fsync(f.fileno())
                _hold(ready)
            time.sleep(pause)


def _slow_writers(pause: float, hold_in: str | None = None, ready: Path | None = None) -> None:
    """Make torch.save and the model's safetensors writer write in slow chunks; ``hold_in``: a
    path fragment of the one file to leave half-written (then hold)."""
    torch_save, mmar_model = torch.save, __import__("mmar.model.mmar").model.mmar

    def save(obj, f, *args, **kwargs):
        if not isinstance(f, str | Path):
            return torch_save(obj, f, *args, **kwargs)
        buf = io.BytesIO()
        torch_save(obj, buf, *args, **kwargs)
        hold = ready if hold_in is not None and hold_in in str(f) else None
        _write_in_chunks(buf.getvalue(), f, pause, hold)

    def save_file(tensors, filename, metadata=None):
        _write_in_chunks(safetensors.torch.save(tensors, metadata), filename, pause, None)

    torch.save = save
    mmar_model.save_file = save_file


def _hold_before(module, name: str, when: Callable[..., bool], ready: Path) -> None:
    """Replace ``module.name`` by a function that holds when ``when(*args)``, else runs it."""
    real = getattr(module, name)

    def wrapper(*args, **kwargs):
        if when(*args):
            _hold(ready)
        return real(*args, **kwargs)

    setattr(module, name, wrapper)


def _victim(out: str, point: str, ready: str, overrides: list[str], resume: bool) -> None:
    """The forked child: a tiny run that holds (or is slowed down) at ``point``."""
    r = Path(ready)
    if point == "mid_file":  # the step-6 checkpoint's optimizer.pt half written
        _slow_writers(0.0, hold_in=".tmp-step_0000006-", ready=r)
    elif point == "prune":  # deleting step 2 after step 6 is written: its weights already gone

        def half_deleted(path, *args):
            p = Path(path)
            if "step_0000002" in p.name and (p / ckpt.STATE_DIR).is_dir():
                (p / ckpt.WEIGHTS_FILE).unlink()
                return True
            return False

        _hold_before(shutil, "rmtree", half_deleted, r)
    elif point == "final_swap":  # final/ moved aside, the new one not yet renamed in

        def new_final_in(src, dst):
            return Path(dst).name == "final" and Path(dst).parent == Path(out)

        _hold_before(os, "replace", new_final_in, r)
    elif point == "random":  # every file written slowly: most of the run is spent saving
        _slow_writers(0.02)
    Trainer(tiny(*overrides), out, resume=resume).fit()


def _kill_victim(
    out: Path, point: str, overrides: list[str] = (), resume: bool = False, after: float = -1
) -> None:
    """Fork a victim and SIGKILL it once it holds (``after`` < 0) or ``after`` seconds after its
    first checkpoint appeared."""
    ready = out.parent / f"{out.name}.ready"
    proc = multiprocessing.get_context("fork").Process(
        target=_victim, args=(str(out), point, str(ready), list(overrides), resume), daemon=True
    )
    proc.start()
    deadline = time.time() + 120
    first = out / "checkpoints" / "step_0000001"
    while not (ready.exists() if after < 0 else first.is_dir()):
        assert proc.is_alive(), f"the victim ended (exit code {proc.exitcode}) before the kill"
        assert time.time() < deadline, f"the victim never reached {point}"
        time.sleep(0.01)
    time.sleep(max(after, 0.0))
    assert proc.is_alive(), f"the victim ended (exit code {proc.exitcode}) before the kill"
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    assert proc.exitcode == -signal.SIGKILL


def _step_dirs_are_complete(out: Path) -> list[int]:
    """Every step_* directory passes check_checkpoint; returns their steps."""
    dirs = sorted((out / "checkpoints").glob("step_*"))
    for d in dirs:
        ckpt.check_checkpoint(d)  # raises CheckpointError naming a missing or damaged file
    return [ckpt.checkpoint_step(d) for d in dirs]


def _same_weights(a: Path, b: Path) -> bool:
    x, y = load_file(str(a / ckpt.WEIGHTS_FILE)), load_file(str(b / ckpt.WEIGHTS_FILE))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of tiny() (8 steps): what every resumed run must end with."""
    out = tmp_path_factory.mktemp("reference")
    Trainer(tiny(), out).fit()
    return out


def test_kill9_mid_file_of_a_checkpoint_resumes_from_the_one_before(tmp_path, capsys, reference):
    out = tmp_path / "run"
    _kill_victim(out, "mid_file")
    assert _step_dirs_are_complete(out) == [2, 4]  # step 6 only as a .tmp- directory
    assert [p.name.split("-")[1] for p in (out / "checkpoints").glob(".tmp-*")] == ["step_0000006"]
    MMAR.from_pretrained(ckpt.checkpoint_path(out, 4))  # the newest complete checkpoint loads
    capsys.readouterr()
    assert main(["train", "--config", "tiny", "--out", str(out), "--resume", "--set", *SETS]) == 0
    assert "--resume: resuming from step 4 of 8" in capsys.readouterr().err
    assert not list(out.glob("**/.tmp-*"))
    assert _same_weights(out / "final", reference / "final")


def test_kill9_while_pruning_leaves_no_half_deleted_checkpoint(tmp_path, reference):
    out = tmp_path / "run"
    _kill_victim(out, "prune")
    assert _step_dirs_are_complete(out) == [4, 6]
    t = Trainer(tiny(), out, resume=True)
    assert t.step == 6 and not list(out.glob("**/.tmp-*"))
    t.fit()
    assert _same_weights(out / "final", reference / "final")


def test_kill9_while_replacing_final_resumes_and_leaves_no_stale_copy(tmp_path, reference):
    out = tmp_path / "run"
    shutil.copytree(reference, out)  # a finished run, resumed with 2 more steps
    _kill_victim(out, "final_swap", ["train.steps=10"], resume=True)
    assert not (out / "final").exists() and _step_dirs_are_complete(out) == [8, 10]
    t = Trainer(tiny("train.steps=10"), out, resume=True)
    assert t.step == 10 and not list(out.glob("**/.tmp-*"))  # both copies of final/ removed
    t.fit()  # nothing left to train: writes final/ from the step-10 state
    assert _same_weights(out / "final", ckpt.checkpoint_path(out, 10))


def test_kill9_at_a_random_moment_of_a_saving_run(tmp_path, reference):
    out = tmp_path / "run"
    # a save takes ~0.35 s of the ~3 s the run takes from its first one: most kills land inside one
    after = random.Random(9).uniform(0.0, 0.8)
    _kill_victim(out, "random", ["train.ckpt_every=1"], after=after)
    steps = _step_dirs_are_complete(out)
    assert steps and steps[-1] < 8, (after, steps)
    t = Trainer(tiny("train.ckpt_every=1"), out, resume=True)
    assert t.step == steps[-1] and not list(out.glob("**/.tmp-*"))
    t.fit()
    assert _same_weights(out / "final", reference / "final")
