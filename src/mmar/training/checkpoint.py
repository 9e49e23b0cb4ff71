"""Atomic, resumable checkpoint directories ``OUT/checkpoints/step_XXXXXXX``.

Layout of one checkpoint::

    config.json, model.safetensors (raw + "ema." weights), tokenizer/   <- MMAR.save_pretrained
    trainer_state/
      state.json          step, data position, counters, EMA update count, run config
      optimizer.pt        torch.save(optimizer.state_dict())   (tensors + numbers only)
      scheduler.pt        torch.save(scheduler.state_dict())
      rng.pt              torch CPU generator (data/masking) + torch global (+ CUDA) RNG states
      ema.safetensors     EMA shadows (weights: never pickled)

A checkpoint is written under a temporary name, every file and directory fsync'ed, then renamed
with ``os.replace``: a directory named ``step_*`` is always complete, and a run killed while
writing leaves only a ``.tmp-*`` directory, which resuming ignores and deletes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

_STEP_DIR = re.compile(r"^step_(\d{7,})$")
TMP_PREFIX = ".tmp-"
STATE_DIR = "trainer_state"


def checkpoint_path(out_dir: str | Path, step: int) -> Path:
    return Path(out_dir) / "checkpoints" / f"step_{step:07d}"


def _fsync_tree(root: Path) -> None:
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            with open(os.path.join(dirpath, name), "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_directory(final: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success fsync it and rename it to ``final``.

    An existing ``final`` is replaced (moved aside first: ``os.replace`` cannot overwrite a
    non-empty directory). On an exception the temporary directory is removed.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f"{TMP_PREFIX}{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        _fsync_tree(tmp)
        old = None
        if final.exists():
            old = final.parent / f"{TMP_PREFIX}old-{final.name}-{os.getpid()}"
            os.replace(final, old)
        os.replace(tmp, final)
        _fsync_dir(final.parent)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def list_checkpoints(out_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints ``(step, path)`` under ``out_dir/checkpoints``, oldest first."""
    root = Path(out_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and (p / STATE_DIR / "state.json").is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    ckpts = list_checkpoints(out_dir)
    return ckpts[-1][1] if ckpts else None


def remove_stale_tmp(out_dir: str | Path) -> list[Path]:
    """Delete ``.tmp-*`` leftovers of a run killed while writing; returns what was removed."""
    root = Path(out_dir) / "checkpoints"
    stale = sorted(root.glob(f"{TMP_PREFIX}*")) if root.is_dir() else []
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return stale


def prune_checkpoints(out_dir: str | Path, keep_last: int) -> None:
    """Keep only the ``keep_last`` newest complete checkpoints."""
    for _, path in list_checkpoints(out_dir)[:-keep_last]:
        shutil.rmtree(path)


def rng_state(generator: torch.Generator) -> dict:
    """Every RNG the run draws from: its generator, torch's global (dropout, init) and CUDA's."""
    state = {"generator": generator.get_state(), "torch_global": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, generator: torch.Generator) -> None:
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_global"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_trainer_state(
    state_dir: Path,
    info: dict,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    ema,
    generator: torch.Generator,
) -> None:
    """Write ``trainer_state/`` (see the module docstring); ``info`` must be JSON-serialisable."""
    state_dir.mkdir(parents=True, exist_ok=True)
    torch.save(optimizer.state_dict(), state_dir / "optimizer.pt")
    torch.save(scheduler.state_dict(), state_dir / "scheduler.pt")
    torch.save(rng_state(generator), state_dir / "rng.pt")
    ema_state = ema.state_dict()
    shadow = {k: v.contiguous() for k, v in ema_state.pop("shadow").items()}
    save_file(shadow, str(state_dir / "ema.safetensors"))
    with open(state_dir / "state.json", "w") as f:
        json.dump({**info, "ema": ema_state}, f, indent=1)


def load_trainer_state(
    state_dir: Path,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    ema,
    generator: torch.Generator,
) -> dict:
    """Restore what :func:`save_trainer_state` wrote; returns its ``info`` dict."""
    with open(state_dir / "state.json") as f:
        info = json.load(f)
    # weights_only: these files hold only tensors, numbers and strings
    optimizer.load_state_dict(torch.load(state_dir / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(state_dir / "scheduler.pt", weights_only=True))
    set_rng_state(torch.load(state_dir / "rng.pt", weights_only=True), generator)
    device = next(iter(ema.shadow.values())).device if ema.shadow else "cpu"
    ema_state = info.pop("ema")
    shadow = load_file(str(state_dir / "ema.safetensors"), device=str(device))
    ema.load_state_dict({**ema_state, "shadow": shadow})
    return info
