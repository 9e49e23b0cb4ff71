"""Bad input to every command, to configs and to checkpoints (issue 9): an expected error is one
line ``mmar CMD: message`` naming the file or flag, exit status 2; a traceback only for a bug or
with ``mmar --debug``. Saved weights follow the umask; a re-saved model is self-contained."""

from __future__ import annotations

import copy
import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hypothesis import event, given, settings
from hypothesis import strategies as st

import mmar
from helpers_model import CORPUS, one_thread, tiny_model  # noqa: F401 (fixture)
from mmar.cli import main
from mmar.cli.options import CliError
from mmar.config import ConfigError
from mmar.data.config import DataConfig
from mmar.model.config import MMARConfig, tiny_config
from mmar.model.processor import MMARProcessor
from mmar.pipelines.mmar import MMAR
from mmar.tokenizers import KL16Tokenizer
from mmar.tokenizers.config import ImageTokenizerConfig, TextTokenizerConfig
from mmar.torch_utils import resolve_device
from mmar.training.config import RunConfig, load_run_config
from mmar.training.trainer import Trainer

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


# What the fuzz below found valid that fails at the first step or trains on nonsense.
@pytest.mark.parametrize(
    "override, match",
    [
        ("optim.lr=.inf", r"RunConfig.optim.lr: expected a finite number, got inf"),
        ("model.mask.mode=.nan", r"RunConfig.model.mask.mode: expected a finite number, got nan"),
        ("train.kinds.t2i=.inf", r"RunConfig.train.kinds.t2i: expected a finite number"),
        ("data.seed=-1", r"DataConfig.seed: must be in \[0, 2\*\*32\), got -1"),
        ("train.seed=18446744073709551616", r"TrainConfig.seed: must be in \[0, 2\*\*32\)"),
        ("model.backbone.rope_theta=0", r"BackboneConfig.rope_theta: must be > 0"),
    ],
)
def test_config_that_would_fail_or_train_on_nonsense_raises(override, match):
    with pytest.raises(ConfigError, match=match):
        load_run_config(TINY_YAML, [override])


# --- fuzz: random configs are refused naming the field, or valid (and then train) ----------------
# The tiny run config as a dict, every field spelled out: the paths the mutations pick from.
TINY = load_run_config(TINY_YAML).to_dict()


def _paths(node: dict, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every key path of a nested dict, sections as well as leaves."""
    out = []
    for k, v in node.items():
        out.append((*prefix, k))
        if isinstance(v, dict):
            out += _paths(v, (*prefix, k))
    return out


def _get(node: dict, path: tuple[str, ...]):
    for k in path:
        node = node[k]
    return node


PATHS = _paths(TINY)
SECTIONS = [(), *(p for p in PATHS if isinstance(_get(TINY, p), dict))]

ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.sampled_from([0, -1, 1, 2, 10**9]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(["auto", "cpu", "fp32", "ddim", "words", "pixels", "1e-3", ""]),
    st.lists(st.integers(-3, 3), max_size=3),
    st.dictionaries(st.text(min_size=1, max_size=5), st.integers(0, 3), max_size=2),
)


def same_type(value: Any) -> st.SearchStrategy:
    """A value of ``value``'s type, in or out of range: what type checks let through to
    ``validate``."""
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        return st.one_of(st.integers(-5, 70), st.sampled_from([0, -1, 10**12, -(2**63)]))
    if isinstance(value, float):
        return st.one_of(
            st.floats(-2.0, 2.0), st.sampled_from([0.0, -1e-9, 1e30, float("nan"), float("inf")])
        )
    if isinstance(value, list):
        return st.lists(same_type(value[0]) if value else ANY_VALUE, max_size=len(value) + 1)
    return ANY_VALUE


@st.composite
def mutated_configs(draw) -> tuple[Any, list[str]]:
    """The tiny config with 1-4 mutations: a field set to a value of its own type (in or out
    of range) or of any type (a whole section too), an unknown key at any depth, a field
    deleted, a section nested one level too deep."""
    data = copy.deepcopy(TINY)
    done = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["typed", "typed", "set", "unknown", "delete", "nest"]))
        if kind in ("typed", "set", "delete", "nest"):
            path = draw(st.sampled_from(PATHS))
            try:
                parent = _get(data, path[:-1])
            except (KeyError, TypeError):
                continue  # an earlier mutation removed or replaced it
            if not isinstance(parent, dict) or path[-1] not in parent:
                continue
            if kind == "typed":
                parent[path[-1]] = draw(same_type(parent[path[-1]]))
            elif kind == "set":
                parent[path[-1]] = draw(ANY_VALUE)
            elif kind == "delete":
                del parent[path[-1]]
            else:
                parent[path[-1]] = {path[-1]: parent[path[-1]]}
        else:
            section = draw(st.sampled_from(SECTIONS))
            try:
                parent = _get(data, section)
            except (KeyError, TypeError):
                continue
            if isinstance(parent, dict):
                parent[draw(st.sampled_from(["extra", "lr", "Model", "steps_", "x.y"]))] = 1
        done.append(f"{kind} {'.'.join(path) if kind != 'unknown' else '.'.join(section)}")
    if draw(st.sampled_from([False] * 19 + [True])):  # now and then, a root that is no mapping
        data = draw(st.one_of(st.lists(st.integers(), max_size=2), st.integers(), st.text()))
    return data, done


def _names_a_field(msg: str) -> bool:
    """ConfigError's forms: "Class.field: ...", "Class: unknown field(s) [...]", "--set ...",
    and a root that is not a mapping."""
    return bool(
        re.search(r"\b[A-Z]\w*\.\w+", msg)
        or "unknown field(s)" in msg
        or "expected a mapping" in msg
    )


FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None)


@settings(FUZZ, max_examples=100)
@given(case=mutated_configs())
def test_fuzz_random_config_is_refused_naming_the_field_or_valid(case, tmp_path_factory):
    """100 configs through the YAML loader: a one-line ConfigError that names the file and the
    field, or a valid config that survives to_dict -> from_dict unchanged. Never another error."""
    data, _ = case
    path = tmp_path_factory.getbasetemp() / "fuzz_config.yaml"
    path.write_text(yaml.safe_dump(data))
    try:
        cfg = load_run_config(path)
    except ConfigError as e:
        event("refused")
        msg = str(e)
        assert "\n" not in msg and msg.startswith(f"{path}: ") and _names_a_field(msg), msg
        return
    event("valid")
    assert RunConfig.from_dict(cfg.to_dict()) == cfg


@FUZZ
@given(
    text=st.one_of(
        st.text(alphabet=st.sampled_from(list("{}[]:,-'\"#&*!|>\\ \t\nabc19.")), max_size=60),
        st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
    )
)
def test_fuzz_random_yaml_text_is_refused_naming_the_file_or_valid(text, tmp_path_factory):
    """150 random texts as a run config file (YAML syntax, binary, any structure): a one-line
    ConfigError naming the file (and, for a syntax error, the line) or a valid config."""
    path = tmp_path_factory.getbasetemp() / "fuzz_text.yaml"
    path.write_text(text, encoding="latin-1")
    try:
        load_run_config(path, ["train.steps=2"])
        event("valid")
    except ConfigError as e:
        event("refused: YAML syntax" if "not valid YAML" in str(e) else "refused: content")
        msg = str(e)
        assert "\n" not in msg and msg.startswith(f"{path}: "), msg
        if "not valid YAML" in msg:
            assert re.search(r"at (line \d+, column \d+|character \d+)", msg), msg


@FUZZ
@given(case=mutated_configs())
def test_fuzz_random_checkpoint_config_json_is_refused_naming_the_file(case, tmp_path_factory):
    """150 damaged config.json (the model section of the same mutations): MMARConfig.from_json
    raises one line naming config.json and the field, or reads a valid config."""
    data, _ = case
    model = data.get("model", data) if isinstance(data, dict) else data
    path = tmp_path_factory.getbasetemp() / "fuzz_ckpt_config.json"
    path.write_text(json.dumps(model))
    try:
        MMARConfig.from_json(path)
        event("valid")
    except ConfigError as e:
        event("refused")
        msg = str(e)
        assert "\n" not in msg and msg.startswith(f"{path}: ") and _names_a_field(msg), msg


# Fields a 1-step run of the tiny config can afford to vary, with values in and out of range.
CHEAP_FIELDS: dict[str, st.SearchStrategy] = {
    "optim.lr": st.floats(1e-6, 1.0),
    "optim.weight_decay": st.floats(-0.5, 1.0),
    "optim.grad_clip": st.floats(-1.0, 10.0),
    "optim.ema_decay": st.floats(0.0, 1.5),
    "optim.warmup_steps": st.integers(-1, 5),
    "model.mask.ratio_min": st.floats(-0.5, 1.0),
    "model.mask.ratio_max": st.floats(0.0, 1.5),
    "model.mask.distribution": st.sampled_from(["truncnorm", "uniform"]),
    "model.prompt_dropout": st.floats(0.0, 1.0),
    "model.lambda_img": st.floats(-1.0, 10.0),
    "model.prompt_ce_weight": st.floats(0.0, 2.0),
    "model.max_text_len": st.integers(0, 16),
    "model.diffusion.diffusion_batch_mul": st.integers(0, 4),
    "model.diffusion.parameterization": st.sampled_from(["v", "eps", "x0"]),
    "model.diffusion.num_timesteps": st.integers(1, 1000),
    "model.vit.depth": st.integers(0, 2),
    "model.vit.pos_emb": st.sampled_from(["learned", "sincos"]),
    "train.kinds.t2i": st.floats(0.0, 1.0),
    "train.kinds.i2t": st.floats(0.0, 1.0),
    "train.kinds.img": st.floats(0.0, 1.0),
    "train.batch_size": st.integers(0, 8),
    "train.grad_accum": st.integers(1, 2),
    "train.seed": st.integers(-1, 2**32),
    "data.seed": st.integers(-1, 2**32),
    "data.max_shift": st.integers(0, 4),
}


@settings(FUZZ, max_examples=6)
@given(
    changes=st.lists(st.sampled_from(sorted(CHEAP_FIELDS)), max_size=6, unique=True).flatmap(
        lambda keys: st.fixed_dictionaries({k: CHEAP_FIELDS[k] for k in keys})
    )
)
def test_fuzz_valid_config_trains_one_step(changes, tmp_path_factory):
    """6 tiny configs with up to 6 fields changed: refused naming the field, or valid and then
    one training step runs, with a finite loss, and its final/ loads."""
    data = copy.deepcopy(TINY)
    data["train"].update(steps=1, ckpt_every=0, progress=False, log_every=1)
    for key, value in changes.items():
        *parents, leaf = key.split(".")
        _get(data, tuple(parents))[leaf] = value
    try:
        cfg = RunConfig.from_dict(data)
    except ConfigError as e:
        event("refused")
        assert "\n" not in str(e) and _names_a_field(str(e)), str(e)
        return
    event("valid: trained one step")
    out = tmp_path_factory.mktemp("fuzz_run")
    summary = Trainer(cfg, out).fit()
    assert summary["step"] == 1 and summary["loss"] is not None, (changes, summary)
    assert math.isfinite(summary["loss"]), (changes, summary)
    assert MMAR.from_pretrained(out / "final").config == cfg.model


def test_non_finite_number_set_in_python_raises():
    """replace() and constructors skip from_dict's type checks: validate() refuses nan too."""
    from mmar.training.config import OptimConfig

    with pytest.raises(ConfigError, match=r"OptimConfig.lr: expected a finite number, got nan"):
        OptimConfig().replace(lr=float("nan"))
