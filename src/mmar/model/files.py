"""The names of a checkpoint directory's files, in one place.

config.json                  MMARConfig (its sampling section: the recommended settings)
model.safetensors            MMARModel weights; the EMA's under the "ema." prefix
backbone/                    the LLM's transformers config (no original weights needed)
tokenizer/                   the processor's text tokenizer
image_tokenizer.safetensors  the processor's VAE weights, when the image tokenizer has any
"""

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
BACKBONE_DIR = "backbone"
TOKENIZER_DIR = "tokenizer"
IMAGE_TOKENIZER_FILE = "image_tokenizer.safetensors"
EMA_PREFIX = "ema."
