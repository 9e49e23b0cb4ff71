"""image_head "transfusion": the model's layers, its training loss (closed forms and a hand
computation), seeding, the clean t = 0 path of understanding, and save/load."""

import math

import pytest
import torch

from helpers_model import (  # noqa: F401 (fixture)
    one_thread,
    random_images,
    tiny_transfusion_model,
    training_inputs,
)
from mmar.model.transfusion import draw_image_noise, transfusion_loss
from mmar.pipelines.mmar import MMAR

TEXTS = ["a red circle", "digit seven", "digit one", "a blue square at the top"]
KINDS = ["t2i", "i2t", "img", "t2i"]


def gens(*seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def test_layers_replace_the_diffusion_head():
    net = tiny_transfusion_model(randomize=False).model
    assert net.head is None and net.code_head is None
    assert not any(name.startswith(("head.", "code_head.")) for name in net.state_dict())
    assert net.transfusion.out.weight.shape == (4, 32)  # W = 32 -> D = 4
    # zero-initialised output: a fresh model predicts 0 for every token
    assert not net.transfusion.out.weight.any() and not net.transfusion.out.bias.any()


@pytest.mark.parametrize(
    ("kind", "out", "expected"),
    [
        ("x0", 0.0, lambda ab: 1.0),  # target x0 = 1
        ("eps", 2.0, lambda ab: 4.0),  # target eps = 0
        ("v", 0.0, lambda ab: 1 - ab),  # target v = sqrt(ab) 0 - sqrt(1-ab) 1
    ],
)
def test_loss_closed_forms(kind, out, expected):
    ab = torch.tensor([0.25, 0.81], dtype=torch.float64).view(2, 1, 1)
    x0, eps = torch.ones(2, 3, 4), torch.zeros(2, 3, 4)
    loss = transfusion_loss(torch.full((2, 3, 4), out), x0, eps, ab, kind)
    assert loss.shape == (2,)
    torch.testing.assert_close(loss, torch.tensor([expected(0.25), expected(0.81)]))


def test_loss_wrong_shapes_raises():
    with pytest.raises(ValueError, match=r"\(G, N, D\)"):
        transfusion_loss(
            torch.zeros(2, 4), torch.zeros(2, 4), torch.zeros(2, 4), torch.ones(2, 1), "v"
        )


def test_forward_matches_a_hand_computation():
    """One t2i sample (noised) and one i2t sample (clean, t = 0): the forward's loss_diff is the
    v-loss of Linear(h + pos) computed here from the same draws, step by step."""
    model = tiny_transfusion_model()
    net = model.model
    batch, tokens = training_inputs(model.processor, ["digit one", "a red circle"], ["t2i", "i2t"],
                                    random_images(2))  # fmt: skip
    g = gens(5, 6)
    with torch.no_grad():
        out = net(batch, tokens, generator=g)
        # sample 0 draws t, then eps (N, D), from its generator; sample 1 draws nothing
        mine = torch.Generator().manual_seed(5)
        t = torch.randint(0, 1000, (1,), generator=mine)
        eps = torch.randn(16, 4, generator=mine)
        assert torch.equal(g[1].get_state(), torch.Generator().manual_seed(6).get_state())
        ab = float(net.noise_schedule().alphas_cumprod[t])
        x0 = tokens[0]
        x_t = math.sqrt(ab) * x0 + math.sqrt(1 - ab) * eps
        v = math.sqrt(ab) * eps - math.sqrt(1 - ab) * x0
        emb = net.backbone.get_input_embeddings()(batch.input_ids).clone()  # (2, L, W)
        t_emb = net.transfusion.time_embed(torch.tensor([int(t), 0]))  # (2, W)
        img = net.vit(torch.stack([x_t, tokens[1]])) + t_emb[:, None]  # (2, N, W)
        emb[batch.is_image] = img.reshape(-1, img.shape[-1])
        h, _ = net.backbone_hidden(emb, batch.attention_mask, batch.position_ids)
        z = h[0][batch.is_image[0]] + net.diffusion_pos_emb[0]  # (N, W)
        pred = z @ net.transfusion.out.weight.T + net.transfusion.out.bias  # (N, D)
        expected = ((pred - v) ** 2).mean()
    torch.testing.assert_close(out["loss_diff"], expected, rtol=1e-5, atol=1e-6)
    assert out["n_masked"] == 16  # the N tokens of the one generated image
    torch.testing.assert_close(out["loss"], out["loss_text"] + out["loss_diff"])


def test_draw_image_noise_is_per_image():
    t, eps = draw_image_noise(gens(1, 2), 16, 4, 1000, torch.device("cpu"))
    t2, eps2 = draw_image_noise(gens(2), 16, 4, 1000, torch.device("cpu"))
    assert t.shape == (2,) and eps.shape == (2, 16, 4)
    assert torch.equal(t[1:], t2) and torch.equal(eps[1:], eps2)  # image 1 alone == in a batch


def test_forward_seeded_and_every_part_gets_gradients():
    model = tiny_transfusion_model()
    net = model.model.train()
    batch, tokens = training_inputs(model.processor, TEXTS, KINDS, random_images(4))
    a = net(batch, tokens, generator=gens(0, 1, 2, 3))
    b = net(batch, tokens, generator=gens(0, 1, 2, 3))
    assert torch.equal(a["loss"], b["loss"])
    assert a["n_masked"] == 3 * 16  # t2i, img, t2i are noised; i2t is read clean
    a["loss"].backward()
    params = dict(net.named_parameters())
    for name in (
        "transfusion.out.weight",
        "transfusion.time_embed.mlp.0.weight",
        "vit.input_proj.weight",
        "diffusion_pos_emb",
        "backbone.model.layers.0.self_attn.q_proj.weight",
    ):
        grad = params[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


def test_forward_under_bf16_autocast():
    model = tiny_transfusion_model()
    net = model.model.train()
    batch, tokens = training_inputs(model.processor, TEXTS, KINDS, random_images(4))
    with torch.autocast("cpu", torch.bfloat16):
        out = net(batch, tokens, generator=gens(0, 1, 2, 3))
    assert out["loss_diff"].dtype == torch.float32 and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert torch.isfinite(net.transfusion.out.weight.grad).all()


def test_loss_falls_on_a_fixed_batch():
    """30 AdamW steps on one batch with the same draws each step: the image loss falls."""
    model = tiny_transfusion_model(randomize=False)
    net = model.model.train()
    batch, tokens = training_inputs(model.processor, TEXTS, KINDS, random_images(4))
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    values = []
    for _ in range(30):
        out = net(batch, tokens, generator=gens(0, 1, 2, 3))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        values.append((out["loss_text"].item(), out["loss_diff"].item()))
    assert all(math.isfinite(x) for pair in values for x in pair)
    assert values[-1][1] < 0.5 * values[0][1], values
    assert values[-1][0] < values[0][0]


def test_forward_wrong_tokens_raises():
    model = tiny_transfusion_model()
    batch, _ = training_inputs(model.processor, TEXTS[:2], KINDS[:2], random_images(2))
    with pytest.raises(ValueError, match=r"tokens must be \(2, 16, 4\)"):
        model.model(batch, torch.zeros(1, 16, 4))


def test_understanding_reads_clean_images_at_t0():
    """Captioning, answering and text_nll embed the image with t = 0's embedding (the same
    MMARModel.image_embeddings as training's i2t samples)."""
    model = tiny_transfusion_model()
    seen = []
    hook = model.model.transfusion.time_embed.register_forward_hook(
        lambda _m, args, _out: seen.append(args[0].clone())
    )
    x = random_images(2)
    try:
        model.caption(x, max_new_tokens=2)
        model.answer(x, "a red circle", max_new_tokens=2)
        model.text_nll(x, ["digit one", "digit seven"])
    finally:
        hook.remove()
    assert len(seen) == 3 and all(t.shape == (2,) and not t.any() for t in seen)
    net = model.model
    tokens = model.processor.encode_images(x)
    with torch.no_grad():
        t0 = net.transfusion.time_embed(torch.zeros(1, dtype=torch.long))
        torch.testing.assert_close(net.image_embeddings(tokens), net.vit(tokens) + t0)
        assert t0.abs().max() > 1e-3  # the embedding is really there


def test_save_load_round_trip(tmp_path):
    model = tiny_transfusion_model()
    model.save_pretrained(tmp_path)
    loaded = MMAR.from_pretrained(tmp_path)
    assert loaded.config.image_head == "transfusion"
    for (k, a), b in zip(model.model.state_dict().items(), loaded.model.state_dict().values()):
        assert torch.equal(a, b), k
    kw = dict(num_steps=3, seed=1)
    a = model.generate_tokens(["digit one", ""], **kw)
    assert torch.equal(a, loaded.generate_tokens(["digit one", ""], **kw))
    x = random_images(2)
    assert model.caption(x, max_new_tokens=4) == loaded.caption(x, max_new_tokens=4)
