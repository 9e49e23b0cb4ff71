"""The latent scale of an image tokenizer on a set of images (LDM's recipe).

The diffusion head assumes unit-variance tokens, so latents are multiplied by
scale = 1 / std(z), with std over every element of the raw (scale 1.0) latents z of N images
(MAR's KL-16 value 0.2325 came from ImageNet). Used by `mmar vae-scale` and by
`mmar train-tokenizer`, which stores the estimate in the VAE's config.
"""

from __future__ import annotations

from typing import Any

import torch

from mmar.tokenizers.base import ImageTokenizer


def estimate_scale(
    tokenizer: ImageTokenizer,
    images: list[torch.Tensor],
    batch_size: int,
    generator: torch.Generator,
) -> dict[str, Any]:
    """Encode images (scale 1.0) and return mean, std, scale = 1/std of all latent elements."""
    device = next(tokenizer.parameters()).device
    latents = []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            batch = torch.stack(images[i : i + batch_size]).to(device)  # (B, 3, S, S)
            latents.append(tokenizer.encode(batch, generator=generator).double().cpu())
    z = torch.cat(latents)  # (N, C, h, w)
    std = z.std().item()
    return {
        "scale": 1.0 / std,
        "mean": z.mean().item(),
        "std": std,
        "num_images": z.shape[0],
        "latent_shape": list(z.shape[1:]),
    }
