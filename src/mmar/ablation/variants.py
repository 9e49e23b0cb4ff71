"""The variants of `mmar ablate`: one model family, one config switch each (docs/ablations.md).

A variant is a recipe change against the reference (MMAR: v-prediction, the two-stage recipe,
pixel tokens) expressed as ``--set`` overrides of the bench's two presets, plus what the runner
must prepare for it (an image tokenizer to train) or share with another variant (a sampling-only
variant evaluates the model another variant trained, with other sampling settings).

The "paper" suite mirrors the rows of MMAR's ablation table (arXiv 2410.10798, Qwen2-0.5B at
256 px) and its stage-1-only claim:

| variant | paper's row / claim |
|---|---|
| mmar | MMAR (v-prediction) |
| eps | with eps-prediction (the standard 50-step spacing, from t = 999) |
| eps-leading, eps-bf16 | the eps model sampled from t = 980, and in bf16 |
| mmar-bf16 | the reference sampled in bf16 (the precision effect on v) |
| x0 | x0-prediction (not in the paper's table) |
| stage1-only | stage 1 alone leaves "holes" |
| stage2-uniform | stage 2 with a uniform mask ratio instead of the truncated normal |
| vq | Show-o-like (VQ tokens, a softmax over the codebook) |
| transfusion | Transfusion-like (diffusion inside the backbone) |
| kl | pixel tokens vs KL latents (optional in the issue) |
"""

from __future__ import annotations

import dataclasses
from typing import Literal

TokenizerKind = Literal["kl", "vq"]


@dataclasses.dataclass(frozen=True)
class Variant:
    """One row of the ablation table.

    overrides: ``key=value`` overrides of both stages' run configs (e.g.
      "model.diffusion.parameterization=eps").
    stage2_overrides: overrides of stage 2 only (e.g. its mask-ratio distribution).
    stages: 2 = the paper's recipe (stage 1 then stage 2 from its EMA weights, the steps split
      as `mmar quickstart` splits them); 1 = every step in stage 1.
    tokenizer: an image tokenizer the runner trains once per suite (`mmar train-tokenizer
      --kind KIND`) and the model reads instead of pixels; "vq" also switches the model to the
      codebook head.
    sampling: ``field=value`` overrides of the model's recommended SamplingConfig for the
      evaluation (e.g. "precision=bf16").
    trained_as: evaluate the model trained for that variant (same seed) instead of training one:
      a sampling-only variant costs an evaluation, not a training run.
    """

    name: str
    about: str
    paper: str = ""
    overrides: tuple[str, ...] = ()
    stage2_overrides: tuple[str, ...] = ()
    stages: Literal[1, 2] = 2
    tokenizer: TokenizerKind | None = None
    sampling: tuple[str, ...] = ()
    trained_as: str | None = None

    @property
    def trains(self) -> bool:
        return self.trained_as is None

    @property
    def model_variant(self) -> str:
        """The variant whose trained model this one evaluates (itself when it trains)."""
        return self.trained_as or self.name


PAPER: tuple[Variant, ...] = (
    Variant("mmar", "v-prediction, stage 1 then stage 2 (the reference)", "MMAR (v-prediction)"),
    Variant(
        "eps",
        "eps-prediction; 50 steps spaced from t = 999",
        "with eps-prediction",
        overrides=("model.diffusion.parameterization=eps",),
    ),
    Variant(
        "eps-leading",
        "the eps model; 50 steps spaced from t = 980 (diffusers' 'leading')",
        "with eps-prediction",
        sampling=("timestep_spacing=leading",),
        trained_as="eps",
    ),
    Variant(
        "eps-bf16",
        "the eps model sampled in bf16",
        "with eps-prediction",
        sampling=("precision=bf16",),
        trained_as="eps",
    ),
    Variant(
        "mmar-bf16",
        "the reference sampled in bf16",
        "MMAR (v-prediction)",
        sampling=("precision=bf16",),
        trained_as="mmar",
    ),
    Variant(
        "x0",
        "x0-prediction",
        overrides=("model.diffusion.parameterization=x0",),
    ),
    Variant(
        "stage1-only",
        "stage 1 alone (mask ratio in [0.7, 1]) for the whole budget",
        "stage 1 leaves holes",
        stages=1,
    ),
    Variant(
        "stage2-uniform",
        "stage 2's mask ratio uniform on [0, 1] instead of the truncated normal",
        "stage 2 removes the holes",
        stage2_overrides=("model.mask.distribution=uniform",),
    ),
    Variant(
        "vq",
        "VQ tokens predicted by a softmax over the codebook (CE), no diffusion head",
        "Show-o-like (VQ tokens)",
        overrides=("model.image_head=codebook",),
        tokenizer="vq",
    ),
    Variant(
        "transfusion",
        "diffusion inside the backbone: one t per image, a linear v output, no per-token head",
        "Transfusion-like",
        overrides=("model.image_head=transfusion",),
        stages=1,
    ),
    Variant(
        "kl",
        "latents of a small KL autoencoder instead of pixels",
        "(pixel tokens vs KL latents)",
        tokenizer="kl",
    ),
)

SUITES: dict[str, tuple[Variant, ...]] = {"paper": PAPER}


def select(suite: str, only: list[str] | None = None) -> list[Variant]:
    """The variants of ``suite`` (all, or those named in ``only``, in the suite's order), plus the
    variants whose models they evaluate (``trained_as``). Raises ValueError naming what exists."""
    if suite not in SUITES:
        raise ValueError(f"--suite: unknown suite {suite!r}; known: {', '.join(SUITES)}")
    variants = SUITES[suite]
    names = [v.name for v in variants]
    if not only:
        return list(variants)
    unknown = [n for n in only if n not in names]
    if unknown:
        raise ValueError(
            f"--only: unknown variant(s) {', '.join(unknown)} of suite {suite!r}; known: "
            f"{', '.join(names)}"
        )
    wanted = set(only)
    wanted |= {v.trained_as for v in variants if v.name in wanted and v.trained_as}
    return [v for v in variants if v.name in wanted]
