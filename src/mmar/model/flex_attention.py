"""The FlexAttention path (``BackboneConfig.attention: flex``): MMAR's mask as a BlockMask.

The dense path (attention_mask.py) gives SDPA a (B, 1, L, L) bool tensor; on a GPU such a mask
rules out the FlashAttention kernels, and every layer reads the L x L mask. Here the same rule
is a ``mask_mod`` (a function of (b, h, q, k) over ``block_ids`` / ``valid``), from which torch
builds a ``BlockMask``: per (128 x 128) tile, "skip", "full" or "apply mask_mod". The compiled
flex kernel then skips the tiles nobody attends to and evaluates the rule inside the others, with
no L x L tensor.

    allowed(q, k) = valid[k] and (k <= q or block[q] == block[k] > 0)   for a valid query q
    allowed(q, k) = (k == q)                                            for a padding query q

This is exactly ``build_attention_mask``; ``tests/test_model_flex_attention.py`` materialises it
over every (q, k) and compares. The padding rule matters: a query row with no allowed key gives
0 in flex (NaN in SDPA), so a mask_mod without it differs from the dense path at padding rows.

How transformers runs it: a 4-D ``BlockMask`` passed as ``attention_mask`` is used as is
(``masking_utils._preprocess_mask_arguments``). The backbone is built with the attention
implementation registered here, ``"mmar_flex"``: on a CUDA device it is transformers' own
``flex_attention_forward`` (``torch.compile(flex_attention)``: the fused Triton kernels); on a
CPU it runs that same function with torch.compile switched off (``set_stance("force_eager")``),
because compiling the CPU kernel takes ~45 s per new shape and a C++ compiler, for no gain: eager
flex materialises the scores like SDPA's math path. Never pass the dense bool mask to a flex
backbone: transformers' flex path would add it to the scores as a 0/1 bias instead of masking.

torch (2.13) has no FlexAttention backward on CPU (or MPS): a flex backbone runs inference
there (the pipelines, evaluation) but cannot train; the trainer refuses it up front, and a
backward pass there raises ``FlexTrainingUnsupported``.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, noop_mask

FLEX_ATTENTION = "mmar_flex"  # the transformers attention implementation name registered here
NO_FLEX_BACKWARD = ("cpu", "mps")  # devices where torch's FlexAttention has no backward


class FlexTrainingUnsupported(NotImplementedError):
    """A flex backbone was asked for gradients on a device where FlexAttention has none."""


def flex_training_error(device: torch.device | str, where: str = "BackboneConfig.attention") -> str:
    """Why a flex backbone cannot train on ``device``, and what to do instead (``where``: the
    config field to name)."""
    return (
        f"{where}: 'flex' cannot train on {torch.device(device).type}: "
        "torch's FlexAttention has no backward pass there (inference works). Train with "
        "attention: dense here, or on a CUDA device, e.g. --set model.backbone.attention=dense"
    )


def block_mask_mod(block_ids: torch.Tensor, valid: torch.Tensor, start: int = 0) -> Any:
    """MMAR's mask rule as a flex ``mask_mod(b, h, q, k) -> bool`` for queries start..L-1.

    block_ids: (B, L) long, 0 for text, a positive id per image block; valid: (B, L) bool.
    Query index q is relative to ``start`` (the KV-cached pipeline asks for the image block
    only); key index k is absolute. Every value the rule reads is a captured tensor, not a
    Python number, so that the compiled kernel does not specialise on a prompt's length.
    """
    L = block_ids.shape[1]
    q_pos = torch.arange(start, L, device=block_ids.device)  # (Q,) absolute position
    q_block, q_valid = block_ids[:, start:], valid[:, start:]  # (B, Q)

    def mask_mod(
        b: torch.Tensor, h: torch.Tensor, q: torch.Tensor, k: torch.Tensor
    ) -> torch.Tensor:
        qb, pos = q_block[b, q], q_pos[q]
        allowed = ((k <= pos) | ((qb == block_ids[b, k]) & (qb > 0))) & valid[b, k]
        vq = q_valid[b, q]
        return (vq & allowed) | (~vq & (k == pos))

    return mask_mod


def build_block_mask(block_ids: torch.Tensor, valid: torch.Tensor, start: int = 0) -> BlockMask:
    """BlockMask (B, 1, L - start, L): queries start..L-1 over keys 0..L-1, on the inputs' device.

    Equal to ``build_attention_mask(block_ids, valid)[:, :, start:]``. Built without
    torch.compile: the rule is evaluated once per call over (B, L - start, L) (a few MB at
    batch 64 and L = 324), which costs milliseconds and no compilation.
    """
    B, L = block_ids.shape
    return create_block_mask(
        block_mask_mod(block_ids, valid, start),
        B,
        None,
        L - start,
        L,
        device=block_ids.device,
        _compile=False,
    )


def full_block_mask(batch_size: int, q_len: int, kv_len: int, device: torch.device) -> BlockMask:
    """BlockMask (B, 1, q_len, kv_len) in which every query sees every key (a decoding step)."""
    return create_block_mask(
        noop_mask, batch_size, None, q_len, kv_len, device=device, _compile=False
    )


def key_block_mask(key_valid: torch.Tensor) -> BlockMask:
    """BlockMask (B, 1, 1, K): one query per sample that sees the keys where key_valid (B, K)
    is True (a decoding step after a left-padded prefix)."""

    def mask_mod(
        b: torch.Tensor, h: torch.Tensor, q: torch.Tensor, k: torch.Tensor
    ) -> torch.Tensor:
        return key_valid[b, k]

    B, K = key_valid.shape
    return create_block_mask(mask_mod, B, None, 1, K, device=key_valid.device, _compile=False)


def _eager(device: torch.device | str | None) -> bool:
    """Run flex without torch.compile: on a CPU, unless an outer torch.compile traces us."""
    return torch.device(device or "cpu").type == "cpu" and not torch.compiler.is_compiling()


def _flex_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: Any,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """transformers' flex attention (query (B, H, Lq, d) -> (B, Lq, H, d)), eager on a CPU.

    Under autocast, q, k, v are cast to the autocast dtype first, as autocast does for SDPA:
    flex_attention is not an autocast op, and Qwen2's rotary embedding returns fp32 q and k
    beside a bf16 v, which would run the fp32 kernels (many times slower on a GPU).
    """
    from transformers.integrations.flex_attention import flex_attention_forward

    device = query.device.type
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
        query, key, value = query.to(dtype), key.to(dtype), value.to(dtype)
    if (
        query.device.type in NO_FLEX_BACKWARD
        and torch.is_grad_enabled()
        and (query.requires_grad or key.requires_grad or value.requires_grad)
    ):
        raise FlexTrainingUnsupported(flex_training_error(query.device))
    if not _eager(query.device):
        return flex_attention_forward(module, query, key, value, attention_mask, **kwargs)
    with torch.compiler.set_stance("force_eager"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
        return flex_attention_forward(module, query, key, value, attention_mask, **kwargs)


def _flex_mask(*args: Any, **kwargs: Any) -> Any:
    """transformers' own flex mask (built from a 2-D padding mask, e.g. ``mmar perplexity``),
    without torch.compile on a CPU."""
    from transformers.masking_utils import flex_attention_mask

    if not _eager(kwargs.get("device")):
        return flex_attention_mask(*args, **kwargs)
    with torch.compiler.set_stance("force_eager"):
        return flex_attention_mask(*args, **kwargs)


def register_flex_attention() -> str:
    """Register ``"mmar_flex"`` with transformers (idempotent) and return the name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(FLEX_ATTENTION, _flex_attention_forward)
    AttentionMaskInterface.register(FLEX_ATTENTION, _flex_mask)
    return FLEX_ATTENTION
