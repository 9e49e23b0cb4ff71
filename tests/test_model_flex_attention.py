"""BackboneConfig.attention "flex": the BlockMask equals the dense mask (element by element and
tile by tile), and a tiny model computes the same losses, hidden states, generated image tokens
and captions with either path; flex cannot train on a CPU and says so; the option round-trips."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import create_block_mask, create_mask, flex_attention

from helpers_model import CORPUS, one_thread, random_images, tiny_model  # noqa: F401 (fixture)
from mmar.config import ConfigError
from mmar.evaluation.text_perplexity import text_perplexity
from mmar.model.attention_mask import build_attention_mask
from mmar.model.config import BackboneConfig, MMARConfig, SamplingConfig
from mmar.model.flex_attention import (
    FLEX_ATTENTION,
    FlexTrainingUnsupported,
    block_mask_mod,
    build_block_mask,
)
from mmar.model.mmar import MMARModel
from mmar.model.sequence import pack_sequences
from mmar.pipelines.mmar import MMAR
from mmar.tokenizers.special import SpecialTokenIds
from mmar.training.config import load_preset
from mmar.training.trainer import Trainer, _config_diff

SP = SpecialTokenIds(bos=2, eos=3, pad=0, boi=4, eoi=5)


def layouts() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(block_ids, valid) (B, L) batches: two image blocks per sample with text between them,
    right and left padding, a sample that is all padding, and real packed batches."""
    L = 23
    block = torch.zeros(4, L, dtype=torch.long)
    valid = torch.ones(4, L, dtype=torch.bool)
    block[0, 2:6], block[0, 9:13] = 1, 2  # [t t][img 1][t t t][img 2][t ...]
    block[1, 1:5], block[1, 5:9] = 1, 2  # two adjacent blocks
    valid[1, 15:] = False  # right padding
    block[2, 12:16], block[2, 18:22] = 3, 7  # ids need not be consecutive
    valid[2, :5] = False  # left padding
    valid[3] = False  # nothing valid: every row attends to itself only
    right = pack_sequences([[7], [8, 9, 10], [], [6] * 5], ["t2i", "i2t", "img", "text"], 4, SP)
    left = pack_sequences([[7, 7, 7], [], [9]], ["gen"] * 3, 4, SP, padding_side="left")
    return {
        "hand": (block, valid),
        "packed_right": (right.block_ids, right.valid),
        "packed_left": (left.block_ids, left.valid),
    }


def tiles_to_elements(bm, q_len: int, kv_len: int, elements: torch.Tensor) -> torch.Tensor:
    """What a kernel reading the BlockMask allows (B, 1, q_len, kv_len): every element of a full
    tile, ``elements`` (the mask_mod) inside a partial tile, nothing in a skipped tile."""

    def tiles(num, idx):  # (B, H, nQ), (B, H, nQ, nK) -> (B, H, nQ, nK) bool
        nk = idx.shape[-1]
        listed = torch.arange(nk) < num[..., None]
        out = torch.zeros(*idx.shape[:-1], nk + 1, dtype=torch.bool)
        out.scatter_(-1, torch.where(listed, idx.long(), nk), True)
        return out[..., :nk]

    bq, bk = bm.BLOCK_SIZE

    def grow(t):
        return t.repeat_interleave(bq, 2).repeat_interleave(bk, 3)[:, :, :q_len, :kv_len]

    partial = grow(tiles(bm.kv_num_blocks, bm.kv_indices))
    full = grow(tiles(bm.full_kv_num_blocks, bm.full_kv_indices))
    return full | (partial & elements)


@pytest.mark.parametrize("name", ["hand", "packed_right", "packed_left"])
@pytest.mark.parametrize("start", [0, 5])
def test_block_mask_equals_dense_mask(name, start):
    block, valid = layouts()[name]
    B, L = block.shape
    dense = build_attention_mask(block, valid)[:, :, start:]  # (B, 1, L - start, L)
    # the BlockMask MMARModel uses: its mask_mod over every (q, k)
    bm = build_block_mask(block, valid, start)
    assert bm.shape == (B, 1, L - start, L)
    elements = create_mask(bm.mask_mod, B, 1, L - start, L, device="cpu")
    assert torch.equal(elements, dense)
    # small tiles, so that some are skipped and some are full: the tile classification a GPU
    # kernel reads agrees with the rule too
    small = create_block_mask(
        block_mask_mod(block, valid, start), B, None, L - start, L, BLOCK_SIZE=4, _compile=False
    )
    assert int(small.full_kv_num_blocks.sum()) > 0
    assert torch.equal(tiles_to_elements(small, L - start, L, elements), dense)


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_flex_kernel_equals_sdpa_with_dense_mask():
    """Eager flex_attention with the BlockMask = SDPA with the bool mask, padding rows included
    (a mask_mod without the padding-query rule differs there by |v|, up to ~3 here)."""
    block, valid = layouts()["hand"]
    B, L = block.shape
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, 2, L, 8, generator=g) for _ in range(3))
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=build_attention_mask(block, valid))
    for bs in (4, 128):
        bm = create_block_mask(
            block_mask_mod(block, valid), B, None, L, L, BLOCK_SIZE=bs, _compile=False
        )
        torch.testing.assert_close(flex_attention(q, k, v, block_mask=bm), ref)


def flex_twin(model: MMAR) -> MMAR:
    """The same network (same weights, same processor) with attention: flex."""
    cfg = model.config.replace(backbone=model.config.backbone.replace(attention="flex"))
    p = model.processor
    twin = MMAR(MMARModel(cfg, p.vocab_size, p.special), p)
    twin.model.load_state_dict(model.model.state_dict())
    twin.model.eval()
    assert twin.model.backbone.config._attn_implementation == FLEX_ATTENTION
    return twin


@pytest.fixture(scope="module")
def pair():
    dense = tiny_model()
    return dense, flex_twin(dense)


def test_forward_losses_and_hidden_states_match(pair):
    dense, flex = pair
    texts = ["a red circle", "digit seven", "", "a blue square at the top"]
    kinds = ["t2i", "i2t", "img", "text"]  # different lengths: padding in every layout
    inputs = dense.processor(texts, kinds, images=random_images(4))
    tokens = dense.processor.encode_images(inputs.images)
    outs = []
    with torch.no_grad():
        for m in (dense, flex):
            out = m.model(inputs.batch, tokens, generator=torch.Generator().manual_seed(0))
            hidden = m.model.hidden_states(inputs.batch, tokens)
            outs.append((out, hidden))
    (a, ha), (b, hb) = outs
    assert bool(inputs.batch.valid.all()) is False  # the batch has padding
    for key in ("loss", "loss_text", "loss_diff"):
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    valid = inputs.batch.valid
    torch.testing.assert_close(ha[valid], hb[valid], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ha, hb, rtol=1e-5, atol=1e-5)  # padding rows: self only, too


def test_autocast_gives_flex_one_dtype(pair, monkeypatch):
    """Qwen2's rotary embedding returns fp32 q, k beside a bf16 v under autocast; SDPA is an
    autocast op, flex is not: mmar casts them, else a GPU would run flex's fp32 kernels."""
    import transformers.integrations.flex_attention as hf_flex

    dense, flex = pair
    seen = set()
    kernel = hf_flex.flex_attention_forward

    def spy(module, q, k, v, mask, **kw):
        seen.add((q.dtype, k.dtype, v.dtype))
        return kernel(module, q, k, v, mask, **kw)

    monkeypatch.setattr(hf_flex, "flex_attention_forward", spy)
    inputs = dense.processor(["a red circle", "digit one"], ["t2i", "i2t"], images=random_images(2))
    tokens = dense.processor.encode_images(inputs.images)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        a = dense.model.hidden_states(inputs.batch, tokens)
        b = flex.model.hidden_states(inputs.batch, tokens)
    assert seen == {(torch.bfloat16,) * 3}
    torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-2)  # bf16: two kernels, one rounding


@pytest.mark.parametrize("use_cache", [True, False])
def test_text_to_image_tokens_match(pair, use_cache):
    dense, flex = pair
    s = SamplingConfig(num_iter=4, num_steps=3, guidance_scale=3.0)
    prompts = ["digit seven", "a small green triangle", ""]  # left padding of unequal prompts
    a = dense.text_to_image.generate_tokens(prompts, s, seed=0, use_cache=use_cache)
    b = flex.text_to_image.generate_tokens(prompts, s, seed=0, use_cache=use_cache)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_captions_match(pair):
    dense, flex = pair
    s = SamplingConfig(max_new_tokens=6)
    images = random_images(3, seed=1)
    assert torch.equal(
        dense.captioner.generate_ids(images, s), flex.captioner.generate_ids(images, s)
    )


def test_two_d_mask_path_matches(pair):
    """A plain 2-D padding mask (``mmar perplexity`` on the backbone): transformers builds its
    own flex mask through the registered mask function."""
    dense, flex = pair
    tok = dense.processor.tokenizer
    a = text_perplexity(dense.model.backbone, tok, CORPUS, batch_size=3)
    b = text_perplexity(flex.model.backbone, tok, CORPUS, batch_size=3)
    assert a["tokens"] == b["tokens"]
    assert b["nll_per_token"] == pytest.approx(a["nll_per_token"], rel=1e-5)


def test_flex_cannot_train_on_cpu(pair, tmp_path):
    _, flex = pair
    inputs = flex.processor(["digit one"], ["t2i"], images=random_images(1))
    tokens = flex.processor.encode_images(inputs.images)
    with pytest.raises(FlexTrainingUnsupported, match="attention: 'flex' cannot train on cpu"):
        flex.model(inputs.batch, tokens)  # gradients enabled
    cfg = load_preset("tiny", ["model.backbone.attention=flex", "train.device=cpu"])
    with pytest.raises(ConfigError, match=r"RunConfig\.model\.backbone\.attention: 'flex'.*CUDA"):
        Trainer(cfg, tmp_path / "run")


def test_config_validates_and_round_trips(tmp_path):
    with pytest.raises(ConfigError, match=r"BackboneConfig\.attention.*\['dense', 'flex'\]"):
        BackboneConfig.from_dict({"attention": "flash"})
    with pytest.raises(ConfigError, match=r"BackboneConfig\.attention: must be 'dense' or 'flex'"):
        BackboneConfig(attention="flash").validate()  # type: ignore[arg-type]
    assert BackboneConfig().attention == "dense"
    model = flex_twin(tiny_model())
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["backbone"]["attention"] == "flex"
    # the LLM's own config stays loadable by plain transformers: no mmar name in it
    assert FLEX_ATTENTION not in (tmp_path / "backbone" / "config.json").read_text()
    loaded = MMAR.from_pretrained(tmp_path)
    assert loaded.config == model.config
    assert loaded.model.backbone.config._attn_implementation == FLEX_ATTENTION
    assert MMARConfig.from_dict(model.config.to_dict()).backbone.attention == "flex"


def test_a_shared_llm_config_does_not_switch_the_first_model():
    """transformers keeps the config object it builds from and sets its attention on it."""
    from transformers import AutoConfig

    hf = AutoConfig.for_model(
        "qwen2",
        vocab_size=40,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=64,
    )
    cfg = tiny_model().config
    flex_cfg = cfg.replace(backbone=cfg.backbone.replace(attention="flex"))
    first = MMARModel(cfg, 40, SP, backbone_config=hf)
    MMARModel(flex_cfg, 40, SP, backbone_config=hf)
    assert first.backbone.config._attn_implementation == "sdpa"


def test_resume_may_switch_the_attention_path():
    old = {"model": {"backbone": {"attention": "dense", "hidden_size": 32}}}
    new = {"model": {"backbone": {"attention": "flex", "hidden_size": 32}}}
    assert _config_diff(old, new) == []
    new["model"]["backbone"]["hidden_size"] = 64
    assert _config_diff(old, new) == ["model.backbone.hidden_size: 32 -> 64"]
