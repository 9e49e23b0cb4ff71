"""text_perplexity against closed forms, and `mmar perplexity` on a tiny saved model."""

import json
import math

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from helpers_model import CORPUS, one_thread  # noqa: F401  (fixture)
from mmar.cli import main
from mmar.evaluation.text_perplexity import HELD_OUT_SENTENCES, encode_sentences, text_perplexity
from mmar.model.config import tiny_config
from mmar.pipelines.mmar import MMAR
from mmar.tokenizers.text import add_image_tokens, build_word_tokenizer

SENTENCES = ["a red circle", "digit seven", "a blue square at the top"]


def word_tokenizer():
    tok = build_word_tokenizer(CORPUS)
    add_image_tokens(tok)
    return tok


def tiny_lm(vocab: int):
    cfg = AutoConfig.for_model(
        "qwen2",
        vocab_size=vocab,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=32,
    )
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(cfg)


def test_uniform_model_has_perplexity_vocab_size():
    tok = word_tokenizer()
    lm = tiny_lm(len(tok))
    with torch.no_grad():
        lm.lm_head.weight.zero_()  # every logit 0: p = 1 / V for every token
    r = text_perplexity(lm, tok, SENTENCES, batch_size=2)
    assert r["perplexity"] == pytest.approx(len(tok), rel=1e-5)
    # targets: every token after [bos], eos included, never the padding
    assert r["tokens"] == sum(len(s) - 1 for s in encode_sentences(tok, SENTENCES))
    assert r["sentences"] == 3


def test_batching_and_padding_do_not_change_the_result():
    tok = word_tokenizer()
    lm = tiny_lm(len(tok))
    one = text_perplexity(lm, tok, SENTENCES, batch_size=1)
    all_ = text_perplexity(lm, tok, SENTENCES, batch_size=8)
    assert one["perplexity"] == pytest.approx(all_["perplexity"], rel=1e-5)
    assert math.exp(one["nll_per_token"]) == pytest.approx(one["perplexity"])


def test_held_out_sentences_are_fixed_and_ordinary():
    assert 10 <= len(HELD_OUT_SENTENCES) <= 20 and len(set(HELD_OUT_SENTENCES)) == 16
    assert not any("digit" in s.lower() for s in HELD_OUT_SENTENCES)


def test_cli_json_on_a_saved_model(tmp_path, capsys):
    torch.manual_seed(0)
    model = MMAR.from_config(tiny_config(), CORPUS)
    model.save_pretrained(tmp_path / "m")
    assert main(["perplexity", "--model", str(tmp_path / "m"), "--json", "-"]) == 0
    report = json.loads(capsys.readouterr().out)
    want = text_perplexity(
        MMAR.from_pretrained(tmp_path / "m").model.backbone, model.processor.tokenizer
    )
    assert report["perplexity"] == pytest.approx(want["perplexity"], rel=1e-6)
    assert report["source"] == str(tmp_path / "m")
    assert (
        main(["perplexity", "--model", str(tmp_path / "m"), "--json", str(tmp_path / "p.json")])
        == 0
    )
    assert json.loads((tmp_path / "p.json").read_text())["tokens"] == report["tokens"]


def test_cli_bad_arguments_raise(tmp_path, capsys):
    assert main(["perplexity", "--model", str(tmp_path / "missing")]) == 2
    assert "missing does not exist" in capsys.readouterr().err
    assert main(["perplexity", "--backbone-gguf", "--gguf-dir", str(tmp_path)]) == 2
    assert "--gguf-file" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # --model and --backbone-gguf are exclusive
        main(["perplexity", "--model", "x", "--backbone-gguf"])
