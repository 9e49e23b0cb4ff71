"""Small torch helpers shared by every layer."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn


@contextlib.contextmanager
def eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Put ``modules`` in eval mode for the block and restore each one's own mode afterwards
    (also when the block raises): sampling and evaluation must not leave a training model in
    eval mode, nor switch its dropout on."""
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(modules, modes):
            m.train(mode)


def read_safetensors(path: str | Path, device: str = "cpu") -> dict[str, torch.Tensor]:
    """``safetensors.torch.load_file`` with an error that names the file: a truncated or corrupt
    file otherwise fails with a bare "SafetensorError: invalid header"."""
    try:
        return load_file(str(path), device=device)
    except Exception as e:  # SafetensorError, OSError, ... whatever the damage
        raise OSError(
            f"cannot read {path}: {e} (a truncated or corrupt file? copy it again or "
            "re-save the model)"
        ) from e


def resolve_device(name: str | None) -> torch.device:
    """A torch device from a name; None or "auto" = CUDA when available, else the CPU."""
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"unknown torch device {name!r} ({e}); e.g. cpu, cuda, cuda:1") from None
