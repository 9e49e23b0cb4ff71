"""Bad input to sampling (issue 9): `mmar generate` / `mmar caption` arguments, prompts, image
files and output directories, and the same arguments through the Python API.

Each kind of bad input is refused with a one-line message (exit 2), reported per file (exit 1),
warned about once per call, or documented in --help; never a traceback. The fuzz tests at the
end try random argument values on a tiny saved checkpoint (about 0.1 s per call)."""

import contextlib
import io
import json
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from PIL import Image

from helpers_model import one_thread, tiny_model  # noqa: F401 (fixture)
from mmar.cli import build_parser, main
from mmar.config import ConfigError
from mmar.pipelines.mmar import MMAR

CHEAP = ["--device", "cpu", "--num-iter", "2", "--num-steps", "2"]


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, model):
    d = tmp_path_factory.mktemp("ckpt")
    model.save_pretrained(d)
    return d


ODD_IMAGES = ["palette.png", "rgba.png", "gray16.png", "cmyk.jpg", "strip.png", "truncated.png"]


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    """Two readable images, a file that is not an image, and ODD_IMAGES (odd modes and sizes,
    a PNG cut in half)."""
    d = tmp_path_factory.mktemp("images")
    Image.new("L", (8, 8), 30).save(d / "good.png")
    Image.new("RGB", (16, 12), (9, 90, 200)).save(d / "good2.png")
    (d / "notimage.png").write_text("this is text, not a PNG\n")
    Image.new("P", (5, 7), 3).save(d / "palette.png")
    Image.new("RGBA", (8, 8), (1, 2, 3, 0)).save(d / "rgba.png")
    Image.new("I;16", (8, 8), 40000).save(d / "gray16.png")
    Image.new("CMYK", (9, 9), (0, 50, 100, 0)).save(d / "cmyk.jpg")
    Image.new("L", (1, 300), 200).save(d / "strip.png")
    noise = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    Image.fromarray(noise).save(d / "big.png")
    data = (d / "big.png").read_bytes()
    (d / "truncated.png").write_bytes(data[: len(data) // 2])
    return d


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """main(argv) -> (exit status, stdout, stderr), argparse's refusals (SystemExit) included.
    (Not capsys: hypothesis refuses function-scoped fixtures.)"""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as e:
            rc = int(e.code or 0)
    return rc, out.getvalue(), err.getvalue()


def generate(ckpt: Path, out: Path, prompts: list[str], *flags: str) -> tuple[int, str, str]:
    argv = ["generate", "--model", str(ckpt), "--out", str(out), *CHEAP, *flags]
    for p in prompts:
        argv += ["--prompt", p]
    return run_cli(argv)


def caption(ckpt: Path, images: list, *flags: str) -> tuple[int, str, str]:
    argv = ["caption", "--model", str(ckpt), "--device", "cpu", "--max-new-tokens", "3"]
    return run_cli([*argv, *flags, *map(str, images)])


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def help_text(command: str) -> str:
    """``mmar COMMAND --help``, its lines joined (argparse wraps the option help)."""
    parser = build_parser()
    return " ".join(parser._subparsers._group_actions[0].choices[command].format_help().split())


def one_line_error(command: str, err: str) -> str:
    """The single line of a refusal, checked to be one line starting 'mmar COMMAND: '."""
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1 and lines[0].startswith(f"mmar {command}: "), err
    assert "Traceback" not in err
    return lines[0]


# --- item 5: seeded generation does not depend on the batch ---------------------------------------
def test_generate_seeded_image_does_not_depend_on_batch(ckpt, tmp_path):
    """Prompt k with --seed s is bit-identical at --batch-size 1 and 3, and alone with
    --seed s + k (DDPM: noise at every step)."""
    prompts = ["digit seven", "a red circle at the top", "digit one"]
    runs = {
        "b1": (prompts, ["--batch-size", "1"]),
        "b3": (prompts, ["--batch-size", "3"]),
        "alone": (["digit one"], ["--seed", "2"]),
    }
    for name, (ps, flags) in runs.items():
        rc, _, err = generate(ckpt, tmp_path / name, ps, "--scheduler", "ddpm", *flags)
        assert rc == 0, err
    for k in range(3):
        name = f"p{k:03d}_s000.png"
        assert np.array_equal(pixels(tmp_path / "b1" / name), pixels(tmp_path / "b3" / name)), k
    alone, batched = tmp_path / "alone" / "p000_s000.png", tmp_path / "b3" / "p002_s000.png"
    assert np.array_equal(pixels(alone), pixels(batched))


# --- item 6: out-of-range sampling arguments are refused, or documented ---------------------------
@pytest.mark.parametrize(
    "flag, value, field",
    [
        ("--num-steps", "0", "SamplingConfig.num_steps"),
        ("--num-steps", "5000", "SamplingConfig.num_steps"),  # > the diffusion's 1000 steps
        ("--batch-size", "0", "SamplingConfig.batch_size"),
        ("--batch-size", "-2", "SamplingConfig.batch_size"),
        ("--num-iter", "0", "SamplingConfig.num_iter"),
        ("--guidance-scale", "inf", "SamplingConfig.guidance_scale"),
        ("--guidance-scale", "nan", "SamplingConfig.guidance_scale"),
        ("--temperature", "inf", "SamplingConfig.temperature"),
        ("--eta", "nan", "SamplingConfig.eta"),
        ("--seed", str(2**64), f"seed {2**64} "),
        ("--seed", str(-(2**63) - 1), f"seed {-(2**63) - 1} "),
        ("--n", "0", "--n"),
    ],
)
def test_generate_out_of_range_argument_raises(ckpt, tmp_path, flag, value, field):
    rc, out, err = generate(ckpt, tmp_path / "out", ["digit one"], f"{flag}={value}")
    assert rc == 2 and out == ""
    assert field in one_line_error("generate", err)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "flag, value, field",
    [
        ("--max-new-tokens", "0", "SamplingConfig.max_new_tokens"),
        ("--max-new-tokens", "-1", "SamplingConfig.max_new_tokens"),
        # more than the backbone's 128 positions leave after [bos][boi] 16 image tokens [eoi]
        ("--max-new-tokens", str(10**9), "SamplingConfig.max_new_tokens"),
        ("--text-temperature", "inf", "SamplingConfig.text_temperature"),
        ("--batch-size", "0", "SamplingConfig.batch_size"),
        ("--seed", str(2**64), f"seed {2**64} "),
    ],
)
def test_caption_out_of_range_argument_raises(ckpt, image_files, flag, value, field):
    rc, out, err = caption(ckpt, [image_files / "good.png"], f"{flag}={value}")
    assert rc == 2 and out == ""
    assert field in one_line_error("caption", err)


def test_caption_tiny_text_temperature_samples(ckpt, image_files):
    """T = 1e-300 overflowed logits / T to inf (softmax NaN, a torch.multinomial traceback); it
    is greedy decoding in the limit."""
    greedy = caption(ckpt, [image_files / "good.png"])
    rc, out, err = caption(ckpt, [image_files / "good.png"], "--text-temperature", "1e-300")
    assert rc == 0, err
    assert out == greedy[1]


def test_sampling_api_out_of_range_raises(model):
    """The Python API refuses what the CLI refuses (ConfigError naming the field)."""
    with pytest.raises(ConfigError, match=r"SamplingConfig\.num_steps: must be >= 1"):
        model.generate_images(["digit one"], num_steps=0)
    with pytest.raises(ConfigError, match=r"SamplingConfig\.batch_size: must be >= 1"):
        model.generate_images(["digit one"], batch_size=-2)
    with pytest.raises(ConfigError, match=r"SamplingConfig\.num_steps: must be <= .*= 1000"):
        model.generate_images(["digit one"], num_steps=5000)
    with pytest.raises(ConfigError, match=r"SamplingConfig\.guidance_scale: expected a finite"):
        model.generate_images(["digit one"], guidance_scale=float("inf"))
    image = model.generate_images(["digit one"], num_iter=2, num_steps=2)
    # the backbone's 128 positions less [bos][boi] 16 image tokens [eoi]
    with pytest.raises(ConfigError, match=r"SamplingConfig\.max_new_tokens: must be <= 109"):
        model.caption(image, max_new_tokens=110)
    model.generate_images(["digit one"], seed=2**64 - 1, num_iter=2, num_steps=2)  # in range
    with pytest.raises(ValueError, match=rf"seed {2**64} \(of sample 1\) is outside"):
        model.generate_images(["digit one"] * 2, seed=2**64 - 1, num_iter=2, num_steps=2)


def test_num_iter_above_the_token_count_is_documented_and_exact(ckpt, tmp_path):
    """K > N runs N iterations: --help says so, and K = 10**12 gives K = 16's image on a
    16-token model, at once (the reveal schedule is no longer a list of K entries)."""
    assert "more than the model's image tokens" in help_text("generate")
    for k in ("16", str(10**12)):
        rc, _, err = generate(ckpt, tmp_path / k, ["digit one"], f"--num-iter={k}")
        assert rc == 0, err
    assert np.array_equal(
        pixels(tmp_path / "16" / "p000_s000.png"), pixels(tmp_path / str(10**12) / "p000_s000.png")
    )


# --- item 7: prompts the model cannot read in full warn once per call -----------------------------
def test_unknown_and_cut_prompt_words_warn_once_per_call(model):
    long_prompt = " ".join(["digit"] * 20 + ["seven"])  # 21 words; max_text_len = 16
    prompts = ["a purple hexagon", "digit one", "a zzz qqq", long_prompt, "digit <boi> one"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.generate_images(prompts, num_iter=2, num_steps=2)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1, messages
    msg = messages[0]
    for word in ("'purple'", "'hexagon'", "'zzz'", "'qqq'", "'<boi>'"):
        assert word in msg
    assert "max_text_len = 16" in msg and "'digit digit digit digit seven'" in msg
    assert "prompts 0, 2, 4" in msg and "prompt 3" in msg


def test_cli_prints_the_prompt_warning_as_one_line(ckpt, tmp_path):
    rc, _, err = generate(ckpt, tmp_path / "out", ["a purple hexagon"])
    assert rc == 0
    lines = [line for line in err.splitlines() if "warning" in line.lower()]
    assert len(lines) == 1 and lines[0].startswith("mmar generate: warning: "), err
    assert "'purple'" in lines[0] and "UserWarning" not in err


def test_known_prompt_words_do_not_warn(model):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.generate_images(["digit one", "a red circle", ""], num_iter=2, num_steps=2)


def test_special_token_text_in_a_prompt_is_plain_text(model):
    """'<boi>' typed in a prompt was read as the image-begin token itself."""
    sp = model.processor.special
    ids = model.processor.encode_texts(["digit <boi> one <eos> <pad>"])[0]
    assert not {sp.boi, sp.eoi, sp.eos, sp.pad, sp.bos} & set(ids)


# --- caption: what can be read is captioned, the rest reported ------------------------------------
def test_caption_unreadable_file_among_good_ones_exit_1(ckpt, image_files, tmp_path):
    files = [
        image_files / "good.png",
        image_files / "notimage.png",
        tmp_path / "missing.png",
        image_files / "good2.png",
    ]
    rc, out, err = caption(ckpt, files)
    assert rc == 1
    assert [ln.split("\t")[0] for ln in out.splitlines()] == [str(files[0]), str(files[3])]
    errors = err.strip("\n").split("\n")
    assert len(errors) == 2 and all(e.startswith("mmar caption: skipped ") for e in errors)
    assert str(files[1]) in errors[0] and "cannot identify image file" in errors[0]
    assert str(files[2]) in errors[1] and "no such file" in errors[1]


def test_caption_skipped_image_keeps_the_seeds_of_the_others(ckpt, image_files):
    """Image k of the arguments uses seed + k whether or not an earlier file was readable."""
    flags = ["--text-temperature", "1.0", "--max-new-tokens", "8"]
    good2 = str(image_files / "good2.png")
    _, both, _ = caption(ckpt, [image_files / "good.png", good2], *flags)
    _, skipped, _ = caption(ckpt, [image_files / "notimage.png", good2], *flags)
    assert skipped.splitlines() == both.splitlines()[1:]


# --- caption output: one line per image, escaped; --json ------------------------------------------
def test_caption_escapes_tab_newline_backslash(ckpt, image_files, tmp_path, monkeypatch):
    odd = tmp_path / "a\tb\\c.png"
    Image.new("L", (8, 8), 5).save(odd)
    monkeypatch.setattr(
        MMAR, "caption", lambda self, images, *a, **k: ["two\nlines\tand \\ tab\r"] * len(images)
    )
    rc, out, err = caption(ckpt, [odd])
    assert rc == 0, err
    escaped_path = str(odd).replace("\\", "\\\\").replace("\t", "\\t")
    assert out == escaped_path + "\ttwo\\nlines\\tand \\\\ tab\\r\n"
    assert "\\t" in help_text("caption") and "\\n" in help_text("caption")


def test_caption_json(ckpt, image_files, tmp_path):
    files = [image_files / "good.png", image_files / "notimage.png"]
    rc, out, err = caption(ckpt, files, "--json", "-")
    assert rc == 1
    records = json.loads(out)  # stdout is the JSON alone; the lines go to stderr
    assert err.startswith(f"{files[0]}\t") and f"skipped {files[1]}" in err
    assert [r["image"] for r in records] == [str(f) for f in files]
    assert isinstance(records[0]["caption"], str) and "caption" not in records[1]
    assert "cannot identify image file" in records[1]["error"]
    rc, _, _ = caption(ckpt, files, "--json", str(tmp_path / "c.json"))
    assert rc == 1 and json.loads((tmp_path / "c.json").read_text()) == records


# --- generate --out: never mixes two runs' files --------------------------------------------------
def test_generate_into_nonempty_out_raises(ckpt, tmp_path):
    out = tmp_path / "out"
    assert generate(ckpt, out, ["digit one", "digit seven"])[0] == 0
    rc, _, err = generate(ckpt, out, ["digit one"])
    assert rc == 2 and "--force" in one_line_error("generate", err)
    assert sorted(p.name for p in out.iterdir()) == ["p000_s000.png", "p001_s000.png"]


def test_generate_force_replaces_the_earlier_output(ckpt, tmp_path):
    out = tmp_path / "out"
    assert generate(ckpt, out, ["digit one", "digit seven"])[0] == 0
    (out / "notes.txt").write_text("mine\n")
    rc, _, err = generate(ckpt, out, ["digit one"], "--force")
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "p000_s000.png"]  # no stale p001


def test_generate_out_is_a_file_raises(ckpt, tmp_path):
    (tmp_path / "f").write_text("x")
    rc, _, err = generate(ckpt, tmp_path / "f", ["digit one"])
    assert rc == 2 and "is a file" in one_line_error("generate", err)


# --- help says what the commands do ---------------------------------------------------------------
def test_generate_help_names_the_files_it_writes(ckpt, tmp_path):
    named = re.findall(r"p\d+_s\d+\.png", help_text("generate"))
    assert named, "generate --help gives no example file name"
    rc, _, _ = generate(ckpt, tmp_path / "out", ["digit one", "digit seven"], "--n", "2")
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert rc == 0 and named == written[: len(named)]


def test_help_model_paths_exist_after_quickstart_or_train():
    """Every `--model X` example in the help of the commands that load a checkpoint is a
    directory a documented command writes: quickstart's --out (the model sits at its top) or a
    train example's --out + /final (eval --help showed runs/quickstart/final, which no command
    writes)."""
    from mmar.cli.quickstart import BENCHES

    assert build_parser().parse_args(["quickstart"]).out is None  # each bench's own default
    train_outs = re.findall(r"--out (\S+)", help_text("train"))
    written = {b.out for b in BENCHES.values()} | {f"{o}/final" for o in train_outs}
    for command in ("eval", "cache-latents", "generate", "caption"):
        for path in re.findall(r"--model ([\w./-]+)", help_text(command)):
            if path != "DIR":
                assert path in written, (command, path, written)


# --- fuzz: random argument values never end in a traceback ----------------------------------------
INTS = st.one_of(
    st.integers(-3, 3),
    st.sampled_from([2**31, 2**63, 2**64, 10**30, -(2**63) - 1, -(10**30)]),
)
FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0, 1e-300, 5e-324, 1e308, -1e308]),
)
ODD = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["", " ", "nan", "1e999", "0x10", "1_000", "<boi>", "digit\nseven", "🙂"]),
)
VALUE = st.one_of(INTS.map(str), FLOATS.map(str), ODD)
TYPED = {
    "int": INTS.map(str),
    "float": FLOATS.map(str),
    "text": ODD,
    "scheduler": st.sampled_from(["ddim", "ddpm"]),
}
GENERATE_FLAGS = {
    "--num-iter": "int",
    "--guidance-scale": "float",
    "--scheduler": "scheduler",
    "--num-steps": "int",
    "--num-steps-final": "int",
    "--eta": "float",
    "--temperature": "float",
    "--batch-size": "int",
    "--seed": "int",
    "--prompt": "text",
}
CAPTION_FLAGS = {
    "--max-new-tokens": "int",
    "--text-temperature": "float",
    "--batch-size": "int",
    "--seed": "int",
}


def arguments(flags: dict[str, str], min_size: int) -> st.SearchStrategy[tuple[str, ...]]:
    """Up to 3 distinct flags as "--flag=value": half the values of the flag's type (ints incl.
    0, negative and past 2**64; floats incl. nan, inf, subnormal), half anything (odd text)."""
    names = st.lists(st.sampled_from(sorted(flags)), unique=True, min_size=min_size, max_size=3)
    return names.flatmap(
        lambda ns: st.tuples(
            *[st.one_of(TYPED[flags[n]], VALUE).map(lambda v, n=n: f"{n}={v}") for n in ns]
        )
    )


FUZZ = settings(max_examples=100, deadline=None, derandomize=True, database=None)
_calls = iter(range(10**9))


def check_outcome(command: str, rc: int, out: str, err: str, allowed: tuple[int, ...]) -> None:
    """A result (exit 0/1) or a refusal (exit 2) with a message; never a traceback."""
    assert rc in allowed, (rc, err)
    assert "Traceback" not in err
    event(f"exit {rc}")  # pytest --hypothesis-show-statistics counts them
    if rc == 2:  # argparse's usage + "mmar CMD: error: ..." or our one line
        assert err.strip("\n").split("\n")[-1].startswith(f"mmar {command}: "), err


@FUZZ
@given(flags=arguments(GENERATE_FLAGS, 1), n=st.one_of(st.none(), st.integers(-3, 2)))
def test_fuzz_generate_arguments(ckpt, tmp_path_factory, flags, n):
    """--n stays small: a huge --n is a long run, not a bad input."""
    out = tmp_path_factory.getbasetemp() / f"fuzz_generate_{next(_calls)}"
    argv = [*flags] + ([] if n is None else [f"--n={n}"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unknown prompt words, temperature with DDIM
        rc, stdout, err = generate(ckpt, out, ["digit one"], *argv)
    check_outcome("generate", rc, stdout, err, (0, 2))
    if rc == 0:
        assert stdout.split() == [str(p) for p in sorted(out.iterdir())]


@FUZZ
@given(
    flags=arguments(CAPTION_FLAGS, 0),
    files=st.lists(
        st.one_of(
            st.sampled_from(["good.png", "notimage.png", "missing.png", ".", *ODD_IMAGES]),
            st.binary(),
        ),
        min_size=1,
        max_size=3,
    ),
)
def test_fuzz_caption_arguments(ckpt, image_files, tmp_path_factory, flags, files):
    paths = []
    for f in files:
        if isinstance(f, bytes):  # random bytes as an image file
            paths.append(tmp_path_factory.getbasetemp() / f"fuzz_caption_{next(_calls)}.png")
            paths[-1].write_bytes(f)
        else:
            paths.append(image_files / f)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc, stdout, err = caption(ckpt, paths, *flags)
    check_outcome("caption", rc, stdout, err, (0, 1, 2))
    if rc in (0, 1):
        assert len(stdout.splitlines()) + len(err.splitlines()) == len(paths)
