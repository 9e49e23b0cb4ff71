"""The training loop behind ``mmar train``: ``Trainer(run_cfg, out_dir, resume).fit()``.

One step = ``grad_accum`` micro-batches; each sample's kind (t2i / i2t / img) is drawn from the
run's generator, which also drives the model's masks and CFG prompt dropout. Then: NaN/inf check
(skip the update, count it, stop after ``max_nan_in_row``), gradient clipping, AdamW, the
learning-rate schedule and the EMA. Everything random is restored on ``--resume`` (optimizer,
scheduler, EMA, RNG states, data position), so an interrupted run resumed to the end ends with
the same weights as an uninterrupted one (bit-exact on CPU).
Under torchrun with ``parallel.strategy`` ddp / fsdp each rank trains on its slice of every
global batch (see :mod:`mmar.training.parallel`); rank 0 alone logs and writes.

Callbacks (``Trainer(..., callbacks=[...])``) see every step as it ends; see :data:`Callback`.

Output directory::

    OUT/config.yaml  metrics.jsonl  loss.png  summary.json
    OUT/checkpoints/step_XXXXXXX/   model.safetensors (raw + EMA weights) + trainer_state/
                                    (see mmar.training.checkpoint)
    OUT/final/                      EMA + raw weights, loadable by MMAR.from_pretrained
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from mmar.config import ConfigError
from mmar.training import checkpoint as ckpt
from mmar.training.config import RunConfig
from mmar.training.ema import EMA
from mmar.training.metrics import MetricsLog, plot_loss
from mmar.training.optim import build_optimizer, build_scheduler
from mmar.training.parallel import (ShardedBatchSampler, all_reduce_sum, barrier, destroy,
                                    full_model_state, full_optimizer_state, full_tensors,
                                    gather_objects, global_mean_loss, init_distributed,
                                    parallelize)
from mmar.training.sampler import ResumableBatchSampler, StreamPosition, draw_kinds

Callback = Callable[["Trainer", dict], None]
"""``callback(trainer, record)``, called by ``fit()`` once after every training step.

When: after the step's optimiser update (or its NaN skip), its metrics line and its checkpoint
(when one is due), so ``trainer.step`` is the step just done and a checkpoint written at it is
complete; the last step's call comes before ``final/`` is written. Not called for the steps a
resumed run restored, nor for a step at which the run stops with TrainingDiverged.
record: ``step``; the step's ``loss``, ``loss_text``, ``loss_diff`` (global means), ``lr`` (the
  one the update used), ``grad_norm`` (NaN when skipped), ``finite`` (False: NaN/inf, no
  update), ``samples`` (this step's); the run's ``skipped`` (unreadable images) and
  ``nan_skipped`` counts; ``checkpoint``: the directory written at this step, else None.
An exception raised by a callback stops the run: ``fit()`` re-raises it, no ``final/`` is written
and checkpoints already written stay (``--resume`` continues from them). Callbacks run on every
rank under torchrun (``trainer.dist.is_main`` is rank 0): one that raises on some ranks only
leaves the others waiting in the next collective. A resumed run is only bit-exact if callbacks
leave the model, optimiser and RNGs (torch's global one included) alone.
"""

# train.* fields a resumed run may change; everything else must match the checkpoint.
RESUMABLE_CHANGES = {"steps", "max_minutes", "progress", "log_every", "ckpt_every", "keep_last",
                     "max_nan_in_row", "device"}
# sections a resumed run may change: checkpoints hold full tensors keyed by name (any world size)
RESUMABLE_SECTIONS = {"parallel"}
# rank r draws kinds / masks / noise from seed + r * RANK_SEED_STRIDE (rank 0: the run's seed)
RANK_SEED_STRIDE = 1_000_003


class TrainingDiverged(RuntimeError):
    """Too many consecutive steps had a NaN/inf loss or gradient."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _config_diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(old) | set(new)):
        a, b, where = old.get(k), new.get(k), f"{prefix}{k}"
        if not prefix and k in RESUMABLE_SECTIONS:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += _config_diff(a, b, where + ".")
        elif a != b and not (prefix == "train." and k in RESUMABLE_CHANGES):
            out.append(f"{where}: {a!r} -> {b!r}")
    return out


class Trainer:
    """Train an MMAR model as ``run_cfg`` says, writing everything under ``out_dir``.

    resume: continue from the newest complete checkpoint in ``out_dir/checkpoints``.
    model: train this module instead of building ``MMAR(run_cfg.model)`` (tests; it must follow
      MMAR's forward / save_pretrained contract and have a ``text_tokenizer``).
    callbacks: called after every step, in order (progress reports, custom stopping; see
      :data:`Callback`).
    The constructor validates everything and builds the model, data and optimiser; ``fit()`` runs.
    Seeds torch's global RNG with ``train.seed`` (weight init, any dropout), as HF's set_seed does.
    """

    def __init__(self, run_cfg: RunConfig, out_dir: str | Path, resume: bool = False,
                 model: torch.nn.Module | None = None, callbacks: Sequence[Callback] = ()):
        run_cfg.validate()
        self.cfg, self.out = run_cfg, Path(out_dir)
        self.callbacks = list(callbacks)
        tc = run_cfg.train
        # under torchrun: join the process group; the device becomes cuda:LOCAL_RANK on GPU
        self.dist, self.device = init_distributed(run_cfg.parallel, resolve_device(tc.device))
        self.resume_from = self._check_out_dir(resume)
        init_from = None if self.resume_from else tc.init_from
        if init_from is not None and not (Path(init_from) / "model.safetensors").is_file():
            raise ConfigError(f"RunConfig.train.init_from: {init_from} holds no model.safetensors;"
                              " point it at a run's final/ or checkpoints/step_XXXXXXX directory")
        torch.manual_seed(tc.seed)
        # kinds, masks, CFG dropout, diffusion noise: on the training device, as the model draws
        self.generator = torch.Generator(self.device).manual_seed(
            tc.seed + RANK_SEED_STRIDE * self.dist.rank)

        from mmar.data import build_dataset, collate

        self.dataset = build_dataset(run_cfg.data, "train")
        self.stream = isinstance(self.dataset, torch.utils.data.IterableDataset)
        if self.stream:  # the shards are split over the ranks (see mmar.data.webdataset)
            self.sampler = StreamPosition(self._local_batch_size())
            batching = {"batch_size": self.sampler.batch_size, "drop_last": True}
        else:
            self.sampler = ResumableBatchSampler(len(self.dataset), tc.batch_size,
                                                 run_cfg.data.seed)
            if self.dist.distributed:
                self.sampler = ShardedBatchSampler(self.sampler, self.dist.rank,
                                                   self.dist.world_size)
            batching = {"batch_sampler": self.sampler}
        self.loader = torch.utils.data.DataLoader(
            self.dataset, collate_fn=collate, num_workers=run_cfg.data.num_workers,
            # its own generator: making a loader iterator draws a worker seed, which must not
            # come from (and shift) torch's global RNG when a resumed run re-makes it mid-epoch
            generator=torch.Generator().manual_seed(run_cfg.data.seed), **batching)
        self.model = (model or self._build_model(self.resume_from or init_from)).to(self.device)
        if init_from is not None:
            self.model.load_weights(init_from, use_ema=tc.init_weights == "ema")
        if self.resume_from is not None:  # full tensors, before any sharding
            self.model.load_weights(self.resume_from, use_ema=False)
        # self.model keeps MMAR's methods and parameter names; the step calls self.train_model
        self.train_model = parallelize(self.model, run_cfg.parallel, self.device)
        self.optimizer = build_optimizer(self.model, run_cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, run_cfg.optim, tc.steps)
        self.ema = EMA(self.model, run_cfg.optim.ema_decay)
        self.metrics = MetricsLog(self.out / "metrics.jsonl")
        self.step, self.skipped, self.nan_skipped, self.samples = 0, 0, 0, 0
        if self.resume_from is not None:
            self._load_checkpoint(self.resume_from)

    # --- set-up -----------------------------------------------------------------------------
    def _local_batch_size(self) -> int:
        batch, world = self.cfg.train.batch_size, self.dist.world_size
        if batch % world:
            raise ConfigError(f"RunConfig.train.batch_size: the global batch {batch} must be "
                              f"divisible by the world size {world}, e.g. batch_size: "
                              f"{max(world, batch // world * world)}")
        return batch // world

    def _check_out_dir(self, resume: bool) -> Path | None:
        if not resume:
            if ckpt.list_checkpoints(self.out):
                raise FileExistsError(
                    f"{self.out} already holds checkpoints: pass --resume to continue that run, "
                    "or choose another --out")
            return None
        if self.dist.is_main:
            ckpt.remove_stale_tmp(self.out)
        # checked before anything is loaded: a damaged newest checkpoint is skipped whole
        latest, problems = ckpt.latest_readable_checkpoint(self.out)
        if latest is None and problems:
            raise ckpt.CheckpointError(
                f"--resume: no readable checkpoint under {self.out}/checkpoints: "
                + "; ".join(problems) + ". Restore these files, or start a new run with another "
                "--out (train.init_from can start it from an intact final/ or checkpoint)")
        if latest is None:
            raise FileNotFoundError(
                f"--resume: no complete checkpoint under {self.out}/checkpoints; run without "
                "--resume to start a new run")
        if problems and self.dist.is_main:
            for problem in problems:
                print(f"--resume: skipping an unreadable checkpoint: {problem}", file=sys.stderr)
            print(f"--resume: resuming from {latest} instead", file=sys.stderr)
        return latest

    def _build_model(self, source: Path | str | None) -> torch.nn.Module:
        """A fresh MMAR; its text tokenizer and LLM config are those saved in ``source`` (resume /
        init_from), else built from the config and the training captions ("words" needs them)."""
        from transformers import AutoConfig

        from mmar.data import corpus
        from mmar.model.mmar import BACKBONE_DIR, MMAR
        from mmar.tokenizers import build_text_tokenizer
        from mmar.tokenizers.text import build_pretrained_tokenizer

        source = Path(source) if source is not None else None
        if source is not None and (source / "tokenizer").is_dir():
            tok = build_pretrained_tokenizer(source / "tokenizer")
        else:
            tok = build_text_tokenizer(self.cfg.model.text_tokenizer, corpus(self.cfg.data))
        backbone_config = None  # the saved LLM config: no need to read the original weights
        if source is not None and (source / BACKBONE_DIR).is_dir():
            backbone_config = AutoConfig.from_pretrained(str(source / BACKBONE_DIR))
        return MMAR(self.cfg.model, text_tokenizer=tok, backbone_config=backbone_config)

    def _load_checkpoint(self, path: Path) -> None:
        """The trainer state of ``path`` (its weights were loaded before parallelize)."""
        info = ckpt.load_trainer_state(path / ckpt.STATE_DIR, self.optimizer, self.scheduler,
                                       self.ema, self.generator, model=self.model,
                                       rank=self.dist.rank)
        diff = _config_diff(info["run_config"], self.cfg.to_dict())
        if diff:
            raise ConfigError(
                f"--resume: {path} was trained with another config ({'; '.join(diff[:6])}); "
                "resume with the run's own config (OUT/config.yaml) or start a new --out")
        self.sampler.load_state_dict(info["data"])
        # train.steps may have changed: the next update's lr comes from this run's schedule
        for group, base, factor in zip(self.optimizer.param_groups, self.scheduler.base_lrs,
                                       self.scheduler.lr_lambdas):
            group["lr"] = base * factor(self.scheduler.last_epoch)
        self.step, self.skipped = info["step"], info["skipped"]
        self.nan_skipped, self.samples = info["nan_skipped"], info["samples"]
        if self.dist.is_main:
            self.metrics.truncate_after(self.step)

    # --- one step -----------------------------------------------------------------------------
    def _batches(self):
        """Endless micro-batches; the loader is re-made per epoch so dataset.set_epoch reaches
        its workers. A stream replays its epoch up to the saved offset on resume."""
        while True:
            if hasattr(self.dataset, "set_epoch"):
                self.dataset.set_epoch(self.sampler.epoch)
            skip = self.sampler.offset // self.sampler.batch_size if self.stream else 0
            n = 0
            for n, batch in enumerate(self.loader, 1):
                if n > skip:
                    self.sampler.advance()
                    yield batch
            if self.stream:
                if n <= skip:
                    raise RuntimeError(f"the training stream {self.cfg.data.path} gave no "
                                       f"batch of {self.sampler.batch_size} in epoch "
                                       f"{self.sampler.epoch}; lower train.batch_size")
                self.sampler.next_epoch()

    def _train_step(self, batches) -> dict:
        tc = self.cfg.train
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16,
                                  enabled=tc.precision == "bf16")
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        sums = {"loss": 0.0, "loss_text": 0.0, "loss_diff": 0.0}
        finite, n_samples, step_skipped = True, 0, 0
        for _ in range(tc.grad_accum):
            batch = next(batches)
            step_skipped += int(batch["skipped"])
            n = len(batch["texts"])
            if n == 0:  # every image of the batch was unreadable
                if self.dist.distributed:  # the other ranks wait in this step's collectives
                    raise RuntimeError(f"rank {self.dist.rank}: every image of a micro-batch was "
                                       "unreadable; fix or remove the damaged files")
                continue
            kinds = draw_kinds(n, self.cfg.train.kinds.to_dict(), self.generator)
            images = batch.get("images")
            latents = batch.get("latents")
            with autocast:
                out = self.train_model(
                    images=None if images is None else images.to(self.device),
                    texts=batch["texts"], kinds=kinds, generator=self.generator,
                    latents=None if latents is None else latents.to(self.device))
            n_samples += n
            if self.dist.distributed:  # normalised by the global token counts of the batch
                loss, logged = global_mean_loss(out, self.cfg.model.lambda_img,
                                                self.dist.world_size, self.device)
            else:
                loss, logged = out["loss"], {k: float(torch.as_tensor(out[k]).detach())
                                             for k in sums}
            for k in sums:
                sums[k] += logged[k] / tc.grad_accum
            if not torch.isfinite(loss) and not self.dist.distributed:
                finite = False
                continue
            (loss / tc.grad_accum).backward()
        if self.dist.distributed:  # every rank back-propagated; a NaN anywhere is in the sums
            finite = math.isfinite(sums["loss"])
            n_samples, step_skipped = map(int, all_reduce_sum([n_samples, step_skipped],
                                                              self.device))
        self.skipped += step_skipped
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
        self.scheduler.step()
        self.step += 1
        self.samples += n_samples
        return {**sums, "lr": lr, "grad_norm": grad_norm, "finite": finite, "samples": n_samples}

    # --- saving -----------------------------------------------------------------------------
    def _state_info(self) -> dict:
        return {"step": self.step, "data": self.sampler.state_dict(), "skipped": self.skipped,
                "nan_skipped": self.nan_skipped, "samples": self.samples,
                "run_config": self.cfg.to_dict()}

    def _full_weights(self) -> tuple[dict, dict]:
        """(save_pretrained's extra arguments, full EMA tensors); collectives on every rank.

        FSDP: the weights gathered from the shards (on rank 0), else the model's own.
        """
        weights = {"state_dict": full_model_state(self.model)} \
            if self.cfg.parallel.strategy == "fsdp" else {}
        return weights, full_tensors(self.ema.shadow)

    def save_checkpoint(self) -> Path:
        """Write ``checkpoints/step_XXXXXXX`` atomically and keep the last ``keep_last``.

        Every rank gathers; rank 0 alone writes (full tensors, optimizer keyed by name). The EMA
        goes into model.safetensors only ("ema." tensors); trainer_state/ keeps its update count.
        """
        final = ckpt.checkpoint_path(self.out, self.step)
        weights, ema = self._full_weights()
        optimizer_state = full_optimizer_state(self.model, self.optimizer)
        rngs = gather_objects(ckpt.rng_state(self.generator))
        if self.dist.is_main:
            with ckpt.atomic_directory(final) as tmp:
                self.model.save_pretrained(tmp, ema_state_dict=ema, **weights)
                ckpt.save_trainer_state(tmp / ckpt.STATE_DIR, self._state_info(), self.optimizer,
                                        self.scheduler, self.ema, self.generator,
                                        optimizer_state=optimizer_state, rng_states=rngs)
            ckpt.prune_checkpoints(self.out, self.cfg.train.keep_last)
        barrier()  # no rank reads or resumes from a checkpoint still being written
        return final

    def save_final(self) -> Path:
        weights, ema = self._full_weights()
        if self.dist.is_main:
            with ckpt.atomic_directory(self.out / "final") as tmp:
                self.model.save_pretrained(tmp, ema_state_dict=ema, **weights)
        barrier()
        return self.out / "final"

    # --- the loop -----------------------------------------------------------------------------
    def _run_callbacks(self, r: dict, saved: Path | None, bar) -> None:
        """Call every callback with this step's record; one that raises stops the run."""
        record = {"step": self.step, **{k: r[k] for k in ("loss", "loss_text", "loss_diff", "lr",
                  "grad_norm", "finite", "samples")},
                  "skipped": self.skipped, "nan_skipped": self.nan_skipped, "checkpoint": saved}
        try:
            for callback in self.callbacks:
                callback(self, record)
        except BaseException:
            bar.close()
            raise

    def fit(self) -> dict:
        """Train to ``train.steps`` (or the time budget); returns a summary (also summary.json)."""
        tc = self.cfg.train
        main = self.dist.is_main  # only rank 0 writes files
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            self.cfg.to_yaml(self.out / "config.yaml")
        start, start_step, start_samples = time.perf_counter(), self.step, self.samples
        window_t, window_samples, nan_in_row, stopped = start, 0, 0, "completed"
        bar = tqdm(total=tc.steps, initial=self.step, desc="train",
                   disable=not (tc.progress and main),
                   dynamic_ncols=True, file=sys.stderr)
        batches = self._batches()
        while self.step < tc.steps:
            r = self._train_step(batches)
            window_samples += r["samples"]
            nan_in_row = 0 if r["finite"] else nan_in_row + 1
            bar.update(1)
            if self.step % tc.log_every == 0 or self.step == tc.steps or nan_in_row:
                now = time.perf_counter()
                sps = window_samples / max(now - window_t, 1e-9)
                window_t, window_samples = now, 0
                record = {"step": self.step, **{k: r[k] for k in ("loss", "loss_text",
                          "loss_diff", "lr", "grad_norm")}, "samples_per_s": sps,
                          "skipped": self.skipped, "nan_skipped": self.nan_skipped}
                if main:
                    self.metrics.append(record)
                bar.set_postfix(loss=f"{r['loss']:.4f}", text=f"{r['loss_text']:.3f}",
                                diff=f"{r['loss_diff']:.3f}", lr=f"{r['lr']:.2e}",
                                sps=f"{sps:.1f}")
            if nan_in_row >= tc.max_nan_in_row:
                bar.close()
                latest = ckpt.latest_checkpoint(self.out)
                raise TrainingDiverged(
                    f"stopping at step {self.step}: the loss or gradient was NaN/inf in "
                    f"{nan_in_row} steps in a row (train.max_nan_in_row = {tc.max_nan_in_row}; "
                    f"{self.nan_skipped} skipped in all). Last good checkpoint: {latest}. Try a "
                    "lower optim.lr, a smaller optim.grad_clip or train.precision: fp32")
            out_of_time = (tc.max_minutes is not None
                           and time.perf_counter() - start > tc.max_minutes * 60)
            if tc.max_minutes is not None and self.dist.distributed:  # stop together
                out_of_time = all_reduce_sum([float(out_of_time)], self.device)[0] > 0
            if out_of_time:
                stopped = "time_budget"
            saved = None
            if (tc.ckpt_every and self.step % tc.ckpt_every == 0) or out_of_time \
                    or self.step == tc.steps:
                saved = self.save_checkpoint()
            if self.callbacks:
                self._run_callbacks(r, saved, bar)
            if out_of_time:
                break
        bar.close()
        final = self.save_final()
        if self.dist.distributed:  # the group init_distributed joined; the run is over
            destroy()
        if not main:
            return {"out_dir": str(self.out), "final": str(final), "step": self.step,
                    "stopped": stopped, "rank": self.dist.rank}
        plot_loss(self.metrics.read(), self.out / "loss.png")
        elapsed = time.perf_counter() - start
        summary = {"out_dir": str(self.out), "final": str(final), "step": self.step,
                   "stopped": stopped, "skipped": self.skipped, "nan_skipped": self.nan_skipped,
                   "samples": self.samples, "elapsed_s": elapsed,
                   "steps_per_s": (self.step - start_step) / max(elapsed, 1e-9),
                   "samples_per_s": (self.samples - start_samples) / max(elapsed, 1e-9),
                   **{k: v for k, v in (self.metrics.read() or [{}])[-1].items()
                      if k in ("loss", "loss_text", "loss_diff")}}
        with open(self.out / "summary.json", "w") as f:
            json.dump(summary, f, indent=1)
        msg = f"trained to step {self.step} ({stopped}) in {elapsed:.0f}s; final model: {final}"
        if self.skipped:
            msg += f"; skipped {self.skipped} unreadable images"
        if self.nan_skipped:
            msg += f"; skipped {self.nan_skipped} NaN/inf steps"
        print(msg, file=sys.stderr)
        return summary
