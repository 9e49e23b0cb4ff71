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

__all__ = ["MMARModel", "MMARProcessor", "MMARConfig", "SamplingConfig", "BackboneConfig",
           "ViTConfig", "MaskConfig", "tiny_config", "EmbeddingViT", "build_backbone",
           "build_attention_mask", "pack_sequences"]

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
