"""`mmar train-tokenizer`: train a small KL autoencoder (diffusers' ``AutoencoderKL``) on a dataset,
or with ``kind: vq`` a VQ autoencoder (diffusers' ``VQModel``, tokenizer_vq.py).

    from mmar.training.tokenizer_config import TokenizerTrainConfig
    from mmar.training.tokenizer_trainer import train_tokenizer
    summary = train_tokenizer(TokenizerTrainConfig.from_dict({...}), "runs/shapes-kl")
    # runs/shapes-kl loads as image_tokenizer: {kind: diffusers, path: runs/shapes-kl}
    # a vq run loads as image_tokenizer: {kind: diffusers_vq, path: OUT, patch_size: 1}

The loop: images from ``mmar.data.build_dataset`` (its collate; unreadable items are skipped,
named once and stop the run past ``data.max_unreadable_share``, as in `mmar train`), a
reparameterised sample of q(z|x), loss = reconstruction (L1 / L2) + a small KL term (see
:class:`~mmar.training.tokenizer_config.TokenizerTrainConfig`), AdamW. Afterwards the VAE is
saved with ``save_pretrained`` and its ``scaling_factor`` / ``shift_factor`` set to 1/std and
the mean of its (posterior-mode) latents on ``scale_images`` training images, so that the
tokenizer gives zero-mean, unit-variance latents as the diffusion head assumes; then the held-out
reconstruction error is measured through ``build_image_tokenizer``, i.e. exactly as MMAR will
load it. A VQ autoencoder is saved with scale 1 and shift 0 (its latents are codebook vectors)
and its metrics add the share of the codebook the held-out images use and the codes'
perplexity.

OUT holds ``config.json`` + ``diffusion_pytorch_model.safetensors`` (the VAE),
``train_tokenizer.yaml`` (the config: ``--config`` reruns it), ``metrics.json`` and, when some
items could not be read, ``skipped.jsonl``.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mmar import __version__
from mmar._versions import require
from mmar.config import DataError
from mmar.data import build_dataset, collate
from mmar.tokenizers import DiffusersVQTokenizer, ImageTokenizerConfig, build_image_tokenizer
from mmar.tokenizers.scale import estimate_scale
from mmar.torch_utils import resolve_device
from mmar.training.data_order import ResumableBatchSampler
from mmar.training.tokenizer_config import TokenizerTrainConfig
from mmar.training.tokenizer_vq import (
    build_vq_autoencoder,
    codebook_metrics,
    init_codebook,
    vq_loss,
)
from mmar.training.unreadable import UnreadableLog

if TYPE_CHECKING:
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL

    from mmar.tokenizers.base import ImageTokenizer

CONFIG_FILE = "train_tokenizer.yaml"
METRICS_FILE = "metrics.json"
VAE_CONFIG = "config.json"  # what save_pretrained writes, and what marks OUT as taken
MAX_NAN_IN_ROW = 10


def build_kl_autoencoder(cfg: TokenizerTrainConfig) -> AutoencoderKL:
    """A freshly initialised ``AutoencoderKL`` of ``cfg.kl``'s geometry, its weights drawn from
    ``cfg.seed`` (in a forked RNG: torch's global generator is neither read nor moved)."""
    require("diffusers")
    # heavy import, only when a tokenizer is trained; from its module: mypy types diffusers'
    # top-level name as a dummy object
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return AutoencoderKL(**cfg.kl.diffusers_kwargs(cfg.data.image_size))


def psnr(mse: float) -> float:
    """PSNR in dB of a mean squared error on [-1, 1] images (peak-to-peak 2: 10 log10(4 / mse)),
    the same as on [0, 1] images with their MSE."""
    return 10 * math.log10(4.0 / mse) if mse > 0 else math.inf


def _source(cfg: TokenizerTrainConfig) -> str:
    d = cfg.data
    return f"{d.name} data {d.path}" if d.path is not None else f"the {d.name} data"


def _is_stream(dataset: Any) -> bool:
    return isinstance(dataset, torch.utils.data.IterableDataset)


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} is a file; give a directory to write the tokenizer into")
    if (out / VAE_CONFIG).exists():
        raise FileExistsError(
            f"{out} already holds a model ({out / VAE_CONFIG}); choose another --out or remove it"
        )


class _Batches:
    """Endless training batches of images (B, 3, S, S): map-style datasets in the seeded,
    per-epoch order of ``mmar train`` (``ResumableBatchSampler``, the ragged tail dropped), a
    stream in its own order per epoch. Unreadable items go to ``log`` (named once; the run stops
    past ``data.max_unreadable_share``); a batch with no readable item is passed over."""

    def __init__(self, cfg: TokenizerTrainConfig, dataset: Any, log_dir: Path):
        self.cfg, self.dataset = cfg, dataset
        self.stream = _is_stream(dataset)
        batching: dict[str, Any]
        if self.stream:
            self.sampler = None
            batching = {"batch_size": cfg.batch_size, "drop_last": True}
            pass_total = None
        else:
            self.sampler = ResumableBatchSampler(
                len(dataset), cfg.batch_size, cfg.data.seed, source=_source(cfg)
            )
            batching = {"batch_sampler": self.sampler}
            pass_total = self.sampler.batches_per_epoch * cfg.batch_size
        self.log = UnreadableLog(cfg.data.max_unreadable_share, _source(cfg), pass_total, log_dir)
        self.loader = torch.utils.data.DataLoader(
            dataset,
            collate_fn=collate,
            num_workers=cfg.data.num_workers,
            generator=torch.Generator().manual_seed(cfg.data.seed),
            **batching,
        )
        self.epoch = 0

    def __iter__(self) -> Iterator[torch.Tensor]:
        while True:
            if hasattr(self.dataset, "set_epoch"):
                self.dataset.set_epoch(self.epoch)
            n, readable = 0, 0
            for batch in self.loader:
                n += 1
                if self.sampler is not None:
                    self.sampler.advance()
                images = batch["images"]
                good = int(images.shape[0]) if images.numel() else 0
                readable += good
                self._note(batch, good)
                if good:
                    yield images
            if n == 0:
                raise DataError(
                    f"{_source(self.cfg)}: the training data gave fewer than "
                    f"{self.cfg.batch_size} items (one batch) in epoch {self.epoch}; lower "
                    "batch_size or add data"
                )
            if self.epoch == 0:
                self.log.add_pass(0, 0, done=True)
                self.log.check()
            elif readable == 0:
                raise DataError(
                    f"{_source(self.cfg)}: no item of epoch {self.epoch} could be read (earlier "
                    "epochs had readable items: were the files changed or removed during the "
                    "run?)"
                )
            self.epoch += 1

    def _note(self, batch: dict[str, Any], good: int) -> None:
        for line in self.log.add(batch["unreadable"]):
            print(f"train-tokenizer: {line}", file=sys.stderr)
        if self.epoch == 0:
            self.log.add_pass(good + batch["skipped"], batch["skipped"], done=False)
        self.log.check()


def _images(dataset: Any, num: int, generator: torch.Generator | None) -> tuple[torch.Tensor, int]:
    """Up to ``num`` readable images (N, 3, S, S) of ``dataset`` and the count of unreadable
    items met: a random subset drawn from ``generator`` (map-style), else the first ones."""
    if _is_stream(dataset):
        indices = None
    elif generator is not None:
        indices = torch.randperm(len(dataset), generator=generator)[:num].sort().values.tolist()
    else:
        indices = list(range(min(num, len(dataset))))
    loader = torch.utils.data.DataLoader(
        dataset if indices is None else torch.utils.data.Subset(dataset, indices),
        batch_size=64,
        collate_fn=collate,
        generator=torch.Generator(),  # a loader draws a base seed: not from the global RNG
    )
    images, skipped, have = [], 0, 0
    for batch in loader:
        skipped += batch["skipped"]
        if batch["images"].numel():
            images.append(batch["images"])
            have += batch["images"].shape[0]
        if have >= num:
            break
    if not images:
        raise DataError(f"no readable image among the {skipped} items read")
    return torch.cat(images)[:num], skipped


@torch.no_grad()
def reconstruction_metrics(
    tokenizer: ImageTokenizer, images: torch.Tensor, batch_size: int
) -> dict[str, float]:
    """MSE, L1 (on [-1, 1] pixels, over every pixel), PSNR of that MSE, and the mean and std of
    the (scaled) latents, of ``images`` encoded with the posterior mode and decoded."""
    device = next(tokenizer.parameters()).device
    se, ae, count = 0.0, 0.0, 0
    latents = []
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size].to(device)
        z = tokenizer.encode(x, posterior="mode")
        y = tokenizer.decode(z)
        se += (y - x).double().pow(2).sum().item()
        ae += (y - x).double().abs().sum().item()
        count += x.numel()
        latents.append(z.double().cpu())
    z_all = torch.cat(latents)
    mse = se / count
    return {
        "mse": mse,
        "l1": ae / count,
        "psnr": psnr(mse),
        "latent_mean": z_all.mean().item(),
        "latent_std": z_all.std().item(),
    }


def _held_out(cfg: TokenizerTrainConfig) -> tuple[Any, str]:
    """The held-out split and its name; the training split (named so) when the data has none."""
    try:
        return build_dataset(cfg.data, "test"), "test"
    except (ValueError, DataError) as e:  # no held-out split (FileNotFoundError: raised)
        print(
            f"train-tokenizer: warning: no held-out split ({' '.join(str(e).split())}); the "
            "metrics are measured on training images",
            file=sys.stderr,
        )
        return build_dataset(cfg.data, "train"), "train"


def _loss(
    vae: AutoencoderKL, x: torch.Tensor, cfg: TokenizerTrainConfig, generator: torch.Generator
) -> tuple[torch.Tensor, dict[str, float]]:
    posterior = vae.encode(x).latent_dist
    z = posterior.sample(generator=generator)  # reparameterised: mean + std * eps
    y = vae.decode(z).sample
    l1 = (y - x).abs().mean()
    mse = (y - x).pow(2).mean()
    kl = posterior.kl().mean() / x[0].numel()  # KL summed over an image's latents, per pixel
    w = cfg.loss
    loss = w.l1 * l1 + w.l2 * mse + cfg.kl.kl_weight * kl
    return loss, {"loss": loss.item(), "l1": l1.item(), "mse": mse.item(), "kl": kl.item()}


def train_tokenizer(cfg: TokenizerTrainConfig, out: str | Path) -> dict[str, Any]:
    """Train the tokenizer ``cfg`` describes and save it to ``out``; returns the metrics (also in
    ``out/metrics.json``). Raises ConfigError / DataError / OSError before any step for a bad
    config, device, data or output directory, and ``TrainingDiverged`` after
    ``MAX_NAN_IN_ROW`` steps in a row with a non-finite loss."""
    cfg.validate()
    out = Path(out)
    _check_out(out)
    device = resolve_device(cfg.device, "TokenizerTrainConfig.device")
    train_set = build_dataset(cfg.data, "train")
    eval_set, eval_split = _held_out(cfg)
    batches = _Batches(cfg, train_set, out)
    vq = cfg.kind == "vq"
    vae: Any = build_vq_autoencoder(cfg) if vq else build_kl_autoencoder(cfg)
    torch.nn.Module.to(vae, device)  # in place (diffusers' own ``to`` wrapper confuses mypy)
    vae.train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, weight_decay=0.0)
    warmup = cfg.warmup_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0
    )
    generator = torch.Generator(device).manual_seed(cfg.seed)  # posterior samples; vq: codes

    history: list[dict[str, Any]] = []
    parts: dict[str, float] = {}
    step, nan_in_row, stopped = 0, 0, "steps"
    start = time.perf_counter()
    for x in batches:
        x = x.to(device)
        if vq and step == 0:
            init_codebook(vae, x, generator)
        loss, parts = vq_loss(vae, x, cfg) if vq else _loss(vae, x, cfg, generator)
        optimizer.zero_grad(set_to_none=True)
        if math.isfinite(parts["loss"]):
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(vae.parameters(), cfg.grad_clip)
            optimizer.step()
            nan_in_row = 0
        else:
            nan_in_row += 1
            if nan_in_row >= MAX_NAN_IN_ROW:
                from mmar.training.trainer import TrainingDiverged

                raise TrainingDiverged(
                    f"the loss was not finite in {nan_in_row} steps in a row (step {step + 1}); "
                    f"lower lr (now {cfg.lr:g}) or raise warmup_steps"
                )
        scheduler.step()
        step += 1
        elapsed = time.perf_counter() - start
        if step % cfg.log_every == 0 or step == 1:
            history.append({"step": step, "seconds": round(elapsed, 2), **parts})
            last = f"vq {parts['vq']:.4f}" if vq else f"kl {parts['kl']:.3f}"
            print(
                f"train-tokenizer: step {step} loss {parts['loss']:.5f} (l1 {parts['l1']:.4f} "
                f"mse {parts['mse']:.5f} {last}) {elapsed / 60:.2f} min",
                file=sys.stderr,
            )
        if cfg.steps is not None and step >= cfg.steps:
            break
        if cfg.minutes is not None and elapsed >= 60 * cfg.minutes:
            stopped = "minutes"
            break
    train_seconds = time.perf_counter() - start
    if history[-1]["step"] != step:
        history.append({"step": step, "seconds": round(train_seconds, 2), **parts})
    batches.log.write()
    vae.eval()

    # save with scale 1, measure the raw latents through the tokenizer MMAR will use, save again
    out.mkdir(parents=True, exist_ok=True)
    vae.register_to_config(scaling_factor=1.0, **({} if vq else {"shift_factor": 0.0}))
    vae.save_pretrained(str(out))
    tok_cfg = ImageTokenizerConfig(
        kind="diffusers_vq" if vq else "diffusers",
        path=str(out),
        image_size=cfg.data.image_size,
        image_channels=3,
    )
    stats = {"scale": 1.0, "mean": 0.0, "num_images": 0}  # vq: codebook vectors, unscaled
    if not vq:
        raw = build_image_tokenizer(tok_cfg.replace(scale=1.0)).to(device)
        scale_gen = torch.Generator().manual_seed(cfg.seed)
        scale_images, _ = _images(
            train_set, cfg.scale_images, None if batches.stream else scale_gen
        )
        stats = estimate_scale(raw, list(scale_images), cfg.batch_size, scale_gen)
        vae.register_to_config(scaling_factor=stats["scale"], shift_factor=stats["mean"])
        vae.save_pretrained(str(out))

    tokenizer = build_image_tokenizer(tok_cfg).to(device)
    eval_images, eval_skipped = _images(eval_set, cfg.eval_images, None)
    metrics = reconstruction_metrics(tokenizer, eval_images, cfg.batch_size)
    if isinstance(tokenizer, DiffusersVQTokenizer):
        metrics.update(codebook_metrics(tokenizer, eval_images, cfg.batch_size))
    cfg.to_yaml(out / CONFIG_FILE)
    summary: dict[str, Any] = {
        "kind": cfg.kind,
        "out": str(out),
        "steps": step,
        "stopped": stopped,
        "minutes": train_seconds / 60,
        "samples": step * cfg.batch_size,
        "device": str(device),
        "parameters": sum(p.numel() for p in vae.parameters()),
        "latent_shape": list(cfg.latent_shape),
        "stride": cfg.stride,
        "scaling_factor": stats["scale"],
        "shift_factor": stats["mean"],
        "scale_images": stats["num_images"],
        "eval": {
            "split": eval_split,
            "images": int(eval_images.shape[0]),
            "skipped": eval_skipped,
            **metrics,
        },
        "skipped": batches.log.count,
        "history": history,
        "config": cfg.to_dict(),
        "mmar_version": __version__,
    }
    (out / METRICS_FILE).write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def summary_line(summary: dict[str, Any]) -> str:
    """One line: what was trained, how long, how well, where."""
    c, h, w = summary["latent_shape"]
    ev = summary["eval"]
    split = "held-out" if ev["split"] == "test" else "training-image"
    return (
        f"{summary['kind']} tokenizer, {h}x{w}x{c} latents (stride {summary['stride']}): "
        f"{summary['steps']} steps in {summary['minutes']:.1f} min; {split} PSNR "
        f"{ev['psnr']:.2f} dB (MSE {ev['mse']:.5f} on [-1, 1], {ev['images']} images); scale "
        f"{summary['scaling_factor']:.4f} shift {summary['shift_factor']:.4f}"
        + (
            f"; codebook {ev['codes_used']:.0%} in use, perplexity {ev['code_perplexity']:.1f}"
            if "codes_used" in ev
            else ""
        )
        + f" -> {summary['out']}"
    )
