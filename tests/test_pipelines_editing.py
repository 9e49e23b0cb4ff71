"""Editing by masked AR (mmar.pipelines.editing): kept tokens and pixels come back bit-identical,
the rest is generated from the prompt and the kept part, and bad masks are refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mmar.diffusion.sampling as sampling_mod
import mmar.pipelines.text_to_image as t2i_mod
from helpers_model import one_thread, random_images, tiny_model  # noqa: F401
from mmar.pipelines.editing import box_keep_mask


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def images_of(model, b: int, seed: int = 0) -> torch.Tensor:
    tok = model.processor.image_tokenizer
    return random_images(b, seed=seed, c=tok.image_channels, s=tok.image_size)


def test_kept_tokens_are_bit_identical_and_the_rest_is_generated(model):
    imgs = images_of(model, 3)
    keep = box_keep_mask(8, (2, 2, 6, 6))  # 8 px, 2 px tokens: the middle 2 x 2 tokens
    tokens = model.editor.inpaint_tokens(imgs, keep, ["a red circle", "", "digit one"], seed=0)
    given = model.processor.encode_images(imgs)
    _, kept = model.editor.keep_masks(keep, 3)
    assert kept.sum(1).tolist() == [12, 12, 12]
    assert torch.equal(tokens[kept], given[kept])
    # every generated token differs from the input's (a random input, a sampled output)
    assert (tokens[~kept] - given[~kept]).abs().amax(-1).min() > 1e-3


def test_kept_pixels_are_bit_identical_with_a_pixel_mask_that_cuts_tokens(model):
    pil = model.processor.postprocess(images_of(model, 2, seed=3))
    keep = box_keep_mask(8, (1, 3, 6, 8))  # odd edges: tokens partly inside are regenerated
    out = model.inpaint(pil, keep, "a red circle", seed=5)
    for a, b in zip(out, pil):
        a, b = np.asarray(a), np.asarray(b)
        assert np.array_equal(a[keep.numpy()], b[keep.numpy()])
        assert not np.array_equal(a, b)  # something was generated in the box


def test_token_grid_mask_and_pixel_mask_agree(model):
    imgs = images_of(model, 1)
    grid = torch.ones(4, 4, dtype=torch.bool)
    grid[1:3, 1:3] = False
    by_grid = model.editor.inpaint_tokens(imgs, grid, "digit one", seed=2)
    by_pixels = model.editor.inpaint_tokens(
        imgs, box_keep_mask(8, (2, 2, 6, 6)), "digit one", seed=2
    )
    assert torch.equal(by_grid, by_pixels)


def test_nothing_kept_is_text_to_image(model):
    imgs = images_of(model, 2)
    nothing = torch.zeros(4, 4, dtype=torch.bool)
    edited = model.editor.inpaint_tokens(imgs, nothing, ["digit one", "a red circle"], seed=7)
    plain = model.generate_tokens(["digit one", "a red circle"], seed=7)
    assert torch.equal(edited, plain)


def test_generation_is_conditioned_on_the_kept_tokens(model):
    keep = box_keep_mask(8, (0, 0, 4, 8))  # regenerate the left half
    a = model.editor.inpaint_tokens(images_of(model, 1, seed=0), keep, "digit one", seed=1)
    b = model.editor.inpaint_tokens(images_of(model, 1, seed=9), keep, "digit one", seed=1)
    _, kept = model.editor.keep_masks(keep, 1)
    assert not torch.allclose(a[~kept], b[~kept])


def test_every_free_token_is_sampled_once_and_no_kept_one(model, monkeypatch):
    rows = []
    real = sampling_mod.sample_tokens

    def spy(head, cond, *args, **kwargs):
        rows.append(cond.shape[0])
        return real(head, cond, *args, **kwargs)

    monkeypatch.setattr(t2i_mod, "sample_tokens", spy)
    keep = box_keep_mask(8, (2, 0, 8, 4))  # 3 x 2 tokens to generate
    model.editor.inpaint_tokens(images_of(model, 2), keep, "", seed=0, sampling=None)
    assert sum(rows) == 2 * 6  # 2 images x 6 free tokens, each once


def test_batch_with_different_masks_equals_each_alone(model):
    imgs = images_of(model, 3, seed=4)
    keep = torch.ones(3, 8, 8, dtype=torch.bool)
    keep[0, :4] = False  # 8 tokens to generate
    keep[1, :, :2] = False  # 4
    keep[2, 4:, 4:] = False  # 4
    prompts = ["digit one", "a red circle", ""]
    together = model.editor.inpaint_tokens(imgs, keep, prompts, seed=[10, 11, 12])
    for i in range(3):
        alone = model.editor.inpaint_tokens(imgs[i : i + 1], keep[i], prompts[i], seed=10 + i)
        torch.testing.assert_close(together[i : i + 1], alone, atol=1e-5, rtol=1e-5)


def test_stream_yields_every_iteration_and_ends_with_the_result(model):
    imgs = images_of(model, 1)
    keep = box_keep_mask(8, (0, 0, 8, 4))  # the top half: 8 tokens
    frames = list(model.stream_inpaint(imgs, keep, "digit one", seed=0, num_iter=4))
    assert len(frames) == 4
    first = np.asarray(frames[0][0])
    assert (first[:4] == 128).any()  # not yet revealed tokens are grey
    final = model.inpaint(imgs, keep, "digit one", seed=0, num_iter=4)
    assert np.array_equal(np.asarray(frames[-1][0]), np.asarray(final[0]))
    every_other = list(model.stream_inpaint(imgs, keep, "digit one", seed=0, num_iter=4, every=3))
    assert len(every_other) == 2  # iteration 3 and the last


def test_stream_images_ends_with_generate_images(model):
    frames = list(model.stream_images(["digit one", "a red circle"], seed=3, num_iter=5))
    assert len(frames) == 5 and all(len(f) == 2 for f in frames)
    final = model.generate_images(["digit one", "a red circle"], seed=3, num_iter=5)
    for a, b in zip(frames[-1], final):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    # the reveal is progressive: fewer grey cells frame after frame
    grey = [int((np.asarray(f[0]) == 128).sum()) for f in frames]
    assert grey[0] > grey[-2] and grey == sorted(grey, reverse=True)


def test_outpaint_canvas_shifts_by_whole_tokens(model):
    imgs = images_of(model, 1)
    canvas, keep = model.editor.outpaint_canvas(imgs, "right", 0.3)  # 0.3 * 4 -> 1 token = 2 px
    assert torch.equal(canvas[..., :6], imgs[..., 2:]) and keep[0, :, :6].all()
    assert not keep[0, :, 6:].any()
    canvas, keep = model.editor.outpaint_canvas(imgs, "up", 0.5)
    assert torch.equal(canvas[..., 4:, :], imgs[..., :4, :]) and keep[0, 4:].all()
    canvas, keep = model.editor.outpaint_canvas(imgs, None, placement=(2, 2, 4))
    assert keep[0].sum() == 16 and keep[0, 2:6, 2:6].all()
    out = model.outpaint(imgs, "left", 0.5, "digit one", seed=0)
    assert np.array_equal(
        np.asarray(out[0])[:, 4:], np.asarray(model.processor.postprocess(imgs)[0])[:, :4]
    )


def test_vary_regenerates_the_fraction_asked(model):
    keep = model.editor.variation_mask(2, 0.25, seed=0)  # 16 tokens -> 4
    assert (~keep).flatten(1).sum(1).tolist() == [4, 4]
    assert not torch.equal(keep[0], keep[1])  # each image its own choice
    imgs = images_of(model, 2)
    out = model.vary(imgs, 0.25, seed=0)
    ref = model.processor.postprocess(imgs)
    px = keep.repeat_interleave(2, 1).repeat_interleave(2, 2).numpy()
    for i in range(2):
        assert np.array_equal(np.asarray(out[i])[px[i]], np.asarray(ref[i])[px[i]])


@pytest.mark.parametrize(
    ("mask", "match"),
    [
        (torch.ones(8, 8), "bool mask"),
        (torch.ones(5, 5, dtype=torch.bool), r"H = W = 8 \(pixels\) or 4"),
        (torch.ones(3, 8, 8, dtype=torch.bool), r"\(1, H, W\)"),
        (torch.ones(8, 8, dtype=torch.bool), "nothing to generate"),
    ],
)
def test_bad_keep_mask_raises(model, mask, match):
    with pytest.raises(ValueError, match=match):
        model.inpaint(images_of(model, 1), mask, "digit one")


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m, x: box_keep_mask(8, (4, 4, 4, 6)), "non-empty box"),
        (lambda m, x: box_keep_mask(8, (0, 0, 9, 4)), "inside the 8 x 8"),
        (lambda m, x: box_keep_mask(8, (1, 2, 3)), "4 numbers"),
        (lambda m, x: m.outpaint(x, "right", 1.0), r"amount.*\(0, 1\)"),
        (lambda m, x: m.outpaint(x, "sideways"), "direction"),
        (lambda m, x: m.outpaint(x, None, placement=(6, 0, 4)), "inside the 8 x 8 canvas"),
        (lambda m, x: m.vary(x, 0.0), "fraction"),
        (
            lambda m, x: m.inpaint(x, box_keep_mask(8, (0, 0, 4, 4)), ["a", "b", "c"]),
            "3 prompts for 1 images",
        ),
    ],
)
def test_bad_editing_arguments_raise(model, call, match):
    with pytest.raises(ValueError, match=match):
        call(model, images_of(model, 1))


def test_each_iteration_runs_without_grad_on_the_thread_that_resumes_it(model):
    """A stream advanced from a thread pool (as Gradio does): grad mode is per thread, so every
    iteration must enter no_grad itself, on the thread that asks for it."""
    import threading

    grad = []
    handle = model.model.head.register_forward_hook(lambda *_: grad.append(torch.is_grad_enabled()))
    try:
        frames = model.stream_images("digit one", num_iter=4)
        for _ in range(4):  # a new thread for each step
            t = threading.Thread(target=next, args=(frames,))
            t.start()
            t.join()
    finally:
        handle.remove()
    assert len(grad) > 4 and not any(grad)
