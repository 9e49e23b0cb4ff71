"""Small torch helpers shared by every layer."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from mmar.config import ConfigError


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


def _umask() -> int:
    """The process's umask (Linux: read from /proc, so that no other thread sees it changed)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_safetensors(
    tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None
) -> None:
    """``safetensors.torch.save_file``, with the file's mode following the umask like every other
    file mmar writes: safetensors (0.8) writes a temporary file, created ``-rw-------``, and
    renames it over ``path``, so the weights alone were readable by their owner only."""
    save_file(tensors, str(path), metadata=metadata)
    os.chmod(path, 0o666 & ~_umask())


def resolve_device(name: str | None, what: str = "--device") -> torch.device:
    """A torch device from a name; None or "auto" = CUDA when available, else the CPU.

    A device this machine does not have is refused before any work, as a ConfigError naming
    ``what`` (the flag or config field that gave the name) and what to use instead: torch would
    otherwise fail at the first tensor moved there, with "Torch not compiled with CUDA enabled".
    """
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"{what}: unknown torch device {name!r}; e.g. cpu, cuda, cuda:1 or auto"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            if torch.version.cuda is None and torch.version.hip is None:
                raise ConfigError(
                    f"{what} {name}: CUDA is not available in this torch build (torch "
                    f"{torch.__version__}, CPU only); use cpu (or auto), or install a CUDA build "
                    "of torch (https://pytorch.org/get-started)"
                )
            raise ConfigError(
                f"{what} {name}: no CUDA GPU is visible (torch {torch.__version__} has CUDA, but "
                "torch.cuda.is_available() is False: check the driver and CUDA_VISIBLE_DEVICES); "
                "use cpu (or auto)"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(
                f"{what} {name}: this machine has {count} CUDA GPU(s), cuda:0 to "
                f"cuda:{count - 1}; e.g. cuda:0"
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(
            f"{what} {name}: MPS (Apple GPU) is not available here; use cpu (or auto)"
        )
    return device
