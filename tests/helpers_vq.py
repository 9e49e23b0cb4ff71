"""A tiny random diffusers VQModel directory and a tiny codebook-head MMAR on it (8 px RGB,
stride 2 -> 16 tokens of dim 4, K = 16 codes), for the VQ tokenizer and codebook-head tests."""

from __future__ import annotations

from pathlib import Path

import torch

from helpers_model import CORPUS
from mmar.model.config import tiny_config
from mmar.pipelines.mmar import MMAR
from mmar.tokenizers import ImageTokenizerConfig

K, D = 16, 4


def save_tiny_vq(directory: Path, seed: int = 0) -> Path:
    """A random VQModel (stride 2, vq_embed_dim D, K codes drawn N(0, 1) so that codes differ
    clearly) saved with save_pretrained into ``directory``."""
    from diffusers.models.autoencoders.vq_model import VQModel

    torch.manual_seed(seed)
    vq = VQModel(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 8),
        layers_per_block=1,
        latent_channels=D,
        num_vq_embeddings=K,
        norm_num_groups=4,
        sample_size=8,
        mid_block_add_attention=False,
        scaling_factor=1.0,
    )
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed)
        vq.quantize.embedding.weight.copy_(torch.randn(K, D, generator=g))
    vq.save_pretrained(str(directory))
    return directory


def vq_tokenizer_config(directory: Path) -> ImageTokenizerConfig:
    return ImageTokenizerConfig(
        kind="diffusers_vq", path=str(directory), image_size=8, image_channels=3, patch_size=1
    )


def tiny_codebook_model(directory: Path, seed: int = 0, **changes) -> MMAR:
    """A tiny MMAR with image_head "codebook" on the VQ in ``directory``, in eval mode; its code
    head gets N(0, 0.5^2) weights and no bias, so that the logits (and the codes) depend on z."""
    cfg = tiny_config(
        image_tokenizer=vq_tokenizer_config(directory), image_head="codebook", **changes
    )
    torch.manual_seed(seed)
    model = MMAR.from_config(cfg, CORPUS)
    head = model.model.code_head
    assert head is not None
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        head.proj.weight.copy_(torch.randn(head.proj.weight.shape, generator=g) * 0.5)
        head.proj.bias.zero_()
    model.model.eval()
    return model
