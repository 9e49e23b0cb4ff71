"""Turning images and text into tokens.

Images: `build_image_tokenizer(ImageTokenizerConfig)` -> an `ImageTokenizer` (pixels, KL-16, a
diffusers AutoencoderKL, or a diffusers VQModel whose latents are codebook vectors), then
`patchify` groups p x p latent cells into one token.
Text: `build_text_tokenizer(TextTokenizerConfig, corpus)` -> a `PreTrainedTokenizerFast` with
`<boi>`/`<eoi>` added.

transformers and diffusers are imported on first use only (each takes seconds to import).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mmar.tokenizers.base import ImageTokenizer
from mmar.tokenizers.config import ImageTokenizerConfig, TextTokenizerConfig, TokenGeometry
from mmar.tokenizers.diffusers_vae import DiffusersVAETokenizer
from mmar.tokenizers.diffusers_vq import DiffusersVQTokenizer
from mmar.tokenizers.kl16 import KL16_SCALE, KL16Tokenizer
from mmar.tokenizers.patchify import patchify, unpatchify
from mmar.tokenizers.pixel import PixelTokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

__all__ = [
    "KL16_SCALE",
    "DiffusersVAETokenizer",
    "DiffusersVQTokenizer",
    "ImageTokenizer",
    "ImageTokenizerConfig",
    "KL16Tokenizer",
    "PixelTokenizer",
    "TextTokenizerConfig",
    "TokenGeometry",
    "add_image_tokens",
    "build_image_tokenizer",
    "build_text_tokenizer",
    "patchify",
    "unpatchify",
]


def __getattr__(name: str) -> Any:
    if name == "add_image_tokens":  # lazy: text.py imports transformers
        from mmar.tokenizers.text import add_image_tokens

        return add_image_tokens
    raise AttributeError(f"module 'mmar.tokenizers' has no attribute {name!r}")


def build_image_tokenizer(cfg: ImageTokenizerConfig) -> ImageTokenizer:
    """The image tokenizer a config describes. VAEs are returned frozen (eval, no grad):
    MMAR never trains its tokenizer."""
    cfg.validate()
    cfg.geometry()  # diffusers: checks image_size against the VAE's stride from config.json
    if cfg.kind == "pixels":
        return PixelTokenizer(cfg.image_channels, cfg.image_size, cfg.scale)
    tok: ImageTokenizer
    if cfg.kind == "kl16":
        tok = KL16Tokenizer(cfg.path, cfg.image_size, cfg.scale, cfg.posterior, cfg.seed)
    elif cfg.kind == "diffusers_vq":  # validate(): a path, scale 1, patch_size 1
        tok = DiffusersVQTokenizer(str(cfg.path), cfg.image_size, cfg.posterior)
    else:  # validate() guarantees the path of a diffusers VAE
        tok = DiffusersVAETokenizer(str(cfg.path), cfg.image_size, cfg.scale, cfg.posterior)
    return tok.eval().requires_grad_(False)


def build_text_tokenizer(
    cfg: TextTokenizerConfig, corpus: list[str] | None = None
) -> PreTrainedTokenizerFast:
    """The text tokenizer a config describes, with `<boi>`/`<eoi>` and pad/eos ensured.

    corpus: the captions to build the "words" vocabulary from (required for that kind only).
    """
    from mmar.tokenizers import text

    cfg.validate()
    if cfg.kind == "words":
        if corpus is None:
            raise ValueError(
                "TextTokenizerConfig.kind 'words' builds its vocabulary from the training "
                "captions: pass corpus=[...] (e.g. the dataset's texts)"
            )
        tok = text.build_word_tokenizer(corpus, cfg.vocab_size)
    elif cfg.kind == "pretrained":
        tok = text.build_pretrained_tokenizer(str(cfg.path))  # validate(): set for this kind
    elif cfg.kind == "qwen":
        tok = text.build_qwen_tokenizer(cfg.path)
    else:
        tok = text.build_gguf_tokenizer(cfg.path, cfg.gguf_file)
    text.add_image_tokens(tok)
    return tok
