"""Parameter counts, tokens per sample and estimated memory per GPU of the Qwen2-0.5B recipes.

Each recipe's model is built on the meta device (no weights, no memory) from its config, with
Qwen2-0.5B's published sizes standing in for the local checkpoint: hidden 896, 24 layers, 14
heads, 2 KV heads, intermediate 4864, vocab 151,936, tied embeddings. Prints the markdown table
of docs/scaling.md:

    python scripts/recipe_table.py [--gpus 8] [--json FILE]

Memory per GPU (bytes), fp32 master weights with bf16 autocast, P = model parameters without
the frozen VAE, T = trainable parameters, V = VAE parameters, N = GPUs:
    states      = 4 P (weights) + 4 T (grads) + 8 T (AdamW m, v) + 4 T (EMA)
    DDP         = states + 4 V + activations
    FSDP        = states / N + 4 V + 2 x 4 P_block (gathered blocks in flight) + activations
    activations = b x [ S x layers x (18 h + 8 i)                  LLM blocks, SDPA (no S^2)
                        + Tt x vocab x 6                           logits at text targets
                        + M x mul x head_depth x 8 x head_width x 2   diffusion head
                        + n x vit_depth x (18 w + 8 r w) ]         EmbeddingViT (i = r w)
  with gradient checkpointing the LLM term is S x (layers x 4 h + 18 h + 8 i): each block keeps
  its fp32 input and one block's activations are rebuilt at a time. b = per-GPU micro-batch,
  S = max_text_len + n + 4 positions, Tt = max_text_len + 1 text targets, M = n masked image
  tokens (worst case: every caption of max length, every token masked). An estimate: no
  allocator fragmentation, CUDA context (~1 GB) or communication buffers.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECIPES = [
    "qwen2_0.5b_p4_stage1",
    "qwen2_0.5b_p4_stage2",
    "qwen2_0.5b_p1_stage1",
    "qwen2_0.5b_p1_stage2",
]
# (row label suffix, train_mode) variants shown for the first recipe
MODE_VARIANTS = [("lora", "lora"), ("frozen", "frozen")]
QWEN2_05B = dict(
    vocab_size=151936,
    hidden_size=896,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    intermediate_size=4864,
    tie_word_embeddings=True,
    max_position_embeddings=32768,
)
GIB = 1024**3


def build_meta_model(run_cfg):
    """The recipe's network and image tokenizer on the meta device, with Qwen2-0.5B's sizes and
    a random-init VAE -> (MMARModel, ImageTokenizer)."""
    import torch
    from transformers import AutoConfig

    from mmar.model.mmar import MMARModel
    from mmar.tokenizers import build_image_tokenizer
    from mmar.tokenizers.special import SpecialTokenIds

    model_cfg = run_cfg.model.replace(
        image_tokenizer=run_cfg.model.image_tokenizer.replace(path=None)
    )
    # any vocabulary smaller than the embedding works: the LLM keeps its 151,936 rows
    special = SpecialTokenIds(boi=151_646, eoi=151_647, pad=151_643, eos=151_643, bos=None)
    with torch.device("meta"):
        model = MMARModel(
            model_cfg, 151_648, special, backbone_config=AutoConfig.for_model("qwen2", **QWEN2_05B)
        )
        return model, build_image_tokenizer(model_cfg.image_tokenizer)


def count(params) -> int:
    seen, n = set(), 0
    for p in params:
        if id(p) not in seen:
            seen.add(id(p))
            n += p.numel()
    return n


def recipe_row(name: str, run_cfg, gpus: int) -> dict:
    model, vae_module = build_meta_model(run_cfg)
    mc, tc = run_cfg.model, run_cfg.train
    geo = mc.image_tokenizer.geometry()
    parts = {"llm": model.backbone, "vit": model.vit, "head": model.head, "vae": vae_module}
    sizes = {k: count(m.parameters()) for k, m in parts.items()}
    total = count(model.parameters())
    sizes["other"] = total - sizes["llm"] - sizes["vit"] - sizes["head"]
    trainable = count(p for p in model.parameters() if p.requires_grad)
    block = count(model.backbone.get_decoder().layers[0].parameters())

    h, i, layers, vocab = (
        QWEN2_05B[k]
        for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "vocab_size")
    )
    n, seq, text_targets = geo.num_tokens, mc.max_text_len + geo.num_tokens + 4, mc.max_text_len + 1
    b = tc.batch_size // gpus // tc.grad_accum
    if mc.backbone.gradient_checkpointing:
        llm_act = seq * (layers * 4 * h + 18 * h + 8 * i)
    else:
        llm_act = seq * layers * (18 * h + 8 * i)
    w_vit = mc.vit.width
    act = b * (
        llm_act
        + text_targets * vocab * 6
        + n
        * mc.diffusion.diffusion_batch_mul
        * mc.diffusion.head_depth
        * 8
        * mc.diffusion.head_width
        * 2
        + n * mc.vit.depth * (18 * w_vit + 8 * mc.vit.mlp_ratio * w_vit)
    )
    states = 4 * total + 16 * trainable
    vae = 4 * sizes["vae"]
    return {
        "recipe": name,
        "train_mode": mc.backbone.train_mode,
        "tokens": n,
        "token_dim": geo.token_dim,
        "positions": seq,
        **sizes,
        "total": total,
        "trainable": trainable,
        "per_gpu_batch": b,
        "gpus": gpus,
        "activations_gib": act / GIB,
        "ddp_gib": (states + vae + act) / GIB,
        "fsdp_gib": (states / gpus + vae + 2 * 4 * block + act) / GIB,
    }


def rows(gpus: int) -> list[dict]:
    from mmar.training.config import load_run_config

    out = []
    for name in RECIPES:
        cfg = load_run_config(ROOT / "configs" / f"{name}.yaml")
        out.append(recipe_row(name, cfg, gpus))
        if name == RECIPES[0]:
            for suffix, mode in MODE_VARIANTS:
                bb = cfg.model.backbone.replace(train_mode=mode)
                variant = cfg.replace(model=cfg.model.replace(backbone=bb))
                out.append(recipe_row(f"{name} ({suffix})", variant, gpus))
    return out


def markdown(table: list[dict]) -> str:
    def m(x: int) -> str:
        return f"{x / 1e6:,.1f}M"

    head = (
        "| recipe | image tokens (n x dim) | positions | LLM | ViT + proj | head | other | "
        "total trained model | trainable | VAE (frozen) | batch / GPU | activations | "
        f"DDP / GPU | FSDP / GPU ({table[0]['gpus']}) |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in table:
        lines.append(
            f"| {r['recipe']} | {r['tokens']} x {r['token_dim']} | {r['positions']} | "
            f"{m(r['llm'])} | {m(r['vit'])} | {m(r['head'])} | {m(r['other'])} | {m(r['total'])} | "
            f"{m(r['trainable'])} | {m(r['vae'])} | {r['per_gpu_batch']} | "
            f"{r['activations_gib']:.1f} GiB | {r['ddp_gib']:.1f} GiB | {r['fsdp_gib']:.1f} GiB |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gpus", type=int, default=8, help="GPUs the global batch is split over")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    table = rows(args.gpus)
    print(markdown(table))
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
