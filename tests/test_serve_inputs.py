"""mmar serve's input checks (mmar.serve.inputs) and ServeConfig: pure functions, no gradio."""

import numpy as np
import pytest
from PIL import Image

from mmar.config import ConfigError
from mmar.serve.config import ServeConfig, is_loopback
from mmar.serve.inputs import (
    InputError,
    check_pixels,
    check_prompt,
    fit_to_model,
    keep_mask,
    painted_mask,
    parse_box,
    read_image_file,
    upscale,
)


def _png(path, size=(8, 8), mode="L", value=128):
    Image.new(mode, size, value).save(path)
    return path


# --- prompts ---------------------------------------------------------------------------------
def test_check_prompt_strips_and_accepts_the_limit():
    assert check_prompt("  a red circle \n", max_chars=12) == "a red circle"
    assert check_prompt(None, max_chars=5) == ""  # unconditional: allowed unless required


def test_check_prompt_too_long_raises():
    with pytest.raises(InputError, match=r"has 13 characters; at most 12"):
        check_prompt("a red circles", max_chars=12)


def test_check_prompt_empty_required_raises():
    with pytest.raises(InputError, match="the question is empty"):
        check_prompt("   ", max_chars=10, what="question", required=True)


# --- uploads ---------------------------------------------------------------------------------
def test_read_image_file_reads_a_png(tmp_path):
    im = read_image_file(_png(tmp_path / "a.png", (5, 7)), max_bytes=10_000, max_pixels=35)
    assert im.size == (5, 7) and im.getpixel((0, 0)) == 128


def test_read_image_file_not_an_image_raises(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is text, not a PNG\n")
    with pytest.raises(InputError, match=r"notes.png is not an image .* upload a PNG, JPEG"):
        read_image_file(path, max_bytes=10_000, max_pixels=10_000)


def test_read_image_file_too_many_bytes_raises(tmp_path):
    path = _png(tmp_path / "big.png", (64, 64))
    size = path.stat().st_size
    with pytest.raises(InputError, match=r"big.png is .* MB; at most"):
        read_image_file(path, max_bytes=size - 1, max_pixels=10**6)
    assert read_image_file(path, max_bytes=size, max_pixels=10**6).size == (64, 64)


def test_read_image_file_too_many_pixels_raises(tmp_path):
    path = _png(tmp_path / "wide.png", (100, 30))
    with pytest.raises(InputError, match=r"100 x 30 = 3000 pixels; at most 2999"):
        read_image_file(path, max_bytes=10**6, max_pixels=2999)


def test_read_image_file_float_pixels_raises(tmp_path):
    path = tmp_path / "depth.tiff"
    Image.fromarray(np.zeros((4, 4), np.float32)).save(path)
    with pytest.raises(InputError, match=r"depth.tiff: floating-point pixels"):
        read_image_file(path, max_bytes=10**6, max_pixels=10**6)


def test_read_image_file_missing_raises(tmp_path):
    with pytest.raises(InputError, match="cannot be read"):
        read_image_file(tmp_path / "gone.png", max_bytes=10**6, max_pixels=10**6)


def test_check_pixels_raises_above_the_limit_only():
    check_pixels(64, 64, 4096)
    with pytest.raises(InputError, match="65 x 64"):
        check_pixels(65, 64, 4096)


# --- resizing --------------------------------------------------------------------------------
def test_fit_to_model_keeps_the_right_size_silently():
    im = Image.new("L", (8, 8))
    out, notice = fit_to_model(im, 8)
    assert out is im and notice is None


def test_fit_to_model_undoes_the_display_upscale_exactly():
    rng = np.random.default_rng(0)
    small = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    out, notice = fit_to_model(upscale(small, 256), 8)
    assert np.array_equal(np.asarray(out), np.asarray(small))
    assert notice is not None and notice.level == "info" and "scaled down 32x" in notice.message


def test_fit_to_model_stretches_a_non_square_image_with_a_warning():
    out, notice = fit_to_model(Image.new("RGB", (30, 20)), 8)
    assert out.size == (8, 8)
    assert notice is not None and notice.level == "warning" and "30 x 20" in notice.message
    assert "not square" in notice.message


def test_upscale_uses_the_largest_whole_factor():
    assert upscale(Image.new("L", (8, 8)), 256).size == (256, 256)
    assert upscale(Image.new("L", (48, 48)), 256).size == (240, 240)
    assert upscale(Image.new("L", (300, 300)), 256).size == (300, 300)


# --- masks -----------------------------------------------------------------------------------
def test_parse_box_reads_commas_or_spaces():
    assert parse_box("0,0,4,4", 8) == (0, 0, 4, 4)
    assert parse_box(" 2 1 8 3 ", 8) == (2, 1, 8, 3)
    assert parse_box("", 8) is None and parse_box(None, 8) is None


@pytest.mark.parametrize("text", ["1,2,3", "a,b,c,d", "1.5,0,4,4"])
def test_parse_box_not_four_integers_raises(text):
    with pytest.raises(InputError, match=r"expected four whole numbers x0,y0,x1,y1; e.g. 2,2,6,6"):
        parse_box(text, 8)


@pytest.mark.parametrize("text", ["0,0,9,4", "4,0,4,8", "-1,0,4,4"])
def test_parse_box_outside_or_empty_raises(text):
    with pytest.raises(InputError, match=r"not a non-empty box inside the 8 x 8 image"):
        parse_box(text, 8)


def test_painted_mask_marks_every_model_pixel_a_stroke_touches():
    layer = np.zeros((32, 32, 4), np.uint8)
    layer[0, 0, 3] = 1  # one faint display pixel in the top-left model pixel (4 x 4 of them)
    layer[16:24, 8:12, 3] = 200
    mask = painted_mask([Image.fromarray(layer, "RGBA")], 8)
    expected = np.zeros((8, 8), bool)
    expected[0, 0] = True
    expected[4:6, 2] = True
    assert np.array_equal(mask, expected)
    assert painted_mask([], 8) is None


def test_keep_mask_regenerates_the_box_and_the_painted_pixels():
    painted = np.zeros((8, 8), bool)
    painted[7, 7] = True
    keep = keep_mask(8, (0, 0, 2, 2), painted)
    assert keep.dtype == bool and keep.shape == (8, 8)
    assert not keep[:2, :2].any() and not keep[7, 7] and keep.sum() == 64 - 4 - 1


def test_keep_mask_empty_raises():
    with pytest.raises(InputError, match="the mask is empty: paint the region"):
        keep_mask(8, None, np.zeros((8, 8), bool))
    with pytest.raises(InputError, match="the mask is empty"):
        keep_mask(8, None, None)


# --- ServeConfig -----------------------------------------------------------------------------
def test_serve_config_defaults_bind_to_this_machine_only():
    c = ServeConfig()
    c.validate()
    assert (c.host, c.port, c.concurrency, c.max_queue) == ("127.0.0.1", 7860, 1, 16)
    assert c.max_upload_bytes == 10 * 2**20 and c.prompt_chars(64) == 1024
    assert ServeConfig(max_prompt_chars=50).prompt_chars(64) == 50


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("port", 70000, r"ServeConfig.port: must be a TCP port in \[1, 65535\]"),
        ("port", 0, r"ServeConfig.port: must be a TCP port"),
        ("concurrency", 0, r"ServeConfig.concurrency: must be >= 1"),
        ("max_queue", 0, r"ServeConfig.max_queue: must be >= 1"),
        ("max_upload_mb", 0.0, r"ServeConfig.max_upload_mb: must be > 0"),
        ("max_prompt_chars", 0, r"ServeConfig.max_prompt_chars: must be >= 1"),
        ("host", " ", r"ServeConfig.host: must not be empty"),
    ],
)
def test_serve_config_out_of_range_raises(field, value, match):
    with pytest.raises(ConfigError, match=match):
        ServeConfig(**{field: value}).validate()


@pytest.mark.parametrize(
    "host, local",
    [("127.0.0.1", True), ("127.0.1.1", True), ("::1", True), ("localhost", True),
     ("0.0.0.0", False), ("192.168.1.5", False), ("example.org", False)],
)  # fmt: skip
def test_is_loopback(host, local):
    assert is_loopback(host) is local
