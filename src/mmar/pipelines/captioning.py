"""CaptionPipeline: encode the image block once, then decode text with the KV cache.

    prefix = [bos] [boi] img_1..img_N [eoi]       (image block bidirectional, nothing masked)
    y_1    = argmax / sample  logits(h_eoi)       then  y_{t+1} from logits(h(y_t) | cache)

Every sample's prefix has the same length (N image tokens, fixed specials), so the batch needs
no padding; samples that have emitted eos keep decoding pad until all are done or
``max_new_tokens`` is reached. Sampled tokens (``text_temperature`` > 0) come from each image's
own generator (see :mod:`mmar.pipelines.base`). The decoding loop is
:func:`mmar.pipelines.decoding.decode_text`, shared with answering.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from mmar.model.config import SamplingConfig
from mmar.model.mmar import MMARModel
from mmar.model.processor import ImagesLike, MMARProcessor
from mmar.pipelines.base import Seed, sample_seeds, sampling_config
from mmar.pipelines.decoding import check_room, decode_text
from mmar.torch_utils import eval_mode


class CaptionPipeline:
    """Images -> text with an ``MMARModel`` and its ``MMARProcessor``.

        captions = CaptionPipeline(model, processor)(images)   # greedy by default

    images: PIL images (converted to the tokenizer's channels and resized to its size) or a
    tensor (B, C_img, H, W) in [-1, 1] of exactly the tokenizer's shape (else ValueError).
    """

    def __init__(self, model: MMARModel, processor: MMARProcessor):
        self.model, self.processor = model, processor

    def __call__(
        self, images: ImagesLike, sampling: SamplingConfig | None = None, seed: Seed = 0
    ) -> list[str]:
        """One caption per image; ``sampling.max_new_tokens`` / ``text_temperature`` (0 =
        greedy) / ``batch_size``, default the model's ``config.sampling``."""
        return self.processor.decode_ids(self.generate_ids(images, sampling, seed))

    @torch.no_grad()
    def generate_ids(
        self, images: ImagesLike, sampling: SamplingConfig | None = None, seed: Seed = 0
    ) -> torch.Tensor:
        """Generated token ids (B, T), T <= max_new_tokens, pad after each row's eos."""
        s = sampling_config(self.model.config.sampling, sampling)
        self._check_length(s)
        x = self.processor.preprocess(images).to(self.model.device)  # (B, C, H, W)
        seeds = sample_seeds(seed, x.shape[0])
        with eval_mode(self.model):
            chunks = [
                self._decode(x[i : i + s.batch_size], seeds[i : i + s.batch_size], s)
                for i in range(0, x.shape[0], s.batch_size)
            ]
        T = max(c.shape[1] for c in chunks)
        pad = self.processor.special.pad
        return torch.cat([F.pad(c, (0, T - c.shape[1]), value=pad) for c in chunks])

    def _check_length(self, s: SamplingConfig) -> None:
        """The prefix [bos][boi] image [eoi] and max_new_tokens must fit the backbone's
        positions (a caption past them is out of what the model can place)."""
        prefix = self.processor.pack([""], ["img"]).input_ids.shape[1]
        check_room(self.model, prefix, s, "the image prefix")

    def _decode(self, x: torch.Tensor, seeds: Sequence[int], s: SamplingConfig) -> torch.Tensor:
        B = x.shape[0]
        batch = self.processor.pack([""] * B, ["img"] * B).to(self.model.device)
        tokens = self.processor.encode_images(x)  # (B, N, D)
        return decode_text(self.model, batch, tokens, seeds, s, self.processor.special)
