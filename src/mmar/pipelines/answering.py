"""AnswerPipeline: visual question answering, the captioning loop after a question.

    prefix = [pad..] [bos] [boi] img_1..img_N [eoi] question    ("ask" layout, left-padded)
    a_1    = argmax / sample  logits(h_last)       then  a_{t+1} from logits(h(a_t) | cache)

The model was trained on the "vqa" layout, [bos] [boi] img [eoi] question answer [eos] with the
CE on the answer and eos (``train.kinds.vqa``); answering decodes that answer, stopping at eos
or after ``SamplingConfig.max_new_tokens`` tokens (the same field as a caption's longest
length: an answer is a short text). Questions of different lengths are left-padded so that
they all end in the last column; the padding is masked out and each row keeps its own
positions, so an answer does not depend on the other questions of the batch. Greedy by
default; sampled tokens (``text_temperature`` > 0) come from each sample's own generator
(sample i: seed + i, see :mod:`mmar.pipelines.base`). The loop is
:func:`mmar.pipelines.decoding.decode_text`, the KV-cached one captioning uses.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from mmar.model.config import SamplingConfig
from mmar.model.mmar import MMARModel
from mmar.model.processor import ImagesLike, MMARProcessor
from mmar.pipelines.base import Seed, sample_seeds, sampling_config, warn_if_prompts_lose_words
from mmar.pipelines.decoding import check_room, decode_text
from mmar.torch_utils import eval_mode


def as_questions(questions: str | Sequence[str], n_images: int) -> list[str]:
    """One question per image: a string is asked of every image; a list must have one per
    image (ValueError naming both counts)."""
    if isinstance(questions, str):
        return [questions] * n_images
    out = list(questions)
    if len(out) != n_images or not all(isinstance(q, str) for q in out):
        raise ValueError(
            f"questions: expected one question (a string) per image, got {len(out)} for "
            f"{n_images} images; pass a list of {n_images} strings, or one string to ask "
            "it of every image"
        )
    return out


class AnswerPipeline:
    """(image, question) pairs -> answers with an ``MMARModel`` and its ``MMARProcessor``.

        answers = AnswerPipeline(model, processor)(images, ["what colour is the circle?"] * 4)

    images: PIL images (converted to the tokenizer's channels and resized to its size) or a
    tensor (B, C_img, H, W) in [-1, 1] of exactly the tokenizer's shape (else ValueError).
    questions: one per image, or one string asked of every image.
    """

    def __init__(self, model: MMARModel, processor: MMARProcessor):
        self.model, self.processor = model, processor

    def __call__(
        self,
        images: ImagesLike,
        questions: str | Sequence[str],
        sampling: SamplingConfig | None = None,
        seed: Seed = 0,
    ) -> list[str]:
        """One answer per image; ``sampling.max_new_tokens`` (the longest answer, in tokens) /
        ``text_temperature`` (0 = greedy) / ``batch_size``, default the model's
        ``config.sampling``. Warns once per call when questions lose words (unknown to the
        vocabulary, or cut at ``max_text_len``)."""
        return self.processor.decode_ids(self.generate_ids(images, questions, sampling, seed))

    @torch.no_grad()
    def generate_ids(
        self,
        images: ImagesLike,
        questions: str | Sequence[str],
        sampling: SamplingConfig | None = None,
        seed: Seed = 0,
    ) -> torch.Tensor:
        """Generated answer ids (B, T), T <= max_new_tokens, pad after each row's eos."""
        s = sampling_config(self.model.config.sampling, sampling)
        x = self.processor.preprocess(images).to(self.model.device)  # (B, C, H, W)
        qs = as_questions(questions, x.shape[0])
        self._check_length(qs, s)
        warn_if_prompts_lose_words(self.processor, qs, what="question")
        seeds = sample_seeds(seed, x.shape[0])
        n = s.batch_size
        with eval_mode(self.model):
            chunks = [
                self._decode(x[i : i + n], qs[i : i + n], seeds[i : i + n], s)
                for i in range(0, x.shape[0], n)
            ]
        T = max(c.shape[1] for c in chunks)
        pad = self.processor.special.pad
        return torch.cat([F.pad(c, (0, T - c.shape[1]), value=pad) for c in chunks])

    def _check_length(self, questions: list[str], s: SamplingConfig) -> None:
        """The longest prefix [bos][boi] image [eoi] question of the call and max_new_tokens
        must fit the backbone's positions."""
        fixed = self.processor.pack([""], ["ask"]).input_ids.shape[1]
        longest = max(len(ids) for ids in self.processor.encode_texts(questions))
        check_room(self.model, fixed + longest, s, "the image prefix and the longest question")

    def _decode(
        self, x: torch.Tensor, questions: list[str], seeds: Sequence[int], s: SamplingConfig
    ) -> torch.Tensor:
        B = x.shape[0]
        batch = self.processor.pack(questions, ["ask"] * B, padding_side="left")
        tokens = self.processor.encode_images(x)  # (B, N, D)
        return decode_text(
            self.model, batch.to(self.model.device), tokens, seeds, s, self.processor.special
        )
