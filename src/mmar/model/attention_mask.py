"""The 4-D attention mask of a mixed text/image batch: causal for text, full inside image blocks.

How transformers (5.x) consumes it: ``masking_utils._preprocess_mask_arguments`` returns any 4-D
tensor unchanged ("already prepared, or custom"), and the sdpa integration passes it straight to
``torch.nn.functional.scaled_dot_product_attention`` as ``attn_mask``. SDPA reads a bool mask as
"True = may attend"; a float mask would be additive and must match the query dtype, which under
bf16 autocast is bf16, so the bool form is the one that works in fp32 and under autocast alike.
The backbone is therefore built with ``attn_implementation="sdpa"`` (eager would add the bool).
This is ``BackboneConfig.attention: dense``; ``flex`` expresses the same rule as a FlexAttention
BlockMask (flex_attention.py) and never builds this tensor for the backbone.

A row with no allowed key gives NaN in SDPA, so padding rows attend to themselves; their outputs
are never used.
"""

from __future__ import annotations

import torch


def build_attention_mask(block_ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Bool mask (B, 1, L, L); entry [b, 0, q, k] is True when query q may attend to key k.

    allowed(q, k) = valid[k] and (k <= q or (block[q] == block[k] > 0)) for a valid query q;
    a padding query attends to itself only.

    block_ids: (B, L) long, 0 for text tokens, a positive id shared by the N tokens of each image
               block (unique per block within a sample).
    valid:     (B, L) bool, False at padding.
    """
    L = block_ids.shape[1]
    pos = torch.arange(L, device=block_ids.device)
    causal = pos[None, :] <= pos[:, None]  # (L, L) k <= q
    same_block = (block_ids[:, :, None] == block_ids[:, None, :]) & (block_ids[:, :, None] > 0)
    allowed = (causal[None] | same_block) & valid[:, None, :]  # (B, L, L)
    eye = torch.eye(L, dtype=torch.bool, device=valid.device)[None]  # (1, L, L)
    allowed = torch.where(valid[:, :, None], allowed, eye)  # padding rows: self only
    return allowed[:, None]  # (B, 1, L, L)
