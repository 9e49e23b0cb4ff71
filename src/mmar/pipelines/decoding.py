"""KV-cached text decoding after a packed prefix: what captioning and answering share.

    h, cache = backbone(prefix)                    one pass over [bos][boi] img [eoi] (question)
    y_1      = argmax / sample logits(h_last)      then y_{t+1} from logits(h(y_t) | cache)

The prefix may be left-padded (questions of different lengths): its padding keys are then
masked out of every decoding step, and token t of row b sits at position P_b + t - 1, P_b the
row's own prefix length, so a row decodes as it would alone. Rows that have emitted eos keep
decoding pad until all are done or ``max_new_tokens`` is reached. Sampled tokens
(``text_temperature`` > 0) come from each sample's own generator (see :mod:`mmar.pipelines.base`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mmar.config import check
from mmar.model.config import SamplingConfig
from mmar.model.mmar import MMARModel
from mmar.model.sequence import PackedBatch
from mmar.pipelines.base import generators
from mmar.tokenizers.special import SpecialTokenIds


def check_room(model: MMARModel, prefix: int, s: SamplingConfig, what: str) -> None:
    """``max_new_tokens`` after a prefix of ``prefix`` positions must fit the backbone's
    positions (a text past them is out of what the model can place); ``what`` names the
    prefix in the error."""
    limit = getattr(model.backbone.config, "max_position_embeddings", None)
    if limit is None:
        return
    check(
        s.max_new_tokens <= limit - prefix,
        "SamplingConfig.max_new_tokens",
        f"must be <= {limit - prefix} (the backbone's max_position_embeddings = {limit} "
        f"less the {prefix} positions of {what}), got {s.max_new_tokens}; "
        "e.g. max_new_tokens: 32",
    )


def next_tokens(
    logits: torch.Tensor, s: SamplingConfig, gens: Sequence[torch.Generator]
) -> torch.Tensor:
    """The next token of each row of logits (B, V): argmax (text_temperature 0), else a draw
    from softmax(logits / T) with row b's generator -> (B,)."""
    if s.text_temperature == 0:
        return logits.argmax(-1)
    # max subtracted, float64: finite for any T > 0 (float32 reads T = 1e-300 as 0)
    top = logits.amax(-1, keepdim=True)
    probs = torch.softmax((logits - top).double() / s.text_temperature, dim=-1)
    return torch.cat([torch.multinomial(probs[b], 1, generator=g) for b, g in enumerate(gens)])


def decode_text(
    model: MMARModel,
    batch: PackedBatch,
    image_tokens: torch.Tensor,
    seeds: Sequence[int],
    s: SamplingConfig,
    special: SpecialTokenIds,
) -> torch.Tensor:
    """Token ids (B, T), T <= max_new_tokens, pad after each row's eos, decoded after the
    prefix ``batch`` (on the model's device; left-padded when its rows differ in length) whose
    image slots take ``image_tokens`` (B, N, D)."""
    B, dev = len(batch), model.device
    h, cache = model.backbone_hidden(
        model.embed(batch, image_tokens),
        model.attention_mask(batch),
        batch.position_ids,
        use_cache=True,
    )
    logits = model.logits(h[:, -1]).float()  # (B, V)
    gens = generators(seeds, dev) if s.text_temperature > 0 else []
    # padding keys (left-padded prefixes) stay masked; None: every key is seen
    key_valid = None if bool(batch.valid.all()) else batch.valid
    start = batch.position_ids[:, -1:] + 1  # (B, 1) position of the first new token
    done = torch.zeros(B, dtype=torch.bool, device=dev)
    L, out = batch.input_ids.shape[1], []
    for step in range(s.max_new_tokens):
        nxt = next_tokens(logits, s, gens)  # (B,)
        nxt = torch.where(done, torch.full_like(nxt, special.pad), nxt)
        out.append(nxt)
        done |= nxt == special.eos
        if bool(done.all()) or step == s.max_new_tokens - 1:
            break
        kv = L + step + 1  # keys incl. nxt
        if key_valid is not None:
            key_valid = torch.cat([key_valid, key_valid.new_ones(B, 1)], 1)  # (B, kv)
        h, cache = model.backbone_hidden(
            model.backbone.get_input_embeddings()(nxt[:, None]),
            model.decoding_mask(B, kv, key_valid),
            start + step,
            cache=cache,
            use_cache=True,
        )
        logits = model.logits(h[:, -1]).float()
    return torch.stack(out, 1)  # (B, T)
