"""``precision: auto``: train in bf16 only where bf16 is really faster on this device.

bf16 autocast is the fast path on a GPU with bf16 and on a CPU with AVX-512 bf16 or AMX (about 2x
fp32 matmul), and a trap elsewhere: on an AVX2-only CPU, bf16 matmul runs at 1-2 GFLOP/s against
~160 for fp32 (docs/performance.md), so a bf16 run trains about 100x slower. No flag of torch
says which case a CPU is in (``get_cpu_capability()`` reports "AVX512" for CPUs with and without
the bf16 instructions), so on a CPU the choice is measured: a fp32 and a bf16 matmul of a
training-like size, timed interleaved on one thread, best of 5 rounds, about 0.15 s, once per
machine. The figures are cached in ``$MMAR_CACHE_DIR/compute_dtype.json`` (default
``~/.cache/mmar``), keyed by the CPU's model name, its capability and torch's version.

    choice = resolve_precision("auto", torch.device("cpu"))
    choice.precision       # "bf16" or "fp32"
    choice.reason          # "auto: bf16 on this CPU: bf16 matmul 130.5 GFLOP/s vs fp32 59.0 ..."

An explicit "bf16" is kept (it is the user's call) but warned about where it is measured over
:data:`SLOW_BF16_RATIO` times slower than fp32.
"""

from __future__ import annotations

import json
import math
import os
import platform
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

Precision = Literal["bf16", "fp32"]

# bf16 is chosen on a CPU only when it is this much faster than fp32: a tie is not worth bf16's
# rounding (fp32 master weights stay, but activations and gradients lose 16 bits)
MIN_SPEEDUP = 1.1
# an explicit bf16 slower than fp32 by more than this gets a warning with the figures
SLOW_BF16_RATIO = 3.0
# (M, K) @ (K, N) of a training-like size: the quickstart's d_model is 256, its rows a few
# hundred; big enough that per-call overhead does not decide, small enough to stay sub-second
# where bf16 runs at 1 GFLOP/s (2 * 256^3 = 34 MFLOP, ~30 ms)
MATMUL_SIZE = 256
ROUNDS = 5
MIN_TIME_S = 0.01  # per dtype and round: 5 rounds + a warm-up stay under ~0.3 s even at 1 GFLOP/s


@dataclass(frozen=True)
class MatmulSpeed:
    """Measured matmul throughput on one device, in GFLOP/s."""

    fp32_gflops: float
    bf16_gflops: float

    @property
    def bf16_speedup(self) -> float:
        return self.bf16_gflops / self.fp32_gflops


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision a run uses, and why (for the log)."""

    precision: Precision
    reason: str
    speed: MatmulSpeed | None = None


def cache_path() -> Path:
    """Where the per-machine measurements are kept: $MMAR_CACHE_DIR, else
    $XDG_CACHE_HOME/mmar, else ~/.cache/mmar; the file is compute_dtype.json."""
    root = os.environ.get("MMAR_CACHE_DIR")
    if root is None:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = str(Path(xdg) / "mmar")
    return Path(root) / "compute_dtype.json"


def _cpu_model_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_key() -> str:
    """What the measurement depends on: the CPU, its kernels and torch's version (and oneDNN's
    ISA cap, ONEDNN_MAX_CPU_ISA, which with ATEN_CPU_CAPABILITY=avx2 emulates an AVX2 CPU)."""
    capability = torch.backends.cpu.get_cpu_capability()
    isa_cap = os.environ.get("ONEDNN_MAX_CPU_ISA")
    cap = f" | oneDNN ISA {isa_cap}" if isa_cap else ""
    return f"{_cpu_model_name()} | {capability}{cap} | torch {torch.__version__}"


def measure_cpu_matmul(
    size: int = MATMUL_SIZE, rounds: int = ROUNDS, min_time_s: float = MIN_TIME_S
) -> MatmulSpeed:
    """Time a (size x size) @ (size x size) matmul in fp32 and in bf16 on the CPU.

    Each round times each dtype, interleaved (so drift hits both alike), over as many calls as
    take ``min_time_s``; the best round counts (the fastest per-call time: other processes and
    first-call set-up only ever slow a call down, so the minimum is the machine's speed). One
    untimed round warms up both. Inputs are fixed (torch.ones): no random numbers are drawn.

    It runs on one thread (restored afterwards): what decides is the kernels' bf16/fp32 ratio,
    which does not depend on the thread count, while a multi-threaded matmul on a busy machine
    measures the other processes (2 threads on 2 busy cores ran 60x slower in both dtypes)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _time_matmuls(size, rounds, min_time_s)
    finally:
        torch.set_num_threads(threads)


def _time_matmuls(size: int, rounds: int, min_time_s: float) -> MatmulSpeed:
    flop = 2.0 * size**3
    a32 = torch.ones(size, size)
    a16 = a32.to(torch.bfloat16)
    best = {torch.float32: math.inf, torch.bfloat16: math.inf}
    for r in range(rounds + 1):
        for a in (a32, a16):
            calls, t0 = 0, time.perf_counter()
            while True:
                torch.mm(a, a)
                calls += 1
                elapsed = time.perf_counter() - t0
                if elapsed >= min_time_s:
                    break
            if r > 0:  # round 0 is the warm-up
                best[a.dtype] = min(best[a.dtype], elapsed / calls)
    return MatmulSpeed(
        fp32_gflops=flop / best[torch.float32] / 1e9, bf16_gflops=flop / best[torch.bfloat16] / 1e9
    )


def _read_cache(path: Path) -> dict[str, dict[str, float]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # none yet, or damaged: measure again (and rewrite it)
    return data if isinstance(data, dict) else {}


def cpu_matmul_speed(use_cache: bool = True) -> tuple[MatmulSpeed, bool]:
    """This CPU's matmul speed, from the cache or measured now (and cached); also whether it
    came from the cache. A cache that cannot be written is not an error: the run goes on."""
    path, key = cache_path(), machine_key()
    cache = _read_cache(path) if use_cache else {}
    hit = cache.get(key)
    if isinstance(hit, dict) and {"fp32_gflops", "bf16_gflops"} <= hit.keys():
        return MatmulSpeed(float(hit["fp32_gflops"]), float(hit["bf16_gflops"])), True
    speed = measure_cpu_matmul()
    cache[key] = {"fp32_gflops": speed.fp32_gflops, "bf16_gflops": speed.bf16_gflops}
    try:  # atomic: two ranks of one machine may write at once
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as f:
            json.dump(cache, f, indent=1)
        os.replace(f.name, path)
    except OSError:
        pass
    return speed, False


def _figures(speed: MatmulSpeed, cached: bool) -> str:
    source = "cached in " + str(cache_path()) if cached else "measured now"
    return (
        f"bf16 matmul {speed.bf16_gflops:.1f} GFLOP/s vs fp32 {speed.fp32_gflops:.1f} GFLOP/s "
        f"({source}; CPU capability {torch.backends.cpu.get_cpu_capability()})"
    )


def resolve_precision(precision: str, device: torch.device) -> PrecisionChoice:
    """The precision to train in on ``device`` for a config's ``precision`` ("auto" | "bf16" |
    "fp32").

    auto: bf16 on a CUDA device that supports it; on a CPU, bf16 when it measures at least
    :data:`MIN_SPEEDUP` x fp32's matmul speed; fp32 everywhere else (MPS and other devices:
    their bf16 autocast support varies, so they are not guessed at).
    bf16 / fp32: kept as asked; bf16 on a CPU measured over :data:`SLOW_BF16_RATIO` x slower
    than fp32 warns with the figures.
    """
    if precision == "fp32":
        return PrecisionChoice("fp32", "train.precision: fp32 (as configured)")
    if device.type == "cuda":
        if precision == "bf16":
            return PrecisionChoice("bf16", "train.precision: bf16 (as configured)")
        if torch.cuda.is_bf16_supported():
            return PrecisionChoice("bf16", f"auto: {torch.cuda.get_device_name(device)} has bf16")
        return PrecisionChoice("fp32", f"auto: {torch.cuda.get_device_name(device)} has no bf16")
    if device.type != "cpu":
        if precision == "bf16":
            return PrecisionChoice("bf16", "train.precision: bf16 (as configured)")
        return PrecisionChoice("fp32", f"auto: fp32 on {device.type} (bf16 is not measured there)")
    speed, cached = cpu_matmul_speed()
    figures = _figures(speed, cached)
    if precision == "bf16":
        if speed.bf16_speedup < 1 / SLOW_BF16_RATIO:
            warnings.warn(
                f"train.precision: bf16 on a CPU where bf16 is {1 / speed.bf16_speedup:.0f}x "
                f"slower than fp32: {figures}. Use train.precision: auto (or fp32), e.g. "
                "--set train.precision=auto",
                stacklevel=2,
            )
        return PrecisionChoice("bf16", f"train.precision: bf16 (as configured); {figures}", speed)
    chosen: Precision = "bf16" if speed.bf16_speedup >= MIN_SPEEDUP else "fp32"
    return PrecisionChoice(chosen, f"auto: {chosen} on this CPU: {figures}", speed)
