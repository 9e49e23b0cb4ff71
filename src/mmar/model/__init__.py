"""mmar.model: the MMAR model and its parts (configs, backbone, EmbeddingViT, masks, masking).

Imported lazily so that reading a config does not import torch/transformers.
"""

from mmar.model.config import BackboneConfig, MaskConfig, MMARConfig, ViTConfig, tiny_config

__all__ = ["MMAR", "MMARConfig", "BackboneConfig", "ViTConfig", "MaskConfig", "tiny_config",
           "EmbeddingViT", "build_backbone", "build_attention_mask", "pack_sequences"]

_LAZY = {
    "MMAR": "mmar.model.mmar",
    "EmbeddingViT": "mmar.model.embedding_vit",
    "build_backbone": "mmar.model.backbone",
    "build_attention_mask": "mmar.model.attention_mask",
    "pack_sequences": "mmar.model.sequence",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mmar.model' has no attribute {name!r}")
