"""The codebook head: masked AR over a VQ tokenizer's discrete codes (the Show-o-like ablation,
``MMARConfig.image_head = "codebook"``).

    tokens x_i = e_{c_i}: codebook rows (the ``diffusers_vq`` tokenizer's z_q), c_i in 0..K-1
    conditions z_i = h_i + pos_i (MMARModel.conditions)  -->  logits l_i = W z_i + b   (K,)
    training: CE(l_i, c_i) at the masked positions, mean over the masked tokens
    sampling:  l = l_u + w (l_c - l_u);  p = softmax(l / tau);  c ~ p (inverse CDF of one uniform
               from the image's generator; tau = 0: argmax);  x_i = e_c

The model keeps its own copy of the codebook (a buffer, saved in model.safetensors) so that a
checkpoint's codes mean the same vectors whatever the tokenizer file; it is copied from the
tokenizer when a fresh model is built (``copy_codebook``). The EmbeddingViT reads the same
tokens as in MMAR, so understanding is unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mmar.tokenizers.diffusers_vq import nearest_codes


class CodebookHead(nn.Module):
    """A linear code head W -> K over the conditions, and the codebook (K, D) it indexes.

    width: W, the LLM's hidden size. codebook_size: K. token_dim: D (the codebook's width)."""

    codebook: torch.Tensor

    def __init__(self, width: int, codebook_size: int, token_dim: int):
        super().__init__()
        self.proj = nn.Linear(width, codebook_size)
        # zeros until copy_codebook (a fresh model) or load_weights (a checkpoint) sets it
        self.register_buffer("codebook", torch.zeros(codebook_size, token_dim))

    @property
    def codebook_size(self) -> int:
        return self.codebook.shape[0]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Logits over the codes: z (..., W) -> (..., K), float32."""
        return self.proj(z).float()

    def codes(self, tokens: torch.Tensor) -> torch.Tensor:
        """The code of each token (M, D) -> (M,) long: its nearest codebook row (exact for z_q)."""
        return nearest_codes(tokens, self.codebook)

    def tokens(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (...) long -> their codebook rows (..., D) float32."""
        return self.codebook[codes].float()

    def set_codebook(self, codebook: torch.Tensor) -> None:
        """Copy a tokenizer's codebook (K, D) into the buffer; raises ValueError on a shape that
        does not fit (the config's geometry)."""
        if tuple(codebook.shape) != tuple(self.codebook.shape):
            raise ValueError(
                f"CodebookHead: the tokenizer's codebook is {tuple(codebook.shape)}, the model "
                f"was built for {tuple(self.codebook.shape)} (image_tokenizer's "
                "num_vq_embeddings x vq_embed_dim); build the model from the same VQ directory"
            )
        with torch.no_grad():
            self.codebook.copy_(codebook.to(self.codebook))


def copy_codebook(model: Any, image_tokenizer: Any) -> None:
    """A freshly built model with ``image_head == "codebook"`` takes its codebook from the
    processor's ``diffusers_vq`` tokenizer (``MMAR.from_config``, ``Trainer._build_model``);
    other models are left alone."""
    head = getattr(model, "code_head", None)
    if head is not None:
        head.set_codebook(image_tokenizer.codebook)


def codebook_loss(head: CodebookHead, z: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """L = mean_i CE(W z_i + b, c_i), c_i = argmin_k ||x0_i - e_k||: z (M, W), x0 (M, D) -> 0-d
    float32 (the mean over the M masked tokens)."""
    return F.cross_entropy(head(z.float()), head.codes(x0))


def guided_logits(
    cond: torch.Tensor, uncond: torch.Tensor | None, guidance_scale: float
) -> torch.Tensor:
    """Classifier-free guidance on logits: l = l_u + w (l_c - l_u); cond / uncond (M, K)
    (uncond None: l_c)."""
    if uncond is None:
        return cond
    return uncond + guidance_scale * (cond - uncond)


def draw_codes(logits: torch.Tensor, temperature: float, u: torch.Tensor) -> torch.Tensor:
    """One code per row of logits (M, K) -> (M,) long: the inverse CDF of softmax(l / tau) at
    the uniforms u (M,) in [0, 1) (row i: the first k with sum_{j <= k} p_j > u_i); tau = 0:
    argmax l (u unused). Computed in float64, so that a row's code does not depend on the
    other rows."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    p = torch.softmax(logits.double() / temperature, dim=-1)  # (M, K)
    cdf = p.cumsum(dim=-1)
    k = torch.searchsorted(cdf, (u.double() * cdf[:, -1])[:, None], right=True)  # (M, 1)
    return k.squeeze(1).clamp_(max=logits.shape[-1] - 1)


def sample_code_tokens(
    head: CodebookHead,
    cond: torch.Tensor,
    uncond: torch.Tensor | None,
    guidance_scale: float,
    temperature: float,
    generators: Sequence[torch.Generator],
) -> torch.Tensor:
    """Tokens for the conditions of one masked-AR iteration: cond / uncond (B r, W), r tokens
    per image in image order -> codebook rows (B r, D) float32. Image b draws its r uniforms
    from generators[b] (so its codes do not depend on its batch)."""
    B = len(generators)
    r = cond.shape[0] // B
    u = torch.cat([torch.rand(r, generator=g, device=cond.device) for g in generators])
    logits = guided_logits(head(cond), None if uncond is None else head(uncond), guidance_scale)
    return head.tokens(draw_codes(logits, temperature, u))
