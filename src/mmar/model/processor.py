"""MMARProcessor: strings and images in, the tensors ``MMARModel`` takes out, and back again.

    processor = MMARProcessor.from_pretrained("runs/quickstart")       # or MMARProcessor(...)
    inputs = processor(texts, kinds, images=x)      # ModelInputs: a PackedBatch + the images
    tokens = processor.encode_images(inputs.images) # (B, N, D): image tokenizer, then patchify
    pil = processor.postprocess(processor.decode_tokens(tokens))

It owns the text tokenizer, the image tokenizer (pixels, or a frozen VAE), sequence packing,
classifier-free-guidance prompt dropout and the PIL <-> tensor conversions, so that the model
never sees a string. Everything but ``encode_images`` / ``decode_tokens`` is CPU work on short
lists: the training collator calls it in DataLoader workers. ``encode_images`` and
``decode_tokens`` run where the image tokenizer is (``processor.to(device)``).

A checkpoint directory holds the processor's part (``tokenizer/``, and
``image_tokenizer.safetensors`` when the image tokenizer has weights, so the VAE a model was
trained with travels with it) beside the model's (config.json, model.safetensors, backbone/).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from PIL import Image

from mmar.data.images import pil_to_tensor, tensor_to_pil
from mmar.model.config import MMARConfig
from mmar.model.files import CONFIG_FILE, IMAGE_TOKENIZER_FILE, TOKENIZER_DIR, read_config
from mmar.model.sequence import LAYOUTS, NEEDS_ANSWER, PackedBatch, pack_sequences
from mmar.tokenizers import build_image_tokenizer, build_text_tokenizer, patchify, unpatchify
from mmar.tokenizers.base import ImageTokenizer
from mmar.tokenizers.special import SpecialTokenIds
from mmar.torch_utils import read_safetensors, write_safetensors

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast


ImagesLike = Image.Image | Sequence[Image.Image] | torch.Tensor


@dataclass
class ModelInputs:
    """One training batch as the model consumes it (built in the data pipeline).

    batch: the packed sequences. images (B_img, C_img, H, W) in [-1, 1] or latents
    (B_img, C, h, w) from a latent cache: one row per sample that has an image, in batch order
    (``processor.encode_images`` turns either into tokens on the training device).
    """

    batch: PackedBatch
    images: torch.Tensor | None = None
    latents: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> ModelInputs:
        return ModelInputs(
            self.batch.to(device),
            None if self.images is None else self.images.to(device),
            None if self.latents is None else self.latents.to(device),
        )


@dataclass
class TextLoss:
    """What ``MMARProcessor.encode_texts`` loses of ``count`` texts (``text_loss``), by text index.

    unknown: the words read as the tokenizer's unknown token (a word-level vocabulary has one;
      byte-level BPE vocabularies read any text). cut: the tail dropped after ``max_text_len``
      tokens. Empty (false) when every text is read in full.
    """

    count: int
    max_text_len: int
    unknown: dict[int, list[str]] = field(default_factory=dict)
    cut: dict[int, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.unknown or self.cut)

    def message(self, what: str = "text") -> str:
        """One sentence for a warning: which texts lose which words, e.g. "2 of 3 prompts lose
        words: not in the model's vocabulary (read as the unknown token): 'purple' (prompt 0);
        longer than max_text_len = 16 tokens, cut: prompt 2 lost 'seven'"."""
        parts = []
        if self.unknown:
            words = list(dict.fromkeys(w for ws in self.unknown.values() for w in ws))
            parts.append(
                "not in the model's vocabulary (read as the unknown token): "
                f"{_listing([repr(w) for w in words], 20)} ({_indices(what, self.unknown)})"
            )
        if self.cut:
            tails = [f"{what} {i} lost {t!r}" for i, t in self.cut.items()]
            parts.append(
                f"longer than max_text_len = {self.max_text_len} tokens, cut: "
                f"{_listing(tails, 3, '; ')}"
            )
        n = len(self.unknown.keys() | self.cut.keys())
        return f"{n} of {self.count} {what}s lose words: " + "; ".join(parts)


def _listing(items: list[str], most: int, sep: str = ", ") -> str:
    more = f"{sep}... ({len(items) - most} more)" if len(items) > most else ""
    return sep.join(items[:most]) + more


def _indices(what: str, by_index: dict[int, list[str]]) -> str:
    keys = [str(i) for i in by_index]
    return f"{what}{'s' if len(keys) > 1 else ''} {_listing(keys, 20)}"


class MMARProcessor:
    """Text tokenizer + image tokenizer + packing, for one model config.

    text_tokenizer: a ``PreTrainedTokenizerFast``; ``<boi>``/``<eoi>`` are added if missing.
    image_tokenizer: an ``ImageTokenizer`` (frozen: it is never trained).
    config: the model's config (image geometry, max_text_len, prompt_ce_weight, prompt_dropout).
    """

    def __init__(
        self,
        text_tokenizer: PreTrainedTokenizerFast,
        image_tokenizer: ImageTokenizer,
        config: MMARConfig,
    ):
        from mmar.tokenizers.text import add_image_tokens

        self.tokenizer = text_tokenizer
        self.special: SpecialTokenIds = add_image_tokens(text_tokenizer)  # idempotent
        self.image_tokenizer = image_tokenizer.eval().requires_grad_(False)
        self.config = config
        self.geometry = config.image_tokenizer.geometry()

    # --- construction and persistence ---------------------------------------------------------
    @classmethod
    def from_config(cls, config: MMARConfig, corpus: list[str] | None = None) -> MMARProcessor:
        """Build both tokenizers from the config ("words" builds its vocabulary from corpus)."""
        config.validate()
        return cls(
            build_text_tokenizer(config.text_tokenizer, corpus),
            build_image_tokenizer(config.image_tokenizer),
            config,
        )

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, config: MMARConfig | None = None
    ) -> MMARProcessor:
        """The processor saved in a checkpoint directory (reads config.json, tokenizer/ and,
        when present, image_tokenizer.safetensors).

        config: use this model config instead of the directory's (a stage-2 run starting from
        stage 1's checkpoint); its image tokenizer must fit the stored weights.
        """
        from mmar.tokenizers.text import build_pretrained_tokenizer

        d = Path(directory)
        needed = (
            (d / TOKENIZER_DIR,) if config is not None else (d / CONFIG_FILE, d / TOKENIZER_DIR)
        )
        for f in needed:
            if not f.exists():
                raise FileNotFoundError(
                    f"MMARProcessor.from_pretrained: {f} not found; expected a "
                    "checkpoint directory (config.json, tokenizer/, ...), e.g. "
                    "runs/quickstart"
                )
        config = config if config is not None else read_config(d)
        weights = d / IMAGE_TOKENIZER_FILE
        tok_cfg = config.image_tokenizer
        if weights.is_file() and tok_cfg.kind == "kl16":
            # the stored weights are the ones trained with: no need for the original kl16.ckpt
            with torch.device("meta"):
                image_tokenizer = build_image_tokenizer(tok_cfg.replace(path=None))
        else:
            image_tokenizer = build_image_tokenizer(tok_cfg)
        if weights.is_file():
            state = read_safetensors(weights)
            try:
                image_tokenizer.load_state_dict(state, strict=True, assign=True)
            except RuntimeError as e:
                raise RuntimeError(
                    f"{weights} does not fit the image tokenizer of {d / CONFIG_FILE}"
                    f" ({tok_cfg.kind}): {e}"
                ) from None
        try:
            text_tokenizer = build_pretrained_tokenizer(d / TOKENIZER_DIR)
        except Exception as e:  # a damaged file: transformers' message names none, over 5 lines
            first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), "")
            raise OSError(
                f"{d / TOKENIZER_DIR}: cannot load the text tokenizer ({type(e).__name__}: "
                f"{first}); a truncated or missing tokenizer.json? Copy the checkpoint again"
            ) from e
        return cls(text_tokenizer, image_tokenizer, config)

    def save_pretrained(self, directory: str | Path) -> None:
        """Write tokenizer/ and (if it has any tensors) image_tokenizer.safetensors."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(str(d / TOKENIZER_DIR))
        state = {
            k: v.detach().contiguous().cpu() for k, v in self.image_tokenizer.state_dict().items()
        }
        if state:
            write_safetensors(state, d / IMAGE_TOKENIZER_FILE, metadata={"format": "pt"})

    def to(self, device: torch.device | str) -> MMARProcessor:
        """Move the image tokenizer (the only part with tensors) to ``device``."""
        self.image_tokenizer.to(device)
        return self

    # --- sizes ----------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Tokens of the text vocabulary, <boi>/<eoi> included: the LLM embedding's minimum size."""
        return len(self.tokenizer)

    @property
    def num_image_tokens(self) -> int:
        return self.geometry.num_tokens

    # --- text -----------------------------------------------------------------------------------
    def encode_texts(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids without specials, truncated to ``config.max_text_len`` (``text_loss`` says
        what that and the unknown token lose). Special-token text in ``texts`` ("<boi>",
        "<|endoftext|>") is read as plain text: a string never yields a special id."""
        if isinstance(texts, str):
            raise TypeError(f"encode_texts: expected a list of strings, got the string {texts!r}")
        if not texts:
            return []
        ids = self._tokenize(texts)["input_ids"]
        return [x[: self.config.max_text_len] for x in ids]

    def text_loss(self, texts: Sequence[str]) -> TextLoss:
        """What ``encode_texts`` loses of ``texts``: unknown words among the kept tokens (runs
        of unknown tokens not separated by a space are one word, "<boi>") and the cut tails."""
        limit, unk = self.config.max_text_len, self.tokenizer.unk_token_id
        loss = TextLoss(len(texts), limit)
        enc = self._tokenize(texts, offsets=True) if texts else {"input_ids": []}
        for i, (text, ids) in enumerate(zip(texts, enc["input_ids"])):
            spans = enc["offset_mapping"][i]
            if len(ids) > limit:
                loss.cut[i] = text[spans[limit][0] :].strip()
            words: list[str] = []
            glued = False  # the previous token was unknown and ends where this one starts
            for k, (tid, (a, b)) in enumerate(zip(ids[:limit], spans)):
                if unk is None or tid != unk:
                    glued = False
                    continue
                piece = text[a:b]
                if glued and spans[k - 1][1] == a and piece[:1].strip():
                    words[-1] += piece
                else:
                    words.append(piece)
                glued = True
            words = [w.strip() for w in words if w.strip()]
            if words:
                loss.unknown[i] = words
        return loss

    def _tokenize(self, texts: Sequence[str], offsets: bool = False) -> dict:
        """The tokenizer's output for ``texts``: ids without specials (and char offsets)."""
        return dict(
            self.tokenizer(
                list(texts),
                add_special_tokens=False,
                split_special_tokens=True,
                return_offsets_mapping=offsets,
            )
        )

    def decode_ids(self, ids: torch.Tensor) -> list[str]:
        """Generated ids (B, T) -> one string per row, cut at the first eos."""
        eos, texts = self.special.eos, []
        for row in ids.tolist():
            row = row[: row.index(eos)] if eos in row else row
            texts.append(str(self.tokenizer.decode(row, skip_special_tokens=True)).strip())
        return texts

    def pack(
        self,
        texts: Sequence[str],
        kinds: Sequence[str],
        padding_side: str = "right",
        drop_prompt: Sequence[bool] | None = None,
        answers: Sequence[str | None] | None = None,
        turns: Sequence[Sequence[tuple[str, str]] | None] | None = None,
    ) -> PackedBatch:
        """Tokenize and pack samples of the given kinds (see ``mmar.model.sequence``) on the CPU.

        drop_prompt: per sample, True replaces a t2i prompt by the empty prompt (CFG dropout).
        answers: per sample, the answer of a "vqa" sample, whose text is then its question
          (None for the other kinds). Question and answer share ``max_text_len``: the answer is
          kept whole and the question keeps its first ``max_text_len - len(answer)`` tokens (as
          any text is cut at ``max_text_len``); an answer of ``max_text_len`` tokens or more
          leaves no room for the question and raises ValueError.
        turns: per sample, a vqa sample's further (question, answer) pairs, asked after its
          first answer (None elsewhere). They are kept in order while the whole text fits
          ``max_text_len`` (first question and answer, then per turn an eos, its question and its
          answer); the first that does not fit ends the sample.
        """
        texts, kinds = list(texts), list(kinds)
        unknown = sorted(set(kinds) - set(LAYOUTS))
        if len(texts) != len(kinds) or not kinds or unknown:
            raise ValueError(
                f"MMARProcessor.pack: need one text per sample and kinds in "
                f"{list(LAYOUTS)}; got {len(texts)} texts, kinds {kinds[:8]}"
            )
        if drop_prompt is not None:
            texts = ["" if d and k == "t2i" else t for t, k, d in zip(texts, kinds, drop_prompt)]
        ids = self.encode_texts(texts)
        answer_ids = turn_ids = None
        if answers is not None or any(k in NEEDS_ANSWER for k in kinds):
            ids, answer_ids = self._with_answers(texts, kinds, ids, answers)
        if turns is not None and any(turns):
            turn_ids = self._turns(kinds, ids, answer_ids, turns)
        return pack_sequences(
            ids,
            kinds,
            self.num_image_tokens,
            self.special,
            self.config.prompt_ce_weight,
            padding_side,
            answer_ids=answer_ids,
            turn_ids=turn_ids,
        )

    def _with_answers(
        self,
        texts: list[str],
        kinds: list[str],
        ids: list[list[int]],
        answers: Sequence[str | None] | None,
    ) -> tuple[list[list[int]], list[list[int] | None]]:
        """(text ids with each vqa question cut to the room its answer leaves, answer ids)."""
        answers = list(answers) if answers is not None else [None] * len(kinds)
        bad = [
            b
            for b, (k, a) in enumerate(zip(kinds, answers))
            if (k in NEEDS_ANSWER) != isinstance(a, str)
        ]
        if len(answers) != len(kinds) or bad:
            raise ValueError(
                f"MMARProcessor.pack: answers must hold one string per vqa sample and None for "
                f"every other kind; got {len(answers)} answers for {len(kinds)} samples"
                + (f", wrong at samples {bad[:5]}" if bad and len(answers) == len(kinds) else "")
            )
        limit = self.config.max_text_len
        vqa = {b: a for b, a in enumerate(answers) if a is not None}
        tokenized = self._tokenize(list(vqa.values()))["input_ids"] if vqa else []
        answer_ids: list[list[int] | None] = [None] * len(kinds)
        for b, a_ids in zip(vqa, tokenized):
            if len(a_ids) >= limit:
                raise ValueError(
                    f"MMARProcessor.pack: the answer {vqa[b]!r} (sample {b}) is "
                    f"{len(a_ids)} tokens, which leaves no room for its question within "
                    f"max_text_len = {limit} tokens (question + answer); shorten the answers "
                    f"or raise model.max_text_len (e.g. max_text_len: {2 * len(a_ids)})"
                )
            answer_ids[b] = a_ids
            if len(ids[b]) + len(a_ids) > limit:  # the question's tail goes, as any text's
                ids[b] = self._tokenize([texts[b]])["input_ids"][0][: limit - len(a_ids)]
        return ids, answer_ids

    def _turns(
        self,
        kinds: list[str],
        ids: list[list[int]],
        answer_ids: list[list[int] | None] | None,
        turns: Sequence[Sequence[tuple[str, str]] | None],
    ) -> list[list[tuple[list[int], list[int]]]]:
        """Each vqa sample's further turns as (question ids, answer ids), kept in order while
        the sample's text fits ``max_text_len`` (see ``pack``)."""
        if len(turns) != len(kinds) or answer_ids is None:
            raise ValueError(
                f"MMARProcessor.pack: turns must hold one entry per sample ({len(kinds)}, got "
                f"{len(turns)}) and go with the vqa samples' answers"
            )
        out: list[list[tuple[list[int], list[int]]]] = [[] for _ in kinds]
        for b, pairs in enumerate(turns):
            if not pairs:
                continue
            first = answer_ids[b]
            if first is None:
                raise ValueError(
                    f"MMARProcessor.pack: sample {b} is {kinds[b]!r} but has turns; only a vqa "
                    "sample asks further questions"
                )
            used = len(ids[b]) + len(first)
            enc = self._tokenize([t for pair in pairs for t in pair])["input_ids"]
            for q_ids, a_ids in zip(enc[0::2], enc[1::2]):
                used += 1 + len(q_ids) + len(a_ids)  # the eos before it, its question, answer
                if used > self.config.max_text_len:
                    break
                out[b].append((q_ids, a_ids))
        return out

    def draw_prompt_dropout(
        self, kinds: Sequence[str], generators: Sequence[torch.Generator]
    ) -> list[bool]:
        """CFG prompt dropout: sample i's t2i prompt is dropped with probability
        ``config.prompt_dropout``, drawn from its own generator (one draw per sample)."""
        p = self.config.prompt_dropout
        return [
            bool(torch.rand((), generator=g) < p) and k == "t2i"
            for k, g in zip(kinds, generators, strict=True)
        ]

    def __call__(
        self,
        texts: Sequence[str],
        kinds: Sequence[str],
        images: torch.Tensor | None = None,
        latents: torch.Tensor | None = None,
        generators: Sequence[torch.Generator] | None = None,
        answers: Sequence[str | None] | None = None,
        turns: Sequence[Sequence[tuple[str, str]] | None] | None = None,
    ) -> ModelInputs:
        """A training batch: packed sequences plus the image rows of the samples that have one.

        images (B, C_img, H, W) / latents (B, C, h, w): one row per sample (rows of "text"
        samples are dropped). generators: one per sample, for the CFG prompt dropout; None = no
        dropout (evaluation). answers, turns: the answers and further turns of "vqa" samples (see
        ``pack``).
        """
        drop = None if generators is None else self.draw_prompt_dropout(kinds, generators)
        batch = self.pack(texts, kinds, drop_prompt=drop, answers=answers, turns=turns)
        rows = batch.has_image
        if bool(rows.any()):
            pixels = images if latents is None else latents
            if pixels is None or pixels.shape[0] != len(kinds):
                got = None if pixels is None else pixels.shape[0]
                raise ValueError(
                    f"MMARProcessor: {len(kinds)} samples need one image (or latent)"
                    f" row each, got {got}"
                )
            if not bool(rows.all()):
                pixels = pixels[rows]
            if latents is None:
                self.image_tokenizer.check_images(pixels)
                return ModelInputs(batch, images=pixels)
            return ModelInputs(batch, latents=pixels)
        return ModelInputs(batch)

    # --- images ---------------------------------------------------------------------------------
    def preprocess(self, images: ImagesLike) -> torch.Tensor:
        """PIL images (converted to the tokenizer's channels and resized to its square size) or
        a tensor (B, C_img, H, W) in [-1, 1] of exactly the tokenizer's shape -> that tensor."""
        tok = self.image_tokenizer
        if isinstance(images, Image.Image):
            images = [images]
        if isinstance(images, torch.Tensor):
            tok.check_images(images)  # ValueError naming the expected vs the given shape
            if images.shape[0] == 0:
                raise ValueError("expected at least one image, got a tensor of 0 images")
            return images.float()
        images = list(images)
        if not images or not all(isinstance(im, Image.Image) for im in images):
            raise ValueError(
                f"expected a non-empty list of PIL images or a tensor (B, "
                f"{tok.image_channels}, {tok.image_size}, {tok.image_size}) in [-1, 1]"
            )
        return pil_to_tensor(images, tok.image_channels, tok.image_size)

    @staticmethod
    def postprocess(images: torch.Tensor) -> list[Image.Image]:
        """(B, C_img, H, W) in [-1, 1] -> PIL images ("L" or "RGB")."""
        return tensor_to_pil(images)

    @torch.no_grad()
    def encode_images(
        self,
        images: torch.Tensor | None = None,
        latents: torch.Tensor | None = None,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
    ) -> torch.Tensor:
        """images (B, C_img, H, W) in [-1, 1] or cached latents (B, C, h, w) -> tokens (B, N, D)
        float32.

        generator: the posterior draw of a VAE whose config says posterior "sample" (training):
        one generator for the batch, or one per image (the trainer's: each image is then encoded
        on its own, so that its draw and its latents do not depend on the batch or the rank);
        None encodes with the posterior mode (understanding: an image means one thing).
        """
        if latents is None:
            if images is None:
                raise ValueError("encode_images: give images (B, C, H, W) or latents (B, C, h, w)")
            tok = self.image_tokenizer
            if generator is None or isinstance(generator, torch.Generator):
                latents = tok.encode(
                    images, generator=generator, posterior=None if generator is not None else "mode"
                )
            elif tok.posterior == "mode":
                latents = tok.encode(images, posterior="mode")
            else:
                gens = list(generator)
                if len(gens) != images.shape[0]:
                    raise ValueError(
                        f"encode_images: {images.shape[0]} images need one generator each, "
                        f"got {len(gens)}"
                    )
                latents = torch.cat(
                    [tok.encode(images[i : i + 1], generator=g) for i, g in enumerate(gens)]
                )
        else:
            self.image_tokenizer.check_latents(latents)
        return patchify(latents.float(), self.geometry.patch_size)  # (B, N, D)

    @torch.no_grad()
    def decode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, N, D) -> images (B, C_img, H, W) in [-1, 1]."""
        h = self.geometry.latent_size
        return self.image_tokenizer.decode(
            unpatchify(tokens.float(), self.geometry.patch_size, h, h)
        )

    def __repr__(self) -> str:
        image = f"{type(self.image_tokenizer).__name__}({self.image_tokenizer.extra_repr()})"
        return (
            f"MMARProcessor(text={type(self.tokenizer).__name__}({self.vocab_size} tokens), "
            f"image={image}, tokens={self.num_image_tokens} x {self.geometry.token_dim})"
        )
