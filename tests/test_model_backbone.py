"""The backbone through MMAR's path: exact plain-LM logits for text, and the 4-D mask in effect."""

import torch

from helpers_model import one_thread, tiny_model  # noqa: F401 (fixture)
from mmar.model.backbone import build_backbone
from mmar.model.config import BackboneConfig


def text_logits(model, texts):
    """Plain-LM logits of [bos] text [eos] through MMAR's path -> (B, L, V), valid (B, L)."""
    batch = model.processor.pack(texts, ["text"] * len(texts))
    with torch.no_grad():
        return model.model.logits(model.model.hidden_states(batch)), batch


def test_text_only_matches_plain_lm_with_padding():
    model = tiny_model()
    texts = ["a red circle at the top", "digit one", ""]
    logits, batch = text_logits(model, texts)
    valid = batch.valid
    with torch.no_grad():  # transformers' own path: 2-D padding mask, its own causal mask
        ref = model.model.backbone(
            input_ids=batch.input_ids, attention_mask=batch.valid.long()
        ).logits
    assert valid.sum(1).tolist() == [8, 4, 2]  # [bos] words [eos]
    assert torch.allclose(logits[valid], ref[valid], atol=1e-5, rtol=1e-5)
    assert (logits[valid] - ref[valid]).abs().max() < 1e-5


def test_bidirectional_block_changes_outputs_vs_causal():
    model = tiny_model().model
    b = tiny_model().processor.pack(["digit one"], ["t2i"])
    emb = model.embed(b, torch.randn(1, 16, 4))
    with torch.no_grad():
        h_block, _ = model.backbone_hidden(emb, b.attention_mask, b.position_ids)
        causal = torch.tril(torch.ones_like(b.attention_mask))
        h_causal, _ = model.backbone_hidden(emb, causal, b.position_ids)
    img = b.is_image[0]
    first = img.nonzero()[0, 0]
    # the first image token sees the later ones only under the block mask
    assert (h_block[0, first] - h_causal[0, first]).abs().max() > 1e-4
    # the text before the image never attends to it: identical under both masks
    assert torch.allclose(h_block[0, :first], h_causal[0, :first], atol=1e-6)


def test_mask_works_under_bf16_autocast():
    model = tiny_model().model
    b = tiny_model().processor.pack(["digit one", "a"], ["t2i", "i2t"])
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        h, _ = model.backbone_hidden(
            model.embed(b, torch.randn(2, 16, 4)), b.attention_mask, b.position_ids
        )
    assert torch.isfinite(h.float()).all()


def test_vocab_and_frozen_mode():
    m = build_backbone(
        BackboneConfig(
            hidden_size=32,
            num_layers=1,
            num_heads=2,
            num_kv_heads=1,
            intermediate_size=64,
            train_mode="frozen",
        ),
        37,
    )
    assert m.get_input_embeddings().num_embeddings == 37
    assert m.config._attn_implementation == "sdpa"
    assert not any(p.requires_grad for p in m.parameters())


def test_lora_mode_trains_only_adapters():
    m = build_backbone(
        BackboneConfig(
            hidden_size=32,
            num_layers=1,
            num_heads=2,
            num_kv_heads=1,
            intermediate_size=64,
            train_mode="lora",
            lora_rank=4,
        ),
        37,
    )
    trainable = [n for n, p in m.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert m.get_decoder().__class__.__name__ == "Qwen2Model"
