"""Transfusion-style text-to-image (full-sequence denoising): cache equivalence, seeding, batch
invariance, the guidance formula, the yielded steps, and KnownTokens (RePaint replacement)."""

import numpy as np
import pytest
import torch

import mmar.pipelines.transfusion as tf_module
from helpers_model import one_thread, random_images, tiny_transfusion_model  # noqa: F401
from mmar.model.config import SamplingConfig
from mmar.pipelines.editing import box_keep_mask
from mmar.pipelines.text_to_image import KnownTokens

S = SamplingConfig(num_steps=4)
PROMPTS = ["a red circle at the top", "", "digit one"]  # different lengths: left padding


@pytest.fixture(scope="module")
def model():
    return tiny_transfusion_model()


def tokens(model, prompts, sampling=S, **kw):
    return model.text_to_image.generate_tokens(prompts, sampling, **kw)


@pytest.mark.parametrize("scheduler", ["ddim", "ddpm", "dpm++2m"])
@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_cached_equals_uncached(model, scheduler, guidance):
    s = S.replace(scheduler=scheduler, guidance_scale=guidance)
    a = tokens(model, PROMPTS, s, seed=3)
    b = tokens(model, PROMPTS, s, seed=3, use_cache=False)
    assert a.shape == (3, 16, 4) and torch.isfinite(a).all()
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert a.std() > 0.1


def test_seeded_and_depends_on_seed_and_prompt(model):
    a = tokens(model, ["digit one"], seed=0)
    assert torch.equal(a, tokens(model, ["digit one"], seed=0))
    assert (a - tokens(model, ["digit one"], seed=1)).abs().max() > 1e-3
    s = S.replace(guidance_scale=1.0)
    assert (
        tokens(model, ["digit one"], s) - tokens(model, ["a blue square"], s)
    ).abs().max() > 1e-3


def test_one_ddim_step_is_affine_in_the_guidance_scale(model):
    """One DDIM step from the same x_T returns x0 = sqrt(ab) x_T - sqrt(1-ab) out (v), affine in
    out = out_u + w (out_c - out_u): so x0(w) = x0_u + w (x0_c - x0_u), x0_c and x0_u the
    unguided samples of the prompt and of ""."""
    s = S.replace(num_steps=1, guidance_scale=1.0)
    x_c = tokens(model, ["digit one"], s, seed=4)
    x_u = tokens(model, [""], s, seed=4)
    x_w = tokens(model, ["digit one"], s.replace(guidance_scale=3.0), seed=4)
    torch.testing.assert_close(x_w, x_u + 3.0 * (x_c - x_u), rtol=1e-4, atol=1e-4)


def test_batch_invariance(model):
    """Prompt i with seed s + i alone == prompt i in a batch with seed s (ddpm: noise at every
    step), also when some prompts keep tokens (their extra draws are their own)."""
    prompts = ["digit one", "a red circle", "", "digit seven", "a blue square"] * 2  # 10
    s = S.replace(scheduler="ddpm", batch_size=4)
    keep = torch.zeros(10, 16, dtype=torch.bool)
    keep[::3, :5] = True
    known = KnownTokens(torch.randn(10, 16, 4, generator=torch.Generator().manual_seed(0)), keep)
    batch = tokens(model, prompts, s, seed=100, known=known)
    for i in (0, 5, 9):
        alone = tokens(model, [prompts[i]], s, seed=100 + i, known=known.select([i]))
        torch.testing.assert_close(alone[0], batch[i], rtol=0, atol=1e-4)


def test_yields_one_step_per_denoising_step(model):
    steps = list(model.text_to_image.steps(["digit one", ""], S.replace(num_iter=2), seed=5))
    assert [(st.index, st.total) for st in steps] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert all(not st.masked.any() for st in steps)  # nothing masked: the whole image denoises
    torch.testing.assert_close(steps[-1].tokens, tokens(model, ["digit one", ""], seed=5))
    frames = list(model.text_to_image.stream(["digit one"], S, every=2))
    assert len(frames) == 2 and frames[0][0].size == (8, 8)


@pytest.mark.parametrize("scheduler", ["ddim", "ddpm"])
def test_known_tokens_kept_bit_identical(model, scheduler):
    s = S.replace(scheduler=scheduler)
    x = model.processor.encode_images(random_images(2, seed=2))  # (2, 16, 4)
    keep = torch.zeros(2, 16, dtype=torch.bool)
    keep[0, :8], keep[1, ::3] = True, True
    out = tokens(model, ["digit one", "a red circle"], s, seed=6, known=KnownTokens(x, keep))
    assert torch.equal(out[keep], x[keep])
    assert (out[~keep] - x[~keep]).abs().max() > 1e-3  # the others are sampled
    # nothing kept: exactly text-to-image (same draws, same tokens)
    none = KnownTokens(x, torch.zeros_like(keep))
    plain = tokens(model, ["digit one", "a red circle"], s, seed=6)
    assert torch.equal(tokens(model, ["digit one", "a red circle"], s, seed=6, known=none), plain)


def test_kept_tokens_are_noised_to_each_step(model, monkeypatch):
    """RePaint: the kept tokens are set to q_sample(known, eps, alpha_bar_t) for the t of every
    backbone pass (x_T's, then after each step but the last, which sets the known ones)."""
    seen = []
    real = tf_module.q_sample

    def spy(x0, eps, ab):
        seen.append(float(ab.reshape(-1)[0]))
        return real(x0, eps, ab)

    monkeypatch.setattr(tf_module, "q_sample", spy)
    x = model.processor.encode_images(random_images(1))
    keep = torch.ones(1, 16, dtype=torch.bool)
    keep[0, 0] = False
    tokens(model, ["digit one"], S, seed=0, known=KnownTokens(x, keep))
    sched = model.model.noise_schedule()
    ts = torch.linspace(0, 999, 4).round().long().flip(0).tolist()  # S's 4 linspace steps
    assert seen == pytest.approx([float(sched.alphas_cumprod[t]) for t in ts])


def test_wrong_known_shape_raises(model):
    known = KnownTokens(torch.zeros(1, 15, 4), torch.zeros(1, 15, dtype=torch.bool))
    with pytest.raises(ValueError, match="known tokens"):
        tokens(model, ["digit one"], known=known)


def test_inpaint_keeps_pixels_bit_identical(model):
    """MMAR.inpaint (the editing pipeline) goes through the same steps: kept pixels come back
    unchanged, the rest is generated."""
    pil = model.processor.postprocess(random_images(2, seed=3))
    keep = box_keep_mask(8, (1, 3, 6, 8))  # odd edges: tokens partly inside are regenerated
    out = model.inpaint(pil, keep, "a red circle", seed=5, num_steps=3)
    for a, b in zip(out, pil):
        a, b = np.asarray(a), np.asarray(b)
        assert np.array_equal(a[keep.numpy()], b[keep.numpy()])
        assert not np.array_equal(a, b)


def test_timestep_spacing_and_precision_reach_the_denoising_loop(model, monkeypatch):
    """sampling.timestep_spacing picks the loop's timesteps (leading: from T - T//n); precision
    bf16 runs it under autocast, close to fp32 but not equal."""
    from mmar.diffusion.schedulers import DDIMScheduler

    seen = []
    original = DDIMScheduler.set_timesteps

    def spy(self, n, device=None, spacing="linspace"):
        original(self, n, device, spacing)
        seen.append(self.timesteps.tolist())

    monkeypatch.setattr(DDIMScheduler, "set_timesteps", spy)
    lin = tokens(model, ["digit one"], seed=2)
    lead = tokens(model, ["digit one"], S.replace(timestep_spacing="leading"), seed=2)
    assert seen == [[999, 666, 333, 0], [750, 500, 250, 0]]
    assert (lin - lead).abs().max() > 1e-3
    bf16 = tokens(model, ["digit one"], S.replace(precision="bf16"), seed=2)
    assert bf16.dtype == torch.float32 and not torch.equal(bf16, lin)
    torch.testing.assert_close(bf16, lin, rtol=0.1, atol=0.3)
