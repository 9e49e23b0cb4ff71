"""mmar.generation: masked-AR text-to-image sampling and KV-cached captioning."""

from mmar.generation.captioning import caption, caption_ids, pil_to_tensor
from mmar.generation.image_generation import generate_images, generate_tokens, to_pil

__all__ = ["generate_images", "generate_tokens", "caption", "caption_ids", "pil_to_tensor", "to_pil"]
