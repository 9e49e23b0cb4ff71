"""`mmar inpaint` on a tiny saved checkpoint: box, mask, outpaint and vary; kept pixels
bit-identical in the files; bad input exits 2 with one line naming the flag."""

import re

import numpy as np
import pytest
from PIL import Image

from helpers_model import one_thread, tiny_model  # noqa: F401 (fixture)
from mmar.cli import main


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    tiny_model().save_pretrained(d)
    return d


@pytest.fixture
def image(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "in.png"
    Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(path)  # 2x the model's
    return path


def run(ckpt, image, out, *region, extra=()):
    argv = ["inpaint", "--model", str(ckpt), "--image", str(image), *region]
    argv += ["--num-iter", "2", "--num-steps", "2", "--out", str(out), "--device", "cpu", *extra]
    return main(argv)


def test_box_writes_input_mask_and_samples_with_kept_pixels_identical(
    ckpt, image, tmp_path, capsys
):
    out = tmp_path / "edits"
    rc = run(ckpt, image, out, "--box", "4,4,12,12", extra=["--prompt", "digit one", "--n", "2"])
    assert rc == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["input.png", "keep_mask.png", "s000.png", "s001.png"]
    assert sorted(capsys.readouterr().out.split()) == sorted(str(out / n) for n in names)
    given = np.asarray(Image.open(out / "input.png"))
    keep = np.asarray(Image.open(out / "keep_mask.png")) > 0
    assert given.shape == (8, 8) and keep.sum() == 64 - 16  # the 16 px box -> 8 px -> 2x2 tokens
    assert not keep[2:6, 2:6].any()
    a, b = (np.asarray(Image.open(out / f"s00{i}.png")) for i in range(2))
    assert np.array_equal(a[keep], given[keep]) and np.array_equal(b[keep], given[keep])
    assert not np.array_equal(a, b)  # samples use seed + k


def test_mask_file_white_is_regenerated(ckpt, image, tmp_path):
    mask = np.zeros((16, 16), dtype=np.uint8)
    mask[:, 8:] = 255  # the right half
    Image.fromarray(mask).save(tmp_path / "m.png")
    assert run(ckpt, image, tmp_path / "o", "--mask", str(tmp_path / "m.png")) == 0
    keep = np.asarray(Image.open(tmp_path / "o" / "keep_mask.png")) > 0
    assert keep[:, :4].all() and not keep[:, 4:].any()


@pytest.mark.parametrize(
    "region", [["--outpaint", "right", "--amount", "0.25"], ["--vary", "0.5"]], ids=str
)
def test_outpaint_and_vary(ckpt, image, tmp_path, region):
    assert run(ckpt, image, tmp_path / "o", *region) == 0
    keep = np.asarray(Image.open(tmp_path / "o" / "keep_mask.png")) > 0
    assert 0 < keep.sum() < 64
    if region[0] == "--outpaint":
        assert keep[:, :6].all() and not keep[:, 6:].any()


@pytest.mark.parametrize(
    ("region", "match"),
    [
        (["--box", "4,4,4,12"], "not a non-empty box inside the 16 x 16"),
        (["--box", "1,2,3"], "four numbers"),
        (["--mask", "MISSING"], "--mask .*cannot read it as an image"),
        (["--vary", "1.5"], "fraction"),
    ],
)
def test_bad_region_exits_2_naming_the_flag(ckpt, image, tmp_path, capsys, region, match):
    if region[1] == "MISSING":
        region = ["--mask", str(tmp_path / "none.png")]
    assert run(ckpt, image, tmp_path / "o", *region) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1

    assert re.search(match, err), err


def test_black_mask_and_wrong_size_mask_exit_2(ckpt, image, tmp_path, capsys):
    Image.new("L", (16, 16), 0).save(tmp_path / "black.png")
    assert run(ckpt, image, tmp_path / "o", "--mask", str(tmp_path / "black.png")) == 2
    assert "nothing to regenerate" in capsys.readouterr().err
    Image.new("L", (8, 8), 255).save(tmp_path / "small.png")
    assert run(ckpt, image, tmp_path / "o", "--mask", str(tmp_path / "small.png")) == 2
    assert "the image's size" in capsys.readouterr().err


def test_non_image_input_exits_2(ckpt, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not an image")
    assert run(ckpt, tmp_path / "notes.txt", tmp_path / "o", "--box", "0,0,4,4") == 2
    assert "--image" in capsys.readouterr().err
