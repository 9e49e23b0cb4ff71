"""MMAR.forward losses, gradients, precision, and save/load."""

import json

import pytest
import torch
from helpers_model import random_images, tiny_model, one_thread  # noqa: F401 (fixture)
from safetensors.torch import load_file, save_file

from mmar.model.mmar import MMAR

TEXTS = ["a red circle", "digit seven", "digit one", "a blue square at the top"]
KINDS = ["t2i", "i2t", "img", "t2i"]


def test_forward_mixed_batch_losses_and_gradients():
    model = tiny_model().train()
    out = model(random_images(4), TEXTS, KINDS, generator=torch.Generator().manual_seed(0))
    for k in ("loss", "loss_text", "loss_diff"):
        assert torch.isfinite(out[k]) and out[k] > 0
    assert out["n_masked"] >= 3 and out["n_text_tokens"] > 0
    assert torch.allclose(out["loss"], out["loss_text"] + out["loss_diff"])
    out["loss"].backward()
    params = dict(model.named_parameters())
    for name in ("head.input_proj.weight", "vit.input_proj.weight", "mask_token",
                 "diffusion_pos_emb", "backbone.model.layers.0.self_attn.q_proj.weight",
                 "backbone.model.embed_tokens.weight"):
        g = params[name].grad
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0, name


def test_text_weight_counts_prompt_ce_weight():
    model = tiny_model(prompt_ce_weight=0.5, cfg_dropout=0.0).train()
    out = model(random_images(2), ["digit one", "digit seven"], ["t2i", "i2t"])
    # t2i: 2 prompt targets at 0.5; i2t: 2 words + eos at 1
    assert out["n_text_tokens"] == 5 and out["text_weight"] == 0.5 * 2 + 3


def test_forward_is_seeded():
    model = tiny_model().train()
    a = model(random_images(4), TEXTS, KINDS, generator=torch.Generator().manual_seed(5))
    b = model(random_images(4), TEXTS, KINDS, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a["loss"], b["loss"]) and a["n_masked"] == b["n_masked"]


def test_latents_path_equals_images_path():
    model = tiny_model().train()
    x = random_images(4)
    a = model(x, TEXTS, KINDS, generator=torch.Generator().manual_seed(1))
    b = model(None, TEXTS, KINDS, generator=torch.Generator().manual_seed(1),
              latents=model.image_tokenizer.encode(x))
    assert torch.allclose(a["loss"], b["loss"])


def test_no_image_loss_and_no_text_loss_are_zero_not_nan():
    model = tiny_model(prompt_ce_weight=0.0).train()
    g = torch.Generator().manual_seed(0)
    only_text = model(random_images(2), ["digit one", "a"], ["i2t", "i2t"], generator=g)
    assert only_text["loss_diff"] == 0 and only_text["n_masked"] == 0
    assert torch.isfinite(only_text["loss"]) and only_text["loss"] > 0
    only_img = model(random_images(2), ["digit one", ""], ["t2i", "img"], generator=g)
    assert only_img["loss_text"] == 0 and only_img["n_text_tokens"] == 0
    assert torch.isfinite(only_img["loss"]) and only_img["loss"] > 0
    only_img["loss"].backward()


def test_text_kind_without_images():
    model = tiny_model().train()
    out = model(None, ["digit one", "a red circle"], ["text", "text"])
    assert out["n_masked"] == 0 and out["n_text_tokens"] == 7 and out["loss"] > 0


def test_cfg_dropout_replaces_prompts():
    model = tiny_model(cfg_dropout=0.999).train()  # every t2i prompt dropped
    out = model(random_images(2), ["digit one", "a red circle"], ["t2i", "t2i"],
                generator=torch.Generator().manual_seed(0))
    assert out["n_text_tokens"] == 0  # the prompt CE targets are gone with the prompts


def test_forward_under_bf16_autocast():
    model = tiny_model().train()
    with torch.autocast("cpu", torch.bfloat16):
        out = model(random_images(4), TEXTS, KINDS, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out["loss"]) and out["loss"].dtype == torch.float32
    out["loss"].backward()
    assert torch.isfinite(model.mask_token.grad).all()


@pytest.mark.parametrize("kinds, texts, match", [
    (["t2i", "video"], ["a", "b"], "kinds"),
    (["t2i"], ["a", "b"], "kinds"),
    ([], [], "kinds"),
])
def test_forward_bad_kinds_raise(kinds, texts, match):
    with pytest.raises(ValueError, match=match):
        tiny_model()(random_images(max(1, len(kinds))), texts, kinds)


def test_forward_wrong_image_shape_raises():
    with pytest.raises(ValueError, match=r"\(B, 1, 8, 8\)"):
        tiny_model()(torch.zeros(1, 3, 8, 8), ["a"], ["t2i"])


def test_text_nll_counts_tokens():
    model = tiny_model()
    nats, n = model.text_nll(random_images(2), ["digit one", "a red circle"])
    assert n == 2 + 1 + 3 + 1 and nats > 0  # words + eos per caption


def test_save_load_round_trip_identical(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} >= {"config.json", "model.safetensors",
                                                    "tokenizer", "backbone"}
    loaded = MMAR.from_pretrained(tmp_path)
    assert loaded.config.text_tokenizer.kind == "pretrained"
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k
    kw = dict(num_iter=3, num_steps=3, seed=1)
    a = [im.tobytes() for im in model.generate_images(["digit one", ""], **kw)]
    b = [im.tobytes() for im in loaded.generate_images(["digit one", ""], **kw)]
    assert a == b
    x = random_images(2)
    assert model.caption(x, max_new_tokens=4) == loaded.caption(x, max_new_tokens=4)
    assert json.loads((tmp_path / "config.json").read_text())["max_text_len"] == 16


def test_ema_weights_are_used(tmp_path):
    model = tiny_model()
    ema = {k: v + 1.0 if k == "mask_token" else v for k, v in model.state_dict().items()}
    model.save_pretrained(tmp_path, ema_state_dict=ema)
    assert "ema.mask_token" in load_file(str(tmp_path / "model.safetensors"))
    assert torch.allclose(MMAR.from_pretrained(tmp_path).mask_token, model.mask_token + 1)
    assert torch.equal(MMAR.from_pretrained(tmp_path, use_ema=False).mask_token, model.mask_token)


def test_tied_embeddings_saved_once(tmp_path):
    model = tiny_model()
    model.backbone.config.tie_word_embeddings = True
    model.backbone.lm_head.weight = model.backbone.model.embed_tokens.weight
    model.save_pretrained(tmp_path)
    keys = load_file(str(tmp_path / "model.safetensors")).keys()
    assert ("backbone.lm_head.weight" in keys) != ("backbone.model.embed_tokens.weight" in keys)
    loaded = MMAR.from_pretrained(tmp_path)
    assert loaded.backbone.lm_head.weight.data_ptr() == loaded.backbone.model.embed_tokens.weight.data_ptr()
    assert torch.equal(loaded.backbone.lm_head.weight, model.backbone.lm_head.weight)


def test_missing_keys_raise_naming_file(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    del state["mask_token"]
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(RuntimeError, match=r"model\.safetensors.*missing keys \['mask_token'\]"):
        MMAR.from_pretrained(tmp_path)


def test_from_pretrained_missing_dir_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        MMAR.from_pretrained(tmp_path / "nope")


def test_smoke_train_then_generate_and_caption():
    model = tiny_model(randomize_head=False).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(6):
        out = model(random_images(4, seed=0), TEXTS, KINDS, generator=g)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert losses[-1] < losses[0]
    images = model.generate_images(["digit one"], num_iter=2, num_steps=2)
    assert images[0].size == (8, 8) and images[0].mode == "L"
    assert model.training  # generation restores the mode
    caps = model.caption(images, max_new_tokens=3)
    assert isinstance(caps[0], str)
