"""The paper's two-stage recipe sized to a budget: calibrate the steps that fit a time budget on
this machine, then train stage 1 (mask ratio in [0.7, 1]) and stage 2 (in [0, 1]) from stage
1's EMA weights. Used by `mmar quickstart`, `mmar ablate` and benchmarks/vs_mar.py.
"""

from __future__ import annotations

import itertools
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from mmar.training.config import RunConfig

STAGE_SHARE = 0.6  # share of the training steps given to stage 1 (the rest: stage 2)


def stage_steps(total: int) -> tuple[int, int]:
    """Split ``total`` optimisation steps between stage 1 (STAGE_SHARE) and stage 2."""
    steps1 = max(1, round(total * STAGE_SHARE))
    return steps1, max(1, total - steps1)


def sized(cfg: RunConfig, steps: int) -> RunConfig:
    """``cfg`` trained for ``steps``, its warm-up at most a tenth of them."""
    warm = min(cfg.optim.warmup_steps, max(0, steps // 10))
    return cfg.replace(
        train=cfg.train.replace(steps=steps), optim=cfg.optim.replace(warmup_steps=warm)
    )


def calibrate_steps(
    stage1: RunConfig, budget_s: float, probe_steps: int = 16, warmup: int = 4
) -> tuple[int, float]:
    """Steps that fit ``budget_s`` here: time ``probe_steps`` real steps of the stage-1 run.

    The time per step is the median interval between step ends after the first ``warmup``
    steps: model building, the first batches, the final save and the loss plot (seconds, on a
    cold disk) stay out of it, and so does one slow step. Those costs are real but paid once per
    stage; :func:`train_two_stages` corrects for what the probe misses.
    """
    from mmar.training.trainer import Trainer

    if probe_steps < warmup + 2:
        raise ValueError(f"probe_steps must be >= warmup + 2 = {warmup + 2}, got {probe_steps}")
    probe = stage1.replace(
        train=stage1.train.replace(
            steps=probe_steps, ckpt_every=0, progress=False, log_every=probe_steps
        ),
        optim=stage1.optim.replace(warmup_steps=0),
    )
    ends: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        Trainer(
            probe, Path(tmp) / "probe", callbacks=[lambda t, r: ends.append(time.perf_counter())]
        ).fit()
    steady = ends[warmup - 1 :]
    sec_per_step = statistics.median(b - a for a, b in itertools.pairwise(steady))
    return max(2, int(budget_s / sec_per_step)), sec_per_step


def train_two_stages(
    stage1: RunConfig,
    stage2_overrides: list[str],
    out: Path,
    steps: int,
    deadline: float | None = None,
    stage2_preset: str = "quickstart_stage2",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Stage 1 (a preset as given) for STAGE_SHARE of ``steps``, then stage 2 (``stage2_preset``
    with ``stage2_overrides``) from stage 1's EMA weights, in ``out/stage1`` and ``out/stage2``;
    returns both trainers' summaries.

    With a ``deadline`` (a ``time.perf_counter()`` value by which training should end), stage 2
    gets the steps that fit the time left at stage 1's measured speed (build and save
    included) instead of the planned ones, so the budget holds whatever the calibration said.
    """
    from mmar.training.config import load_preset
    from mmar.training.trainer import Trainer

    steps1, steps2 = stage_steps(steps)
    s1 = Trainer(sized(stage1, steps1), out / "stage1").fit()
    if deadline is not None:
        sec_per_step = s1["elapsed_s"] / max(s1["step"], 1)
        left = deadline - time.perf_counter()
        fitted = max(1, int(left / sec_per_step))
        print(
            f"stage 2: {fitted} steps (planned {steps2}): {left / 60:.1f} min left at stage 1's "
            f"{sec_per_step * 1000:.0f} ms/step"
        )
        steps2 = fitted
    stage2 = load_preset(
        stage2_preset, [*stage2_overrides, f"train.init_from={out / 'stage1' / 'final'}"]
    )
    s2 = Trainer(sized(stage2, steps2), out / "stage2").fit()
    return s1, s2
