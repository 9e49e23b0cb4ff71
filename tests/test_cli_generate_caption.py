"""`mmar generate` and `mmar caption` on a tiny saved checkpoint."""

import pytest
from PIL import Image

from helpers_model import one_thread, tiny_model  # noqa: F401 (fixture)
from mmar.cli import main


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    tiny_model().save_pretrained(d)
    return d


def test_generate_writes_pngs(ckpt, tmp_path, capsys):
    out = tmp_path / "imgs"
    rc = main(
        [
            "generate",
            "--model",
            str(ckpt),
            "--prompt",
            "digit one",
            "--prompt",
            "",
            "--n",
            "2",
            "--num-iter",
            "2",
            "--num-steps",
            "2",
            "--scheduler",
            "ddpm",
            "--out",
            str(out),
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out.split()
    names = sorted(p.name for p in out.iterdir())
    assert names == ["p000_s000.png", "p000_s001.png", "p001_s000.png", "p001_s001.png"]
    assert sorted(printed) == sorted(str(out / n) for n in names)
    assert Image.open(out / names[0]).size == (8, 8)


def test_caption_prints_path_tab_caption(ckpt, tmp_path, capsys):
    paths = []
    for i, im in enumerate([Image.new("L", (8, 8), 30), Image.new("RGB", (16, 12), (9, 90, 200))]):
        paths.append(tmp_path / f"{i}.png")
        im.save(paths[-1])
    rc = main(
        [
            "caption",
            "--model",
            str(ckpt),
            *map(str, paths),
            "--max-new-tokens",
            "3",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    lines = capsys.readouterr().out.strip("\n").split("\n")
    assert [ln.split("\t")[0] for ln in lines] == [str(p) for p in paths]
    assert all(ln.count("\t") == 1 for ln in lines)


def test_missing_model_dir_exit_2(tmp_path, capsys):
    rc = main(
        ["generate", "--model", str(tmp_path / "nope"), "--prompt", "a", "--out", str(tmp_path)]
    )
    assert rc == 2 and f"--model {tmp_path / 'nope'} does not exist" in capsys.readouterr().err
    rc = main(["caption", "--model", str(tmp_path / "nope"), "x.png"])
    assert rc == 2


def test_missing_image_reported_exit_1(ckpt, tmp_path, capsys):
    """A file that cannot be captioned is reported by name (exit 1), not a usage error."""
    rc = main(["caption", "--model", str(ckpt), str(tmp_path / "missing.png")])
    assert rc == 1 and "missing.png: no such file" in capsys.readouterr().err


def test_help_mentions_options(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    assert "--num-iter" in capsys.readouterr().out
