"""The training loop behind ``mmar train``: ``Trainer(run_cfg, out_dir, resume).fit()``.

Data: the DataLoader's collator (:mod:`mmar.training.batching`, in its workers) draws each sample's
kind (t2i / i2t / img / vqa), its question-answer pair (vqa) and CFG prompt dropout from the
sample's own seed and lets the ``MMARProcessor`` tokenize and pack; the step encodes the images
into tokens on the device and calls ``MMARModel.forward``. Every draw of the step (VAE
posterior, masks, diffusion t and noise) comes from a generator per sample, seeded by (run seed,
epoch, item key): a sample's loss does not depend on the batch, rank or world size it is
trained in.
One step = ``grad_accum`` micro-batches, then: NaN/inf check
(skip the update, count it, stop after ``max_nan_in_row``), gradient clipping, AdamW, the
learning-rate schedule and the EMA. Everything random is restored on ``--resume`` (optimizer,
scheduler, EMA, RNG states, data position), so an interrupted run resumed to the end ends with
the same weights as an uninterrupted one (bit-exact on CPU).
Under torchrun with ``parallel.strategy`` ddp / fsdp each rank trains on its slice of every
global batch (see :mod:`mmar.training.parallel`); rank 0 alone logs and writes.

Unreadable items (:mod:`mmar.training.unreadable`): each is counted and named once (printed with
``tqdm.write``, off the progress bar; all listed in OUT/skipped.jsonl), a micro-batch with no
readable item is passed over (one process), and the run stops with ``DataError`` when none or
more than ``data.max_unreadable_share`` of the items cannot be read.

Callbacks (``Trainer(..., callbacks=[...])``) see every step as it ends; see :data:`Callback`.

Output directory::

    OUT/config.yaml  metrics.jsonl  loss.png  summary.json  skipped.jsonl (if any)
    OUT/checkpoints/step_XXXXXXX/   model.safetensors (raw + EMA weights), config.json,
                                    backbone/, tokenizer/ + trainer_state/
                                    (see mmar.training.checkpoint)
    OUT/final/                      EMA + raw weights, loadable by mmar.MMAR.from_pretrained
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from mmar.compute_dtype import PrecisionChoice, resolve_precision
from mmar.config import ConfigError, DataError
from mmar.data.latents import LatentDataset
from mmar.model.codebook_head import copy_codebook
from mmar.model.files import BACKBONE_DIR, TOKENIZER_DIR, WEIGHTS_FILE
from mmar.model.flex_attention import NO_FLEX_BACKWARD, flex_training_error
from mmar.model.mmar import MMARModel
from mmar.model.processor import MMARProcessor
from mmar.pipelines.mmar import MMAR
from mmar.torch_utils import resolve_device
from mmar.training import checkpoint as ckpt
from mmar.training.batching import TrainingCollator, has_question_answers
from mmar.training.config import RunConfig
from mmar.training.data_order import ResumableBatchSampler, StreamPosition
from mmar.training.ema import EMA
from mmar.training.metrics import MetricsLog, plot_loss
from mmar.training.optim import build_lr_scheduler, build_optimizer
from mmar.training.parallel import (
    ShardedBatchSampler,
    all_reduce_sum,
    barrier,
    destroy,
    full_model_state,
    full_optimizer_state,
    full_tensors,
    gather_objects,
    global_mean_loss,
    init_distributed,
    parallelize,
)
from mmar.training.unreadable import StepUnreadable, UnreadableLog

Callback = Callable[["Trainer", dict[str, Any]], None]
"""``callback(trainer, record)``, called by ``fit()`` once after every training step.

When: after the step's optimiser update (or its NaN skip), its metrics line and its checkpoint
(when one is due), so ``trainer.step`` is the step just done and a checkpoint written at it is
complete; the last step's call comes before ``final/`` is written. Not called for the steps a
resumed run restored, nor for a step at which the run stops with TrainingDiverged.
record: ``step``; the step's ``loss``, ``loss_text``, ``loss_diff`` (global means), ``lr`` (the
  one the update used), ``grad_norm`` (NaN when skipped), ``finite`` (False: NaN/inf, no
  update), ``samples`` (this step's); the run's ``skipped`` (distinct unreadable items) and
  ``nan_skipped`` counts; ``checkpoint``: the directory written at this step, else None.
An exception raised by a callback stops the run: ``fit()`` re-raises it, no ``final/`` is written
and checkpoints already written stay (``--resume`` continues from them). Callbacks run on every
rank under torchrun (``trainer.dist.is_main`` is rank 0): one that raises on some ranks only
leaves the others waiting in the next collective. A resumed run is only bit-exact if callbacks
leave the model, optimiser and RNGs (torch's global one included) alone.
"""

# train.* fields a resumed run may change; everything else must match the checkpoint.
RESUMABLE_CHANGES = {
    "steps",
    "max_minutes",
    "progress",
    "log_every",
    "ckpt_every",
    "keep_last",
    "max_nan_in_row",
    "device",
    # the compute precision is a property of the machine (precision: auto measures it), and a
    # run may resume on another one; fp32 master weights and optimiser states are the same
    "precision",
}
# sections a resumed run may change: checkpoints hold full tensors keyed by name (any world
# size); the recommended sampling settings saved with the model do not affect training, and
# the two attention paths compute the same function
RESUMABLE_SECTIONS = {"parallel", "model.sampling", "model.backbone.attention"}


class TrainingDiverged(RuntimeError):
    """Too many consecutive steps had a NaN/inf loss or gradient."""


def _with_defaults(saved: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's run config with the fields added since it was written at their defaults
    (a field it lacks did not exist then, so it was not set otherwise); as saved when it no
    longer parses (the diff then names what changed)."""
    try:
        return RunConfig.from_dict(saved).to_dict()
    except ConfigError:
        return saved


def _config_diff(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(old) | set(new)):
        a, b, where = old.get(k), new.get(k), f"{prefix}{k}"
        if where in RESUMABLE_SECTIONS:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += _config_diff(a, b, where + ".")
        elif a != b and not (prefix == "train." and k in RESUMABLE_CHANGES):
            out.append(f"{where}: {a!r} -> {b!r}")
    return out


class Trainer:
    """Train an MMAR model as ``run_cfg`` says, writing everything under ``out_dir``.

    resume: continue from the newest complete checkpoint in ``out_dir/checkpoints``.
    model: train this network instead of building ``MMARModel(run_cfg.model)`` (tests; it must
      fit the processor the trainer builds from the config and the data).
    callbacks: called after every step, in order (progress reports, custom stopping; see
      :data:`Callback`).
    The constructor validates everything and builds the model, data and optimiser; ``fit()`` runs.
    Seeds torch's global RNG with ``train.seed`` (weight init, any dropout), as HF's set_seed does.
    """

    def __init__(
        self,
        run_cfg: RunConfig,
        out_dir: str | Path,
        resume: bool = False,
        model: MMARModel | None = None,
        callbacks: Sequence[Callback] = (),
    ):
        run_cfg.validate()
        self.cfg, self.out = run_cfg, Path(out_dir)
        self.callbacks = list(callbacks)
        tc = run_cfg.train
        # under torchrun: join the process group; the device becomes cuda:LOCAL_RANK on GPU
        self.dist, self.device = init_distributed(
            run_cfg.parallel, resolve_device(tc.device, "train.device")
        )
        if run_cfg.model.backbone.attention == "flex" and self.device.type in NO_FLEX_BACKWARD:
            raise ConfigError(
                flex_training_error(self.device, "RunConfig.model.backbone.attention")
            )
        self.resume_from = self._check_out_dir(resume)
        init_from = None if self.resume_from else tc.init_from
        if init_from is not None and not (Path(init_from) / WEIGHTS_FILE).is_file():
            raise ConfigError(
                f"RunConfig.train.init_from: {init_from} holds no model.safetensors;"
                " point it at a run's final/ or checkpoints/step_XXXXXXX directory"
            )
        # bf16 or fp32 (precision: auto measures this device once); every rank takes rank 0's
        # choice, so that the ranks of one run never compute in different precisions
        self.precision: PrecisionChoice = gather_objects(
            resolve_precision(tc.precision, self.device)
        )[0]
        torch.manual_seed(tc.seed)

        from mmar.data import build_dataset

        self.dataset = build_dataset(run_cfg.data, "train")
        if tc.kinds.vqa > 0 and not has_question_answers(self.dataset):
            raise ConfigError(
                f"RunConfig.train.kinds.vqa: is {tc.kinds.vqa} but {self._data_source()} has no "
                'question-answer pairs (no item has a "qa" field); set train.kinds.vqa: 0, or '
                'use data.name: shapes, or jsonl lines with "qa": [["question", "answer"], ...]'
            )
        source = self.resume_from or init_from
        self.processor = self._build_processor(source)
        if isinstance(self.dataset, LatentDataset):  # before any work: its VAE must be ours
            self.dataset.check_tokenizer(
                run_cfg.model.image_tokenizer, self.processor.image_tokenizer
            )
        self.stream = isinstance(self.dataset, torch.utils.data.IterableDataset)
        self.data_position: ResumableBatchSampler | ShardedBatchSampler | StreamPosition
        if self.stream:  # the shards are split over the ranks (see mmar.data.webdataset)
            self.data_position = StreamPosition(self._local_batch_size())
            batching: dict[str, Any] = {
                "batch_size": self.data_position.batch_size,
                "drop_last": True,
            }
        else:
            position = ResumableBatchSampler(
                len(self.dataset), tc.batch_size, run_cfg.data.seed, source=self._data_source()
            )
            self.data_position = (
                position
                if not self.dist.distributed
                else ShardedBatchSampler(position, self.dist.rank, self.dist.world_size)
            )
            batching = {"batch_sampler": self.data_position}
        self.unreadable = UnreadableLog(
            run_cfg.data.max_unreadable_share,
            self._data_source(),
            None if self.stream else position.batches_per_epoch * position.batch_size,
            self.out,
        )
        self._pass_ended = False  # this rank's first pass over the data is over
        self._pending = StepUnreadable()
        self.collator = TrainingCollator(self.processor, tc.kinds.to_dict(), tc.seed, tc.vqa_turns)
        self.loader = torch.utils.data.DataLoader(
            self.dataset,
            collate_fn=self.collator,
            num_workers=run_cfg.data.num_workers,
            # its own generator: making a loader iterator draws a worker seed, which must not
            # come from (and shift) torch's global RNG when a resumed run re-makes it mid-epoch
            generator=torch.Generator().manual_seed(run_cfg.data.seed),
            **batching,
        )
        self.model = (model or self._build_model(source)).to(self.device)
        self.processor.to(self.device)  # the image tokenizer encodes on the training device
        if init_from is not None:
            self.model.load_weights(init_from, use_ema=tc.init_weights == "ema")
        if self.resume_from is not None:  # full tensors, before any sharding
            self.model.load_weights(self.resume_from, use_ema=False)
        # self.model keeps MMAR's methods and parameter names; the step calls self.train_model
        self.train_model = parallelize(self.model, run_cfg.parallel, self.device)
        self.optimizer = build_optimizer(self.model, run_cfg.optim)
        self.lr_scheduler = build_lr_scheduler(self.optimizer, run_cfg.optim, tc.steps)
        self.ema = EMA(self.model, run_cfg.optim.ema_decay)
        self.metrics = MetricsLog(self.out / "metrics.jsonl")
        self.step, self.nan_skipped, self.samples = 0, 0, 0
        if self.resume_from is not None:
            self._load_checkpoint(self.resume_from)

    # --- set-up -----------------------------------------------------------------------------
    @property
    def skipped(self) -> int:
        """Distinct unreadable items met so far (each counted once, whatever the epochs)."""
        return self.unreadable.count

    def _data_source(self) -> str:
        d = self.cfg.data
        return f"{d.name} data {d.path}" if d.path is not None else f"the {d.name} data"

    def _local_batch_size(self) -> int:
        batch, world = self.cfg.train.batch_size, self.dist.world_size
        if batch % world:
            raise ConfigError(
                f"RunConfig.train.batch_size: the global batch {batch} must be "
                f"divisible by the world size {world}, e.g. batch_size: "
                f"{max(world, batch // world * world)}"
            )
        return batch // world

    def _check_out_dir(self, resume: bool) -> Path | None:
        if not resume:
            if ckpt.list_checkpoints(self.out):
                raise FileExistsError(
                    f"{self.out} already holds checkpoints: pass --resume to continue that run, "
                    "or choose another --out"
                )
            return None
        if self.dist.is_main:
            ckpt.remove_stale_tmp(self.out)
        # checked before anything is loaded: a damaged newest checkpoint is skipped whole
        latest, problems = ckpt.latest_readable_checkpoint(self.out)
        if latest is None and problems:
            raise ckpt.CheckpointError(
                f"--resume: no readable checkpoint under {self.out}/checkpoints: "
                + "; ".join(problems)
                + ". Restore these files, or start a new run with another "
                "--out (train.init_from can start it from an intact final/ or checkpoint)"
            )
        if latest is None:
            raise FileNotFoundError(
                f"--resume: no complete checkpoint under {self.out}/checkpoints; run without "
                "--resume to start a new run"
            )
        done, steps = ckpt.checkpoint_step(latest), self.cfg.train.steps
        if steps < done:  # every rank raises: none waits in a collective
            planned = ckpt.read_state_info(latest)["run_config"]["train"]["steps"]
            raise ConfigError(
                f"RunConfig.train.steps: {steps} is fewer than the {done} steps the run has "
                f"already done ({latest}); resume with at least {done}, e.g. --steps "
                f"{max(planned, done)} (the run's own train.steps), or start a new run with "
                "another --out"
            )
        if self.dist.is_main:
            for problem in problems:
                print(f"--resume: skipping an unreadable checkpoint: {problem}", file=sys.stderr)
            print(f"--resume: resuming from step {done} of {steps} ({latest})", file=sys.stderr)
        return latest

    def _build_processor(self, source: Path | str | None) -> MMARProcessor:
        """The processor of this run: the text tokenizer (and the VAE weights) saved in
        ``source`` (resume / init_from), else built from the config and the training captions
        (the "words" vocabulary needs them)."""
        if source is not None and (Path(source) / TOKENIZER_DIR).is_dir():
            return MMARProcessor.from_pretrained(source, config=self.cfg.model)
        # the captions of the dataset already built (not a second build of it), and only for
        # the "words" vocabulary: other tokenizers ignore them, and a shard stream is read whole
        words = self.cfg.model.text_tokenizer.kind == "words"
        return MMARProcessor.from_config(self.cfg.model, self.dataset.captions() if words else None)

    def _build_model(self, source: Path | str | None) -> MMARModel:
        """A fresh network for the processor; the LLM config saved in ``source`` (resume /
        init_from) when there is one, so the original LLM weights need not be read again."""
        from transformers import AutoConfig

        backbone_config = None
        if source is not None and (Path(source) / BACKBONE_DIR).is_dir():
            backbone_config = AutoConfig.from_pretrained(str(Path(source) / BACKBONE_DIR))
        model = MMARModel(
            self.cfg.model,
            self.processor.vocab_size,
            self.processor.special,
            backbone_config=backbone_config,
        )
        copy_codebook(model, self.processor.image_tokenizer)  # image_head "codebook" only
        return model

    def _load_checkpoint(self, path: Path) -> None:
        """The trainer state of ``path`` (its weights were loaded before parallelize)."""
        info = ckpt.load_trainer_state(
            path / ckpt.STATE_DIR,
            self.optimizer,
            self.lr_scheduler,
            self.ema,
            model=self.model,
            rank=self.dist.rank,
        )
        diff = _config_diff(_with_defaults(info["run_config"]), self.cfg.to_dict())
        if diff:
            raise ConfigError(
                f"--resume: {path} was trained with another config ({'; '.join(diff[:6])}); "
                "resume with the run's own config (OUT/config.yaml) or start a new --out"
            )
        self.data_position.load_state_dict(info["data"])
        # train.steps may have changed: the next update's lr comes from this run's schedule
        sched = self.lr_scheduler
        for group, base, factor in zip(
            self.optimizer.param_groups, sched.base_lrs, sched.lr_lambdas
        ):
            group["lr"] = base * factor(sched.last_epoch)
        self.step = info["step"]
        if "unreadable" in info:
            self.unreadable.load_state_dict(info["unreadable"])
        else:  # a checkpoint from before the unreadable log: its first pass is over if epoch > 0
            self.unreadable.pass_done = self.data_position.epoch > 0
        self._pass_ended = self.unreadable.pass_done
        self.nan_skipped, self.samples = info["nan_skipped"], info["samples"]
        if self.dist.is_main:
            self.metrics.truncate_after(self.step)

    # --- one step -----------------------------------------------------------------------------
    def _batches(self) -> Iterator[dict[str, Any]]:
        """Endless micro-batches, each marked ``first_pass`` when it belongs to epoch 0; the
        loader is re-made per epoch so that the epoch set on the dataset and the collator reaches
        its workers. A stream replays its epoch up to the saved offset on resume."""
        pos = self.data_position
        while True:
            epoch = pos.epoch
            if hasattr(self.dataset, "set_epoch"):
                self.dataset.set_epoch(epoch)
            self.collator.set_epoch(epoch)
            skip = pos.offset // pos.batch_size if isinstance(pos, StreamPosition) else 0
            n, readable = 0, 0
            for n, batch in enumerate(self.loader, 1):
                if n > skip:
                    pos.advance()
                    readable += batch["n"]
                    yield {**batch, "first_pass": epoch == 0}
            if epoch > 0 and n > skip and readable == 0:  # epoch 0: the unreadable log's rules
                raise DataError(
                    f"{self._data_source()}: no item of epoch {epoch} could be read (earlier "
                    "epochs had readable items: were the files changed or removed during the "
                    f"run?); {self.unreadable.count} unreadable items are listed in "
                    f"{self.unreadable.listing}"
                )
            if isinstance(pos, StreamPosition):
                if n <= skip:
                    raise DataError(
                        f"{self._data_source()}: the training stream gave fewer than "
                        f"{pos.batch_size} items (one batch{' per rank' * self.dist.distributed}) "
                        f"in epoch {pos.epoch}; lower train.batch_size or add data"
                    )
                pos.next_epoch()
            if epoch == 0:
                self._pass_ended = True

    def _next_batch(self, batches: Iterator[dict[str, Any]]) -> dict[str, Any]:
        """The next micro-batch with a readable item; every unreadable item is noted on the way.

        One process: a micro-batch of unreadable items only is passed over (a step trains on
        ``grad_accum`` micro-batches of data, never on none), and the stop rules are checked at
        once, so that a pass over nothing ends the run. Under torchrun every rank must take part
        in every step's collectives, so such a micro-batch stops the run.
        """
        while True:
            batch = next(batches)
            self._pending.note(batch)
            if batch["inputs"] is not None:
                return batch
            if self.dist.distributed:
                raise DataError(
                    f"{self._data_source()}: rank {self.dist.rank} got a micro-batch with no "
                    f"readable item ({'; '.join(str(u) for u in batch['unreadable'][:3])}); "
                    "fix or remove the damaged files"
                )
            self._account_unreadable(0)

    def _account_unreadable(self, n_samples: int) -> int:
        """Add this step's unreadable items (summed over the ranks) to the log, print the new
        ones, and stop when a rule of :mod:`mmar.training.unreadable` holds; returns the step's
        samples summed over the ranks. A collective: every rank calls it once per step."""
        pending, self._pending = self._pending, StepUnreadable()
        items = pending.items
        counts = [n_samples, pending.reads, pending.unreadable, float(self._pass_ended)]
        if self.dist.distributed:
            counts = all_reduce_sum([*counts, len(items)], self.device)
            if counts[-1]:  # some rank met unreadable items: every rank learns all of them
                items = [u for rank_items in gather_objects(items) for u in rank_items]
        n, reads, unreadable, ended = (int(c) for c in counts[:4])
        self.unreadable.add_pass(reads, unreadable, done=ended == self.dist.world_size)
        for line in self.unreadable.add(items):
            if self.dist.is_main:
                tqdm.write(line, file=sys.stderr)  # above the progress bar, not on its line
        self.unreadable.check()
        return n

    def _train_step(self, batches: Iterator[dict[str, Any]]) -> dict[str, Any]:
        tc = self.cfg.train
        autocast = torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.precision.precision == "bf16"
        )
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        sums = {"loss": 0.0, "loss_text": 0.0, "loss_diff": 0.0}
        finite, n_samples = True, 0
        for _ in range(tc.grad_accum):
            batch = self._next_batch(batches)
            inputs = batch["inputs"].to(self.device)
            # one generator per sample for everything random in the step (see batching.py)
            gens = [torch.Generator(self.device).manual_seed(s) for s in batch["seeds"]]
            tokens = None  # (B_img, N, D), encoded in fp32 outside autocast
            if inputs.images is not None or inputs.latents is not None:
                has_image = inputs.batch.has_image.tolist()
                tokens = self.processor.encode_images(
                    inputs.images,
                    inputs.latents,
                    generator=[g for g, has in zip(gens, has_image) if has],
                )
            with autocast:
                out = self.train_model(inputs.batch, tokens, generator=gens)
            n_samples += batch["n"]
            if self.dist.distributed:  # normalised by the global token counts of the batch
                loss, logged = global_mean_loss(
                    out, self.cfg.model.lambda_img, self.dist.world_size, self.device
                )
            else:
                loss, logged = (
                    out["loss"],
                    {k: float(torch.as_tensor(out[k]).detach()) for k in sums},
                )
            for k in sums:
                sums[k] += logged[k] / tc.grad_accum
            if not torch.isfinite(loss) and not self.dist.distributed:
                finite = False
                continue
            (loss / tc.grad_accum).backward()
        if self.dist.distributed:  # every rank back-propagated; a NaN anywhere is in the sums
            finite = math.isfinite(sums["loss"])
        # before the update: a run that stops here for its data does not train on this step
        n_samples = self._account_unreadable(n_samples)
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        max_norm = self.cfg.optim.grad_clip or math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm)) if finite else math.nan
        lr = self.optimizer.param_groups[0]["lr"]
        if finite and math.isfinite(grad_norm):
            self.optimizer.step()
            self.ema.update(self.model)
        else:
            self.optimizer.zero_grad(set_to_none=True)
            self.nan_skipped += 1
            finite = False
        self.lr_scheduler.step()
        self.step += 1
        self.samples += n_samples
        return {**sums, "lr": lr, "grad_norm": grad_norm, "finite": finite, "samples": n_samples}

    # --- saving -----------------------------------------------------------------------------
    def _state_info(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "data": self.data_position.state_dict(),
            "skipped": self.skipped,
            "unreadable": self.unreadable.state_dict(),
            "nan_skipped": self.nan_skipped,
            "samples": self.samples,
            "run_config": self.cfg.to_dict(),
        }

    def _full_weights(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """(save_pretrained's extra arguments, full EMA tensors); collectives on every rank.

        FSDP: the weights gathered from the shards (on rank 0), else the model's own.
        """
        weights = (
            {"state_dict": full_model_state(self.model)}
            if self.cfg.parallel.strategy == "fsdp"
            else {}
        )
        return weights, full_tensors(self.ema.shadow)

    def save_checkpoint(self) -> Path:
        """Write ``checkpoints/step_XXXXXXX`` atomically and keep the last ``keep_last``.

        Every rank gathers; rank 0 alone writes (full tensors, optimizer keyed by name). The EMA
        goes into model.safetensors only ("ema." tensors); trainer_state/ keeps its update count.
        """
        final = ckpt.checkpoint_path(self.out, self.step)
        weights, ema = self._full_weights()
        optimizer_state = full_optimizer_state(self.model, self.optimizer)
        rngs = gather_objects(ckpt.rng_state())
        if self.dist.is_main:
            with ckpt.atomic_directory(final) as tmp:
                MMAR(self.model, self.processor).save_pretrained(tmp, ema_state_dict=ema, **weights)
                ckpt.save_trainer_state(
                    tmp / ckpt.STATE_DIR,
                    self._state_info(),
                    self.optimizer,
                    self.lr_scheduler,
                    self.ema,
                    optimizer_state=optimizer_state,
                    rng_states=rngs,
                )
            ckpt.prune_checkpoints(self.out, self.cfg.train.keep_last)
        barrier()  # no rank reads or resumes from a checkpoint still being written
        return final

    def save_final(self) -> Path:
        weights, ema = self._full_weights()
        if self.dist.is_main:
            with ckpt.atomic_directory(self.out / "final") as tmp:
                MMAR(self.model, self.processor).save_pretrained(tmp, ema_state_dict=ema, **weights)
        barrier()
        return self.out / "final"

    # --- the loop -----------------------------------------------------------------------------
    def _run_callbacks(self, r: dict[str, Any], saved: Path | None, bar: Any) -> None:
        """Call every callback with this step's record; one that raises stops the run."""
        record = {
            "step": self.step,
            **{
                k: r[k]
                for k in ("loss", "loss_text", "loss_diff", "lr", "grad_norm", "finite", "samples")
            },
            "skipped": self.skipped,
            "nan_skipped": self.nan_skipped,
            "checkpoint": saved,
        }
        try:
            for callback in self.callbacks:
                callback(self, record)
        except BaseException:
            bar.close()
            raise

    def fit(self) -> dict[str, Any]:
        """Train to ``train.steps`` (or the time budget); returns a summary (also summary.json)."""
        tc = self.cfg.train
        main = self.dist.is_main  # only rank 0 writes files
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            self.cfg.to_yaml(self.out / "config.yaml")
            print(f"precision: {self.precision.reason}", file=sys.stderr)
        start, start_step, start_samples = time.perf_counter(), self.step, self.samples
        window_t, window_samples, nan_in_row, stopped = start, 0, 0, "completed"
        bar = tqdm(
            total=tc.steps,
            initial=self.step,
            desc="train",
            disable=not (tc.progress and main),
            dynamic_ncols=True,
            file=sys.stderr,
        )
        batches = self._batches()
        while self.step < tc.steps:
            try:
                r = self._train_step(batches)
            except DataError:  # the data cannot be trained on: say which items, stop
                bar.close()
                if main:
                    self.unreadable.write()
                raise
            window_samples += r["samples"]
            nan_in_row = 0 if r["finite"] else nan_in_row + 1
            bar.update(1)
            if self.step % tc.log_every == 0 or self.step == tc.steps or nan_in_row:
                now = time.perf_counter()
                sps = window_samples / max(now - window_t, 1e-9)
                window_t, window_samples = now, 0
                record = {
                    "step": self.step,
                    **{k: r[k] for k in ("loss", "loss_text", "loss_diff", "lr", "grad_norm")},
                    "samples_per_s": sps,
                    "skipped": self.skipped,
                    "nan_skipped": self.nan_skipped,
                }
                if main:
                    self.metrics.append(record)
                bar.set_postfix(
                    loss=f"{r['loss']:.4f}",
                    text=f"{r['loss_text']:.3f}",
                    diff=f"{r['loss_diff']:.3f}",
                    lr=f"{r['lr']:.2e}",
                    sps=f"{sps:.1f}",
                )
            if nan_in_row >= tc.max_nan_in_row:
                bar.close()
                latest = ckpt.latest_checkpoint(self.out)
                raise TrainingDiverged(
                    f"stopping at step {self.step}: the loss or gradient was NaN/inf in "
                    f"{nan_in_row} steps in a row (train.max_nan_in_row = {tc.max_nan_in_row}; "
                    f"{self.nan_skipped} skipped in all). Last good checkpoint: {latest}. Try a "
                    "lower optim.lr, a smaller optim.grad_clip or train.precision: fp32"
                )
            out_of_time = (
                tc.max_minutes is not None and time.perf_counter() - start > tc.max_minutes * 60
            )
            if tc.max_minutes is not None and self.dist.distributed:  # stop together
                out_of_time = all_reduce_sum([float(out_of_time)], self.device)[0] > 0
            if out_of_time:
                stopped = "time_budget"
            saved = None
            if (
                (tc.ckpt_every and self.step % tc.ckpt_every == 0)
                or out_of_time
                or self.step == tc.steps
            ):
                saved = self.save_checkpoint()
            if self.callbacks:
                self._run_callbacks(r, saved, bar)
            if out_of_time:
                break
        bar.close()
        final = self.save_final()
        if self.dist.distributed:  # the group init_distributed joined; the run is over
            # drop the DDP/FSDP wrapper first, on every rank at once: a DDP Reducer left to the
            # garbage collector after destroy() holds the last reference to the gloo group, and
            # its destructor joined the group's threads while the other rank had exited (a hang
            # seen under load)
            self.train_model = self.model
            barrier()
            destroy()
        if not main:
            return {
                "out_dir": str(self.out),
                "final": str(final),
                "step": self.step,
                "stopped": stopped,
                "rank": self.dist.rank,
            }
        plot_loss(self.metrics.read(), self.out / "loss.png")
        elapsed = time.perf_counter() - start
        summary = {
            "out_dir": str(self.out),
            "final": str(final),
            "step": self.step,
            "stopped": stopped,
            "skipped": self.skipped,
            "skipped_by_kind": self.unreadable.by_kind(),
            "nan_skipped": self.nan_skipped,
            "samples": self.samples,
            "precision": self.precision.precision,
            "precision_reason": self.precision.reason,
            "elapsed_s": elapsed,
            "steps_per_s": (self.step - start_step) / max(elapsed, 1e-9),
            "samples_per_s": (self.samples - start_samples) / max(elapsed, 1e-9),
            **{
                k: v
                for k, v in (self.metrics.read() or [{}])[-1].items()
                if k in ("loss", "loss_text", "loss_diff")
            },
        }
        with open(self.out / "summary.json", "w") as f:
            json.dump(summary, f, indent=1)
        self.unreadable.write()
        msg = f"trained to step {self.step} ({stopped}) in {elapsed:.0f}s; final model: {final}"
        if self.skipped:
            kinds = ", ".join(f"{c} {k}" for k, c in sorted(self.unreadable.by_kind().items()))
            msg += (
                f"; skipped {self.skipped} unreadable items ({kinds}; listed in "
                f"{self.unreadable.listing})"
            )
        if self.nan_skipped:
            msg += f"; skipped {self.nan_skipped} NaN/inf steps"
        print(msg, file=sys.stderr)
        return summary
