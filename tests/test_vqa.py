"""Visual question answering: the "vqa" packing (CE on the answer only) and its truncation, the
collator's seeded pair draw, the refusals (vqa > 0 without "qa" data, mismatched inputs), the
KV-cached AnswerPipeline (equal to full forwards, batch-invariant, dense = flex), and a tiny
model trained through the real trainer on a JSONL set with "qa" that answers held-out images
right, through ``MMAR.answer`` and ``mmar answer``."""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers_model import one_thread, random_images, tiny_model  # noqa: F401 (fixture)
from mmar.cli import main
from mmar.config import ConfigError, DataError
from mmar.data.collate import collate
from mmar.data.config import DataConfig
from mmar.data.folder import JsonlDataset
from mmar.model.config import SamplingConfig
from mmar.model.sequence import pack_sequences
from mmar.pipelines.mmar import MMAR
from mmar.tokenizers.special import SpecialTokenIds
from mmar.training.batching import TrainingCollator, draw_kind, sample_generator
from mmar.training.config import RunConfig, load_preset
from mmar.training.trainer import Trainer
from test_model_flex_attention import flex_twin

SP = SpecialTokenIds(bos=2, eos=3, pad=0, boi=4, eoi=5)
S = SamplingConfig(max_new_tokens=5)
QUESTIONS = ["a red circle", "digit", "a small green triangle at the top", ""]  # 4 lengths


@pytest.fixture(scope="module")
def model():
    return tiny_model()


# --- packing ------------------------------------------------------------------------------------
def test_vqa_layout_and_answer_only_labels():
    # N = 2; vqa: question [7, 8], answer [9]; beside an i2t sample (right padding)
    b = pack_sequences([[7, 8], [6]], ["vqa", "i2t"], 2, SP, answer_ids=[[9], None])
    assert b.input_ids.tolist() == [
        [2, 4, 0, 0, 5, 7, 8, 9, 3],  # [bos][boi] img img [eoi] q q a [eos]
        [2, 4, 0, 0, 5, 6, 3, 0, 0],
    ]
    assert b.labels.tolist() == [
        [-100] * 7 + [9, 3],  # the answer and eos: the question is never a target
        [-100] * 5 + [6, 3, -100, -100],
    ]
    assert b.label_weights[0].tolist() == [0] * 7 + [1, 1]
    assert b.is_image[0].tolist() == [False, False, True, True] + [False] * 5
    assert b.generative.tolist() == [False, False]  # the image is read, never diffused
    assert b.image_start.tolist() == [2, 2]
    # the attention over the image block is bidirectional, then causal (as i2t)
    assert b.attention_mask[0, 0, 2].tolist() == [1, 1, 1, 1, 0, 0, 0, 0, 0]


def test_ask_prefix_is_left_padded_with_nothing_to_learn():
    b = pack_sequences([[7, 8, 9], []], ["ask", "ask"], 2, SP, padding_side="left")
    assert b.input_ids.tolist() == [[2, 4, 0, 0, 5, 7, 8, 9], [0, 0, 0, 2, 4, 0, 0, 5]]
    assert b.position_ids[1, 3:].tolist() == [0, 1, 2, 3, 4]
    assert (b.labels == -100).all() and not b.generative.any()


def test_processor_truncates_the_question_never_the_answer(model):
    p = model.processor  # tiny: max_text_len 16, a word-level vocabulary
    q = " ".join(["red"] * 20)
    b = p.pack([q, "digit"], ["vqa", "vqa"], answers=["a blue square", "one"])
    n_q = (b.valid & ~b.is_image).sum(1) - 3 - (b.labels != -100).sum(1)  # less bos/boi/eoi
    assert n_q.tolist() == [16 - 3, 1]  # question + answer = max_text_len: the answer stays
    assert (b.labels != -100).sum(1).tolist() == [3 + 1, 1 + 1]  # answer words + eos
    ids = p.encode_texts(["a blue square"])[0]
    assert b.labels[0, b.labels[0] != -100].tolist() == [*ids, p.special.eos]
    with pytest.raises(ValueError, match=r"answer .* leaves no room for its question"):
        p.pack(["digit"], ["vqa"], answers=[" ".join(["red"] * 16)])


def test_pack_refuses_missing_or_misplaced_answers(model):
    p = model.processor
    with pytest.raises(ValueError, match="one string per vqa sample"):
        p.pack(["what?"], ["vqa"])
    with pytest.raises(ValueError, match="got 1 answers for 2 samples"):
        p.pack(["what?", "a"], ["vqa", "i2t"], answers=["red"])
    with pytest.raises(ValueError, match=r"wrong at samples \[1\]"):
        p.pack(["what?", "a"], ["vqa", "i2t"], answers=["red", "blue"])
    with pytest.raises(ValueError, match="have no answer ids"):
        pack_sequences([[7]], ["vqa"], 2, SP)
    # the kinds before vqa pack as they did
    old = p.pack(["digit one", "a"], ["t2i", "i2t"])
    new = p.pack(["digit one", "a"], ["t2i", "i2t"], answers=[None, None])
    assert torch.equal(old.input_ids, new.input_ids) and torch.equal(old.labels, new.labels)


def test_vqa_turns_layout_answers_and_eos_only():
    # N = 2; turn 1: q [7, 8] a [9]; turn 2: q [10] a [11, 12]; turn 3: q [] a [13]
    b = pack_sequences(
        [[7, 8], [6]],
        ["vqa", "i2t"],
        2,
        SP,
        answer_ids=[[9], None],
        turn_ids=[[([10], [11, 12]), ([], [13])], None],
    )
    assert b.input_ids[0].tolist() == [2, 4, 0, 0, 5, 7, 8, 9, 3, 10, 11, 12, 3, 13, 3]
    assert b.label_weights[0].tolist() == [0] * 7 + [1, 1, 0, 1, 1, 1, 1, 1]
    assert b.labels[0, b.labels[0] != -100].tolist() == [9, 3, 11, 12, 3, 13, 3]
    assert b.valid[1].sum() == 7  # the i2t sample is as without turns
    one = pack_sequences([[7, 8]], ["vqa"], 2, SP, answer_ids=[[9]], turn_ids=[[]])
    assert one.input_ids.tolist() == [b.input_ids[0, :9].tolist()]  # no turns: the one-turn form
    with pytest.raises(ValueError, match="turns only on vqa samples"):
        pack_sequences([[6]], ["i2t"], 2, SP, answer_ids=[None], turn_ids=[[([1], [2])]])


def test_processor_keeps_turns_while_the_text_fits(model):
    p = model.processor  # tiny: max_text_len 16
    turns = [("digit red", "blue"), ("digit", "green"), ("red red red red red red", "one")]
    b = p.pack(
        ["digit blue red", "a"], ["vqa", "i2t"], answers=["one two", None], turns=[turns, None]
    )
    # 3 + 2, then 1 + 2 + 1 (= 9), then 1 + 1 + 1 (= 12); the third turn's 1 + 6 + 1 = 20 > 16
    targets = b.labels[0, b.labels[0] != -100]
    eos = p.special.eos
    assert targets.tolist() == [
        *p.encode_texts(["one two"])[0],
        eos,
        *p.encode_texts(["blue"])[0],
        eos,
        *p.encode_texts(["green"])[0],
        eos,
    ]
    assert int((b.valid[0] & ~b.is_image[0]).sum()) == 3 + 12 + 1  # bos boi eoi, text, last eos
    with pytest.raises(ValueError, match="only a vqa sample asks further questions"):
        p.pack(["a", "b"], ["i2t", "vqa"], answers=[None, "red"], turns=[[("a", "b")], None])


# --- the collator's draws -----------------------------------------------------------------------
WORDS = ("red", "blue", "green")  # in the tiny model's vocabulary


def _items(n: int, pairs: int = 3) -> list[dict]:
    return [
        {
            "image": torch.zeros(1, 8, 8),
            "text": "digit one",
            "label": -1,
            "key": k,
            "qa": [[f"digit {w}?", w] for w in WORDS[:pairs]],
        }
        for k in range(n)
    ]


def _answers(out: dict, processor) -> list[str]:
    """The CE targets (answer words, eos dropped) of each sample of a collated batch."""
    b = out["inputs"].batch
    assert not b.generative.any()
    return [processor.tokenizer.decode(row[row != -100][:-1]) for row in b.labels]


def test_pair_draw_is_seeded_per_item_not_per_batch(model):
    p = model.processor
    collator = TrainingCollator(p, {"vqa": 1.0}, seed=7)
    items = _items(12)
    whole = _answers(collator(items), p)
    assert _answers(collator(items[5:]), p) == whole[5:]  # another batch, another position
    again = TrainingCollator(p, {"vqa": 1.0}, seed=7)
    assert _answers(again(list(reversed(items))), p) == list(reversed(whole))
    collator.set_epoch(1)  # another visit of the same items: other pairs
    assert _answers(collator(items), p) != whole
    assert _answers(TrainingCollator(p, {"vqa": 1.0}, seed=8)(items), p) != whole
    # over many items every pair is drawn, about uniformly
    counts = Counter(_answers(TrainingCollator(p, {"vqa": 1.0}, seed=0)(_items(600)), p))
    assert sorted(counts) == sorted(WORDS)
    assert all(150 <= c <= 250 for c in counts.values()), counts


def test_turns_are_distinct_pairs_seeded_per_item(model):
    p = model.processor
    turns3 = TrainingCollator(p, {"vqa": 1.0}, seed=7, vqa_turns=3)
    items = _items(40)
    out = turns3(items)
    eos = p.special.eos
    for row in out["inputs"].batch.labels:
        words = [p.tokenizer.decode([t]) for t in row[row != -100].tolist() if t != eos]
        assert sorted(words) == sorted(WORDS)  # all 3 pairs, each once, in a drawn order
    orders = {tuple(_answers_all(r, p)) for r in out["inputs"].batch.labels}
    assert len(orders) > 1  # the order is drawn per item
    again = TrainingCollator(p, {"vqa": 1.0}, seed=7, vqa_turns=3)(list(reversed(items)))
    assert torch.equal(again["inputs"].batch.labels.flip(0), out["inputs"].batch.labels)
    two = TrainingCollator(p, {"vqa": 1.0}, seed=7, vqa_turns=2)(items)
    assert all(len(_answers_all(r, p)) == 2 for r in two["inputs"].batch.labels)
    # turns beyond the item's pairs: every pair once
    five = TrainingCollator(p, {"vqa": 1.0}, seed=7, vqa_turns=5)(_items(4, pairs=2))
    assert all(len(_answers_all(r, p)) == 2 for r in five["inputs"].batch.labels)


def _answers_all(row: torch.Tensor, processor) -> list[str]:
    """The answer words of one sample's labels, eos dropped."""
    eos = processor.special.eos
    return [processor.tokenizer.decode([t]) for t in row[row != -100].tolist() if t != eos]


def test_vqa_turns_below_one_is_refused():
    with pytest.raises(ConfigError, match="vqa_turns"):
        load_preset("tiny", ["train.vqa_turns=0"])


def test_kind_draws_without_vqa_are_unchanged_and_items_without_pairs_never_vqa():
    old = {"t2i": 0.6, "i2t": 0.3, "img": 0.1}
    for key in range(200):
        a = draw_kind(old, sample_generator(0, 0, key))
        assert draw_kind({**old, "vqa": 0.0}, sample_generator(0, 0, key)) == a
    mixed = {"t2i": 0.5, "vqa": 0.5}
    kinds = [draw_kind(mixed, sample_generator(0, 0, k), has_qa=False) for k in range(200)]
    assert set(kinds) == {"t2i"}
    assert draw_kind({"vqa": 1.0}, sample_generator(0, 0, 0), has_qa=False) == "i2t"
    # collate carries the pairs; an item without "qa" gets []
    batch = collate([*_items(1, pairs=2), {"image": torch.zeros(1, 8, 8), "text": "", "label": 0}])
    assert batch["qa"] == [[("digit red?", "red"), ("digit blue?", "blue")], []]


# --- refusals -----------------------------------------------------------------------------------
def test_vqa_on_a_dataset_without_pairs_is_refused_by_the_config():
    with pytest.raises(ConfigError, match=r"train.kinds.vqa: .*dataset 'digits' has no ques"):
        load_preset("tiny", ["train.kinds.vqa=0.5"])
    msg = "set train.kinds.vqa: 0, or use data.name: shapes"
    with pytest.raises(ConfigError, match=msg):
        RunConfig.from_dict({"train": {"kinds": {"vqa": 1.0}}, "data": {"name": "mnist"}})


def test_vqa_on_jsonl_without_pairs_stops_before_training(tmp_path):
    root = write_set(tmp_path / "data", 4, seed=0, with_qa=False)
    cfg = jsonl_run(root, ["train.steps=1"])
    with pytest.raises(ConfigError, match=r"train.kinds.vqa: .* has no question-answer pairs"):
        Trainer(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize(
    "qa", ['"red"', '[["q"]]', '[["q", 3]]', '[["q", "a", "b"]]', '{"q": "a"}']
)
def test_bad_qa_in_jsonl_names_file_and_line(tmp_path, qa):
    f = tmp_path / "d.jsonl"
    f.write_text(
        '{"image": "a.png", "text": "x"}\n' + f'{{"image": "b.png", "text": "y", "qa": {qa}}}\n'
    )
    with pytest.raises(DataError, match=r"d.jsonl:2: 'qa' must be a list of \[question, answer\]"):
        JsonlDataset(DataConfig(name="jsonl", path=str(f), test_fraction=0), "train")


def test_answer_refuses_mismatched_questions(model):
    with pytest.raises(ValueError, match="one question .* per image, got 2 for 3 images"):
        model.answer(random_images(3), ["a", "b"])
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.answer(random_images(1), "a", max_new_tokens=200)


# --- the pipeline -------------------------------------------------------------------------------
def test_cached_answers_equal_full_forwards(model):
    """Each generated token is the argmax of a full, uncached forward of the vqa layout with the
    answer so far (left padding and masked pad keys included: questions of 4 lengths)."""
    x = random_images(4, seed=3)
    ids = model.answerer.generate_ids(x, QUESTIONS, S)
    eos, net, proc = model.processor.special.eos, model.model, model.processor
    checked = 0
    with torch.no_grad():
        for b, q in enumerate(QUESTIONS):
            row, q_ids = ids[b].tolist(), proc.encode_texts([q])[0]
            for t in range(len(row)):
                if t and row[t - 1] == eos:
                    break
                # [bos][boi] img [eoi] q a_<t [eos]: the logits before eos predict a_t
                batch = pack_sequences([q_ids], ["vqa"], 16, proc.special, answer_ids=[row[:t]])
                h = net.hidden_states(batch, proc.encode_images(x[b : b + 1]))
                assert net.logits(h[0, -2]).argmax().item() == row[t]
                checked += 1
    assert checked >= 8


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_answers_are_batch_invariant(model, temperature):
    x = random_images(4, seed=5)
    s = S.replace(text_temperature=temperature)
    a = model.answerer.generate_ids(x, QUESTIONS, s, seed=0)
    assert torch.equal(a, model.answerer.generate_ids(x, QUESTIONS, s, seed=0))
    for i in range(4):  # alone, with seed 0 + i, as in the batch
        alone = model.answerer.generate_ids(x[i : i + 1], QUESTIONS[i], s, seed=i)
        assert torch.equal(alone[0], a[i, : alone.shape[1]])
        assert (a[i, alone.shape[1] :] == model.processor.special.pad).all()
    chunked = model.answerer.generate_ids(x, QUESTIONS, s.replace(batch_size=3), seed=0)
    assert torch.equal(chunked[:, : a.shape[1]], a)
    texts = model.answer(x, QUESTIONS, s, seed=0)
    assert texts == model.processor.decode_ids(a)
    if temperature:
        assert not torch.equal(a, model.answerer.generate_ids(x, QUESTIONS, s, seed=1))


def test_dense_and_flex_answers_match(model):
    x = random_images(4, seed=6)
    a = model.answerer.generate_ids(x, QUESTIONS, S)
    assert torch.equal(a, flex_twin(model).answerer.generate_ids(x, QUESTIONS, S))


def test_one_question_for_all_and_words_lost_warned(model):
    x = random_images(2)
    assert model.answer(x, "a red circle") == model.answer(x, ["a red circle"] * 2)
    with pytest.warns(UserWarning, match=r"1 of 2 questions lose words.*'purple'"):
        model.answer(x, ["a purple circle", "digit"])


# --- end to end: train, answer held-out images --------------------------------------------------
COLOURS = {"red": (1, 0, 0), "green": (0, 1, 0), "blue": (0, 0, 1)}
SHADES = {"dark": 0.45, "light": 1.0}


def render(colour: str, shade: str, rng: np.random.Generator) -> Image.Image:
    """An 8x8 image of one colour at one shade, with +-0.1 noise per pixel and channel."""
    rgb = np.array(COLOURS[colour], dtype=float) * SHADES[shade]
    px = np.clip(rgb[None, None] + rng.uniform(-0.1, 0.1, (8, 8, 3)), 0, 1)
    return Image.fromarray((px * 255).round().astype(np.uint8))


def qa_of(colour: str, shade: str) -> list[list[str]]:
    """Two questions whose answers need both the image and the question."""
    return [["what colour is it?", colour], ["is it dark or light?", shade]]


def draw_scene(rng: np.random.Generator) -> tuple[str, str]:
    return list(COLOURS)[rng.integers(len(COLOURS))], list(SHADES)[rng.integers(len(SHADES))]


def write_set(root: Path, n: int, seed: int, with_qa: bool = True) -> Path:
    """n PNGs and data.jsonl lines {"image", "text", "qa"} (no "qa" unless with_qa)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        colour, shade = draw_scene(rng)
        render(colour, shade, rng).save(root / f"{i}.png")
        line = {"image": f"{i}.png", "text": f"a {shade} {colour} square"}
        lines.append({**line, "qa": qa_of(colour, shade)} if with_qa else line)
    (root / "data.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return root / "data.jsonl"


def jsonl_run(path: Path, overrides: list[str]) -> RunConfig:
    """The tiny preset on RGB 8x8 JSONL data, mostly vqa samples, some captions and t2i."""
    return load_preset(
        "tiny",
        [
            "train.progress=false",
            "train.ckpt_every=0",
            "train.log_every=20",
            "train.batch_size=16",
            "train.kinds={t2i: 0.2, i2t: 0.2, img: 0, vqa: 0.6}",
            "data.name=jsonl",
            f"data.path={path}",
            "data.test_fraction=0",
            "data.channels=3",
            "model.image_tokenizer.image_channels=3",
            "optim.lr=3e-3",
            "optim.ema_decay=0.9",
            *overrides,
        ],
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny model trained 160 steps (~5 s) on 48 images with two questions each."""
    tmp = tmp_path_factory.mktemp("vqa")
    cfg = jsonl_run(write_set(tmp / "data", 48, seed=0), ["train.steps=160"])
    summary = Trainer(cfg, tmp / "run").fit()
    assert summary["step"] == 160
    return tmp / "run" / "final"


def held_out(n: int) -> tuple[list[Image.Image], list[str], list[str]]:
    """n new images (another stream than the training set's), each asked both questions."""
    rng = np.random.default_rng(1234)
    images, questions, answers = [], [], []
    for _ in range(n):
        colour, shade = draw_scene(rng)
        image = render(colour, shade, rng)
        for q, a in qa_of(colour, shade):
            images.append(image)
            questions.append(q)
            answers.append(a)
    return images, questions, answers


def test_tiny_model_learns_to_answer_held_out_images(trained):
    model = MMAR.from_pretrained(trained)
    images, questions, want = held_out(24)
    got = model.answer(images, questions, max_new_tokens=4)
    right = sum(g == w for g, w in zip(got, want))
    assert right >= 0.9 * len(want), list(zip(questions, want, got))
    # both questions are answered from the image: no constant answer per question
    assert {g for g, q in zip(got, questions) if q.startswith("what")} == set(COLOURS)


def test_cli_answer_prints_path_question_answer(trained, tmp_path, capsys):
    images, _, _ = held_out(3)
    paths = []
    for i, im in enumerate(images[::2]):
        paths.append(tmp_path / f"{i}.png")
        im.save(paths[-1])
    (tmp_path / "notes.txt").write_text("not an image")
    args = ["answer", "--model", str(trained), "--device", "cpu", "--max-new-tokens", "4"]
    files = [a for p in (*paths, tmp_path / "notes.txt") for a in ("--image", str(p))]
    out_json = tmp_path / "a.json"
    rc = main([*args, *files, "--question", "what colour is it?", "--json", str(out_json)])
    captured = capsys.readouterr()
    assert rc == 1 and "mmar answer: skipped" in captured.err and "notes.txt" in captured.err
    lines = captured.out.strip("\n").split("\n")
    assert [ln.split("\t")[:2] for ln in lines] == [[str(p), "what colour is it?"] for p in paths]
    model = MMAR.from_pretrained(trained)
    want = model.answer([Image.open(p) for p in paths], "what colour is it?", max_new_tokens=4)
    assert [ln.split("\t")[2] for ln in lines] == want
    results = json.loads(out_json.read_text())
    assert [r.get("answer") for r in results] == [*want, None] and "error" in results[-1]
    # one question per image, in order
    qs = ["what colour is it?", "is it dark or light?", "what colour is it?"]
    files = [a for p in paths for a in ("--image", str(p))]
    rc = main([*args, *files, *(a for q in qs for a in ("--question", q))])
    assert rc == 0
    assert [ln.split("\t")[1] for ln in capsys.readouterr().out.strip().split("\n")] == qs


def test_cli_answer_bad_input(trained, tmp_path, capsys):
    base = ["answer", "--model", str(trained), "--device", "cpu"]
    rc = main([*base, "--image", str(tmp_path / "missing.png"), "--question", "what?"])
    assert rc == 1 and "missing.png: no such file" in capsys.readouterr().err
    img = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(img)
    rc = main([*base, "--image", str(img), "--question", "a", "--question", "b"])
    assert rc == 2 and "--question given 2 times for 1 --image" in capsys.readouterr().err
    rc = main(["answer", "--model", str(tmp_path / "nope"), "--image", str(img), "--question", "a"])
    assert rc == 2 and "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["answer", "--help"])
    assert "mmar answer --model" in capsys.readouterr().out
