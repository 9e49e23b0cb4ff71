"""Bad input to every command, to configs and to checkpoints (issue 9): an expected error is one
line ``mmar CMD: message`` naming the file or flag, exit status 2; a traceback only for a bug or
with ``mmar --debug``. Saved weights follow the umask; a re-saved model is self-contained."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

import mmar
from helpers_model import CORPUS, one_thread, tiny_model  # noqa: F401 (fixture)
from mmar.cli import main
from mmar.cli.options import CliError
from mmar.config import ConfigError
from mmar.data.config import DataConfig
from mmar.model.config import tiny_config
from mmar.model.processor import MMARProcessor
from mmar.pipelines.mmar import MMAR
from mmar.tokenizers import KL16Tokenizer
from mmar.tokenizers.config import ImageTokenizerConfig, TextTokenizerConfig
from mmar.torch_utils import resolve_device
from mmar.training.config import load_run_config

TINY_YAML = Path(__file__).resolve().parent.parent / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    tiny_model().save_pretrained(d)
    return d


def damaged_copy(ckpt: Path, tmp_path: Path) -> Path:
    d = tmp_path / "damaged"
    shutil.copytree(ckpt, d)
    return d


def one_line_error(capsys, command: str) -> str:
    """The stderr of a failed command: exactly one line, "mmar COMMAND: ...", no traceback."""
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"mmar {command}: "), err
    assert "Traceback" not in err
    return lines[0]


def generate(model: Path | str, *more: str) -> list[str]:
    return ["generate", "--model", str(model), "--prompt", "digit one", "--device", "cpu", *more]


# --- one line, exit 2, for every expected error --------------------------------------------------
def test_yaml_syntax_error_names_file_and_line_raises(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  backbone: {hidden_size: 32\ndata: {name: digits}\n")
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "run")]) == 2
    line = one_line_error(capsys, "train")
    assert str(bad) in line and "line 3" in line and "YAML" in line
    with pytest.raises(ConfigError, match=rf"{bad}: .*YAML.* line 3"):
        DataConfig.from_yaml(bad)


def test_yaml_override_syntax_error_raises(capsys, tmp_path):
    argv = ["train", "--config", str(TINY_YAML), "--out", str(tmp_path / "r"), "--set", "a.b=[1"]
    assert main(argv) == 2
    assert "--set 'a.b=[1'" in one_line_error(capsys, "train")


@pytest.mark.parametrize(
    "text, match",
    [
        ("[1, 2]\n", r"expected a mapping"),
        ("\x00\x01 binary", r"YAML"),
        ("a: !!python/object:os.system {}\n", r"YAML"),
    ],
)
def test_yaml_of_the_wrong_shape_raises(tmp_path, text, match):
    bad = tmp_path / "c.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError, match=rf"{bad}: .*{match}"):
        load_run_config(bad, ["train.steps=2"])


def test_yaml_that_is_not_utf8_raises(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_bytes(b"train: {steps: \xff\xfe}\n")
    with pytest.raises(ConfigError, match=rf"{bad}: not UTF-8 text"):
        load_run_config(bad)


@pytest.mark.parametrize(
    "text, match",
    [
        ('{"image_tokenizer": \n', r"not valid JSON \(line 2, column 1"),
        ("", r"not valid JSON \(line 1, column 1"),
        ("[1, 2]", r"MMARConfig: expected a mapping"),
        ('{"vit": {"width": "big"}}', r"MMARConfig.vit.width: expected an integer"),
    ],
)
def test_malformed_config_json_names_file_raises(ckpt, tmp_path, capsys, text, match):
    d = damaged_copy(ckpt, tmp_path)
    (d / "config.json").write_text(text)
    assert main(generate(d, "--out", str(tmp_path / "o"))) == 2
    line = one_line_error(capsys, "generate")
    assert str(d / "config.json") in line
    with pytest.raises(ConfigError, match=rf"{d / 'config.json'}: {match}"):
        MMAR.from_pretrained(d)


def test_config_json_not_utf8_raises(ckpt, tmp_path):
    d = damaged_copy(ckpt, tmp_path)
    (d / "config.json").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match=rf"{d / 'config.json'}: not UTF-8 text"):
        MMAR.from_pretrained(d)


def test_truncated_tokenizer_json_names_file_raises(ckpt, tmp_path, capsys):
    d = damaged_copy(ckpt, tmp_path)
    f = d / "tokenizer" / "tokenizer.json"
    f.write_text(f.read_text()[:100])
    with pytest.raises(OSError, match=rf"{d / 'tokenizer'}: cannot load the text tokenizer"):
        MMAR.from_pretrained(d)
    assert main(generate(d, "--out", str(tmp_path / "o"))) == 2
    assert str(d / "tokenizer") in one_line_error(capsys, "generate")


def test_missing_tokenizer_json_is_one_line_raises(ckpt, tmp_path, capsys):
    """transformers' own message here spans 5 lines: the CLI prints one."""
    d = damaged_copy(ckpt, tmp_path)
    (d / "tokenizer" / "tokenizer.json").unlink()
    assert main(generate(d, "--out", str(tmp_path / "o"))) == 2
    assert str(d / "tokenizer") in one_line_error(capsys, "generate")


def test_truncated_weights_name_the_file_raises(ckpt, tmp_path, capsys):
    d = damaged_copy(ckpt, tmp_path)
    f = d / "model.safetensors"
    f.write_bytes(f.read_bytes()[:1000])
    assert main(generate(d, "--out", str(tmp_path / "o"))) == 2
    assert f"cannot read {f}" in one_line_error(capsys, "generate")


def no_cuda_build(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torch.version, "hip", None)


@pytest.mark.parametrize("command", ["generate", "caption", "train", "cache-latents"])
def test_device_cuda_on_a_cpu_build_raises(ckpt, tmp_path, capsys, monkeypatch, command):
    no_cuda_build(monkeypatch)
    out = str(tmp_path / "out")
    argv = {
        "generate": generate(ckpt, "--out", out, "--device", "cuda"),  # the last --device wins
        "caption": ["caption", "--model", str(ckpt), str(TINY_YAML), "--device", "cuda"],
        "train": ["train", "--config", str(TINY_YAML), "--out", out, "--set", "train.device=cuda"],
        "cache-latents": [
            *("cache-latents", "--data", "digits", "--model", str(ckpt), "--out", out),
            *("--splits", "train", "--device", "cuda"),
        ],
    }[command]
    if command == "caption":  # an image to caption
        from PIL import Image

        Image.new("L", (8, 8)).save(tmp_path / "x.png")
        argv[3] = str(tmp_path / "x.png")
    assert main(argv) == 2
    line = one_line_error(capsys, command)
    assert "CUDA is not available" in line and "this torch build" in line and "cpu" in line


def test_resolve_device_names_the_problem_raises(monkeypatch):
    no_cuda_build(monkeypatch)
    with pytest.raises(ConfigError, match=r"--device cuda: CUDA is not available in this torch"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match=r"train.device: unknown torch device 'gpu'"):
        resolve_device("gpu", what="train.device")
    monkeypatch.setattr(torch.version, "cuda", "12.8")  # a CUDA build on a machine with no GPU
    with pytest.raises(ConfigError, match=r"no CUDA GPU is visible"):
        resolve_device("cuda:0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ConfigError, match=r"--device cuda:2: this machine has 2 CUDA GPU\(s\)"):
        resolve_device("cuda:2")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("command", ["train", "generate", "quickstart", "cache-latents"])
def test_out_pointing_at_an_existing_file_raises(ckpt, tmp_path, capsys, command):
    f = tmp_path / "a_file"
    f.write_text("not a directory")
    argv = {
        "train": ["train", "--config", str(TINY_YAML), "--out", str(f)],
        "generate": generate(ckpt, "--out", str(f)),
        "quickstart": ["quickstart", "--out", str(f), "--steps", "1"],
        "cache-latents": [
            *("cache-latents", "--data", "digits", "--model", str(ckpt)),
            *("--out", str(f), "--splits", "train"),
        ],
    }[command]
    assert main(argv) == 2
    assert f"--out {f} is a file, not a directory" in one_line_error(capsys, command)
    assert f.read_text() == "not a directory"


@pytest.mark.parametrize("kind", ["missing", "file", "empty", "run", "partial"])
def test_model_that_is_not_a_checkpoint_raises(ckpt, tmp_path, capsys, kind):
    d = tmp_path / "m"
    if kind == "file":
        d.write_text("x")
    elif kind == "empty":
        d.mkdir()
    elif kind == "run":  # a training run's OUT: its model is OUT/final
        shutil.copytree(ckpt, d / "final")
    elif kind == "partial":
        shutil.copytree(ckpt, d)
        (d / "model.safetensors").unlink()
        shutil.rmtree(d / "backbone")
    assert main(generate(d, "--out", str(tmp_path / "o"))) == 2
    line = one_line_error(capsys, "generate")
    expected = {
        "missing": f"--model {d} does not exist",
        "file": f"--model {d} is a file",
        "empty": f"--model {d} is not a checkpoint directory: missing config.json, "
        "model.safetensors, backbone/, tokenizer/",
        "run": f"a training run's directory; its model is --model {d / 'final'}",
        "partial": "missing model.safetensors, backbone/ (a checkpoint holds config.json, "
        "model.safetensors, backbone/, tokenizer/",
    }[kind]
    assert expected in line


def test_python_api_lists_every_missing_file_raises(ckpt, tmp_path):
    d = damaged_copy(ckpt, tmp_path)
    shutil.rmtree(d / "tokenizer")
    (d / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=rf"{d}: missing model.safetensors, tokenizer/"):
        MMAR.from_pretrained(d)


def test_debug_flag_shows_the_traceback(tmp_path, capsys):
    argv = generate(tmp_path / "nope", "--out", str(tmp_path / "o"))
    assert main(argv) == 2
    with pytest.raises(CliError, match="does not exist"):
        main(["--debug", *argv])
    with pytest.raises(CliError, match="does not exist"):
        main([*argv, "--debug"])  # after the command too


def test_a_bug_is_not_turned_into_a_message(monkeypatch, tmp_path):
    """Only expected errors become one line: anything else keeps its traceback."""

    def buggy(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr("mmar.cli.precision.run", buggy)
    with pytest.raises(ZeroDivisionError):
        main(["precision", "--samples", "4"])


def test_debug_is_documented():
    from mmar.cli import build_parser

    assert "--debug" in build_parser().format_help()
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert "--debug" in readme


# --- checkpoints: file names, versions, permissions, self-containment -----------------------------
def test_config_json_unknown_key_names_the_file_raises(ckpt, tmp_path):
    d = damaged_copy(ckpt, tmp_path)
    data = json.loads((d / "config.json").read_text())
    data["vit"]["fancy"] = 2
    (d / "config.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=rf"{d / 'config.json'}: MMARConfig.vit: unknown field"):
        MMAR.from_pretrained(d)


def test_saved_config_records_the_mmar_version(ckpt):
    assert json.loads((ckpt / "config.json").read_text())["mmar_version"] == mmar.__version__


def test_checkpoint_of_a_newer_mmar_says_upgrade_raises(ckpt, tmp_path, capsys):
    d = damaged_copy(ckpt, tmp_path)
    data = json.loads((d / "config.json").read_text())
    data.update(mmar_version="99.1.0", new_feature={"on": True})
    (d / "config.json").write_text(json.dumps(data))
    match = (
        rf"{d / 'config.json'} was written by mmar 99.1.0, this is mmar {mmar.__version__}: "
        r"upgrade mmar .*unknown field\(s\) \['new_feature'\]"
    )
    with pytest.raises(ConfigError, match=match):
        MMAR.from_pretrained(d)
    assert main(generate(d, "--out", str(tmp_path / "o"))) == 2
    assert "written by mmar 99.1.0" in one_line_error(capsys, "generate")


def test_checkpoint_without_a_version_still_loads(ckpt, tmp_path):
    """Checkpoints written before the version was recorded."""
    d = damaged_copy(ckpt, tmp_path)
    data = json.loads((d / "config.json").read_text())
    del data["mmar_version"]
    (d / "config.json").write_text(json.dumps(data))
    assert MMAR.from_pretrained(d).config == tiny_model().config


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_saved_weights_follow_the_umask(tmp_path, umask):
    """safetensors writes a 0600 temporary file and renames it: the weights were -rw-------."""
    model = tiny_model()
    kl16 = tiny_config(
        image_tokenizer=ImageTokenizerConfig(
            kind="kl16", image_size=16, image_channels=3, patch_size=1
        )
    )
    vae = MMARProcessor(model.processor.tokenizer, KL16Tokenizer(image_size=16, _width=32), kl16)
    old = os.umask(umask)
    try:
        model.save_pretrained(tmp_path / "m")
        vae.save_pretrained(tmp_path / "m")
    finally:
        os.umask(old)
    want = 0o666 & ~umask
    for name in ("model.safetensors", "image_tokenizer.safetensors", "config.json"):
        assert (tmp_path / "m" / name).stat().st_mode & 0o777 == want, name


def test_resaved_model_is_self_contained(tmp_path):
    """A model whose text tokenizer came from another checkpoint's tokenizer/, loaded and saved
    elsewhere: the copy loads, and rebuilds its tokenizer, with both sources gone."""
    src = tmp_path / "src"
    tiny_model().save_pretrained(src)
    cfg = tiny_config(
        text_tokenizer=TextTokenizerConfig(kind="pretrained", path=str(src / "tokenizer"))
    )
    first = tmp_path / "first"
    MMAR.from_config(cfg).save_pretrained(first)
    MMAR.from_pretrained(first).save_pretrained(tmp_path / "copy")
    shutil.rmtree(src)
    shutil.move(first, tmp_path / "moved")
    config_json = (tmp_path / "copy" / "config.json").read_text()
    assert str(src) not in config_json and str(first) not in config_json
    copy = MMAR.from_pretrained(tmp_path / "copy")
    assert copy.config.text_tokenizer.path == str(tmp_path / "copy" / "tokenizer")
    rebuilt = MMAR.from_config(copy.config)  # the config names the copy's own tokenizer
    assert rebuilt.processor.tokenizer.get_vocab() == copy.processor.tokenizer.get_vocab()
    prompts = ["digit seven", "a red circle"]
    assert rebuilt.processor.encode_texts(prompts) == copy.processor.encode_texts(prompts)
