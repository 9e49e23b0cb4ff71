"""What every pipeline shares: the sampling settings of a call and per-sample random generators.

Seeded sampling is batch-invariant: sample i of a call with ``seed=s`` draws everything random
(its reveal order, every diffusion noise, its sampled caption tokens) from its own generator,
seeded with s + i (or with ``seed[i]`` when a list is given). So the image of prompt i is the
same whether it is generated alone (with seed s + i) or in a batch of 50, whatever
``batch_size`` and whichever prompts share the call; only float rounding of batched kernels can
differ (measured and bounded in tests/test_pipelines_text_to_image.py).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from mmar.config import ConfigError
from mmar.model.config import SamplingConfig
from mmar.model.processor import MMARProcessor

Seed = int | Sequence[int]
SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch.Generator.manual_seed accepts


def sampling_config(
    base: SamplingConfig, sampling: SamplingConfig | None = None, **overrides: Any
) -> SamplingConfig:
    """``sampling`` (default: ``base``, the model's recommended settings) with single fields
    overridden, validated. Unknown field names are refused with the list of known ones."""
    known = {f.name for f in dataclasses.fields(SamplingConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(
            f"SamplingConfig has no field(s) {unknown}; known fields are "
            f"{sorted(known)}, e.g. guidance_scale=3.0, num_steps=50"
        )
    s = sampling if sampling is not None else base
    return s.replace(**{k: v for k, v in overrides.items() if v is not None})


def warn_if_ignored(sampling: SamplingConfig) -> None:
    """Warn (once per sampling call) when a field cannot act: temperature with plain DDIM."""
    if sampling.temperature_ignored:
        warnings.warn(
            f"temperature={sampling.temperature} has no effect with scheduler 'ddim' at eta = 0 "
            "(deterministic DDIM injects no noise); use scheduler 'ddpm' or eta > 0 for it to act",
            UserWarning,
            stacklevel=3,
        )


def warn_if_prompts_lose_words(
    processor: MMARProcessor, prompts: Sequence[str], what: str = "prompt"
) -> None:
    """One warning per call listing what the model cannot read of the prompts (``what``: how
    the warning names them, e.g. "question"): words outside its vocabulary (read as the
    unknown token) and the tails cut at ``max_text_len``."""
    loss = processor.text_loss(prompts)
    if loss:
        warnings.warn(loss.message(what), UserWarning, stacklevel=3)


def sample_seeds(seed: Seed, n: int) -> list[int]:
    """One seed per sample: ``seed + i`` for an int, the list itself otherwise; each checked
    to be in torch.Generator's range (ValueError naming the seed and its sample)."""
    if isinstance(seed, int):
        seeds = [seed + i for i in range(n)]
    else:
        seeds = [int(x) for x in seed]
        if len(seeds) != n:
            raise ValueError(
                f"seed: got {len(seeds)} seeds for {n} samples; pass one int (sample i "
                "uses seed + i) or exactly one seed per sample"
            )
    lo, hi = SEED_RANGE
    for i, s in enumerate(seeds):
        if not lo <= s <= hi:
            raise ValueError(
                f"seed {s} (of sample {i}) is outside torch.Generator's range [-2**63, "
                "2**64 - 1] (sample i uses seed + i); e.g. seed=0"
            )
    return seeds


def generators(seeds: Sequence[int], device: torch.device) -> list[torch.Generator]:
    """A torch.Generator on ``device`` per sample."""
    return [torch.Generator(device=device).manual_seed(s) for s in seeds]


def as_list(prompts: str | Sequence[str]) -> list[str]:
    """A prompt or a list of prompts -> a non-empty list."""
    out = [prompts] if isinstance(prompts, str) else list(prompts)
    if not out:
        raise ValueError(
            "prompts is empty; pass at least one, e.g. ['a red circle'] ('' gives "
            "an unconditional sample)"
        )
    return out
