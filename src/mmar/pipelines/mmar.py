"""MMAR: the one object a user loads: the network, its processor and the pipelines as methods.

    model = mmar.MMAR.from_pretrained("runs/quickstart")       # config.json, model.safetensors, ...
    images = model.generate_images(["a handwritten digit seven"], guidance_scale=3.0, seed=0)
    captions = model.caption(images)
    answers = model.answer(images, "what colour is the circle?")
    edited = model.inpaint(images, mmar.box_keep_mask(32, (8, 8, 24, 24)), "a red circle", seed=0)
    for frames in model.stream_images("a red circle"): ...    # the progressive reveal
    model.save_pretrained("out/", metrics=results, samples=grid)  # + README.md, the model card
    model.push_to_hub("owner/name", metrics=results, samples=grid)  # to the Hugging Face Hub
    model = mmar.MMAR.from_pretrained("owner/name")     # a Hub repo id: via the Hugging Face cache

Sampling settings default to the checkpoint's recommended ``SamplingConfig`` (``model.sampling``);
pass ``sampling=SamplingConfig(...)`` or single fields (``num_steps=25``) to change them.
The parts stay reachable: ``model.model`` (the ``MMARModel`` nn.Module), ``model.processor``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from mmar._versions import require
from mmar.model.codebook_head import copy_codebook
from mmar.model.config import MMARConfig, SamplingConfig
from mmar.model.files import REQUIRED, missing_files, self_contained
from mmar.model.hub import resolve_checkpoint
from mmar.model.mmar import MMARModel
from mmar.model.processor import ImagesLike, MMARProcessor
from mmar.pipelines.answering import AnswerPipeline
from mmar.pipelines.base import Seed, sampling_config
from mmar.pipelines.captioning import CaptionPipeline
from mmar.pipelines.editing import Direction, EditingPipeline, MaskLike
from mmar.pipelines.model_card import check_card_inputs, write_card
from mmar.pipelines.text_to_image import TextToImagePipeline
from mmar.torch_utils import eval_mode

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo


class MMAR:
    """An ``MMARModel`` with its ``MMARProcessor``: generation, captioning, question answering,
    save and load."""

    def __init__(self, model: MMARModel, processor: MMARProcessor):
        self.model, self.processor = model, processor
        self.text_to_image = TextToImagePipeline(model, processor)
        self.captioner = CaptionPipeline(model, processor)
        self.answerer = AnswerPipeline(model, processor)
        self.editor = EditingPipeline(self.text_to_image)

    # --- construction and persistence ---------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        device: torch.device | str | None = None,
        use_ema: bool = True,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
    ) -> MMAR:
        """Load a checkpoint directory (``save_pretrained``'s, a run's ``final/``, or a
        ``checkpoints/step_*`` directory), or a Hugging Face Hub repo id "owner/name" that is no
        local path (downloaded into the Hugging Face cache, ``cache_dir`` or ``HF_HUB_CACHE``,
        at ``revision``; with ``HF_HUB_OFFLINE=1`` read from the cache only: see
        ``mmar.model.hub``); EMA weights when present and ``use_ema``.
        FileNotFoundError listing every file the directory lacks, or saying why a repo cannot be
        had; errors reading a file name it."""
        d = resolve_checkpoint(directory, revision, cache_dir)
        missing = missing_files(d)
        if missing:
            repo = f" (Hub repo {directory})" if d != Path(directory) else ""
            raise FileNotFoundError(
                f"{d}{repo}: missing {', '.join(missing)}; a checkpoint holds "
                f"{', '.join(REQUIRED)} (save_pretrained's directory, a run's final/ or "
                "checkpoints/step_*), e.g. runs/quickstart"
            )
        processor = MMARProcessor.from_pretrained(d)
        model = MMARModel.from_pretrained(d, processor.special, use_ema=use_ema)
        out = cls(model, processor)
        return out.to(device) if device is not None else out

    @classmethod
    def from_config(cls, config: MMARConfig, corpus: list[str] | None = None) -> MMAR:
        """A randomly initialised model (the "words" text tokenizer is built from ``corpus``)."""
        processor = MMARProcessor.from_config(config, corpus)
        model = MMARModel(config, processor.vocab_size, processor.special)
        copy_codebook(model, processor.image_tokenizer)  # image_head "codebook": the VQ's codes
        return cls(model, processor)

    def save_pretrained(
        self,
        directory: str | Path,
        ema_state_dict: dict[str, torch.Tensor] | None = None,
        state_dict: dict[str, torch.Tensor] | None = None,
        metrics: Mapping[str, Any] | None = None,
        samples: Image.Image | None = None,
        repo_id: str | None = None,
    ) -> None:
        """Write config.json, model.safetensors (+ EMA), backbone/ and the processor's tokenizer/
        (and image_tokenizer.safetensors); see ``MMARModel.save_pretrained``. The directory is
        self-contained: config.json names its own tokenizer/, not the one this model was read
        from (``mmar.model.files.self_contained``).

        Also the model card README.md (``write_card``): metrics (also written to metrics.json)
        and samples (a PIL image, written to samples.png) are shown in it; without them a
        metrics.json / samples.png already in the directory is kept and the card says so.
        repo_id: the Hub repo ("owner/name") the card's loading snippets name."""
        check_card_inputs(metrics, samples, repo_id)  # before anything is written
        self.model.save_pretrained(
            directory,
            ema_state_dict=ema_state_dict,
            state_dict=state_dict,
            config=self_contained(self.config),
        )
        self.processor.save_pretrained(directory)
        self.write_card(directory, metrics, samples, repo_id)

    def write_card(
        self,
        directory: str | Path,
        metrics: Mapping[str, Any] | None = None,
        samples: Image.Image | None = None,
        repo_id: str | None = None,
    ) -> Path:
        """Write only the model card README.md of this model into ``directory`` (with
        metrics.json / samples.png as ``save_pretrained``; e.g. after evaluating a checkpoint
        where it lies). Returns its path."""
        return write_card(
            directory,
            self_contained(self.config),
            metrics,
            samples,
            repo_id,
            num_parameters=sum(p.numel() for p in self.model.parameters()),
            geometry=self.processor.geometry,
        )

    def push_to_hub(
        self,
        repo_id: str,
        private: bool | None = None,
        commit_message: str = "Upload MMAR model",
        token: str | None = None,
        metrics: Mapping[str, Any] | None = None,
        samples: Image.Image | None = None,
    ) -> CommitInfo:
        """Upload this model to the Hugging Face Hub repo ``repo_id`` ("owner/name"): its
        ``save_pretrained`` directory (written to a temporary directory, the card naming
        ``repo_id``), through huggingface_hub: ``HfApi(token=token).create_repo(repo_id,
        exist_ok=True, private=private)`` (None: the account's default visibility), then
        ``upload_folder`` in one commit. token: None = the logged-in one (``hf auth login``) or
        HF_TOKEN. Returns the commit's ``CommitInfo``.

        The weights uploaded are the ones this object holds (a model loaded with its EMA
        weights: those). metrics / samples: shown in the card (metrics.json, samples.png); the
        temporary directory has none to keep, so without them the card says "Not evaluated".
        To publish an evaluated checkpoint, pass what it holds, e.g.
        ``metrics=json.loads(Path("runs/quickstart/metrics.json").read_text()),
        samples=Image.open("runs/quickstart/samples.png")``.

        Not run against the Hub here: mmar is developed and tested offline, so the tests check
        the requests handed to huggingface_hub (create_repo, upload_folder) and the uploaded
        folder's files, not an upload."""
        require("huggingface-hub")
        from huggingface_hub import HfApi

        check_card_inputs(metrics, samples, repo_id)
        api = HfApi(token=token)
        with tempfile.TemporaryDirectory(prefix="mmar-push-") as tmp:
            self.save_pretrained(tmp, metrics=metrics, samples=samples, repo_id=repo_id)
            api.create_repo(repo_id, exist_ok=True, private=private)
            return api.upload_folder(
                repo_id=repo_id, folder_path=tmp, commit_message=commit_message
            )

    def to(self, device: torch.device | str) -> MMAR:
        self.model.to(device)
        self.processor.to(device)
        return self

    # --- accessors ------------------------------------------------------------------------------
    @property
    def config(self) -> MMARConfig:
        return self.model.config

    @property
    def sampling(self) -> SamplingConfig:
        """The sampling settings this checkpoint recommends (saved with it)."""
        return self.model.config.sampling

    @property
    def device(self) -> torch.device:
        return self.model.device

    # --- the pipelines ----------------------------------------------------------------------
    def generate_images(
        self,
        prompts: str | Sequence[str],
        sampling: SamplingConfig | None = None,
        seed: Seed = 0,
        use_cache: bool = True,
        **overrides: Any,
    ) -> list[Image.Image]:
        """Text to image, one PIL image per prompt ("" = unconditional); see
        ``TextToImagePipeline``. overrides: ``SamplingConfig`` fields, e.g. ``num_iter=16,
        guidance_scale=3.0, num_steps=50, scheduler="ddpm", temperature=0.8, batch_size=32``.
        seed: prompt i uses seed + i, so an image does not depend on the rest of the batch."""
        s = sampling_config(self.sampling, sampling, **overrides)
        return self.text_to_image(prompts, s, seed, use_cache)

    def generate_tokens(
        self,
        prompts: str | Sequence[str],
        sampling: SamplingConfig | None = None,
        seed: Seed = 0,
        use_cache: bool = True,
        **overrides: Any,
    ) -> torch.Tensor:
        """Image tokens (B, N, D) instead of images; arguments as ``generate_images``."""
        s = sampling_config(self.sampling, sampling, **overrides)
        return self.text_to_image.generate_tokens(prompts, s, seed, use_cache)

    def stream_images(
        self,
        prompts: str | Sequence[str],
        sampling: SamplingConfig | None = None,
        seed: Seed = 0,
        every: int = 1,
        **overrides: Any,
    ) -> Iterator[list[Image.Image]]:
        """``generate_images``, yielding the partly revealed images after every ``every``-th
        masked-AR iteration (not yet revealed tokens grey), the finished images last."""
        s = sampling_config(self.sampling, sampling, **overrides)
        return self.text_to_image.stream(prompts, s, seed, every)

    # --- editing (mmar.pipelines.editing) -------------------------------------------------------
    def inpaint(
        self,
        images: ImagesLike,
        keep_mask: MaskLike,
        prompts: str | Sequence[str] = "",
        sampling: SamplingConfig | None = None,
        seed: Seed = 0,
        **overrides: Any,
    ) -> list[Image.Image]:
        """Regenerate where ``keep_mask`` is False, conditioned on the prompts and on the kept
        part: keep_mask bool (H, W) / (B, H, W) per pixel, or (g, g) / (B, g, g) per token
        (``box_keep_mask(size, box)`` makes one). Kept pixels come back bit-identical."""
        s = sampling_config(self.sampling, sampling, **overrides)
        return self.editor.inpaint(images, keep_mask, prompts, s, seed)

    def stream_inpaint(
        self,
        images: ImagesLike,
        keep_mask: MaskLike,
        prompts: str | Sequence[str] = "",
        sampling: SamplingConfig | None = None,
        seed: Seed = 0,
        every: int = 1,
        **overrides: Any,
    ) -> Iterator[list[Image.Image]]:
        """``inpaint``, yielding the images after every ``every``-th iteration, the result last."""
        s = sampling_config(self.sampling, sampling, **overrides)
        return self.editor.stream_inpaint(images, keep_mask, prompts, s, seed, every)

    def outpaint(
        self,
        images: ImagesLike,
        direction: Direction | None = "right",
        amount: float = 0.5,
        prompts: str | Sequence[str] = "",
        placement: Sequence[int] | None = None,
        sampling: SamplingConfig | None = None,
        seed: Seed = 0,
        **overrides: Any,
    ) -> list[Image.Image]:
        """Extend images: shifted away from ``direction`` by ``amount`` of the canvas (whole
        tokens), or resized and placed at ``placement = (x, y, size)``; the rest is generated.
        Inpainting on the model's fixed canvas (``EditingPipeline.outpaint_canvas``)."""
        canvas, keep = self.editor.outpaint_canvas(images, direction, amount, placement)
        return self.inpaint(canvas, keep, prompts, sampling, seed, **overrides)

    def vary(
        self,
        images: ImagesLike,
        fraction: float = 0.25,
        prompts: str | Sequence[str] = "",
        sampling: SamplingConfig | None = None,
        seed: Seed = 0,
        **overrides: Any,
    ) -> list[Image.Image]:
        """Variations: regenerate ``fraction`` of each image's tokens, chosen at random (image
        i's choice and its sampling both from seed + i)."""
        pixels = self.processor.preprocess(images)  # once: inpaint takes the tensor as it is
        keep = self.editor.variation_mask(pixels.shape[0], fraction, seed)
        return self.inpaint(pixels, keep, prompts, sampling, seed, **overrides)

    def caption(
        self,
        images: ImagesLike,
        sampling: SamplingConfig | None = None,
        seed: Seed = 0,
        **overrides: Any,
    ) -> list[str]:
        """Image to text, one caption per image (greedy unless ``text_temperature`` > 0); see
        ``CaptionPipeline``. overrides: ``SamplingConfig`` fields, e.g. ``max_new_tokens=32``."""
        s = sampling_config(self.sampling, sampling, **overrides)
        return self.captioner(images, s, seed)

    def answer(
        self,
        images: ImagesLike,
        questions: str | Sequence[str],
        sampling: SamplingConfig | None = None,
        seed: Seed = 0,
        **overrides: Any,
    ) -> list[str]:
        """Visual question answering, one answer per image (greedy unless
        ``text_temperature`` > 0); see ``AnswerPipeline``. questions: one per image, or one
        string asked of every image. overrides: ``SamplingConfig`` fields, e.g.
        ``max_new_tokens=8`` (the longest answer, in tokens)."""
        s = sampling_config(self.sampling, sampling, **overrides)
        return self.answerer(images, questions, s, seed)

    @torch.no_grad()
    def text_nll(self, images: ImagesLike, texts: Sequence[str]) -> tuple[float, int]:
        """Sum of -log p(text, eos | image) in nats over the pairs, and the number of tokens
        (one [img][text] sequence per pair, nothing masked; in eval mode)."""
        batch = self.processor.pack(texts, ["i2t"] * len(texts)).to(self.device)
        tokens = self.processor.encode_images(self.processor.preprocess(images).to(self.device))
        with eval_mode(self.model):
            hidden = self.model.hidden_states(batch, tokens)
        ce, w = self.model.text_ce(hidden, batch)  # (T,) x 2
        return float((ce * w).sum()), int((w > 0).sum())

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.model.parameters())
        return f"MMAR({n / 1e6:.2f}M parameters, {self.processor!r}, sampling={self.sampling})"
