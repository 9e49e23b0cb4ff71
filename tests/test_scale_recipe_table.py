"""The Qwen2-0.5B recipes: configs load, their geometry, and scripts/recipe_table.py's numbers."""

import importlib.util
from pathlib import Path

import pytest

from mmar.training.config import load_run_config

ROOT = Path(__file__).resolve().parent.parent
QWEN2_05B_PARAMS = 494_032_768  # Qwen2-0.5B's published count (tied embeddings)


def recipe_table():
    spec = importlib.util.spec_from_file_location("recipe_table", ROOT / "scripts/recipe_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def table():
    return {r["recipe"]: r for r in recipe_table().rows(gpus=8)}


@pytest.mark.parametrize("p, n, dim", [(4, 16, 256), (1, 256, 16)])
@pytest.mark.parametrize("stage, ratio_min", [(1, 0.7), (2, 0.0)])
def test_recipe_configs(p, n, dim, stage, ratio_min):
    cfg = load_run_config(ROOT / f"configs/qwen2_0.5b_p{p}_stage{stage}.yaml")
    geo = cfg.model.image_tokenizer.geometry()
    assert (cfg.model.image_tokenizer.kind, cfg.model.image_tokenizer.image_size) == ("kl16", 256)
    assert (geo.num_tokens, geo.token_dim) == (n, dim)
    assert cfg.model.backbone.kind == "pretrained"
    assert cfg.model.backbone.path == cfg.model.text_tokenizer.path
    assert cfg.model.diffusion.parameterization == "v"
    assert (cfg.model.mask.ratio_min, cfg.model.mask.ratio_max) == (ratio_min, 1.0)
    assert cfg.data.name in ("latents", "webdataset")
    assert (cfg.train.init_from is not None) == (stage == 2)
    if stage == 2:
        assert f"p{p}_s1" in cfg.train.init_from and cfg.train.init_weights == "ema"


def test_llm_count_is_qwen2_0_5b_and_parts_add_up(table):
    for r in table.values():
        # frozen / lora add the trainable <boi>/<eoi> rows (2 x 896), lora its adapters too
        extra = {"full": 0, "frozen": 2 * 896}.get(r["train_mode"])
        if extra is not None:
            assert r["llm"] == QWEN2_05B_PARAMS + extra
        assert r["llm"] + r["vit"] + r["head"] + r["other"] == r["total"]
        assert 0 < r["trainable"] <= r["total"]


def test_trainable_counts_per_mode(table):
    full, lora, frozen = (table[f"qwen2_0.5b_p4_stage1{s}"] for s in ("", " (lora)", " (frozen)"))
    assert full["trainable"] == full["total"]
    image_modules = full["vit"] + full["head"] + full["other"]
    # frozen: the image modules and the two new embedding rows (2 x 896)
    assert frozen["trainable"] == image_modules + 2 * 896
    # lora: + r (in + out) per projection; q,o: 896->896, k,v: 896->128, MLP: 896<->4864
    r, proj = 16, 2 * (896 + 896) + 2 * (896 + 128) + 2 * (896 + 4864) + (4864 + 896)
    assert lora["trainable"] == image_modules + 2 * 896 + 24 * r * proj
    assert lora["ddp_gib"] < full["ddp_gib"] and frozen["fsdp_gib"] < full["fsdp_gib"]


def test_memory_formula(table):
    r = table["qwen2_0.5b_p4_stage1"]
    states = 4 * r["total"] + 16 * r["trainable"]
    ddp = (states + 4 * r["vae"]) / 1024**3 + r["activations_gib"]
    assert r["ddp_gib"] == pytest.approx(ddp)
    assert r["fsdp_gib"] < r["ddp_gib"]
    assert r["positions"] == 64 + 16 + 4 and r["per_gpu_batch"] == 512 // 8
    # 256 tokens per image: longer sequences, more activations (with checkpointing on)
    assert table["qwen2_0.5b_p1_stage1"]["positions"] == 64 + 256 + 4


def test_markdown_has_one_row_per_recipe(table):
    md = recipe_table().markdown(list(table.values())).splitlines()
    assert len(md) == 2 + len(table) and md[0].count("|") == md[2].count("|")
