"""Atomic, resumable checkpoint directories ``OUT/checkpoints/step_XXXXXXX``.

Layout of one checkpoint::

    config.json, model.safetensors (raw + "ema." weights), tokenizer/   <- MMAR.save_pretrained
    trainer_state/
      state.json          step, data position, counters, EMA bookkeeping (update count, decay),
                          run config
      optimizer.pt        AdamW state keyed by parameter name: full tensors, any world size
      scheduler.pt        torch.save(scheduler.state_dict())
      rng.pt              {"ranks": [per rank: generator (kinds/masks/noise), torch global
                          (+ CUDA) RNG states]}

The EMA weights are stored once, as the "ema." tensors of model.safetensors (what
``MMAR.from_pretrained`` serves); ``--resume`` restores the EMA shadows from them
(:func:`load_ema_shadow`). Checkpoints written before this layout also hold
``trainer_state/ema.safetensors``, a copy that is no longer read.

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
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from safetensors import safe_open

_STEP_DIR = re.compile(r"^step_(\d{7,})$")
TMP_PREFIX = ".tmp-"
STATE_DIR = "trainer_state"
WEIGHTS_FILE = "model.safetensors"  # MMAR.save_pretrained's (mmar.model.mmar.WEIGHTS_FILE)
EMA_PREFIX = "ema."  # save_pretrained's prefix of the EMA tensors in WEIGHTS_FILE


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
    *,
    optimizer_state: dict | None = None,
    rng_states: list[dict] | None = None,
) -> None:
    """Write ``trainer_state/`` (see the module docstring); ``info`` must be JSON-serialisable.

    optimizer_state / rng_states: what a (distributed) trainer gathered for rank 0 to write --
    the optimizer keyed by parameter name (``parallel.full_optimizer_state``), every rank's RNG
    states; by default this process's own. The EMA shadows are not written here: the checkpoint's
    model.safetensors holds them ("ema." tensors, ``MMAR.save_pretrained(ema_state_dict=...)``);
    state.json keeps the EMA's update count and decay.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    torch.save(optimizer.state_dict() if optimizer_state is None else optimizer_state,
               state_dir / "optimizer.pt")
    torch.save(scheduler.state_dict(), state_dir / "scheduler.pt")
    torch.save({"ranks": rng_states or [rng_state(generator)]}, state_dir / "rng.pt")
    ema_state = {k: v for k, v in ema.state_dict().items() if k != "shadow"}
    with open(state_dir / "state.json", "w") as f:
        json.dump({**info, "ema": ema_state}, f, indent=1)


def load_ema_shadow(weights_file: str | Path, names: Iterable[str],
                    model: torch.nn.Module | None = None,
                    device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """The EMA shadows ``names`` (keyed as ``EMA.shadow``) from save_pretrained's "ema." tensors.

    The shadow is keyed by ``named_parameters()`` names, whereas save_pretrained stores a tied
    tensor (e.g. lm_head = embedding) once, under its first state-dict name; given ``model``,
    each shadow is looked up under every name its parameter has. Only these tensors are read.
    """
    weights_file = Path(weights_file)
    aliases: dict[str, list[str]] = {}
    if model is not None:
        by_param: dict[int, list[str]] = {}
        for name, p in model.named_parameters(remove_duplicate=False):
            by_param.setdefault(id(p), []).append(name)
        aliases = {name: group for group in by_param.values() for name in group}
    out, missing = {}, []
    with safe_open(str(weights_file), "pt", device=str(device)) as f:
        stored = set(f.keys())
        for name in names:
            key = next((EMA_PREFIX + a for a in aliases.get(name, [name])
                        if EMA_PREFIX + a in stored), None)
            if key is None:
                missing.append(name)
            else:
                out[name] = f.get_tensor(key)
    if missing:
        raise ValueError(
            f"{weights_file} holds no {EMA_PREFIX!r} tensor for the trainable parameters "
            f"{missing[:5]} ({len(missing)} in all); was it saved with another model or "
            "finetune mode?")
    return out


def load_trainer_state(
    state_dir: Path,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    ema,
    generator: torch.Generator,
    *,
    model: torch.nn.Module | None = None,
    rank: int = 0,
    weights_file: Path | None = None,
) -> dict:
    """Restore what :func:`save_trainer_state` wrote, and the EMA shadows; returns its ``info``.

    model: given when the optimizer state is keyed by parameter name (the trainer's, loadable at
    any world size and into sharded parameters); also maps tied weights to their saved EMA name.
    rank: whose RNG states to restore; a rank the saving run did not have keeps its generator as
    seeded. weights_file: where the "ema." tensors are (default: the checkpoint's
    model.safetensors, next to ``state_dir``); full tensors, sharded like ``ema.shadow``'s.
    """
    from mmar.training.parallel import load_full_optimizer_state, shard_like

    state_dir = Path(state_dir)
    weights_file = state_dir.parent / WEIGHTS_FILE if weights_file is None else weights_file
    with open(state_dir / "state.json") as f:
        info = json.load(f)
    # weights_only: these files hold only tensors, numbers and strings
    optim_state = torch.load(state_dir / "optimizer.pt", weights_only=True)
    sched_state = torch.load(state_dir / "scheduler.pt", weights_only=True)
    rngs = torch.load(state_dir / "rng.pt", weights_only=True)["ranks"]
    device = next(iter(ema.shadow.values())).device if ema.shadow else "cpu"
    shadow = load_ema_shadow(weights_file, ema.shadow, model=model, device=device)
    # every file is read: now change the live objects
    if model is None:
        optimizer.load_state_dict(optim_state)
    else:
        load_full_optimizer_state(model, optimizer, optim_state)
    scheduler.load_state_dict(sched_state)
    if rank < len(rngs):
        set_rng_state(rngs[rank], generator)
    ema_state = info.pop("ema")
    ema.load_state_dict({**ema_state, "shadow": shard_like(shadow, ema.shadow)})
    return info
