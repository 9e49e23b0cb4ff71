"""image_head "codebook" (the Show-o-like ablation): config checks, the CE loss against a hand
computation, learning on a fixed batch, masked-AR sampling of codes (seeded, batch invariant,
KnownTokens kept), understanding, and the save/load round trip."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from helpers_model import one_thread, training_inputs  # noqa: F401 (fixture)
from helpers_vq import D, K, save_tiny_vq, tiny_codebook_model, vq_tokenizer_config
from mmar.config import ConfigError
from mmar.model.codebook_head import (
    CodebookHead,
    draw_codes,
    guided_logits,
    sample_code_tokens,
)
from mmar.model.config import SamplingConfig, tiny_config
from mmar.pipelines.mmar import MMAR
from mmar.pipelines.text_to_image import KnownTokens

pytest.importorskip("diffusers")

S = SamplingConfig(num_iter=4, num_steps=3, guidance_scale=2.0)
TEXTS = ["a red circle", "digit seven", "digit one", "a blue square at the top"]
KINDS = ["t2i", "i2t", "img", "t2i"]


@pytest.fixture(scope="module")
def vq_dir(tmp_path_factory):
    return save_tiny_vq(tmp_path_factory.mktemp("vq"))


@pytest.fixture(scope="module")
def model(vq_dir):
    return tiny_codebook_model(vq_dir)


def images(b, seed=0):
    return torch.rand(b, 3, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_codebook_head_needs_a_vq_tokenizer_raises():
    with pytest.raises(ConfigError, match=r"MMARConfig\.image_head.*diffusers_vq"):
        tiny_config(image_head="codebook").validate()  # pixel tokens


def test_vq_tokenizer_with_patches_raises(vq_dir):
    with pytest.raises(ConfigError, match=r"ImageTokenizerConfig\.patch_size.*patch_size: 1"):
        tiny_config(
            image_tokenizer=vq_tokenizer_config(vq_dir).replace(patch_size=2),
            image_head="codebook",
        ).validate()


def test_fresh_model_holds_the_tokenizers_codebook_and_no_diffusion_head(model):
    net = model.model
    assert net.head is None and net.code_head is not None
    assert torch.equal(net.code_head.codebook, model.processor.image_tokenizer.codebook)
    assert net.code_head.proj.out_features == K and net.geometry.token_dim == D
    assert not any(n.startswith("head.") for n, _ in net.named_parameters())


def test_loss_is_the_cross_entropy_of_the_masked_codes(model):
    batch, tokens = training_inputs(model.processor, TEXTS, KINDS, images(4))
    net = model.model
    seeds = range(4)
    out = net(batch, tokens, generator=[torch.Generator().manual_seed(s) for s in seeds])
    # by hand: the same masks, the backbone, z = h + pos, CE of the tokenizer's own codes
    masked = net.draw_mask(batch, [torch.Generator().manual_seed(s) for s in seeds])
    masked = masked[batch.has_image]
    hidden = net.hidden_states(batch, net.with_mask_token(tokens, masked))
    z = net.conditions(hidden, batch)[masked]
    tok = model.processor.image_tokenizer
    codes = tok.codes(tok.encode(images(4)[batch.has_image]))  # (B_img, 4, 4)
    want = F.cross_entropy(net.code_head.proj(z), codes.flatten(1)[masked])
    torch.testing.assert_close(out["loss_diff"], want)
    assert out["n_masked"] == int(masked.sum()) > 0
    torch.testing.assert_close(out["loss"], out["loss_text"] + out["loss_diff"])


def test_loss_falls_on_a_fixed_batch(vq_dir):
    m = tiny_codebook_model(vq_dir)
    net = m.model.train()
    batch, tokens = training_inputs(m.processor, TEXTS, KINDS, images(4))
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        gens = [torch.Generator().manual_seed(i) for i in range(4)]  # the same masks each step
        out = net(batch, tokens, generator=gens)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss_diff"].item())
    assert losses[-1] < 0.5 * losses[0], losses
    assert torch.equal(net.code_head.codebook, m.processor.image_tokenizer.codebook)  # a buffer


def test_draw_codes_closed_form():
    logits = torch.log(torch.tensor([[0.2, 0.5, 0.3], [0.2, 0.5, 0.3], [0.2, 0.5, 0.3]]))
    u = torch.tensor([0.1, 0.6, 0.95])  # cdf 0.2, 0.7, 1.0
    assert draw_codes(logits, 1.0, u).tolist() == [0, 1, 2]
    assert draw_codes(logits, 0.0, u).tolist() == [1, 1, 1]  # argmax
    # tau -> small sharpens towards the argmax
    assert draw_codes(logits, 0.01, u).tolist() == [1, 1, 1]
    c, uc = torch.tensor([[1.0, 3.0]]), torch.tensor([[2.0, 0.0]])
    assert guided_logits(c, uc, 3.0).tolist() == [[-1.0, 9.0]]  # l_u + w (l_c - l_u)
    assert guided_logits(c, None, 3.0) is c


def tokens(model, prompts, sampling=S, **kw):
    return model.text_to_image.generate_tokens(prompts, sampling, **kw)


def test_t2i_gives_codebook_rows_seeded(model):
    a = tokens(model, ["digit one", "a red circle"], seed=3)
    codebook = model.model.code_head.codebook
    assert a.shape == (2, 16, D)
    codes = model.model.code_head.codes(a.reshape(-1, D))
    assert torch.equal(codebook[codes].view_as(a), a)
    assert torch.equal(a, tokens(model, ["digit one", "a red circle"], seed=3))
    assert not torch.equal(a, tokens(model, ["digit one", "a red circle"], seed=4))
    assert len(codes.unique()) > 2  # the head's draws vary over the codes
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # temperature acts on the codes: no "ignored" warning
        tokens(model, ["digit one"], S.replace(temperature=0.5))
    images_ = model.generate_images(["digit one"], num_iter=2, seed=0)
    assert images_[0].size == (8, 8) and images_[0].mode == "RGB"


def test_temperature_zero_is_argmax(model):
    s0 = S.replace(temperature=0.0, num_iter=1)  # one iteration: the order does not matter
    a = tokens(model, ["digit one"], s0, seed=0)
    assert torch.equal(a, tokens(model, ["digit one"], s0, seed=1))  # no draw is used


def test_sample_code_tokens_draws_from_each_images_generator():
    head = CodebookHead(width=3, codebook_size=4, token_dim=2)
    with torch.no_grad():
        head.proj.weight.copy_(torch.eye(4, 3))
        head.proj.bias.zero_()
        head.set_codebook(torch.arange(8.0).view(4, 2))
    cond, uncond = torch.randn(6, 3), torch.randn(6, 3)  # 2 images x 3 tokens
    gens = [torch.Generator().manual_seed(s) for s in (5, 9)]
    got = sample_code_tokens(head, cond, uncond, 2.5, 0.7, gens)
    u = torch.cat([torch.rand(3, generator=torch.Generator().manual_seed(s)) for s in (5, 9)])
    logits = guided_logits(head(cond), head(uncond), 2.5)
    assert torch.equal(got, head.codebook[draw_codes(logits, 0.7, u)])
    greedy = sample_code_tokens(head, cond, uncond, 2.5, 0.0, gens)
    assert torch.equal(greedy, head.codebook[logits.argmax(-1)])


def test_batch_invariance(model):
    """Prompt i with seed s + i alone == prompt i in a batch with seed s: the same codes."""
    prompts = ["digit one", "digit seven", "a red circle", ""] * 3  # 12
    batch = tokens(model, prompts, S.replace(batch_size=5), seed=100)
    for i in (0, 6, 11):
        alone = tokens(model, [prompts[i]], S, seed=100 + i)
        assert torch.equal(alone[0], batch[i]), i


def test_known_tokens_are_kept(model):
    tok = model.processor.image_tokenizer
    known = model.processor.encode_images(images(2, seed=5))  # (2, 16, D) codebook rows
    keep = torch.zeros(2, 16, dtype=torch.bool)
    keep[0, :8], keep[1, ::3] = True, True
    out = tokens(model, ["digit one", ""], known=KnownTokens(known, keep), seed=0)
    assert torch.equal(out[keep], known[keep])
    codes = model.model.code_head.codes(out.reshape(-1, D))
    assert torch.equal(tok.codebook[codes].view_as(out), out)


def test_understanding_reads_the_vq_tokens(model):
    caps = model.caption(images(2), max_new_tokens=3)
    assert len(caps) == 2 and all(isinstance(c, str) for c in caps)


def test_save_load_round_trip(model, tmp_path):
    model.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "model.safetensors")
    assert torch.equal(saved["code_head.codebook"], model.model.code_head.codebook)
    loaded = MMAR.from_pretrained(tmp_path)
    for (k, a), b in zip(model.model.state_dict().items(), loaded.model.state_dict().values()):
        assert torch.equal(a, b), k
    assert loaded.config.image_head == "codebook"
    kw = dict(num_iter=3, seed=1)
    a = [im.tobytes() for im in model.generate_images(["digit one", ""], **kw)]
    b = [im.tobytes() for im in loaded.generate_images(["digit one", ""], **kw)]
    assert a == b
