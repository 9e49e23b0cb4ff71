"""Atomic, resumable checkpoint directories ``OUT/checkpoints/step_XXXXXXX``.

Layout of one checkpoint::

    config.json, model.safetensors (raw + "ema." weights), tokenizer/,  <- MMAR.save_pretrained
    backbone/, README.md (its model card: "Not evaluated")
    trainer_state/
      state.json          step, data position, counters, EMA bookkeeping (update count, decay),
                          run config
      optimizer.pt        AdamW state keyed by parameter name: full tensors, any world size
      scheduler.pt        torch.save(scheduler.state_dict())
      rng.pt              {"ranks": [per rank: torch's global (+ CUDA) RNG states]} (the
                          training draws come from per-sample seeds: nothing else to keep)

The EMA weights are stored once, as the "ema." tensors of model.safetensors (what
``MMAR.from_pretrained`` serves); ``--resume`` restores the EMA shadows from them
(:func:`load_ema_shadow`). Checkpoints written before this layout also hold
``trainer_state/ema.safetensors``, a copy that is no longer read.

A checkpoint is written under a temporary name, every file and directory fsync'ed, then renamed
with ``os.replace``; an old one is renamed to a temporary name before it is deleted. A directory
named ``step_*`` is therefore always complete, and a run killed while writing or pruning (tested
with kill -9 inside the writer, see tests/test_bad_input_training.py) leaves only ``.tmp-*``
directories, which resuming ignores and deletes. A complete
directory can still be damaged later (a copy or sync cut short, a disk error, a file removed by
hand): before resuming, :func:`latest_readable_checkpoint` checks every file of the newest one
cheaply and falls back to the one before it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from mmar.model.files import (
    BACKBONE_DIR,
    CONFIG_FILE,
    EMA_PREFIX,
    IMAGE_TOKENIZER_FILE,
    TOKENIZER_DIR,
    WEIGHTS_FILE,
)
from mmar.training.ema import EMA

_STEP_DIR = re.compile(r"^step_(\d{7,})$")
TMP_PREFIX = ".tmp-"
STATE_DIR = "trainer_state"
# trainer_state/ files written with torch.save (zip archives)
TORCH_FILES = ("optimizer.pt", "scheduler.pt", "rng.pt")
STATE_FIELDS = ("step", "data", "skipped", "nan_skipped", "samples", "run_config", "ema")


class CheckpointError(FileNotFoundError):
    """A checkpoint file is missing or unreadable; the message names the file and the error.

    A FileNotFoundError, so that callers treating "no checkpoint to resume" (``mmar train``)
    report it the same way.
    """


def checkpoint_path(out_dir: str | Path, step: int) -> Path:
    return Path(out_dir) / "checkpoints" / f"step_{step:07d}"


def checkpoint_step(path: str | Path) -> int:
    """The step of a ``step_XXXXXXX`` checkpoint directory, from its name."""
    m = _STEP_DIR.match(Path(path).name)
    if m is None:
        raise ValueError(f"{path} is not a checkpoint directory (step_XXXXXXX)")
    return int(m.group(1))


def read_state_info(path: str | Path) -> dict[str, Any]:
    """``trainer_state/state.json`` of a checkpoint (step, data position, counters, run config)."""
    file = Path(path) / STATE_DIR / "state.json"
    with _reading(file), open(file) as f:
        return json.load(f)


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


def _step_dirs(out_dir: str | Path) -> list[tuple[int, Path]]:
    """Every ``step_*`` directory ``(step, path)`` under ``out_dir/checkpoints``, oldest first."""
    root = Path(out_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    return sorted(found)


def list_checkpoints(out_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints ``(step, path)`` under ``out_dir/checkpoints``, oldest first."""
    return [(s, p) for s, p in _step_dirs(out_dir) if (p / STATE_DIR / "state.json").is_file()]


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    ckpts = list_checkpoints(out_dir)
    return ckpts[-1][1] if ckpts else None


def _check_file(file: Path, check: Callable[[Path], object]) -> None:
    """Run ``check(file)``; any failure becomes a CheckpointError naming the file."""
    if not file.is_file():
        raise CheckpointError(f"{file}: missing")
    try:
        check(file)
    except Exception as e:
        raise CheckpointError(f"{file}: {type(e).__name__}: {e}") from e


def _check_weights(file: Path) -> None:
    # parses the header and checks that the tensors' data exactly covers the rest of the file:
    # a truncated or overwritten file fails here, without reading the (GB of) tensor data
    with safe_open(str(file), "pt"):
        pass


def _check_json(file: Path) -> None:
    with open(file) as f:
        json.load(f)


def _check_state_json(file: Path) -> None:
    with open(file) as f:
        info = json.load(f)
    missing = [k for k in STATE_FIELDS if not isinstance(info, dict) or k not in info]
    if missing:
        raise ValueError(f"missing fields {missing}")


def _check_torch_file(file: Path) -> None:
    # torch.save's zip archive: its central directory is at the end, so a truncated or
    # overwritten file fails to open (reads the directory only, not the tensors)
    with zipfile.ZipFile(file) as z:
        if not any(n.endswith("/data.pkl") or n == "data.pkl" for n in z.namelist()):
            raise ValueError("not a torch.save archive (no data.pkl)")


def check_checkpoint(path: str | Path) -> None:
    """Raise :class:`CheckpointError` naming the first missing or unreadable file of ``path``.

    Cheap: safetensors and zip headers and state.json are read, not the tensors. It catches
    missing, truncated and overwritten files; a flipped bit inside tensor data has no checksum to
    catch it. Run before loading anything, so a bad checkpoint is skipped before any state is
    half-loaded from it.
    """
    path = Path(path)
    _check_file(path / WEIGHTS_FILE, _check_weights)
    _check_file(path / CONFIG_FILE, _check_json)
    _check_file(path / BACKBONE_DIR / "config.json", _check_json)
    _check_file(path / TOKENIZER_DIR / "tokenizer.json", _check_json)
    if (path / IMAGE_TOKENIZER_FILE).exists():  # only image tokenizers with weights write it
        _check_file(path / IMAGE_TOKENIZER_FILE, _check_weights)
    _check_file(path / STATE_DIR / "state.json", _check_state_json)
    for name in TORCH_FILES:
        _check_file(path / STATE_DIR / name, _check_torch_file)


def latest_readable_checkpoint(out_dir: str | Path) -> tuple[Path | None, list[str]]:
    """The newest checkpoint that passes :func:`check_checkpoint`, and why each newer one failed.

    Every ``step_*`` directory counts, a complete one whose files were damaged later as well
    as one without ``trainer_state/state.json``. Returns ``(None, problems)`` when none is
    readable (``problems`` is empty when there is no checkpoint at all).
    """
    problems = []
    for _, path in reversed(_step_dirs(out_dir)):
        try:
            check_checkpoint(path)
        except CheckpointError as e:
            problems.append(str(e))
            continue
        return path, problems
    return None, problems


def remove_stale_tmp(out_dir: str | Path) -> list[Path]:
    """Delete the ``.tmp-*`` leftovers of a run killed while writing or pruning a checkpoint
    (under ``out_dir/checkpoints``) or ``final/`` (under ``out_dir``); returns what was removed."""
    stale = [
        p
        for root in (Path(out_dir) / "checkpoints", Path(out_dir))
        if root.is_dir()
        for p in sorted(root.glob(f"{TMP_PREFIX}*"))
        if p.is_dir()
    ]
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return stale


def prune_checkpoints(out_dir: str | Path, keep_last: int) -> None:
    """Keep only the ``keep_last`` newest complete checkpoints.

    Each older one is renamed to a ``.tmp-`` name before its files are deleted: a run killed
    while deleting leaves no half-deleted ``step_*`` directory behind, only a ``.tmp-*`` one
    that resuming removes.
    """
    for _, path in list_checkpoints(out_dir)[:-keep_last]:
        doomed = path.parent / f"{TMP_PREFIX}pruned-{path.name}-{os.getpid()}"
        os.replace(path, doomed)
        shutil.rmtree(doomed)


def rng_state() -> dict[str, Any]:
    """The RNGs with a running state: torch's global (dropout, e.g. LoRA's) and CUDA's. The
    training draws (kinds, masks, noise) come from per-sample seeds and keep no state."""
    state: dict[str, Any] = {"torch_global": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state` (a checkpoint's run "generator" state, written before the
    draws were per sample, is no longer used)."""
    torch.set_rng_state(state["torch_global"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_trainer_state(
    state_dir: Path,
    info: dict[str, Any],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    ema: EMA,
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
    torch.save(
        optimizer.state_dict() if optimizer_state is None else optimizer_state,
        state_dir / "optimizer.pt",
    )
    torch.save(scheduler.state_dict(), state_dir / "scheduler.pt")
    torch.save({"ranks": rng_states or [rng_state()]}, state_dir / "rng.pt")
    ema_state = {k: v for k, v in ema.state_dict().items() if k != "shadow"}
    with open(state_dir / "state.json", "w") as f:
        json.dump({**info, "ema": ema_state}, f, indent=1)


@contextlib.contextmanager
def _reading(file: Path) -> Iterator[None]:
    """Name the file in any error reading it (check_checkpoint ran before: this is a backstop)."""
    try:
        yield
    except Exception as e:
        raise CheckpointError(f"{file}: {type(e).__name__}: {e}") from e


def load_ema_shadow(
    weights_file: str | Path,
    names: Iterable[str],
    model: torch.nn.Module | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, torch.Tensor]:
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
    with _reading(weights_file), safe_open(str(weights_file), "pt", device=str(device)) as f:
        stored = set(f.keys())
        for name in names:
            key = next(
                (EMA_PREFIX + a for a in aliases.get(name, [name]) if EMA_PREFIX + a in stored),
                None,
            )
            if key is None:
                missing.append(name)
            else:
                out[name] = f.get_tensor(key)
    if missing:
        raise ValueError(
            f"{weights_file} holds no {EMA_PREFIX!r} tensor for the trainable parameters "
            f"{missing[:5]} ({len(missing)} in all); was it saved with another model or "
            "finetune mode?"
        )
    return out


def load_trainer_state(
    state_dir: Path,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    ema: EMA,
    *,
    model: torch.nn.Module | None = None,
    rank: int = 0,
    weights_file: Path | None = None,
) -> dict:
    """Restore what :func:`save_trainer_state` wrote, and the EMA shadows; returns its ``info``.

    model: given when the optimizer state is keyed by parameter name (the trainer's, loadable at
    any world size and into sharded parameters); also maps tied weights to their saved EMA name.
    rank: whose RNG states to restore; a rank the saving run did not have keeps its RNGs as
    seeded. weights_file: where the "ema." tensors are (default: the checkpoint's
    model.safetensors, next to ``state_dir``); full tensors, sharded like ``ema.shadow``'s.
    """
    from mmar.training.parallel import load_full_optimizer_state, shard_like

    state_dir = Path(state_dir)
    weights_file = state_dir.parent / WEIGHTS_FILE if weights_file is None else weights_file
    with _reading(state_dir / "state.json"), open(state_dir / "state.json") as f:
        info = json.load(f)
    # weights_only: these files hold only tensors, numbers and strings
    with _reading(state_dir / "optimizer.pt"):
        optim_state = torch.load(state_dir / "optimizer.pt", weights_only=True)
    with _reading(state_dir / "scheduler.pt"):
        sched_state = torch.load(state_dir / "scheduler.pt", weights_only=True)
    with _reading(state_dir / "rng.pt"):
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
        set_rng_state(rngs[rank])
    ema_state = info.pop("ema")
    ema.load_state_dict({**ema_state, "shadow": shard_like(shadow, ema.shadow)})
    return info
