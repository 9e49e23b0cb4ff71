"""Transfusion-style image generation: diffusion inside the backbone (issue 11's ablation row).

No per-token diffusion head and no [MASK]: every image token is noised to one t per image, the
LLM sees the noisy tokens plus an embedding of t, and a linear output predicts the target of the
config's ``diffusion.parameterization`` (v by default) for all N tokens at once:

    t ~ U{0..T-1},  eps ~ N(0, I) (N, D)                  one t and noise per generated image
    x_t   = sqrt(ab_t) x0 + sqrt(1-ab_t) eps              (N, D), every token of the image
    e_img = EmbeddingViT(x_t) + TimestepEmbedder(t)       (N, W) at the image slots
    h     = backbone(...)  (B, L, W);  z = h_img + pos    (N, W)
    out   = Linear(W, D)(z)                               (N, D)
    L_img = mean over the N tokens of ||out - target||^2 / D      per image, then over images

Images that are read rather than generated (i2t, vqa samples; captioning and answering) enter
clean with t = 0's embedding, as in Transfusion, through the same ``MMARModel.image_embeddings``.
The loss is returned under ``loss_diff`` like the other heads', and ``n_masked`` counts the
noised tokens (N per generated image), so the trainer's global token-weighted mean is the mean
over images. Generation (full-sequence denoising) is ``mmar.pipelines.transfusion``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mmar.diffusion.head import TimestepEmbedder
from mmar.diffusion.parameterization import q_sample, training_target
from mmar.model.sequence import PackedBatch

if TYPE_CHECKING:  # mmar.py builds TransfusionHead: import its class for types only
    from mmar.model.mmar import MMARModel


class TransfusionHead(nn.Module):
    """The two small layers Transfusion adds around the backbone: a timestep embedder (input
    side, width W, added to the EmbeddingViT outputs) and a linear output W -> D on the hidden
    states at the image slots. The output starts at zero (DiT's choice, as the MLP head's
    AdaLN-zero), so a fresh model predicts 0 for every token."""

    def __init__(self, width: int, token_dim: int):
        super().__init__()
        self.time_embed = TimestepEmbedder(width)
        self.out = nn.Linear(width, token_dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def time_embedding(self, t: torch.Tensor) -> torch.Tensor:
        """t (B,) integer timesteps -> (B, 1, W), broadcast over an image's N slots."""
        return self.time_embed(t)[:, None]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z (..., W) conditions at the image slots (hidden + pos) -> prediction (..., D)."""
        return self.out(z)


def draw_image_noise(
    gens: Sequence[torch.Generator | None],
    num_tokens: int,
    token_dim: int,
    num_timesteps: int,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One timestep per image and its noise: t (G,) long, eps (G, N, D) float32.

    Image g draws t (1,) then eps (N, D) from ``gens[g]`` (None: torch's default generator), so
    its draws do not depend on its batch."""
    ts = [torch.randint(0, num_timesteps, (1,), generator=g, device=device) for g in gens]
    eps = [torch.randn(num_tokens, token_dim, generator=g, device=device) for g in gens]
    if not ts:
        empty = torch.empty(0, dtype=torch.long, device=device)
        return empty, torch.empty(0, num_tokens, token_dim, device=device)
    return torch.cat(ts), torch.stack(eps)


def transfusion_loss(
    out: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor, ab: torch.Tensor, kind: str
) -> torch.Tensor:
    """Per-image loss mean_{N, D} (out - target)^2, target = v | eps | x0 of ``kind``.

    out, x0, eps: (G, N, D); ab: (G, 1, 1) alpha_bar of each image's t -> (G,) float32 (or
    float64 for float64 inputs). The mean over D and then over the N tokens is the MLP head's
    ||.||^2 / D per token (mmar.diffusion.loss), averaged over the image's tokens."""
    if out.shape != x0.shape or eps.shape != x0.shape or x0.ndim != 3:
        raise ValueError(
            f"transfusion_loss: out, x0 and eps must all be (G, N, D), got "
            f"{tuple(out.shape)}, {tuple(x0.shape)}, {tuple(eps.shape)}"
        )
    target = training_target(kind, x0, eps, ab)  # (G, N, D)
    return ((out.to(target.dtype) - target) ** 2).mean(dim=(1, 2))  # (G,)


def transfusion_forward(
    model: MMARModel,
    batch: PackedBatch,
    tokens: torch.Tensor | None,
    gens: Sequence[torch.Generator | None],
) -> dict[str, Any]:
    """``MMARModel.forward`` for ``image_head == "transfusion"``: the same returned dict, with
    the image loss of :func:`transfusion_loss` under ``loss_diff``.

    tokens: (B_img, N, D) clean tokens of the samples with an image, in batch order.
    gens: one generator per sample (B,); generated images (t2i, img) draw t and eps from theirs
    (:func:`draw_image_noise`), read images (i2t, vqa) draw nothing and enter clean at t = 0."""
    # fmt: off
    N, D, dev = model.num_image_tokens, model.geometry.token_dim, model.device
    n_img = model.check_image_tokens(batch, tokens)
    noised = batch.generative[batch.has_image]                                         # (B_img,)
    gen_gens = [g for g, n in zip(gens, (batch.has_image & batch.generative).tolist()) if n]
    t, eps = draw_image_noise(gen_gens, N, D, model.config.diffusion.num_timesteps, dev)  # (G,)
    ab = model.noise_schedule().ab(t).view(-1, 1, 1)                                   # (G, 1, 1)
    vit_inputs, t_img, x0 = None, None, None
    if tokens is not None and n_img:
        vit_inputs = tokens.float().clone()                                            # (B_img,..)
        x0 = vit_inputs[noised]                                                        # (G, N, D)
        vit_inputs[noised] = q_sample(x0, eps, ab)                                     # x_t
        t_img = torch.zeros(n_img, dtype=torch.long, device=dev)                       # clean: 0
        t_img[noised] = t                                                              # (B_img,)
    hidden = model.hidden_states(batch, vit_inputs, t_img)                             # (B, L, W)
    loss_text, w = model.text_loss(hidden, batch)
    loss_diff = hidden.new_zeros((), dtype=torch.float32)
    if x0 is not None and len(x0):
        out = model.transfusion(model.conditions(hidden, batch)[noised]).float()      # (G, N, D)
        kind = model.config.diffusion.parameterization
        loss_diff = transfusion_loss(out, x0, eps, ab, kind).mean()                    # over images
    return model.losses(loss_text, loss_diff, w, len(t) * N)
    # fmt: on
