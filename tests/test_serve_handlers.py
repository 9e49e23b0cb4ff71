"""mmar serve's Service (what each tab does) on a tiny random model, without gradio."""

import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from helpers_model import one_thread, tiny_model  # noqa: F401  (one_thread: autouse)
from mmar.serve.config import ServeConfig
from mmar.serve.handlers import Service, iterations
from mmar.serve.inputs import InputError, upscale


@pytest.fixture(scope="module")
def service():
    return Service(tiny_model(), ServeConfig(), "tiny")


@pytest.fixture
def notices():
    return []


def _settings(service, **changes):
    s = service.model.sampling
    form = dict(num_iter=s.num_iter, guidance_scale=s.guidance_scale, num_steps=4,
                scheduler=s.scheduler, temperature=s.temperature) | changes  # fmt: skip
    return service.sampling(**form)


def _png(path, image):
    image.save(path)
    return str(path)


def test_summary_names_model_size_device_and_defaults(service):
    text = "\n".join(service.summary())
    n = sum(p.numel() for p in service.model.model.parameters())
    assert "model: tiny" in text and f"{n / 1e6:.2f} M parameters" in text and "on cpu" in text
    assert "images: 8 x 8 grey, 16 tokens (4 x 4)" in text
    assert f"num_iter={service.model.sampling.num_iter}" in text
    assert "10 MB and 4096 x 4096 pixels; 1 request(s) at a time, 16 waiting" in text


def test_iterations_match_the_reveal_schedule():
    assert iterations(16, 16) == 16
    assert iterations(16, 100) == 16  # K > N reveals one token per iteration
    assert iterations(16, 4) == 4
    assert iterations(3, 16) == 3


@pytest.mark.parametrize("num_iter", [4, 16, 64])
def test_generate_streams_every_iteration_and_ends_with_the_image(service, notices, num_iter):
    sampling = _settings(service, num_iter=num_iter)
    frames = list(service.generate("a red circle", sampling, 3, notices.append))
    K = min(num_iter, 16)
    assert [f.counter for f in frames] == [f"iteration {k} / {K}" for k in range(1, K + 1)]
    assert [f.last for f in frames] == [False] * (K - 1) + [True]
    expected = service.model.generate_images("a red circle", sampling, seed=3)[0]
    assert np.array_equal(np.asarray(frames[-1].image), np.asarray(expected))
    first = np.asarray(frames[0].image)
    assert first.shape == (8, 8) and (first == 128).any()  # grey: tokens not yet revealed
    assert notices == []


def test_frames_run_without_grad_on_whichever_thread_asks(service):
    """Gradio advances a streaming handler from a thread pool; a pipeline's no_grad entered on
    the first thread does not hold on the next (measured: 30 of 32 head calls with grad on)."""
    grad = []
    hook = service.model.model.head.register_forward_hook(
        lambda *_: grad.append(torch.is_grad_enabled())
    )
    try:
        frames = service.generate("a red circle", _settings(service, num_steps=2), 0, print)
        out: list = [None]

        def advance():
            out[0] = next(frames, None)

        while True:  # each frame on a new thread
            t = threading.Thread(target=advance)
            t.start()
            t.join()
            if out[0] is None:
                break
    finally:
        hook.remove()
    assert grad and not any(grad)


@pytest.mark.filterwarnings("ignore:1 of 1 prompts lose words")
def test_generate_warns_about_words_the_model_cannot_read(service, notices):
    list(service.generate("a purple circle", _settings(service, num_iter=2), 0, notices.append))
    assert [n.level for n in notices] == ["warning"]
    assert "'purple'" in notices[0].message


@pytest.mark.parametrize(
    "changes, match",
    [
        (dict(num_steps=0), r"num_steps: must be >= 1"),
        (dict(num_steps=10**6), r"num_steps: must be <= the model's diffusion.num_timesteps"),
        (dict(num_iter=2.5), r"num_iter must be a whole number"),
        (dict(num_iter=None), r"num_iter must be a number, got None"),
        (dict(guidance_scale=-1.0), r"guidance_scale: must be >= 0"),
        (dict(guidance_scale=float("nan")), r"guidance_scale: expected a finite number"),
        (dict(scheduler="euler"), r"scheduler must be one of \['ddim', 'ddpm', 'dpm\+\+2m'\]"),
    ],
)
def test_sampling_out_of_range_raises(service, changes, match):
    with pytest.raises(InputError, match=match):
        _settings(service, **changes)


@pytest.mark.parametrize("seed, match", [(None, "seed must be a number"), (2**70, "outside")])
def test_bad_seed_raises(service, seed, match):
    with pytest.raises(InputError, match=match):
        service.generate("a red circle", _settings(service), seed, print)


def test_too_long_prompt_raises_before_any_work(service):
    limit = service.max_chars
    assert limit == 16 * service.model.config.max_text_len
    with pytest.raises(InputError, match=f"at most {limit} are accepted"):
        service.generate("a" * (limit + 1), _settings(service), 0, print)


def test_caption_and_answer_read_an_upload(service, notices, tmp_path):
    image = service.model.generate_images("a red circle", _settings(service), seed=0)[0]
    path = _png(tmp_path / "a.png", image)
    assert service.caption(path, notices.append) == service.model.caption(image)[0]
    answer = service.answer(path, "a red circle", notices.append)
    assert answer == service.model.answer(image, "a red circle")[0]
    assert notices == []


def test_caption_resizes_a_wrong_size_upload_and_says_so(service, notices, tmp_path):
    path = _png(tmp_path / "wide.png", Image.new("RGB", (20, 10), (255, 0, 0)))
    assert isinstance(service.caption(path, notices.append), str)
    assert [n.level for n in notices] == ["warning"] and "20 x 10" in notices[0].message


def test_caption_without_image_raises(service):
    with pytest.raises(InputError, match="no image: upload one"):
        service.caption(None, print)


def test_caption_of_a_non_image_file_raises(service, tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(b"%PDF-1.4 not an image")
    with pytest.raises(InputError, match="x.png is not an image this app can read"):
        service.caption(str(path), print)


def test_answer_without_question_raises(service, tmp_path):
    path = _png(tmp_path / "a.png", Image.new("L", (8, 8)))
    with pytest.raises(InputError, match="the question is empty"):
        service.answer(path, " ", print)


def _edit(service, tmp_path, notify=print, **kw):
    image = kw.pop("image", service.model.generate_images("a red circle", seed=0)[0])
    args = dict(background=_png(tmp_path / "bg.png", image), layers=[], mode="inpaint",
                box="", direction="right", amount=0.5, prompt="a red circle",
                sampling=_settings(service), seed=0, notify=notify) | kw  # fmt: skip
    return image, service.edit(**args)


def test_inpaint_box_streams_and_keeps_the_rest(service, tmp_path):
    image, frames = _edit(service, tmp_path, box="0,0,4,4")
    frames = list(frames)
    M = 4  # a 4 x 4 pixel box: 2 x 2 tokens of 2 x 2 pixels
    assert frames[-1].counter == f"iteration {iterations(M, 16)} / {iterations(M, 16)}"
    out, before = np.asarray(frames[-1].image), np.asarray(image)
    keep = np.ones((8, 8), bool)
    keep[:4, :4] = False
    assert np.array_equal(out[keep], before[keep])
    assert not np.array_equal(out[~keep], before[~keep])


def test_inpaint_brush_layer_from_the_enlarged_image(service, notices, tmp_path):
    layer = np.zeros((256, 256, 4), np.uint8)
    layer[200:256, 200:256, 3] = 255  # the bottom-right corner: model pixels 6..7
    path = _png(tmp_path / "layer.png", Image.fromarray(layer, "RGBA"))
    small = service.model.generate_images("a red circle", seed=0)[0]
    _, frames = _edit(service, tmp_path, notices.append, image=upscale(small, 256),
                          layers=[path])  # fmt: skip
    out = np.asarray(list(frames)[-1].image)
    assert np.array_equal(out[:6, :], np.asarray(small)[:6, :])  # kept: exact after the 32x
    assert notices == []  # the size the app shows images at: no notice


def test_edit_says_when_an_upload_is_scaled_down(service, notices, tmp_path):
    small = service.model.generate_images("a red circle", seed=0)[0]
    big = small.resize((64, 64), Image.Resampling.NEAREST)  # 8x, not the display's 32x
    _, frames = _edit(service, tmp_path, notices.append, image=big, box="0,0,4,4")
    assert [n.message for n in notices] == [
        "the image is 64 x 64 pixels: scaled down 8x to the model's 8 x 8"
    ]
    out = np.asarray(list(frames)[-1].image)
    assert np.array_equal(out[4:], np.asarray(small)[4:])  # kept rows: exact after the 8x


def test_inpaint_empty_mask_raises(service, tmp_path):
    with pytest.raises(InputError, match="the mask is empty"):
        _edit(service, tmp_path)


def test_outpaint_streams_and_shifts_the_image(service, tmp_path):
    image, frames = _edit(service, tmp_path, mode="outpaint", direction="right", amount=0.5)
    out = np.asarray(list(frames)[-1].image)
    assert np.array_equal(out[:, :4], np.asarray(image)[:, 4:])  # shifted left by half


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(mode="outpaint", direction="sideways"), "direction must be one of"),
        (dict(mode="outpaint", amount=1.0), r"amount .* must be in \(0, 1\)"),
        (dict(mode="erase"), "mode must be one of"),
        (dict(box="0,0,9,9"), "not a non-empty box"),
    ],
)
def test_edit_bad_settings_raise(service, tmp_path, kw, match):
    with pytest.raises(InputError, match=match):
        _edit(service, tmp_path, **kw)


def test_inputs_and_handlers_do_not_import_gradio():
    code = (
        "import sys, mmar.serve.inputs, mmar.serve.handlers, mmar.serve.config; "
        "assert 'gradio' not in sys.modules, 'gradio imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
