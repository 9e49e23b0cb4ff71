"""mmar vs MAR's official code (LTH14/mar): whole-model sampling speed at equal judged quality.

Both systems are trained here, in this one process, for the same wall time on MNIST-5k with pixel
tokens, then sampled row by row (one row = one system at one sampling setting) in interleaved
rounds, and every generated digit is judged by mmar's judge CNN (the classifier of `mmar eval`;
T2I accuracy = the judged digit is the prompted one). Per row: images/s (median of the rounds)
and accuracy on the same images; per mmar row: the speed-up over MAR at equal (or better) MAR
accuracy. Writes JSON with --json.

Setup, once (MAR's code is never copied here: it is imported from your checkout, unchanged):

    git clone https://github.com/LTH14/mar /path/to/mar
    pip install --no-deps --target /path/to/mar-deps timm==0.9.12   # MAR's pinned timm

Run (from the repository root; about 12-13 minutes on a quiet 2-core CPU with the defaults:
2 x 4 minutes of training, ~3 of sampling, MAR's 1000-step row the most of it):

    PYTHONPATH=src OMP_NUM_THREADS=2 python benchmarks/vs_mar.py --mar-repo /path/to/mar \\
        --mar-deps /path/to/mar-deps --threads 2 --json vs_mar.json

How MAR's code runs here, unchanged:
- models/mar.py imports timm's ViT ``Block``; timm (0.9.12, MAR's pin) imports torchvision when
  it is imported, and torchvision cannot be installed beside this environment's transformers. When
  torchvision is not importable, the import of MAR's modules (and only that) runs with a
  stand-in ``torchvision`` on ``sys.meta_path``: every name timm imports from it is a
  placeholder class that raises when called or instantiated. timm only *binds* those names at
  import (FrozenBatchNorm2d, transforms, datasets, feature extraction); MAR's model uses timm's
  ``Block`` (attention + MLP in plain torch), which touches none of them, so a placeholder can
  only fail loudly, never change a result. The stand-in is removed from ``sys.modules`` and
  ``sys.meta_path`` right after the import, and the names timm took are recorded in the JSON.
  Where a real torchvision imports, it is used and no stand-in is made.
- MAR's code puts its new tensors on the GPU with ``.cuda()`` (orders, masks, noise). On another
  device, calls into MAR's code run with ``torch.Tensor.cuda`` sending the tensor to that device
  instead: a device move, no arithmetic. Nothing else of MAR's is patched.

The two models (about equal parameters; the same tokens):
- mmar: the quickstart model (presets quickstart_stage1/2: 32 x 32 grey pixels, p = 8 -> 16
  tokens of dim 64, a 4-layer Qwen2 of width 128 + a 2-block EmbeddingViT, a 3 x 256
  v-prediction head), trained as `mmar quickstart` trains it: steps calibrated to the budget,
  stage 1 (mask ratio [0.7, 1]) then stage 2 ([0, 1]). Its budget also trains captioning (45% of
  its samples are image-to-text), MAR's all goes to generation.
- MAR: ``models.mar.MAR`` at the same geometry (img_size 32, vae_stride 1, patch_size 8,
  vae_embed_dim 1: the same 16 pixel tokens of dim 64, no VAE), width 128, 3 encoder + 3 decoder
  blocks (6 transformer layers, as mmar's 4 + 2), the same 3 x 256 head (MAR's eps-prediction
  with learned variance), class-conditional on the 10 digits, buffer of 8 class tokens, MAR's
  mask ratio [0.7, 1] and dropouts. Its loss is its own ``forward``. The loop is engine_mar.py's
  (AdamW betas (0.9, 0.95), weight decay 0.02 by MAR's ``util.misc.add_weight_decay``, grad clip
  3.0, EMA of the weights) with two changes for a minutes-long run, both meant in MAR's favour:
  mmar's learning rate (1e-3, warm-up, cosine to 5e-5 over the wall budget, not MAR's 2.5e-5 of
  a 400-epoch ImageNet run) and mmar's EMA warm-up (a fixed 0.9999 from the initial weights
  samples noise after minutes). It trains for exactly mmar's measured training wall time, in
  the precision mmar's ``precision: auto`` picks here (bf16 autocast only where measured faster).

Sampling, both at K = 16 iterations and guidance 3 with the linear ramp, fp32, the same batch:
mmar at its recommended setting (DDPM 50 steps, T = 0.8) and with fewer steps; MAR's own
``sample_tokens`` at several respaced step counts (its eps-prediction sampler samples noise at
50 on this task and needs many more steps: docs/performance.md).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import nn

MAR_MODULES = ("models", "diffusion", "util")  # MAR's top-level packages


def log(msg: str) -> None:
    print(f"[vs_mar {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- importing MAR's code --------------------------------------------------------------------
class _StandIn(type):
    """Metaclass of the placeholders: attribute access gives further placeholders (timm reads
    e.g. ``InterpolationMode.BILINEAR`` at import); calling one raises."""

    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _placeholder(f"{cls.__qualname__}.{name}")

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(
            f"{cls.__qualname__} is a stand-in (benchmarks/vs_mar.py): torchvision is not "
            "installed, and MAR's model code was not expected to use it"
        )


def _placeholder(qualname: str) -> type:
    module, _, name = qualname.rpartition(".")
    return _StandIn(name, (), {"__qualname__": qualname, "__module__": module})


class TorchvisionStandIn(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``torchvision`` and its submodules as empty packages whose every attribute is a
    placeholder; ``touched`` lists the modules and names that were imported from it."""

    def __init__(self) -> None:
        self.touched: list[str] = []  # "torchvision.ops.misc.FrozenBatchNorm2d", ...

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name == "torchvision" or name.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None  # the default module object

    def exec_module(self, module: ModuleType) -> None:
        module.__path__ = []
        name = module.__name__

        def getattr_(attr: str) -> Any:
            if attr.startswith("__"):
                raise AttributeError(attr)
            self.touched.append(f"{name}.{attr}")
            return _placeholder(f"{name}.{attr}")

        module.__getattr__ = getattr_  # type: ignore[method-assign]


@contextlib.contextmanager
def torchvision_stand_in() -> Iterator[TorchvisionStandIn | None]:
    """Within the block, ``import torchvision...`` gives the stand-in if no real torchvision is
    installed (yields None where one is: then nothing is changed). On exit the stand-in leaves
    ``sys.meta_path`` and ``sys.modules``; modules imported meanwhile keep the names they bound."""
    if importlib.util.find_spec("torchvision") is not None:
        yield None
        return
    finder = TorchvisionStandIn()
    sys.meta_path.append(finder)
    try:
        yield finder
    finally:
        sys.meta_path.remove(finder)
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]


@dataclass
class MarCode:
    """MAR's modules, imported from the user's checkout."""

    mar: ModuleType  # models/mar.py
    create_diffusion: Callable[..., Any]  # diffusion/__init__.py
    misc: ModuleType  # util/misc.py (add_weight_decay)
    repo: Path
    torchvision: str  # what MAR's import used for torchvision


def import_mar(repo: Path, deps: Path | None) -> MarCode:
    """Import MAR's models/mar.py, diffusion/ and util/misc.py from ``repo``, unchanged."""
    repo = repo.resolve()
    if not (repo / "models" / "mar.py").is_file():
        raise SystemExit(
            f"--mar-repo {repo}: no models/mar.py there; point it at a checkout of "
            "https://github.com/LTH14/mar"
        )
    clash = [m for m in MAR_MODULES if m in sys.modules]
    if clash:
        raise SystemExit(f"modules {clash} are already imported; MAR's would clash with them")
    if deps is not None:
        sys.path.insert(0, str(deps.resolve()))
    sys.path.insert(0, str(repo))
    if importlib.util.find_spec("timm") is None:
        raise SystemExit(
            "MAR's models/mar.py needs timm: pip install --no-deps --target DIR timm==0.9.12 "
            "and pass --mar-deps DIR (see this script's docstring)"
        )
    with torchvision_stand_in() as finder:
        import diffusion  # MAR's diffusion/ (create_diffusion)
        import models.mar as mar
        import util.misc as misc
    for mod in (mar, diffusion, misc):
        if not Path(mod.__file__ or "").resolve().is_relative_to(repo):
            raise SystemExit(f"{mod.__name__} was imported from {mod.__file__}, not from {repo}")
    if finder is None:
        import torchvision

        tv = f"torchvision {torchvision.__version__}"
    else:
        tv = "stand-in (not installed); names timm bound: " + ", ".join(sorted(set(finder.touched)))
    return MarCode(mar, diffusion.create_diffusion, misc, repo, tv)


@contextlib.contextmanager
def cuda_calls_to(device: torch.device) -> Iterator[None]:
    """Run MAR's code on ``device``: its ``tensor.cuda()`` calls move the tensor there instead
    (nothing changes on a CUDA device)."""
    if device.type == "cuda":
        yield
        return
    original = torch.Tensor.cuda

    def to_device(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.to(device)

    torch.Tensor.cuda = to_device  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.Tensor.cuda = original  # type: ignore[method-assign]


def git_commit(repo: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True
        )
    except OSError:
        return None
    return out.stdout.strip() or None


# --- pure helpers (tested in tests/test_benchmark_vs_mar.py) ---------------------------------
@dataclass(frozen=True)
class RowSpec:
    """One sampling setting: ``scheduler`` (mmar: ddpm/ddim; MAR: its DDPM sampler), respaced
    ``steps`` and ``temperature`` (None: the system's default)."""

    system: str
    scheduler: str
    steps: int
    temperature: float | None
    steps_final: int | None = None  # mmar's diffusion-step annealing (num_steps_final)

    @property
    def name(self) -> str:
        t = "" if self.temperature is None else f" T={self.temperature:g}"
        final = "" if self.steps_final is None else f">{self.steps_final}"
        return f"{self.system} {self.scheduler} {self.steps}{final}{t}"


def parse_rows(system: str, text: str) -> list[RowSpec]:
    """``"ddpm:50:0.8,ddim:10,dpm++2m:10,ddpm:50>10"`` (mmar) or ``"50,1000:0.8"`` (MAR) -> rows.

    mmar: ``scheduler:steps[:temperature]``, scheduler ddpm | ddim | dpm++2m, steps ``S`` or
    ``S>F`` (annealed from S at the first masked-AR iteration to F at the last); MAR:
    ``steps[:temperature]`` (its sampler is DDPM).
    """
    rows = []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        parts = item.split(":")
        if system == "mar":
            parts = ["ddpm", *parts]
        schedulers = ("ddpm", "ddim", "dpm++2m") if system == "mmar" else ("ddpm",)
        annealed = system == "mmar" and ">" in parts[1] if len(parts) > 1 else False
        if len(parts) not in (2, 3) or parts[0] not in schedulers:
            form = "scheduler:steps[:temperature]" if system == "mmar" else "steps[:temperature]"
            raise ValueError(f"--{system}-rows: bad row {item!r}; expected {form}")
        first, _, last = parts[1].partition(">") if annealed else (parts[1], "", "")
        if not (first.isdigit() and (not last or last.isdigit())):
            raise ValueError(
                f"--{system}-rows: steps must be an integer (mmar: or S>F) in {item!r}"
            )
        steps, final = int(first), int(last) if last else None
        if steps < 1 or (final is not None and not 1 <= final <= steps):
            raise ValueError(f"--{system}-rows: steps must be >= 1 (S>F: 1 <= F <= S) in {item!r}")
        temp = float(parts[2]) if len(parts) == 3 else None
        rows.append(RowSpec(system, parts[0], steps, temp, final))
    if not rows:
        raise ValueError(f"--{system}-rows: no rows")
    return rows


def resolve_temperature(row: RowSpec, mmar_default: float) -> RowSpec:
    """The temperature a row samples at: given, else mmar's recommended one (DDPM), none for
    mmar's DDIM (eta = 0) and DPM-Solver++ (no noise injected), MAR's default 1.0 for MAR."""
    if row.system == "mmar" and row.scheduler in ("ddim", "dpm++2m"):  # inject no noise
        return replace(row, temperature=None)
    if row.temperature is not None:
        return row
    return replace(row, temperature=mmar_default if row.system == "mmar" else 1.0)


def round_robin_prompts(n_per_class: int, rounds: int) -> list[list[int]]:
    """Split the 10 x n_per_class generations into ``rounds`` chunks of indices into
    ``digit_prompts(n_per_class)`` (digit-major), each chunk covering the digits in turn."""
    order = [d * n_per_class + k for k in range(n_per_class) for d in range(10)]
    return [c.tolist() for c in np.array_split(np.array(order), rounds) if len(c)]


def time_lr(
    update: int, elapsed: float, budget: float, warm: tuple[int, float], lr: float, min_lr: float
) -> float:
    """Learning rate of update ``update`` (1-based) of a run with a wall budget: linear warm-up
    over the first ``warm = (W updates, t_w seconds)`` (whichever ends first), then cosine from
    ``lr`` to ``min_lr`` over the rest of the budget (``elapsed`` seconds so far)."""
    w_updates, w_seconds = warm
    if update <= w_updates and elapsed < w_seconds:
        return lr * update / w_updates
    start = min(w_seconds, elapsed)
    progress = min(1.0, max(0.0, (elapsed - start) / max(budget - start, 1e-9)))
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def compare(rows: list[dict[str, Any]], z: float = 2.0) -> list[dict[str, Any]]:
    """Each mmar row against MAR: the MAR row that reaches the mmar row's quality fastest.

    rows: {"system", "name", "accuracy", "accuracy_se", "images_per_s"}. For mmar row m, the
    reference is the fastest MAR row r with acc_r >= acc_m - z * se (se = sqrt(se_m^2 + se_r^2),
    the standard error of the difference), i.e. at least as accurate within the noise; where no
    MAR row is, MAR's most accurate row (then mmar is the more accurate). ``equal_quality`` says
    whether m is also at least as accurate as that reference within the noise (acc_m >= acc_r -
    z * se): a speed-up counts as one "at equal quality" only then. A fast mmar row compared with
    a much more accurate MAR row (MAR's 1000-step row against a near-chance mmar) is listed with
    ``equal_quality: false``, not as a speed-up.
    """
    mar_rows = [r for r in rows if r["system"] == "mar"]

    def se(a: dict[str, Any], b: dict[str, Any]) -> float:
        return math.hypot(a["accuracy_se"], b["accuracy_se"])

    out = []
    for m in (r for r in rows if r["system"] == "mmar"):
        as_good = [r for r in mar_rows if r["accuracy"] >= m["accuracy"] - z * se(m, r)]
        if as_good:
            ref = max(as_good, key=lambda r: r["images_per_s"])
            basis = "fastest MAR row at least as accurate (within the noise)"
        else:
            ref = max(mar_rows, key=lambda r: (r["accuracy"], r["images_per_s"]))
            basis = "no MAR row as accurate: MAR's most accurate row"
        out.append(
            {
                "mmar_row": m["name"],
                "mar_row": ref["name"],
                "mmar_accuracy": m["accuracy"],
                "mar_accuracy": ref["accuracy"],
                "mmar_images_per_s": m["images_per_s"],
                "mar_images_per_s": ref["images_per_s"],
                "speedup": m["images_per_s"] / ref["images_per_s"],
                "equal_quality": m["accuracy"] >= ref["accuracy"] - z * se(m, ref),
                "basis": basis,
            }
        )
    return out


def headline(ratios: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The largest speed-up among the comparisons made at equal quality, or None."""
    fair = [c for c in ratios if c["equal_quality"]]
    return max(fair, key=lambda c: c["speedup"]) if fair else None


# --- training ---------------------------------------------------------------------------------
def mmar_configs(seed: int, device: torch.device, overrides: list[str]) -> tuple[Any, Any]:
    """The quickstart's two stage configs (presets quickstart_stage1/2), no periodic checkpoints."""
    from mmar.training.config import load_preset

    common = [
        f"train.seed={seed}",
        f"train.device={device}",
        "train.ckpt_every=0",
        "train.progress=false",
        *overrides,
    ]
    return load_preset("quickstart_stage1", common), common


def train_mmar(
    budget_s: float, seed: int, device: torch.device, work: Path, overrides: list[str]
) -> tuple[Any, dict[str, Any]]:
    """Train mmar as `mmar quickstart` does, steps calibrated to ``budget_s`` -> (MMAR, info)."""
    from mmar.pipelines.mmar import MMAR
    from mmar.training.two_stage import calibrate_steps, stage_steps, train_two_stages

    stage1, common = mmar_configs(seed, device, overrides)
    total, sec_per_step = calibrate_steps(stage1, budget_s)
    steps1, steps2 = stage_steps(total)
    log(f"mmar: calibration {sec_per_step * 1000:.0f} ms/step -> {steps1} + {steps2} steps")

    t0 = time.perf_counter()
    s1, s2 = train_two_stages(stage1, common, work, total, deadline=t0 + budget_s)
    seconds = time.perf_counter() - t0
    model = MMAR.from_pretrained(s2["final"], device=device)  # EMA weights
    info = {
        "seconds": seconds,
        "steps": [s1["step"], s2["step"]],
        "batch_size": stage1.train.batch_size,
        "samples_per_s": (s1["samples"] + s2["samples"]) / seconds,
        "precision": s1.get("precision"),
        "precision_reason": s1.get("precision_reason"),
        "calibration_ms_per_step": sec_per_step * 1000,
        "parameters": sum(p.numel() for p in model.model.parameters()),
        "final_loss_diff": s2.get("loss_diff"),
    }
    return model, info


def build_mar(code: MarCode, cfg: Any, args: argparse.Namespace) -> nn.Module:
    """MAR at mmar's geometry: the same pixel tokens, head, diffusion_batch_mul, width."""
    tok, diff, bb = cfg.model.image_tokenizer, cfg.model.diffusion, cfg.model.backbone
    enc, dec = args.mar_depth
    return code.mar.MAR(
        img_size=tok.image_size,
        vae_stride=1,  # pixels: the "latent" is the image
        patch_size=tok.patch_size,
        vae_embed_dim=tok.image_channels,
        encoder_embed_dim=bb.hidden_size,
        encoder_depth=enc,
        encoder_num_heads=bb.num_heads,
        decoder_embed_dim=bb.hidden_size,
        decoder_depth=dec,
        decoder_num_heads=bb.num_heads,
        mlp_ratio=4.0,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),  # as mar_base / mar_large / mar_huge
        class_num=10,
        buffer_size=args.mar_buffer,
        diffloss_d=diff.head_depth,
        diffloss_w=diff.head_width,
        num_sampling_steps="50",  # replaced per row (DiffLoss.gen_diffusion)
        diffusion_batch_mul=diff.diffusion_batch_mul,
        mask_ratio_min=0.7,  # MAR's default (mmar's stage 1)
        label_drop_prob=0.1,
    )


def digit_batches(cfg: Any, seed: int, device: torch.device) -> Iterator[tuple[torch.Tensor, ...]]:
    """MNIST-5k's train split as mmar trains on it (same split, 32 px, shifts), shuffled per
    epoch: (images (B, 1, 32, 32) in [-1, 1], labels (B,))."""
    from mmar.data import build_dataset

    ds = build_dataset(cfg.data, "train")  # now, not at the first batch (inside the budget)
    b = cfg.train.batch_size

    def batches() -> Iterator[tuple[torch.Tensor, ...]]:
        epoch = 0
        while True:
            ds.set_epoch(epoch)
            g = torch.Generator().manual_seed(seed * 100_003 + epoch)
            for idx in torch.randperm(len(ds), generator=g).split(b):
                if len(idx) < b:
                    break
                items = [ds[i] for i in idx.tolist()]
                x = torch.stack([it["image"] for it in items]).to(device)
                y = torch.tensor([it["label"] for it in items], device=device)
                yield x, y
            epoch += 1

    return batches()


def train_mar(
    code: MarCode,
    model: nn.Module,
    cfg: Any,
    budget_s: float,
    seed: int,
    device: torch.device,
    precision: str,
    lr: float,
) -> dict[str, Any]:
    """engine_mar.train_one_epoch's step on MAR's forward (its loss), for ``budget_s`` seconds of
    wall time; ends with the EMA weights loaded into ``model``."""
    from mmar.training.ema import EMA

    opt_cfg = cfg.optim
    model.train()
    optimizer = torch.optim.AdamW(
        code.misc.add_weight_decay(model, opt_cfg.weight_decay), lr=lr, betas=(0.9, 0.95)
    )
    ema = EMA(model, opt_cfg.ema_decay)
    data = digit_batches(cfg, seed, device)
    autocast = partial(
        torch.autocast, device.type, dtype=torch.bfloat16, enabled=precision == "bf16"
    )
    losses: list[float] = []
    step, skipped = 0, 0
    warm = (opt_cfg.warmup_steps, 0.1 * budget_s)
    t0 = time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < budget_s:
        for group in optimizer.param_groups:
            group["lr"] = time_lr(step + 1, elapsed, budget_s, warm, lr, opt_cfg.min_lr)
        x, y = next(data)
        with cuda_calls_to(device), autocast():
            loss = model(x, y)
        if not math.isfinite(loss.item()):  # engine_mar stops; we skip the update and count it
            skipped += 1
            continue
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), opt_cfg.grad_clip)
        optimizer.step()
        ema.update(model)
        losses.append(loss.item())
        step += 1
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(ema.shadow[name])
    model.eval()
    return {
        "seconds": seconds,
        "steps": step,
        "skipped_nonfinite": skipped,
        "batch_size": cfg.train.batch_size,
        "samples_per_s": step * cfg.train.batch_size / seconds,
        "precision": precision,
        "lr": lr,
        "parameters": sum(p.numel() for p in model.parameters()),
        "final_loss_last50": statistics.fmean(losses[-50:]) if losses else None,
    }


# --- sampling ---------------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sample_rows(
    rows: list[RowSpec],
    mmar_model: Any,
    mar_model: nn.Module,
    code: MarCode,
    args: argparse.Namespace,
    device: torch.device,
) -> tuple[dict[RowSpec, list[float]], dict[RowSpec, torch.Tensor], list[int], dict[str, Any]]:
    """Every row on the same prompts, in ``args.rounds`` interleaved rounds of one batch each
    -> (images/s per round, images (n, 1, H, W) in [-1, 1], their digits, the settings)."""
    from mmar.evaluation import metrics

    prompts, labels = metrics.digit_prompts(args.n_per_class)
    chunks = round_robin_prompts(args.n_per_class, args.rounds)
    base = mmar_model.sampling.replace(guidance_scale=args.guidance, batch_size=len(chunks[0]))
    diffusions = {n: code.create_diffusion(str(n), "cosine") for n in {2, *(r.steps for r in rows)}}

    def run_mmar(row: RowSpec, idx: list[int], seed: int) -> torch.Tensor:
        s = base.replace(
            scheduler=row.scheduler, num_steps=row.steps, num_steps_final=row.steps_final
        )
        s = s.replace(temperature=1.0 if row.temperature is None else row.temperature)
        tokens = mmar_model.generate_tokens([prompts[i] for i in idx], s, seed=seed)
        return mmar_model.processor.decode_tokens(tokens)

    def run_mar(row: RowSpec, idx: list[int], seed: int) -> torch.Tensor:
        torch.manual_seed(seed)  # MAR draws from the global generators
        np.random.seed(seed)
        mar_model.diffloss.gen_diffusion = diffusions[row.steps]  # as DiffLoss.__init__ makes it
        y = torch.tensor([labels[i] for i in idx], device=device)
        with torch.no_grad(), cuda_calls_to(device):
            x = mar_model.sample_tokens(
                bsz=len(idx),
                num_iter=base.num_iter,
                cfg=args.guidance,
                cfg_schedule="linear",
                labels=y,
                temperature=1.0 if row.temperature is None else row.temperature,
            )
        return x.clamp(-1, 1)  # as mmar's pixel decode

    run = {"mmar": run_mmar, "mar": run_mar}
    for row in (rows[0], rows[-1]):  # warm-up, not timed
        run[row.system](replace(row, steps=2), chunks[0][:2], 10**6)
    images: dict[RowSpec, list[torch.Tensor]] = {r: [] for r in rows}
    rates: dict[RowSpec, list[float]] = {r: [] for r in rows}
    for k, idx in enumerate(chunks):
        seed = args.seed * 1_000_003 + 1000 * k
        for row in rows if k % 2 == 0 else rows[::-1]:  # alternate, so no row is always first
            sync(device)
            t0 = time.perf_counter()
            x = run[row.system](row, idx, seed)
            sync(device)
            rates[row].append(len(idx) / (time.perf_counter() - t0))
            images[row].append(x.float().cpu())
        log(f"sampling: round {k + 1}/{len(chunks)} done")
    digits = [labels[i] for idx in chunks for i in idx]
    settings = {
        "precision": "fp32",
        "num_iter": base.num_iter,
        "guidance_scale": args.guidance,
        "cfg_schedule": "linear",
        "batch": len(chunks[0]),
        "rounds": len(chunks),
        "n_per_class": args.n_per_class,
        "mmar_recommended": {
            "scheduler": base.scheduler,
            "num_steps": base.num_steps,
            "temperature": base.temperature,
        },
    }
    return rates, {r: torch.cat(v) for r, v in images.items()}, digits, settings


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--mar-repo", type=Path, required=True, help="a checkout of LTH14/mar")
    ap.add_argument(
        "--mar-deps", type=Path, default=None, help="a --target dir holding timm (MAR's import)"
    )
    ap.add_argument(
        "--minutes", type=float, default=4.0, help="training budget per system (default 4)"
    )
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None, metavar="FILE")
    ap.add_argument(
        "--n-per-class", type=int, default=10, help="judged images per digit per row (default 10)"
    )
    ap.add_argument(
        "--rounds", type=int, default=3, help="interleaved timing rounds (one batch per row each)"
    )
    ap.add_argument(
        "--mmar-rows",
        default="ddpm:50,ddpm:25,ddpm:10,ddim:10,dpm++2m:10,dpm++2m:5,ddpm:50>10",
        help="scheduler:steps[:temperature],... with scheduler ddpm | ddim | dpm++2m and steps S "
        "or S>F (annealed from S to F over the masked-AR iterations); default temperature: the "
        "model's recommended",
    )
    ap.add_argument(
        "--mar-rows",
        default="50,100,250,1000",
        help="steps[:temperature],... of MAR's sampler (default temperature 1.0, MAR's)",
    )
    ap.add_argument("--guidance", type=float, default=3.0, help="CFG scale of both systems")
    ap.add_argument("--mar-lr", type=float, default=None, help="default: mmar's stage-1 lr")
    ap.add_argument(
        "--mar-depth",
        type=lambda s: tuple(int(v) for v in s.split(",")),
        default=(3, 3),
        help="MAR's encoder,decoder blocks (default 3,3)",
    )
    ap.add_argument("--mar-buffer", type=int, default=8, help="MAR's class-token buffer_size")
    ap.add_argument(
        "--mmar-set", action="append", default=[], metavar="K=V", help="override mmar's configs"
    )
    ap.add_argument("--work-dir", type=Path, default=None, help="mmar's runs (default: a tmp dir)")
    return ap.parse_args()


def print_report(res: dict[str, Any]) -> None:
    tm, tr, s = res["training"]["mmar"], res["training"]["mar"], res["sampling"]
    print(
        f"CPU {res['cpu']}, {res['threads']} threads, device {res['device']}; training "
        f"{tm['seconds']:.0f} s each ({tm['precision']}); sampling {s['precision']}, "
        f"K={s['num_iter']}, guidance {s['guidance_scale']}, batch {s['batch']}, medians of "
        f"{s['rounds']} rounds; judge held-out accuracy {res['judge_heldout_accuracy']:.3f}"
    )
    print(
        f"training: mmar {tm['parameters'] / 1e6:.2f}M params, {sum(tm['steps'])} steps, "
        f"{tm['samples_per_s']:.0f} samples/s; MAR {tr['parameters'] / 1e6:.2f}M params, "
        f"{tr['steps']} steps, {tr['samples_per_s']:.0f} samples/s"
    )
    for r in res["rows"]:
        print(
            f"{r['name']:22s} {r['images_per_s']:7.2f} images/s   accuracy "
            f"{r['accuracy']:.3f} ± {r['accuracy_se']:.3f} (n={r['n_judged']})"
        )
    for c in res["speedup_at_equal_accuracy"]:
        tag = "" if c["equal_quality"] else "; NOT at equal quality: MAR is more accurate"
        print(
            f"{c['mmar_row']:22s} vs {c['mar_row']:16s} {c['speedup']:6.2f}x "
            f"(accuracy {c['mmar_accuracy']:.3f} vs {c['mar_accuracy']:.3f}; {c['basis']}{tag})"
        )
    best = res["speedup_best_at_equal_quality"]
    print(
        "best speed-up at equal quality: "
        + (f"{best['speedup']:.1f}x ({best['mmar_row']} vs {best['mar_row']})" if best else "none")
    )
    print(f"total {res['total_seconds'] / 60:.1f} min")


def main() -> None:
    args = parse_args()
    mmar_rows = parse_rows("mmar", args.mmar_rows)
    mar_rows = parse_rows("mar", args.mar_rows)
    t_start = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    # mmar (and transformers) first, so that nothing of mmar's ever sees the torchvision stand-in
    from mmar.data import DataConfig
    from mmar.evaluation import metrics
    from mmar.evaluation.evaluate import load_split
    from mmar.evaluation.judge import JudgeConfig, get_judge

    code = import_mar(args.mar_repo, args.mar_deps)
    import timm

    log(f"MAR's code from {code.repo}, timm {timm.__version__}, torchvision: {code.torchvision}")
    data_cfg = DataConfig(name="mnist", image_size=32)  # the judge of `mmar eval` (cached)
    judge = get_judge(
        JudgeConfig(dataset="mnist", image_size=32, channels=1),
        lambda split: (lambda s: (s["images"], s["labels"]))(load_split(data_cfg, split)),
    )

    with tempfile.TemporaryDirectory() as tmp:
        log(f"training mmar for ~{args.minutes} min")
        mmar_model, mmar_train = train_mmar(
            args.minutes * 60, args.seed, device, args.work_dir or Path(tmp), args.mmar_set
        )
    stage1, _ = mmar_configs(args.seed, device, args.mmar_set)
    precision = mmar_train["precision"]  # what mmar's trainer chose here (precision: auto)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    mar_model = build_mar(code, stage1, args).to(device)
    log(f"training MAR for mmar's {mmar_train['seconds']:.0f} s ({precision})")
    lr = args.mar_lr or stage1.optim.lr
    mar_train = train_mar(
        code, mar_model, stage1, mmar_train["seconds"], args.seed, device, precision, lr
    )
    log(f"trained: mmar {mmar_train['steps']} steps, MAR {mar_train['steps']} steps")

    recommended = mmar_model.sampling
    rows = [resolve_temperature(r, recommended.temperature) for r in (*mmar_rows, *mar_rows)]
    rates, images, digits, settings = sample_rows(rows, mmar_model, mar_model, code, args, device)
    results = []
    for row in rows:
        acc = metrics.t2i_digit_accuracy(judge, images[row], digits)
        p, n = acc["accuracy"], len(digits)
        results.append(
            {
                "system": row.system,
                "name": row.name,
                "scheduler": row.scheduler,
                "num_steps": row.steps,
                "temperature": row.temperature,
                "recommended": row.system == "mmar"
                and (row.scheduler, row.steps, row.temperature)
                == (recommended.scheduler, recommended.num_steps, recommended.temperature),
                "images_per_s": statistics.median(rates[row]),
                "images_per_s_rounds": rates[row],
                "accuracy": p,
                "accuracy_se": math.sqrt(p * (1 - p) / n),
                "accuracy_per_digit": acc["per_digit"],
                "n_judged": n,
            }
        )
    ratios = compare(results)
    default = [c for c, r in zip(ratios, results) if r["recommended"]]
    res = {
        "benchmark": "benchmarks/vs_mar.py",
        "device": str(device),
        "cpu": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "mar_repo": str(code.repo),
        "mar_commit": git_commit(code.repo),
        "torchvision": code.torchvision,
        "seed": args.seed,
        "minutes": args.minutes,
        "judge_heldout_accuracy": judge.heldout_accuracy,
        "training": {"mmar": mmar_train, "mar": mar_train},
        "sampling": settings,
        "rows": results,
        "speedup_at_equal_accuracy": ratios,
        "speedup_recommended_mmar": default[0]["speedup"] if default else None,
        "speedup_best_at_equal_quality": headline(ratios),
        "total_seconds": time.perf_counter() - t_start,
    }
    print_report(res)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
