"""Bad input on the data side (issue 9): unreadable training data stops the run, 16-bit and
other pixel formats, non-UTF-8 captions, malformed JSONL lines, data smaller than a batch,
each unreadable item counted and named once, and fuzzing of every user data source (folder,
JSONL, WebDataset) with random bytes: each bad item skipped and counted, never a crash."""

import io
import json
import random
import struct
import tarfile
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mmar.cli import main
from mmar.config import ConfigError, DataError
from mmar.data import DataConfig, build_dataset, collate, corpus
from mmar.data.images import pil_to_tensor
from mmar.data.unreadable import KINDS, Unreadable
from mmar.training.config import load_preset
from mmar.training.trainer import Trainer
from mmar.training.unreadable import UnreadableLog

# --- helpers ------------------------------------------------------------------------------------


def tiny(*overrides):
    return load_preset("tiny", ["train.progress=false", *overrides])


def png_bytes(value=100):
    """An 8x8 grey PNG."""
    buf = io.BytesIO()
    Image.new("L", (8, 8), value).save(buf, format="PNG")
    return buf.getvalue()


def raw_png(arr, color_type, depth=16):
    """A PNG written by hand (PIL cannot write 16-bit RGB(A) or grey+alpha)."""
    h, w = arr.shape[:2]
    dtype = ">u2" if depth == 16 else "u1"
    rows = b"".join(b"\x00" + arr[y].astype(dtype).tobytes() for y in range(h))

    def chunk(kind, data):
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def make_folder(root, n, corrupt=(), no_caption=(), non_utf8=()):
    """n 8x8 grey PNGs with captions; some damaged as asked. Returns root."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / f"{i:02d}.png").write_bytes(b"junk" if i in corrupt else png_bytes(10 * i))
        if i in non_utf8:
            (root / f"{i:02d}.txt").write_bytes(b"caf\xe9 au lait")  # latin-1
        elif i not in no_caption:
            (root / f"{i:02d}.txt").write_text(f"noise number {i % 3}")
    return root


def folder_run(data, *overrides):
    return tiny(
        "data.name=folder",
        f"data.path={data}",
        "data.test_fraction=0.0",
        "data.channels=1",
        "train.ckpt_every=0",
        *overrides,
    )


def write_shard(path, samples):
    """samples: [{"__key__": k, ext: bytes, ...}] -> one tar shard."""
    with tarfile.open(path, "w") as tar:
        for sample in samples:
            for ext, data in sample.items():
                if ext == "__key__":
                    continue
                info = tarfile.TarInfo(f"{sample['__key__']}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def all_unreadable_config(kind, tmp_path, *overrides):
    """A training config whose 8 items all have unreadable images, for each user data source."""
    if kind == "folder":
        data = make_folder(tmp_path / "data", 8, corrupt=range(8))
        return folder_run(data, "train.batch_size=4", *overrides)
    if kind == "jsonl":
        make_folder(tmp_path / "data", 8, corrupt=range(8))
        lines = [json.dumps({"image": f"data/{i:02d}.png", "text": f"item {i}"}) for i in range(8)]
        (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
        path = tmp_path / "train.jsonl"
    else:
        samples = [{"__key__": f"k{i}", "png": b"junk", "txt": b"a caption"} for i in range(8)]
        path = write_shard(tmp_path / "shard-000.tar", samples)
    return tiny(
        f"data.name={kind}",
        f"data.path={path}",
        "data.test_fraction=0.0",
        "data.channels=1",
        "train.batch_size=4",
        "train.ckpt_every=0",
        *overrides,
    )


# --- 1. no readable item / too many unreadable items stop the run -----------------------------


@pytest.mark.parametrize(
    "kind, why, listed",
    [  # map-style data stops after its first batch; a stream at the end of its first pass
        ("folder", r"4 of the first 4 items read \(100%\) could not be read: certainly", 4),
        ("jsonl", r"4 of the first 4 items read \(100%\) could not be read: certainly", 4),
        ("webdataset", "none of the 8 items of the first pass over the data could be read", 8),
    ],
)
def test_all_unreadable_training_data_raises(tmp_path, kind, why, listed):
    cfg = all_unreadable_config(kind, tmp_path)
    with pytest.raises(DataError, match=why + r".*\(\d unreadable image; e\.g\. "):
        Trainer(cfg, tmp_path / "out").fit()
    assert not (tmp_path / "out" / "final").exists()
    assert len((tmp_path / "out" / "skipped.jsonl").read_text().splitlines()) == listed


@pytest.mark.parametrize("kind", ["folder", "webdataset"])
def test_all_unreadable_raises_even_when_every_share_is_allowed(tmp_path, kind):
    cfg = all_unreadable_config(kind, tmp_path, "data.max_unreadable_share=1.0")
    with pytest.raises(DataError, match="none of the 8 items of the first pass"):
        Trainer(cfg, tmp_path / "out").fit()
    assert not (tmp_path / "out" / "final").exists()


def test_all_unreadable_cli_exits_2_with_one_line(tmp_path, capsys):
    data = make_folder(tmp_path / "data", 8, corrupt=range(8))
    rc = main(
        [
            "train",
            "--config",
            "tiny",
            "--out",
            str(tmp_path / "out"),
            "--set",
            "data.name=folder",
            f"data.path={data}",
            "data.test_fraction=0.0",
            "data.channels=1",
            "train.batch_size=4",
            "train.progress=false",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"mmar train: folder data {data}: ") and "00.png" in last
    assert not (tmp_path / "out" / "final").exists()


def test_unreadable_share_above_limit_raises(tmp_path):
    data = make_folder(tmp_path / "data", 12, corrupt={1, 5, 9})  # 25%
    cfg = folder_run(data, "train.batch_size=4", "train.steps=6", "data.max_unreadable_share=0.2")
    with pytest.raises(DataError, match=r"more than data.max_unreadable_share = 0\.2"):
        Trainer(cfg, tmp_path / "out").fit()
    assert not (tmp_path / "out" / "final").exists()


def test_unreadable_share_within_limit_trains(tmp_path):
    data = make_folder(tmp_path / "data", 12, corrupt={4})  # 8% < the default 10%
    summary = Trainer(folder_run(data, "train.batch_size=4", "train.steps=7"), tmp_path / "o").fit()
    assert summary["step"] == 7 and summary["skipped"] == 1  # 2+ epochs, counted once


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_max_unreadable_share_out_of_range_raises(bad):
    # nan: Config.validate's own finite-number check answers first
    expected = r"DataConfig.max_unreadable_share: (must be in \[0, 1\]|expected a finite number)"
    with pytest.raises(ConfigError, match=expected):
        DataConfig(max_unreadable_share=bad).validate()


def _feed(log, flags, batch=32):
    """Feed a first pass (True = unreadable) in batches; returns the reads when it stopped."""
    for start in range(0, len(flags), batch):
        part = flags[start : start + batch]
        log.add_pass(len(part), sum(part), done=start + batch >= len(flags))
        log.add([Unreadable(f"f{start + i}", "unreadable image") for i, b in enumerate(part) if b])
        try:
            log.check()
        except DataError:
            return log.pass_reads
    return None


def test_early_rule_stops_soon_on_bad_data_and_never_on_good_data(tmp_path):
    rng = random.Random(0)

    def log(total, share=0.1):
        return UnreadableLog(share, "folder data/x", total, tmp_path)

    assert _feed(log(10_000), [True] * 10_000, batch=1) == 13  # every item unreadable
    half = [i % 2 == 0 for i in range(10_000)]
    rng.shuffle(half)
    assert _feed(log(10_000), half) <= 96  # ~65 reads, in batches of 32
    for _ in range(20):  # 9% unreadable in random order vs a 10% limit: never stops
        flags = [i < 1_800 for i in range(20_000)]
        rng.shuffle(flags)
        assert _feed(log(20_000), flags) is None
    # a stream (order not random, no pass size): only the end of its pass decides
    stream = UnreadableLog(0.1, "webdataset data/x", None, tmp_path)
    assert _feed(stream, [True] * 500 + [False] * 9_500) is None  # 5%: one bad shard first
    assert _feed(UnreadableLog(0.1, "w", None, tmp_path), [True] * 200 + [False] * 800) == 1_000


def test_zero_share_stops_at_the_first_unreadable_item(tmp_path):
    log = UnreadableLog(0.0, "folder data/x", 1_000, tmp_path)
    assert _feed(log, [False] * 100 + [True] + [False] * 899, batch=1) == 101


# --- 2. pixel formats ---------------------------------------------------------------------------


def _load_one(tmp_path, data, suffix=".png", channels=1):
    root = tmp_path / "px"
    root.mkdir(exist_ok=True)
    (root / f"a{suffix}").write_bytes(data)
    (root / "a.txt").write_text("a caption")
    cfg = DataConfig(
        name="folder", path=str(root), test_fraction=0.0, image_size=8, channels=channels
    )
    return build_dataset(cfg)[0]


def test_16bit_grey_png_keeps_its_grey_level(tmp_path):
    item = _load_one(tmp_path, raw_png(np.full((8, 8), 30000), color_type=0))
    expect = round(30000 / 257) / 127.5 - 1  # -0.084: mid grey, not white
    assert torch.allclose(item["image"], torch.full((1, 8, 8), expect))
    im = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))  # the captioning path
    assert im.mode == "I;16" and pil_to_tensor([im], 1).eq(1.0).all()
    assert pil_to_tensor([Image.fromarray(np.full((4, 4), 30000, np.uint16))], 3).max() < 0


@pytest.mark.parametrize(
    "array, mode",
    [(np.full((8, 8), 30000, np.int32), "I"), (np.full((8, 8), 0.5, np.float32), "F")],
)
def test_32bit_int_and_float_images_are_refused_with_the_reason(tmp_path, array, mode):
    buf = io.BytesIO()
    im = Image.fromarray(array)
    assert im.mode == mode
    im.save(buf, format="TIFF")
    item = _load_one(tmp_path, buf.getvalue(), suffix=".tif")
    assert isinstance(item, Unreadable) and item.kind == "unreadable image"
    assert f"PIL mode {mode}" in item.detail and "no standard range" in item.detail
    assert item.key.endswith("a.tif")


def _saved(mode, value, fmt="PNG"):
    buf = io.BytesIO()
    Image.new(mode, (8, 8), value).save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize(
    "data, expect",
    [
        # 16-bit RGB / RGBA / grey+alpha PNGs: PIL reads them as 8-bit (30000 -> 117)
        (raw_png(np.full((8, 8, 3), 30000), color_type=2), (117, 117, 117)),
        (raw_png(np.full((8, 8, 4), 30000), color_type=6), (117, 117, 117)),
        (raw_png(np.full((8, 8, 2), 30000), color_type=4), (117, 117, 117)),
        (_saved("P", (200, 10, 10)), (200, 10, 10)),  # palette: its colour
        (_saved("LA", (90, 0)), (90, 90, 90)),  # alpha dropped, the stored grey kept
        (_saved("1", 1), (255, 255, 255)),
        (_saved("CMYK", (0, 255, 255, 0), fmt="JPEG"), (255, 0, 0)),  # magenta + yellow
        (_saved("CMYK", (0, 255, 255, 0), fmt="TIFF"), (255, 0, 0)),
    ],
)
def test_other_pixel_formats_convert_by_their_depth(tmp_path, data, expect):
    x = (_load_one(tmp_path, data, channels=3)["image"] + 1) * 127.5  # (3, 8, 8) in [0, 255]
    assert torch.allclose(
        x, torch.tensor(expect, dtype=x.dtype)[:, None, None].expand_as(x), atol=2
    )


# --- 3. captions that are not UTF-8 ------------------------------------------------------------


def test_non_utf8_caption_is_skipped_and_named(tmp_path):
    data = make_folder(tmp_path / "data", 3, non_utf8={1})
    ds = build_dataset(DataConfig(name="folder", path=str(data), test_fraction=0.0, channels=1))
    item = ds[1]
    assert isinstance(item, Unreadable) and item.kind == "non-UTF-8 caption"
    assert item.key == str(data / "01.png") and "01.txt" in item.detail
    assert isinstance(ds[0], dict) and collate([ds[i] for i in range(3)])["skipped"] == 1
    assert corpus(DataConfig(name="folder", path=str(data), test_fraction=0.0)) == [
        "noise number 0",
        "noise number 2",
    ]


def test_non_utf8_caption_in_a_shard_is_skipped_and_named(tmp_path):
    shard = write_shard(
        tmp_path / "s.tar",
        [
            {"__key__": "good", "png": png_bytes(), "txt": b"fine"},
            {"__key__": "bad", "png": png_bytes(), "txt": b"\xff\xfe caption"},
        ],
    )
    ds = build_dataset(DataConfig(name="webdataset", path=str(shard), channels=1, image_size=8))
    items = list(ds)
    assert [it["text"] for it in items if isinstance(it, dict)] == ["fine"]
    bad = [it for it in items if isinstance(it, Unreadable)]
    assert len(bad) == 1 and bad[0].key == f"{shard}:bad" and bad[0].kind == "non-UTF-8 caption"
    assert ds.captions() == ["fine"]


def test_non_utf8_caption_does_not_stop_training(tmp_path):
    data = make_folder(tmp_path / "data", 12, non_utf8={3})
    summary = Trainer(folder_run(data, "train.batch_size=4", "train.steps=3"), tmp_path / "o").fit()
    assert summary["skipped_by_kind"] == {"non-UTF-8 caption": 1}


# --- 4. malformed JSONL lines ------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad, why",
    [
        (b'{"image": "a.png", "text": ', "not valid JSON"),
        (b'{"image": "a.png"}', "expected an object"),
        (b'["a.png", "a caption"]', "expected an object"),
        (b'{"image": "a.png", "text": 3}', "expected an object"),
        (b'{"image": "a.png", "text": "t", "label": true}', "expected an object"),
        (b'{"image": "a.png", "text": "t", "label": 1e400}', "expected an object"),
        (b'{"image": "a.png", "text": "caf\xe9"}', "not UTF-8"),
        (b'{"image": "a.png", "text": "\\ud800"}', "lone surrogate"),
    ],
)
def test_bad_jsonl_line_cli_one_line_exit_2(tmp_path, capsys, bad, why):
    path = tmp_path / "train.jsonl"
    path.write_bytes(b'{"image": "a.png", "text": "fine"}\n\n' + bad + b"\n")
    rc = main(
        [
            "train",
            "--config",
            "tiny",
            "--out",
            str(tmp_path / "out"),
            "--set",
            "data.name=jsonl",
            f"data.path={path}",
            "data.channels=1",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"mmar train: {path}:3: ") and why in err and "e.g. {" in err


# --- 5. data smaller than the batch ------------------------------------------------------------


def test_dataset_smaller_than_batch_cli_one_line_exit_2(tmp_path, capsys):
    data = make_folder(tmp_path / "data", 3)
    rc = main(
        [
            "train",
            "--config",
            "tiny",
            "--out",
            str(tmp_path / "out"),
            "--set",
            "data.name=folder",
            f"data.path={data}",
            "data.test_fraction=0.0",
            "data.channels=1",
            "train.batch_size=8",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "train.batch_size = 8 is larger than the dataset" in err and "3 training items" in err
    assert f"folder data {data}" in err and "--set train.batch_size=2" in err


def test_stream_smaller_than_batch_raises(tmp_path):
    samples = [{"__key__": f"k{i}", "png": png_bytes(), "txt": b"a caption"} for i in range(3)]
    shard = write_shard(tmp_path / "shard-000.tar", samples)
    cfg = tiny(
        "data.name=webdataset", f"data.path={shard}", "data.channels=1", "train.batch_size=8"
    )
    with pytest.raises(DataError, match=r"stream gave fewer than 8 items .*train.batch_size"):
        Trainer(cfg, tmp_path / "out").fit()


# --- 6. each unreadable item counted and named once, with its reason ----------------------------


@pytest.mark.parametrize("workers", [0, 2])
def test_each_unreadable_item_counted_once_with_its_reason(tmp_path, capsys, workers):
    data = make_folder(tmp_path / "data", 16, corrupt={2}, no_caption={7}, non_utf8={11})
    cfg = folder_run(
        data,
        "train.batch_size=4",
        "train.steps=12",  # 3 epochs
        "data.max_unreadable_share=0.25",
        f"data.num_workers={workers}",
        "train.progress=true",
    )
    summary = Trainer(cfg, tmp_path / "out").fit()
    assert summary["skipped"] == 3
    assert summary["skipped_by_kind"] == {
        "unreadable image": 1,
        "missing caption": 1,
        "non-UTF-8 caption": 1,
    }
    err = capsys.readouterr().err
    # each on a line of its own (tqdm.write), never appended to the progress bar's line
    segments = [s for line in err.split("\n") for s in line.split("\r")]
    named = [s for s in segments if "skipping" in s]
    assert all(s.startswith("skipping ") for s in named), named
    assert sorted(named) == [
        f"skipping {data / '02.png'}: unreadable image (UnidentifiedImageError: cannot identify "
        "image file)",
        f"skipping {data / '07.png'}: missing caption (no caption file 07.txt)",
        f"skipping {data / '11.png'}: non-UTF-8 caption (11.txt: UnicodeDecodeError: 'utf-8' "
        "codec can't decode byte 0xe9 in position 3: invalid continuation byte)",
    ]
    assert (
        "skipped 3 unreadable items (1 missing caption, 1 non-UTF-8 caption, 1 unreadable " in err
    )
    listed = [json.loads(x) for x in (tmp_path / "out" / "skipped.jsonl").read_text().splitlines()]
    assert sorted(x["item"] for x in listed) == [str(data / f"{i:02d}.png") for i in (2, 7, 11)]


def test_resume_keeps_each_unreadable_item_counted_once(tmp_path):
    data = make_folder(tmp_path / "data", 12, corrupt={5})
    cfg = folder_run(data, "train.batch_size=4", "train.steps=8", "train.ckpt_every=2")
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, tmp_path / "out", callbacks=[_stop_at(4)]).fit()
    summary = Trainer(cfg, tmp_path / "out", resume=True).fit()
    assert summary["skipped"] == 1 and summary["step"] == 8


def _stop_at(step):
    def callback(trainer, record):
        if record["step"] == step:
            raise KeyboardInterrupt

    return callback


# --- 7. fuzz: random bytes through every user data source ---------------------------------------


def _sample_image(fmt):
    buf = io.BytesIO()
    Image.new("RGB", (6, 5), (9, 99, 199)).save(buf, format=fmt)
    return buf.getvalue()


SAMPLE_IMAGES = {fmt: _sample_image(fmt) for fmt in ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")}
MAGIC = [v[:16] for v in SAMPLE_IMAGES.values()]


@st.composite
def image_bytes(draw):
    """Random bytes, a real image's header + random bytes, or a real image cut or with bytes
    changed: bad images of every depth into the decoders."""
    how = draw(st.sampled_from(["random", "magic", "truncated", "mutated", "valid"]))
    if how == "random":
        return draw(st.binary(max_size=300))
    if how == "magic":
        return draw(st.sampled_from(MAGIC)) + draw(st.binary(max_size=300))
    data = SAMPLE_IMAGES[draw(st.sampled_from(sorted(SAMPLE_IMAGES)))]
    if how == "truncated":
        return data[: draw(st.integers(0, len(data) - 1))]
    if how == "mutated":
        out = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            out[draw(st.integers(0, len(out) - 1))] = draw(st.integers(0, 255))
        return bytes(out)
    return data


CAPTIONS = {
    "none": st.none(),  # no caption file / member
    "bytes": st.binary(max_size=80),  # mostly not UTF-8
    "text": st.text(max_size=40).map(str.encode),
}
# UTF-8 text 3 times in 5, so that most images get decoded
caption_or_none = st.sampled_from(["none", "bytes", "text", "text", "text"]).flatmap(CAPTIONS.get)
caption_bytes = st.sampled_from(["bytes", "text", "text", "text"]).flatmap(CAPTIONS.get)
FUZZ = settings(
    max_examples=250,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _check_items(items, size=8, channels=3):
    """Every item readable and well-formed, or Unreadable with a known kind; collate counts the
    Unreadable ones."""
    for it in items:
        if isinstance(it, Unreadable):
            assert it.kind in KINDS and it.key and "\n" not in it.detail
        else:
            x = it["image"]
            assert x.shape == (channels, size, size) and torch.isfinite(x).all()
            assert x.min() >= -1 and x.max() <= 1 and isinstance(it["text"], str)
    batch = collate(items)
    assert batch["skipped"] == sum(isinstance(it, Unreadable) for it in items)
    assert len(batch["texts"]) == len(items) - batch["skipped"]


@FUZZ
@given(st.lists(st.tuples(image_bytes(), caption_or_none), min_size=1, max_size=4))
def test_fuzz_folder_random_images_and_captions(tmp_path_factory, files):
    root = tmp_path_factory.mktemp("fuzz")
    for i, (image, caption) in enumerate(files):
        (root / f"{i}.png").write_bytes(image)
        if caption is not None:
            (root / f"{i}.txt").write_bytes(caption)
    cfg = DataConfig(name="folder", path=str(root), test_fraction=0.0, image_size=8)
    ds = build_dataset(cfg)
    items = [ds[i] for i in range(len(ds))]
    _check_items(items)
    for (image, caption), item in zip(files, items):  # a valid pair is never skipped
        if image in SAMPLE_IMAGES.values() and caption is not None and _utf8(caption):
            text = caption.decode().replace("\r\n", "\n").replace("\r", "\n").strip()
            assert isinstance(item, dict) and item["text"] == text  # universal newlines
    assert all(isinstance(t, str) for t in ds.captions())


def _utf8(data):
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


json_values = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5))
good_line = st.fixed_dictionaries(
    {"image": st.sampled_from(["0.png", "1.png", "2.png", "none.png"]), "text": st.text()},
    optional={"label": st.integers(-1, 9)},
).map(lambda d: json.dumps(d).encode())
any_line = st.one_of(
    good_line,
    st.binary(max_size=60),
    st.dictionaries(st.sampled_from(["image", "text", "label"]), json_values).map(
        lambda d: json.dumps(d).encode()
    ),
)


@FUZZ
@given(
    # well-formed lines (their images decoded), or any lines (the file refused by line)
    st.lists(good_line, min_size=1, max_size=4) | st.lists(any_line, min_size=1, max_size=4),
    st.lists(image_bytes(), min_size=3, max_size=3),
)
def test_fuzz_jsonl_random_lines_and_images(tmp_path_factory, lines, images):
    root = tmp_path_factory.mktemp("fuzz")
    for i, image in enumerate(images):
        (root / f"{i}.png").write_bytes(image)
    path = root / "data.jsonl"
    path.write_bytes(b"\n".join(line.replace(b"\n", b" ").replace(b"\r", b" ") for line in lines))
    try:
        ds = build_dataset(
            DataConfig(name="jsonl", path=str(path), test_fraction=0.0, image_size=8)
        )
    except DataError as e:  # a malformed line (or none at all): named by file and line
        assert str(path) in str(e) and "\n" not in str(e)
        return
    _check_items([ds[i] for i in range(len(ds))])


@FUZZ
@given(
    st.lists(
        st.fixed_dictionaries(
            {},
            optional={
                "png": image_bytes(),
                "jpg": image_bytes(),
                "txt": caption_bytes,
                "cls": st.integers().map(lambda i: str(i).encode()) | st.binary(max_size=6),
            },
        ),
        min_size=1,
        max_size=4,
    ),
    st.none() | st.binary(max_size=600),
)
def test_fuzz_webdataset_random_members_and_shards(tmp_path_factory, samples, junk_shard):
    root = tmp_path_factory.mktemp("fuzz")
    members = [{"__key__": f"s{i}", **s} for i, s in enumerate(samples) if s]
    write_shard(root / "a.tar", members)
    if junk_shard is not None:  # random bytes as a whole shard, or a real one cut short
        cut = (root / "a.tar").read_bytes()[: len(junk_shard)]
        (root / "b.tar").write_bytes(junk_shard if len(junk_shard) % 2 else cut)
    cfg = DataConfig(name="webdataset", path=str(root), image_size=8, shuffle_buffer=0)
    ds = build_dataset(cfg)
    items = list(ds)
    _check_items(items)
    assert len(items) >= len(members)  # every sample comes out, readable or not
    assert all(isinstance(t, str) for t in ds.captions())
