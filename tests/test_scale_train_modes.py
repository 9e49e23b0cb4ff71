"""Backbone train modes on a tiny random Qwen2: full, frozen (only <boi>/<eoi> rows), LoRA.

Each mode trains 2 AdamW steps on a mixed batch, then: the optimizer holds exactly the trainable
parameters; frozen mode leaves every LLM weight bit-identical (only the peft trainable-token
delta of <boi>/<eoi> moves); LoRA mode changes only LoRA adapters, that delta and the image
modules; save_pretrained -> from_pretrained rebuilds a model with identical weights and outputs.
"""

import pytest
import torch

from helpers_model import CORPUS, one_thread, random_images, training_inputs  # noqa: F401
from mmar.model.config import tiny_config
from mmar.pipelines.mmar import MMAR
from mmar.training.config import OptimConfig
from mmar.training.optim import build_optimizer

IMAGE_MODULES = ("vit.", "head.", "mask_token", "diffusion_pos_emb")
TEXTS = ["a red circle", "digit seven", "a blue square at the top", "digit one"]
KINDS = ["t2i", "i2t", "img", "t2i"]


def trained(mode: str) -> tuple[MMAR, dict, dict]:
    """A tiny MMAR in ``mode`` after 2 steps -> (model, state before, state after)."""
    cfg = tiny_config()
    cfg = cfg.replace(backbone=cfg.backbone.replace(train_mode=mode, lora_rank=4))
    torch.manual_seed(0)
    model = MMAR.from_config(cfg, CORPUS)
    net = model.model
    with torch.no_grad():  # AdaLN-zero: at init the head ignores z, so nothing before it learns
        for p in net.head.parameters():
            p.normal_(0.0, 0.2)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    opt = build_optimizer(net, OptimConfig(lr=1e-2, warmup_steps=0))
    in_optimizer = {id(p) for g in opt.param_groups for p in g["params"]}
    assert in_optimizer == {id(p) for p in net.parameters() if p.requires_grad}
    g = torch.Generator().manual_seed(0)
    batch, tokens = training_inputs(model.processor, TEXTS, KINDS, random_images(4))
    for _ in range(2):
        net(batch, tokens, generator=g)["loss"].backward()
        opt.step()
        opt.zero_grad()
    return model, before, {k: v.clone() for k, v in net.state_dict().items()}


def changed(before: dict, after: dict) -> set[str]:
    assert before.keys() == after.keys()
    return {k for k in before if not torch.equal(before[k], after[k])}


def backbone_changes(before, after) -> set[str]:
    return {k for k in changed(before, after) if k.startswith("backbone.")}


def assert_image_modules_trained(before, after):
    moved = changed(before, after)
    for prefix in IMAGE_MODULES:
        assert any(k.startswith(prefix) for k in moved), f"{prefix} did not train"


def test_full_mode_trains_the_llm():
    model, before, after = trained("full")
    assert_image_modules_trained(before, after)
    moved = backbone_changes(before, after)
    assert any(".layers.0.self_attn.q_proj.weight" in k for k in moved)
    assert all(p.requires_grad for p in model.model.parameters())


def test_frozen_mode_keeps_llm_bit_identical_but_trains_new_token_rows():
    model, before, after = trained("frozen")
    assert_image_modules_trained(before, after)
    moved = backbone_changes(before, after)
    assert moved and all("trainable_tokens_delta" in k for k in moved), sorted(moved)
    trainable = [n for n, p in model.model.backbone.named_parameters() if p.requires_grad]
    assert trainable and all("trainable_tokens_delta" in n for n in trainable)
    # the effective embedding: old rows as they were, <boi>/<eoi> rows learned
    new = torch.tensor([model.processor.special.boi, model.processor.special.eoi])
    old = torch.arange(model.processor.vocab_size - 2)
    base = next(v for k, v in before.items() if k.endswith("embed_tokens.base_layer.weight"))
    with torch.no_grad():
        emb = model.model.backbone.get_input_embeddings()
        assert torch.equal(emb(old), base[old])
        assert not torch.equal(emb(new), base[new])


def test_lora_mode_changes_only_adapters_new_rows_and_image_modules():
    model, before, after = trained("lora")
    assert_image_modules_trained(before, after)
    moved = backbone_changes(before, after)
    assert any("lora_B" in k for k in moved)
    assert all("lora_" in k or "trainable_tokens_delta" in k for k in moved), sorted(moved)
    trainable = {n for n, p in model.model.backbone.named_parameters() if p.requires_grad}
    assert all("lora_" in n or "trainable_tokens_delta" in n for n in trainable)


@pytest.mark.parametrize("mode", ["full", "frozen", "lora"])
def test_checkpoint_rebuilds_identical_model(tmp_path, mode):
    model, _, after = trained(mode)
    model.save_pretrained(tmp_path)
    loaded = MMAR.from_pretrained(tmp_path)
    again = loaded.model.state_dict()
    assert again.keys() == after.keys()
    assert all(torch.equal(again[k], after[k]) for k in after)
    assert [p.requires_grad for p in loaded.model.parameters()] == [
        p.requires_grad for p in model.model.parameters()
    ]
    model.model.eval(), loaded.model.eval()
    batch, tokens = training_inputs(model.processor, TEXTS, KINDS, random_images(4))
    with torch.no_grad():
        text = model.processor.pack(TEXTS, ["text"] * 4)
        a = model.model.logits(model.model.hidden_states(text))
        b = loaded.model.logits(loaded.model.hidden_states(text))
        assert torch.equal(a[text.valid], b[text.valid])
        la = model.model(batch, tokens, generator=torch.Generator().manual_seed(1))["loss"]
        lb = loaded.model(batch, tokens, generator=torch.Generator().manual_seed(1))["loss"]
        assert torch.equal(la, lb)
