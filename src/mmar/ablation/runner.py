"""The `mmar ablate` runner: train every variant with one budget, evaluate each, resume.

    OUT/tokenizers/{kl,vq}/             image tokenizers, trained once per suite (same budget)
    OUT/runs/VARIANT/seedS/stage1|2/    the trainers' runs (a sampling-only variant has none)
    OUT/runs/VARIANT/seedS/train.json   steps per stage, training seconds, precision
    OUT/runs/VARIANT/seedS/result.json  the benchmark, the completion curve, loss per mask ratio
    OUT/results.json, table.md, chart.png   the report (mmar.ablation.report)
    OUT/ablate.log                      every log line of every call, timestamped

Budget: ``minutes`` of training wall time per variant and seed (the steps that fit are
calibrated on that variant's own stage-1 step, as `mmar quickstart` does, so a cheaper step buys
more steps), or a fixed number of ``steps`` for every variant; either way each row reports both
its steps and its training minutes.

Resume: a run whose result.json exists is not redone; one whose train.json exists is only
evaluated; any other leftover directory of a run is deleted and the run trained afresh (a
trainer's half-written run is not resumable across a changed budget).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mmar.ablation.variants import TokenizerKind, Variant

TRAIN_FILE, RESULT_FILE, LOG_FILE = "train.json", "result.json", "ablate.log"
HOLES_FRACTION = 0.9  # the table's "holes" column: completion accuracy with 90% of tokens given
# the tokenizers' geometry: stride 4 (32 px -> 8 x 8 latents), the KL recipe measured best for
# image quality per minute on shapes (docs/benchmarks.md); VQ gets the same size and budget
TOKENIZER_BLOCKS = "[16,32,32]"


@dataclasses.dataclass(frozen=True)
class AblationPlan:
    """What `mmar ablate` runs.

    presets: the bench's stage-1 and stage-2 presets; bench: "shapes" or "mnist" (the data and
    the evaluation); minutes / steps: the budget per variant and seed (exactly one is set);
    overrides: ``key=value`` applied to every variant's run configs (after the presets, before
    the variant's own); n_per_class / completion_images: the evaluation's size;
    tokenizer_minutes / tokenizer_overrides: the image tokenizers' budget and extra settings.
    """

    variants: tuple[Variant, ...]
    bench: str
    presets: tuple[str, str]
    out: Path
    seeds: tuple[int, ...] = (0, 1)
    minutes: float | None = 5.0
    steps: int | None = None
    overrides: tuple[str, ...] = ()
    n_per_class: int = 10
    completion_images: int = 50
    tokenizer_minutes: float = 3.0
    tokenizer_overrides: tuple[str, ...] = ()
    device: str = "cpu"

    def __post_init__(self) -> None:
        if (self.minutes is None) == (self.steps is None):
            raise ValueError("AblationPlan: set exactly one of minutes and steps")
        if self.minutes is not None and self.minutes <= 0:
            raise ValueError(f"--minutes must be > 0, got {self.minutes}")
        if self.steps is not None and self.steps < 2:
            raise ValueError(f"--steps must be >= 2 (one per stage), got {self.steps}")
        if not self.seeds:
            raise ValueError("--seeds must be >= 1")
        if self.n_per_class < 1 or self.completion_images < 1:
            raise ValueError(
                f"--n-per-class and --completion-images must be >= 1, got {self.n_per_class} "
                f"and {self.completion_images}"
            )

    def run_dir(self, variant: str, seed: int) -> Path:
        return self.out / "runs" / variant / f"seed{seed}"

    def tokenizer_dir(self, kind: TokenizerKind) -> Path:
        return self.out / "tokenizers" / kind


def _read(file: Path) -> dict[str, Any] | None:
    if not file.is_file():
        return None
    with open(file) as f:
        return json.load(f)


def _write(file: Path, data: dict[str, Any]) -> None:
    tmp = file.with_suffix(".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
    tmp.replace(file)  # a run killed mid-write leaves no half file that resume would trust


def tokenizer_model_overrides(kind: TokenizerKind, path: Path) -> list[str]:
    """The model's image tokenizer (and head) for a trained tokenizer directory: KL latents
    grouped 2 x 2 (16 tokens at 32 px), VQ codes one per token (64 at 32 px) with the codebook
    head. Tokenizers take RGB, so grey data are repeated to 3 channels."""
    kind_name, patch = ("diffusers", 2) if kind == "kl" else ("diffusers_vq", 1)
    return [
        f"model.image_tokenizer.kind={kind_name}",
        f"model.image_tokenizer.patch_size={patch}",
        f"model.image_tokenizer.path={path}",
        "model.image_tokenizer.image_channels=3",
        "data.channels=3",
    ]


class AblationRunner:
    """Runs an :class:`AblationPlan` (``run()``), logging through ``echo`` and to OUT/ablate.log
    (a benchmark of hours is read afterwards)."""

    def __init__(self, plan: AblationPlan, echo: Callable[[str], None] = print):
        self.plan, self.echo = plan, echo

    def log(self, message: str) -> None:
        self.echo(message)
        self.plan.out.mkdir(parents=True, exist_ok=True)
        with open(self.plan.out / LOG_FILE, "a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")

    # --- tokenizers -------------------------------------------------------------------------
    def tokenizer(self, kind: TokenizerKind) -> Path:
        """The trained tokenizer of ``kind`` (trained now unless a finished one is there)."""
        from mmar.training.tokenizer_config import load_tokenizer_train_config
        from mmar.training.tokenizer_trainer import summary_line, train_tokenizer

        out = self.plan.tokenizer_dir(kind)
        if (out / "metrics.json").is_file():
            return out
        if out.exists():
            shutil.rmtree(out)
        cfg = load_tokenizer_train_config(None, self.tokenizer_overrides(kind))
        budget = [f"{cfg.steps} steps"] if cfg.steps else []
        budget += [f"{cfg.minutes:g} min"] if cfg.minutes else []
        self.log(f"ablate: training the {kind} tokenizer ({' or '.join(budget)})")
        self.log(summary_line(train_tokenizer(cfg, out)))
        return out

    def tokenizer_overrides(self, kind: TokenizerKind) -> list[str]:
        """`mmar train-tokenizer --set` overrides of the ``kind`` tokenizer: the bench's data,
        the plan's budget, stride 4, then the plan's own ``tokenizer_overrides``."""
        from mmar.training.config import load_preset

        data = load_preset(self.plan.presets[0]).data
        return [
            f"kind={kind}",
            f"data.name={data.name}",
            f"data.image_size={data.image_size}",
            "steps=null",
            f"minutes={self.plan.tokenizer_minutes}",
            f"{kind}.block_out_channels={TOKENIZER_BLOCKS}",
            f"device={self.plan.device}",
            *self.plan.tokenizer_overrides,
        ]

    def check(self) -> None:
        """Load and validate every config the plan will use, before any work: each variant's
        two run configs (a variant with a tokenizer: its tokenizer's training config, since its
        model's geometry is read from the trained tokenizer) and its sampling overrides.
        Raises ConfigError naming the variant and the field."""
        from mmar.config import ConfigError
        from mmar.model.config import SamplingConfig
        from mmar.training.config import apply_overrides, load_preset
        from mmar.training.tokenizer_config import load_tokenizer_train_config

        base = load_preset(self.plan.presets[0]).model.sampling.to_dict()
        for v in self.plan.variants:
            try:
                if v.tokenizer is None:
                    common = self.overrides(v, 0)
                    load_preset(self.plan.presets[0], common)
                    if v.stages == 2:
                        load_preset(self.plan.presets[1], [*common, *v.stage2_overrides])
                else:
                    load_tokenizer_train_config(None, self.tokenizer_overrides(v.tokenizer))
                SamplingConfig.from_dict(apply_overrides(base, list(v.sampling)))
            except ConfigError as e:
                raise ConfigError(f"ablate variant {v.name}: {e}") from None

    # --- training ---------------------------------------------------------------------------
    def overrides(self, variant: Variant, seed: int) -> list[str]:
        """Both stages' overrides of ``variant`` at ``seed``: plan, tokenizer, variant."""
        extra: list[str] = []
        if variant.tokenizer is not None:
            extra = tokenizer_model_overrides(variant.tokenizer, self.tokenizer(variant.tokenizer))
        return [
            f"train.seed={seed}",
            f"train.device={self.plan.device}",
            "train.progress=false",
            *self.plan.overrides,
            *extra,
            *variant.overrides,
        ]

    def train(self, variant: Variant, seed: int) -> dict[str, Any]:
        """Train ``variant`` at ``seed`` within the plan's budget -> its train.json record."""
        from mmar.training.config import load_preset
        from mmar.training.trainer import Trainer
        from mmar.training.two_stage import calibrate_steps, sized, train_two_stages

        run = self.plan.run_dir(variant.name, seed)
        done = _read(run / TRAIN_FILE)
        if done is not None:
            return done
        if run.exists():
            shutil.rmtree(run)  # an interrupted run: trained afresh
        run.mkdir(parents=True)
        common = self.overrides(variant, seed)
        stage1 = load_preset(self.plan.presets[0], common)
        t0 = time.perf_counter()
        deadline, sec_per_step = None, None
        if self.plan.steps is not None:
            total = self.plan.steps
            self.log(f"ablate {variant.name} seed {seed}: training {total} steps")
        else:
            budget = self.plan.minutes * 60  # type: ignore[operator]  # set when steps is None
            total, sec_per_step = calibrate_steps(stage1, budget)
            deadline = t0 + budget
            self.log(
                f"ablate {variant.name} seed {seed}: {sec_per_step * 1000:.0f} ms/step -> "
                f"{total} steps for {budget / 60:.1f} min"
            )
        if variant.stages == 2:
            s1, s2 = train_two_stages(
                stage1,
                [*common, *variant.stage2_overrides],
                run,
                total,
                deadline,
                self.plan.presets[1],
            )
            summaries = [s1, s2]
        else:
            summaries = [Trainer(sized(stage1, total), run / "stage1").fit()]
        record = {
            "variant": variant.name,
            "seed": seed,
            "steps": [s["step"] for s in summaries],
            "total_steps": sum(s["step"] for s in summaries),
            "train_seconds": time.perf_counter() - t0,
            "calibrated_ms_per_step": None if sec_per_step is None else sec_per_step * 1000,
            "precision": summaries[0].get("precision"),
            "final": summaries[-1]["final"],
            "budget": {"minutes": self.plan.minutes, "steps": self.plan.steps},
        }
        _write(run / TRAIN_FILE, record)
        return record

    # --- evaluation -------------------------------------------------------------------------
    def evaluate(self, variant: Variant, seed: int, trained: dict[str, Any]) -> dict[str, Any]:
        """The benchmark, the completion curve and the loss per mask-ratio bucket of the model
        ``trained`` (train.json), sampled with ``variant.sampling`` -> result.json's record."""
        from mmar.evaluation.completion import FRACTIONS, completion_accuracy, mask_ratio_losses
        from mmar.evaluation.evaluate import eval_data_config, evaluate
        from mmar.model.config import SamplingConfig
        from mmar.pipelines.mmar import MMAR
        from mmar.training.config import apply_overrides

        run = self.plan.run_dir(variant.name, seed)
        run.mkdir(parents=True, exist_ok=True)
        model = MMAR.from_pretrained(trained["final"], device=self.plan.device)
        sampling = SamplingConfig.from_dict(
            apply_overrides(model.sampling.to_dict(), list(variant.sampling))
        )
        t0 = time.perf_counter()
        bench = evaluate(
            model,
            self.plan.bench,
            n_per_class=self.plan.n_per_class,
            seed=seed,
            sampling=sampling,
            log=self.log,
            samples_dir=run if self.plan.bench == "shapes" else None,
            n_edits=0,
        )
        completion = completion_accuracy(
            model,
            self.plan.bench,
            FRACTIONS,
            n=self.plan.completion_images,
            seed=seed,
            sampling=sampling,
        )
        data = eval_data_config(model, self.plan.bench)
        losses = mask_ratio_losses(model, data, n=self.plan.completion_images, seed=seed)
        record = {
            "variant": variant.name,
            "seed": seed,
            "trained_as": variant.model_variant,
            "train": trained,
            "sampling": sampling.to_dict(),
            "bench": bench,
            "completion": completion,
            "holes": completion.get(str(HOLES_FRACTION)),
            "mask_ratio_losses": losses,
            "eval_seconds": time.perf_counter() - t0,
        }
        _write(run / RESULT_FILE, record)
        return record

    # --- the whole plan ---------------------------------------------------------------------
    def run(self) -> list[dict[str, Any]]:
        """Every variant at every seed (trained ones first, so that the sampling-only variants
        find their models) -> the result records, also in each run's result.json."""
        self.plan.out.mkdir(parents=True, exist_ok=True)
        by_name = {v.name: v for v in self.plan.variants}
        order = sorted(self.plan.variants, key=lambda v: not v.trains)
        results = []
        for seed in self.plan.seeds:
            for v in order:
                done = _read(self.plan.run_dir(v.name, seed) / RESULT_FILE)
                if done is not None:
                    self.log(f"ablate {v.name} seed {seed}: done before, kept")
                    results.append(done)
                    continue
                trained = self.train(by_name[v.model_variant], seed)
                self.log(f"ablate {v.name} seed {seed}: evaluating")
                results.append(self.evaluate(v, seed, trained))
        return results


def plan_summary(plan: AblationPlan) -> str:
    """One line per variant: what it trains and how (for --list and the log)."""
    lines = []
    for v in plan.variants:
        how = f"evaluates {v.trained_as}'s model" if v.trained_as else f"{v.stages} stage(s)"
        extra = [*v.overrides, *(f"stage 2: {o}" for o in v.stage2_overrides)]
        extra += [f"sampling {s}" for s in v.sampling]
        extra += [f"{v.tokenizer} tokenizer"] if v.tokenizer else []
        lines.append(f"  {v.name:15s} {how}; {'; '.join(extra) or 'the presets as they are'}")
    return "\n".join(lines)
