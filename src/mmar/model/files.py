"""A checkpoint directory, in one place: its files' names, which of them it needs, and its
config.json as written and as read.

config.json                  MMARConfig (its sampling section: the recommended settings), and the
                             mmar version that wrote it
model.safetensors            MMARModel weights; the EMA's under the "ema." prefix
backbone/                    the LLM's transformers config (no original weights needed)
tokenizer/                   the processor's text tokenizer
image_tokenizer.safetensors  the processor's VAE weights, when the image tokenizer has any
README.md                    optional: the model card (Hugging Face front matter, what the model
                             is, its config, metrics, samples, how to load it), written by
                             MMAR.save_pretrained (mmar.pipelines.model_card)
metrics.json                 optional: the metrics of its last evaluation, as given to
                             save_pretrained(metrics=...) (mmar quickstart: its results)
samples.png                  optional: a grid of samples, as given to save_pretrained(samples=...)

Loading reads none of the optional files. A checkpoint directory is also what a Hugging Face
Hub model repo of mmar holds (``MMAR.push_to_hub``); ``MMAR.from_pretrained("owner/name")``
downloads one into the Hugging Face cache (mmar.model.hub).

A checkpoint is self-contained: loading it reads nothing outside the directory, and its
config.json names no text tokenizer outside it either. A text tokenizer that was read from a
path (a pretrained directory, a GGUF file, another checkpoint's tokenizer/) is recorded as the
checkpoint's own copy, ``text_tokenizer: {kind: pretrained, path: tokenizer}``, a path relative to
the checkpoint, which :func:`read_config` resolves to ``DIR/tokenizer``; tokenizers with no path
("words", the packaged GGUF and Qwen vocabularies) are recorded as they are.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mmar.model.config import MMARConfig

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
BACKBONE_DIR = "backbone"
TOKENIZER_DIR = "tokenizer"
IMAGE_TOKENIZER_FILE = "image_tokenizer.safetensors"
EMA_PREFIX = "ema."
CARD_FILE = "README.md"
METRICS_FILE = "metrics.json"
SAMPLES_FILE = "samples.png"
# what every checkpoint holds (directories with a trailing "/", as messages name them)
REQUIRED = (CONFIG_FILE, WEIGHTS_FILE, BACKBONE_DIR + "/", TOKENIZER_DIR + "/")


def missing_files(directory: str | Path) -> list[str]:
    """The entries of ``REQUIRED`` that ``directory`` lacks, e.g. ``["model.safetensors"]``."""
    d = Path(directory)
    return [
        name
        for name in REQUIRED
        if not ((d / name).is_dir() if name.endswith("/") else (d / name).is_file())
    ]


def self_contained(config: MMARConfig) -> MMARConfig:
    """``config`` as a checkpoint records it: a text tokenizer read from a path becomes the
    checkpoint's own ``tokenizer/`` (``{kind: pretrained, path: tokenizer}``), so that a model
    loaded from one directory and saved to another does not name the first one."""
    tok = config.text_tokenizer
    if tok.path is None:
        return config
    own = tok.replace(kind="pretrained", path=TOKENIZER_DIR, gguf_file=None, vocab_size=0)
    return config.replace(text_tokenizer=own)


def read_config(directory: str | Path) -> MMARConfig:
    """The ``MMARConfig`` of a checkpoint directory (errors name config.json and the field; a
    file from a newer mmar says so), with its own tokenizer's path resolved to
    ``directory/tokenizer``."""
    from mmar.model.config import MMARConfig

    d = Path(directory)
    config = MMARConfig.from_json(d / CONFIG_FILE)
    tok = config.text_tokenizer
    if tok.kind == "pretrained" and tok.path == TOKENIZER_DIR:
        config = config.replace(text_tokenizer=tok.replace(path=str(d / TOKENIZER_DIR)))
    return config
