"""Does the LLM still speak English? Its perplexity on a fixed set of held-out sentences.

Image training must not destroy the backbone's text ability (the point of training it frozen or
with LoRA). ``text_perplexity`` scores ordinary English sentences, none of them a caption of the
training data, in MMAR's plain-text layout ``[bos] text [eos]``:

    PPL = exp( - sum_s sum_{j >= 1} log p(x_{s,j} | x_{s,<j}) / sum_s (len_s - 1) )

over every token of every sentence after the first (bos), eos included. ``mmar perplexity``
reports it for an MMAR checkpoint and for the untouched GGUF backbone, so before/after numbers
of a run come from exactly the same tokens.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase

from mmar.torch_utils import eval_mode

# Ordinary English, none about digits or shapes; fixed so numbers are comparable across runs.
HELD_OUT_SENTENCES = (
    "The train to the city leaves every morning at half past seven.",
    "She opened the window to let the fresh air into the kitchen.",
    "Most people drink coffee or tea before they start working.",
    "The library closes early on Sundays during the summer months.",
    "He forgot his umbrella at home, so he got wet on the way to school.",
    "Children learn new languages faster than most adults do.",
    "The river flows slowly through the valley towards the sea.",
    "We planted tomatoes and beans in the garden last spring.",
    "The museum has a large collection of paintings from the last century.",
    "After dinner, the family went for a short walk around the park.",
    "Doctors recommend sleeping at least seven hours every night.",
    "The price of bread has gone up again this year.",
    "My neighbour plays the piano every evening after work.",
    "Heavy snow closed the mountain roads for two days.",
    "The teacher asked the students to read the first chapter by Friday.",
    "A good map makes it much easier to find your way in a new town.",
)


def encode_sentences(
    tokenizer: PreTrainedTokenizerBase, sentences: Sequence[str]
) -> list[list[int]]:
    """``[bos] text [eos]`` token ids per sentence (no bos where the vocabulary has none)."""
    bos = [] if tokenizer.bos_token_id is None else [tokenizer.bos_token_id]
    ids = tokenizer(list(sentences), add_special_tokens=False)["input_ids"]
    return [bos + x + [tokenizer.eos_token_id] for x in ids]


@torch.no_grad()
def text_perplexity(
    lm: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    sentences: Sequence[str] = HELD_OUT_SENTENCES,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Perplexity of the causal LM ``lm`` (a transformers model, or MMAR's backbone) on
    ``sentences`` -> {"perplexity", "nll_per_token" (nats), "tokens", "sentences"}.

    Right-padded batches with a 2-D attention mask; padding is never a target.
    """
    seqs = encode_sentences(tokenizer, sentences)
    device = next(lm.parameters()).device
    total_nll, total_tokens = 0.0, 0
    with eval_mode(lm):
        for start in range(0, len(seqs), batch_size):
            chunk = seqs[start : start + batch_size]
            L = max(len(s) for s in chunk)
            ids = torch.full((len(chunk), L), tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros(len(chunk), L, dtype=torch.long)
            for b, s in enumerate(chunk):
                ids[b, : len(s)], mask[b, : len(s)] = torch.tensor(s), 1
            ids, mask = ids.to(device), mask.to(device)
            logits = lm(input_ids=ids, attention_mask=mask).logits[:, :-1].float()  # (B, L-1, V)
            targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)  # (B, L-1)
            total_nll += float(F.cross_entropy(logits.transpose(1, 2), targets, reduction="sum"))
            total_tokens += int((targets != -100).sum())
    nll = total_nll / total_tokens
    return {
        "perplexity": math.exp(nll),
        "nll_per_token": nll,
        "tokens": total_tokens,
        "sentences": len(seqs),
    }
