"""MMARModel.forward losses, gradients, no target leak, precision, and save/load."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from helpers_model import one_thread, random_images, tiny_model, training_inputs  # noqa: F401
from mmar.pipelines.mmar import MMAR

TEXTS = ["a red circle", "digit seven", "digit one", "a blue square at the top"]
KINDS = ["t2i", "i2t", "img", "t2i"]


def losses(model, texts=TEXTS, kinds=KINDS, images=None, seed=0, dropout_seed=None):
    batch, tokens = training_inputs(
        model.processor,
        texts,
        kinds,
        random_images(len(texts)) if images is None else images,
        dropout_seed,
    )
    return model.model(batch, tokens, generator=torch.Generator().manual_seed(seed))


def test_forward_mixed_batch_losses_and_gradients():
    model = tiny_model()
    model.model.train()
    out = losses(model)
    for k in ("loss", "loss_text", "loss_diff"):
        assert torch.isfinite(out[k]) and out[k] > 0
    assert out["n_masked"] >= 3 and out["n_text_tokens"] > 0
    assert torch.allclose(out["loss"], out["loss_text"] + out["loss_diff"])
    out["loss"].backward()
    params = dict(model.model.named_parameters())
    for name in (
        "head.input_proj.weight",
        "vit.input_proj.weight",
        "mask_token",
        "diffusion_pos_emb",
        "backbone.model.layers.0.self_attn.q_proj.weight",
        "backbone.model.embed_tokens.weight",
    ):
        g = params[name].grad
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0, name


def test_no_target_leak_into_its_own_condition():
    """The conditions z of the masked tokens (what the diffusion head sees) do not change when
    the true values of those masked tokens change; they do when a visible token changes."""
    model = tiny_model(mask=tiny_model().config.mask.replace(ratio_min=0.5, ratio_max=0.5))
    batch, x = training_inputs(model.processor, ["digit one", ""], ["t2i", "img"], random_images(2))
    masked = model.model.draw_mask(batch, torch.Generator().manual_seed(3))  # (2, 16)
    assert 0 < int(masked.sum()) < 32

    conds = []
    hook = model.model.head.register_forward_hook(lambda m, args, out: conds.append(args[2]))
    try:

        def head_conditions(tokens):
            conds.clear()
            with torch.no_grad():
                model.model(batch, tokens, generator=torch.Generator().manual_seed(3))
            return conds[0]  # (M * mul, W): z of masked tokens

        base = head_conditions(x)
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(9))
        assert torch.equal(head_conditions(torch.where(masked[..., None], noise, x)), base)
        visible = torch.where(masked[..., None], x, noise)  # change only the visible tokens
        assert (head_conditions(visible) - base).abs().max() > 1e-3
    finally:
        hook.remove()


def test_text_weight_counts_prompt_ce_weight():
    model = tiny_model(prompt_ce_weight=0.5)
    out = losses(model, ["digit one", "digit seven"], ["t2i", "i2t"])
    # t2i: 2 prompt targets at 0.5; i2t: 2 words + eos at 1
    assert out["n_text_tokens"] == 5 and out["text_weight"] == 0.5 * 2 + 3


def test_forward_is_seeded():
    model = tiny_model()
    model.model.train()
    a, b = losses(model, seed=5), losses(model, seed=5)
    assert torch.equal(a["loss"], b["loss"]) and a["n_masked"] == b["n_masked"]
    assert not torch.equal(a["loss"], losses(model, seed=6)["loss"])


def test_latents_path_equals_images_path():
    proc = tiny_model().processor
    x = random_images(4)
    assert torch.equal(
        proc.encode_images(x), proc.encode_images(latents=proc.image_tokenizer.encode(x))
    )


def test_no_image_loss_and_no_text_loss_are_zero_not_nan():
    model = tiny_model(prompt_ce_weight=0.0)
    only_text = losses(model, ["digit one", "a"], ["i2t", "i2t"])
    assert only_text["loss_diff"] == 0 and only_text["n_masked"] == 0
    assert torch.isfinite(only_text["loss"]) and only_text["loss"] > 0
    only_img = losses(model, ["digit one", ""], ["t2i", "img"])
    assert only_img["loss_text"] == 0 and only_img["n_text_tokens"] == 0
    assert torch.isfinite(only_img["loss"]) and only_img["loss"] > 0
    only_img["loss"].backward()


def test_text_kind_without_images():
    model = tiny_model()
    batch, tokens = training_inputs(
        model.processor, ["digit one", "a red circle"], ["text", "text"]
    )
    out = model.model(batch, tokens)
    assert tokens is None
    assert out["n_masked"] == 0 and out["n_text_tokens"] == 7 and out["loss"] > 0


def test_forward_under_bf16_autocast():
    model = tiny_model()
    model.model.train()
    with torch.autocast("cpu", torch.bfloat16):
        out = losses(model)
    assert torch.isfinite(out["loss"]) and out["loss"].dtype == torch.float32
    out["loss"].backward()
    assert torch.isfinite(model.model.mask_token.grad).all()


def test_forward_wrong_tokens_raises():
    model = tiny_model()
    batch, tokens = training_inputs(model.processor, TEXTS, KINDS, random_images(4))
    with pytest.raises(ValueError, match=r"tokens must be \(4, 16, 4\).*got \(3, 16, 4\)"):
        model.model(batch, tokens[:3])
    with pytest.raises(ValueError, match=r"tokens must be \(4, 16, 4\).*got None"):
        model.model(batch, None)


def test_text_nll_counts_tokens():
    nats, n = tiny_model().text_nll(random_images(2), ["digit one", "a red circle"])
    assert n == 2 + 1 + 3 + 1 and nats > 0  # words + eos per caption


def test_save_load_round_trip_identical(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {
        "config.json",
        "model.safetensors",
        "tokenizer",
        "backbone",
        "README.md",  # the model card (tests/test_model_card.py)
    }  # pixels: no VAE
    loaded = MMAR.from_pretrained(tmp_path)
    for (k, a), b in zip(model.model.state_dict().items(), loaded.model.state_dict().values()):
        assert torch.equal(a, b), k
    kw = dict(num_iter=3, num_steps=3, seed=1)
    a = [im.tobytes() for im in model.generate_images(["digit one", ""], **kw)]
    b = [im.tobytes() for im in loaded.generate_images(["digit one", ""], **kw)]
    assert a == b
    x = random_images(2)
    assert model.caption(x, max_new_tokens=4) == loaded.caption(x, max_new_tokens=4)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["max_text_len"] == 16 and saved["sampling"]["num_steps"] == 5
    assert loaded.sampling == model.sampling


def test_ema_weights_are_used(tmp_path):
    model = tiny_model()
    net = model.model
    ema = {k: v + 1.0 if k == "mask_token" else v for k, v in net.state_dict().items()}
    model.save_pretrained(tmp_path, ema_state_dict=ema)
    assert "ema.mask_token" in load_file(str(tmp_path / "model.safetensors"))
    assert torch.allclose(MMAR.from_pretrained(tmp_path).model.mask_token, net.mask_token + 1)
    assert torch.equal(
        MMAR.from_pretrained(tmp_path, use_ema=False).model.mask_token, net.mask_token
    )


def test_tied_embeddings_saved_once(tmp_path):
    model = tiny_model()
    bb = model.model.backbone
    bb.config.tie_word_embeddings = True
    bb.lm_head.weight = bb.model.embed_tokens.weight
    model.save_pretrained(tmp_path)
    keys = load_file(str(tmp_path / "model.safetensors")).keys()
    assert ("backbone.lm_head.weight" in keys) != ("backbone.model.embed_tokens.weight" in keys)
    loaded = MMAR.from_pretrained(tmp_path).model.backbone
    assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()
    assert torch.equal(loaded.lm_head.weight, bb.lm_head.weight)


def test_missing_keys_raise_naming_file(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    del state["mask_token"]
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(RuntimeError, match=r"model\.safetensors.*missing keys \['mask_token'\]"):
        MMAR.from_pretrained(tmp_path)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_weights_raise_naming_file(tmp_path, damage):
    tiny_model().save_pretrained(tmp_path)
    f = tmp_path / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x07" * 100)
    with pytest.raises(OSError, match=rf"cannot read {f}.*truncated or corrupt"):
        MMAR.from_pretrained(tmp_path)


def test_from_pretrained_missing_dir_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        MMAR.from_pretrained(tmp_path / "nope")


def test_smoke_train_then_generate_and_caption():
    model = tiny_model(randomize_head=False)
    net = model.model.train()
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    batch, tokens = training_inputs(model.processor, TEXTS, KINDS, random_images(4))
    loss_values = []
    for _ in range(6):
        out = net(batch, tokens, generator=g)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        loss_values.append(out["loss"].item())
    assert loss_values[-1] < loss_values[0]
    images = model.generate_images(["digit one"], num_iter=2, num_steps=2)
    assert images[0].size == (8, 8) and images[0].mode == "L"
    assert net.training  # generation restores the mode
    assert len(model.caption(images, max_new_tokens=3)) == 1
