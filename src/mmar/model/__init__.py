"""mmar.model: the MMAR network, its processor and their parts (configs, backbone, EmbeddingViT,
attention mask, sequence packing, masking).

Imported lazily so that reading a config does not import torch/transformers.
"""

from typing import Any

from mmar.model.config import (
    BackboneConfig,
    MaskConfig,
    MMARConfig,
    SamplingConfig,
    ViTConfig,
    tiny_config,
)

__all__ = [
    "BackboneConfig",
    "EmbeddingViT",
    "MMARConfig",
    "MMARModel",
    "MMARProcessor",
    "MaskConfig",
    "SamplingConfig",
    "ViTConfig",
    "build_attention_mask",
    "build_backbone",
    "pack_sequences",
    "tiny_config",
]

_LAZY = {
    "MMARModel": "mmar.model.mmar",
    "MMARProcessor": "mmar.model.processor",
    "EmbeddingViT": "mmar.model.embedding_vit",
    "build_backbone": "mmar.model.backbone",
    "build_attention_mask": "mmar.model.attention_mask",
    "pack_sequences": "mmar.model.sequence",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mmar.model' has no attribute {name!r}")
