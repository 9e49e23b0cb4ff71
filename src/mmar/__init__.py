"""mmar: MMAR (arXiv 2410.10798) in PyTorch.

One decoder-only LLM, extended with continuous image tokens, that generates images from text
(masked autoregression whose per-token distribution is an MLP diffusion head trained with
v-prediction) and understands images (captioning), with no vector quantisation.
"""

__version__ = "0.1.0"

__all__ = ["MMAR", "MMARConfig", "__version__"]


def __getattr__(name):  # lazy: `import mmar` does not import torch/transformers
    if name == "MMAR":
        from mmar.model.mmar import MMAR

        return MMAR
    if name == "MMARConfig":
        from mmar.model.config import MMARConfig

        return MMARConfig
    raise AttributeError(f"module 'mmar' has no attribute {name!r}")
