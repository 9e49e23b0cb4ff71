"""mmar: MMAR (arXiv 2410.10798) in PyTorch.

One decoder-only LLM, extended with continuous image tokens, that generates images from text
(masked autoregression whose per-token distribution is an MLP diffusion head trained with
v-prediction) and understands images (captioning, question answering), with no vector
quantisation.

    model = mmar.MMAR.from_pretrained("runs/quickstart")
    images = model.generate_images(["a handwritten digit seven"], seed=0)
    captions = model.caption(images)
    answers = model.answer(images, "how many squares are there?")  # a model trained with vqa
    edited = model.inpaint(images, mmar.box_keep_mask(32, (8, 8, 24, 24)), "digit one")
"""

from typing import Any

__version__ = "0.1.0"

__all__ = [
    "MMAR",
    "AnswerPipeline",
    "CaptionPipeline",
    "EditingPipeline",
    "MMARConfig",
    "MMARModel",
    "MMARProcessor",
    "SamplingConfig",
    "TextToImagePipeline",
    "__version__",
    "box_keep_mask",
]

_LAZY = {  # `import mmar` does not import torch/transformers
    "MMAR": "mmar.pipelines.mmar",
    "TextToImagePipeline": "mmar.pipelines.text_to_image",
    "CaptionPipeline": "mmar.pipelines.captioning",
    "AnswerPipeline": "mmar.pipelines.answering",
    "EditingPipeline": "mmar.pipelines.editing",
    "box_keep_mask": "mmar.pipelines.editing",
    "MMARModel": "mmar.model.mmar",
    "MMARProcessor": "mmar.model.processor",
    "MMARConfig": "mmar.model.config",
    "SamplingConfig": "mmar.model.config",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mmar' has no attribute {name!r}")
