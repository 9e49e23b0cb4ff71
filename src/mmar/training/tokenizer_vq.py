"""The VQ autoencoder of `mmar train-tokenizer --kind vq`: diffusers' ``VQModel``, its loss and
its codebook statistics.

    h   = quant_conv(encoder(x))                 (B, D, h, w), D = vq.latent_channels
    c   = argmin_k ||h - e_k||^2 per cell;  e = E[c]
    z_q = h + sg[e - h]                          straight-through: the decoder's gradient reaches h
    x'  = decoder(post_quant_conv(z_q))
    L   = l1 |x - x'| + l2 (x - x')^2 + ||sg[h] - e||^2 + beta ||h - sg[e]||^2   (element means)

The codebook and commitment terms are written here rather than taken from diffusers'
``VectorQuantizer`` (whose default "legacy" form puts beta on the codebook term, and whose
beta is fixed at 0.25 by ``VQModel``). The codebook starts from encoder outputs of the first
batch (``init_codebook``), as k-means initialisations do: diffusers' uniform(-1/K, 1/K) start
sits far from the encoder outputs and leaves most codes unused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from mmar._versions import require
from mmar.tokenizers.diffusers_vq import DiffusersVQTokenizer, nearest_codes
from mmar.training.tokenizer_config import TokenizerTrainConfig

if TYPE_CHECKING:
    from diffusers.models.autoencoders.vq_model import VQModel


def build_vq_autoencoder(cfg: TokenizerTrainConfig) -> VQModel:
    """A freshly initialised ``VQModel`` of ``cfg.vq``'s geometry, its weights drawn from
    ``cfg.seed`` (in a forked RNG: torch's global generator is neither read nor moved)."""
    require("diffusers")
    from diffusers.models.autoencoders.vq_model import VQModel

    v = cfg.vq
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return VQModel(
            **v.diffusers_kwargs(cfg.data.image_size),
            vq_embed_dim=v.latent_channels,
            num_vq_embeddings=v.num_vq_embeddings,
        )


def _cells(h: torch.Tensor) -> torch.Tensor:
    """(B, D, h, w) -> (B h w, D)."""
    return h.permute(0, 2, 3, 1).reshape(-1, h.shape[1])


@torch.no_grad()
def init_codebook(vq: VQModel, x: torch.Tensor, generator: torch.Generator) -> None:
    """Set the K codes to encoder outputs h of the images x (B, 3, S, S): K cells drawn without
    replacement (with replacement when the batch has fewer than K cells) from ``generator``."""
    h = _cells(vq.encode(x).latents)  # (M, D)
    K, M = vq.quantize.embedding.weight.shape[0], h.shape[0]
    if M >= K:
        pick = torch.randperm(M, generator=generator, device=generator.device)[:K]
    else:
        pick = torch.randint(0, M, (K,), generator=generator, device=generator.device)
    vq.quantize.embedding.weight.copy_(h[pick.to(h.device)])


def vq_loss(
    vq: VQModel, x: torch.Tensor, cfg: TokenizerTrainConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of the module docstring on images x (B, 3, S, S) in [-1, 1], and its parts."""
    h = vq.encode(x).latents  # (B, D, h, w)
    codebook = vq.quantize.embedding.weight  # (K, D)
    codes = nearest_codes(_cells(h).detach(), codebook)  # (B h w,)
    e = codebook[codes].view(h.shape[0], h.shape[2], h.shape[3], -1).permute(0, 3, 1, 2)
    z_q = h + (e - h).detach()
    y = vq.decode(z_q, force_not_quantize=True).sample
    l1 = (y - x).abs().mean()
    mse = (y - x).pow(2).mean()
    codebook_term = (e - h.detach()).pow(2).mean()
    commitment = (h - e.detach()).pow(2).mean()
    w = cfg.loss
    vq_term = codebook_term + cfg.vq.beta * commitment
    loss = w.l1 * l1 + w.l2 * mse + vq_term
    used = codes.unique().numel()
    return loss, {
        "loss": loss.item(),
        "l1": l1.item(),
        "mse": mse.item(),
        "vq": vq_term.item(),
        "codes_used": used,
    }


@torch.no_grad()
def codebook_usage(codes: torch.Tensor, codebook_size: int) -> dict[str, float]:
    """How much of the codebook a set of codes (any shape, long) uses: the share of the K codes
    that occur, and the perplexity exp(H(p)) of their frequencies p (K when all are equally
    used, 1 when one code is)."""
    counts = torch.bincount(codes.reshape(-1).cpu(), minlength=codebook_size).double()
    p = counts / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum().item()
    return {
        "codes_used": int((counts > 0).sum().item()) / codebook_size,
        "code_perplexity": float(torch.tensor(entropy).exp().item()),
    }


@torch.no_grad()
def codebook_metrics(
    tokenizer: DiffusersVQTokenizer, images: torch.Tensor, batch_size: int
) -> dict[str, float]:
    """``codebook_usage`` of the codes of ``images`` (N, 3, S, S) through the saved tokenizer."""
    device = tokenizer.codebook.device
    codes = [
        tokenizer.codes(tokenizer.encode(images[i : i + batch_size].to(device)))
        for i in range(0, len(images), batch_size)
    ]
    return codebook_usage(torch.cat([c.reshape(-1) for c in codes]), tokenizer.codebook_size)
