"""What each tab of the web app does with a loaded MMAR, without gradio (testable as is).

    service = Service(model, ServeConfig(), model_dir="runs/quickstart")
    sampling = service.sampling(num_iter=16, guidance_scale=3.0, num_steps=50,
                                scheduler="ddpm", temperature=0.8)
    for frame in service.generate("a red circle", sampling, seed=0, notify=print):
        frame.image, frame.counter          # model-size PIL image, "iteration k / K"
    service.caption(path, notify=print)     # str

Bad input raises ``InputError`` (mmar.serve.inputs); what the user should know but does not
stop the request (a resized image, words the model cannot read) goes to ``notify``.

Streaming and threads: Gradio advances a generator handler from a thread pool, one ``next`` at a
time, not always on the same thread; torch's grad mode is per thread, so the pipelines compute
each iteration under a ``torch.no_grad()`` entered by the thread that asks for it
(``TextToImagePipeline.steps``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import torch
from PIL import Image

from mmar.config import ConfigError
from mmar.diffusion.schedulers import SCHEDULERS
from mmar.model.config import SamplingConfig
from mmar.model.masking import reveal_steps
from mmar.pipelines.base import sample_seeds, sampling_config
from mmar.pipelines.editing import DIRECTIONS, Direction
from mmar.pipelines.mmar import MMAR
from mmar.serve.config import ServeConfig
from mmar.serve.inputs import (
    InputError,
    Notice,
    check_prompt,
    fit_to_model,
    keep_mask,
    painted_mask,
    parse_box,
    read_image_file,
    upscale,
)

Notify = Callable[[Notice], None]
MODES = ("inpaint", "outpaint")


@dataclasses.dataclass(frozen=True)
class Frame:
    """One step of a streamed generation: the model-size ``image`` (grey where tokens are not
    revealed yet) after iteration ``index`` of ``total``."""

    image: Image.Image
    index: int
    total: int

    @property
    def counter(self) -> str:
        return f"iteration {self.index} / {self.total}"

    @property
    def last(self) -> bool:
        return self.index == self.total


def iterations(masked: int, num_iter: int) -> int:
    """The masked-AR iterations that reveal ``masked`` tokens with ``num_iter`` = K (at most
    ``masked``: a K beyond it reveals one token per iteration)."""
    return len(list(reveal_steps(torch.zeros(1, masked, dtype=torch.long), num_iter)))


def _pixels(n: int) -> str:
    """A pixel count, as a square when it is one: "4096 x 4096 pixels"."""
    side = math.isqrt(n)
    return f"{side} x {side} pixels" if side * side == n else f"{n} pixels"


def _number(value: Any, name: str, example: str, kind: type = float) -> Any:
    """A form field's number (Gradio sends floats, or None for an emptied field)."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}; e.g. {example}") from None
    if kind is int:
        if not x.is_integer():
            raise InputError(f"{name} must be a whole number, got {value!r}; e.g. {example}")
        return int(x)
    return x


class Service:
    """The model calls behind the web app, with its input checks and limits."""

    def __init__(self, model: MMAR, config: ServeConfig, model_dir: str | Path = ""):
        self.model, self.config, self.model_dir = model, config, str(model_dir)
        tok = model.processor.image_tokenizer
        self.size, self.channels = tok.image_size, tok.image_channels
        self.grid = model.editor.grid
        self.max_chars = config.prompt_chars(model.config.max_text_len)
        # A fast tokenizer sets its special-token mode (a write to the Rust object) on the
        # first call whose mode differs, and mmar's calls all use one mode: make that first call
        # here, on one thread, so that concurrent requests (--concurrency > 1) only read it.
        model.processor.text_loss(["a"])

    # --- the startup summary --------------------------------------------------------------------
    def summary(self) -> list[str]:
        """What is being served, one fact per line (logged, and shown at the top of the page)."""
        m, s, c = self.model, self.model.sampling, self.config
        params = sum(p.numel() for p in m.model.parameters())
        mode = {1: "grey", 3: "RGB"}.get(self.channels, f"{self.channels} channels")
        return [
            f"model: {self.model_dir or '(in memory)'}, {params / 1e6:.2f} M parameters, "
            f"on {m.device}",
            f"images: {self.size} x {self.size} {mode}, {m.processor.num_image_tokens} tokens "
            f"({self.grid} x {self.grid})",
            f"sampling defaults: num_iter={s.num_iter}, guidance_scale={s.guidance_scale}, "
            f"scheduler={s.scheduler}, num_steps={s.num_steps}, temperature={s.temperature}",
            f"limits: prompts of at most {self.max_chars} characters (the model reads "
            f"{m.config.max_text_len} tokens); uploads of at most {c.max_upload_mb:g} MB and "
            f"{_pixels(c.max_pixels)}; {c.concurrency} request(s) at a time, {c.max_queue} "
            "waiting",
        ]

    # --- settings -------------------------------------------------------------------------------
    def sampling(
        self,
        num_iter: Any,
        guidance_scale: Any,
        num_steps: Any,
        scheduler: Any,
        temperature: Any,
    ) -> SamplingConfig:
        """The checkpoint's ``SamplingConfig`` with the form's values (InputError naming a field
        out of range)."""
        if scheduler not in SCHEDULERS:
            raise InputError(f"scheduler must be one of {list(SCHEDULERS)}, got {scheduler!r}")
        fields = {
            "num_iter": _number(num_iter, "num_iter", "16", int),
            "guidance_scale": _number(guidance_scale, "guidance_scale", "3.0"),
            "num_steps": _number(num_steps, "num_steps", "50", int),
            "scheduler": scheduler,
            "temperature": _number(temperature, "temperature", "1.0"),
        }
        try:
            s = sampling_config(self.model.sampling, **fields)
            self.model.config.check_sampling(s)
        except ConfigError as e:
            raise InputError(str(e)) from None
        return s

    @staticmethod
    def seed(value: Any) -> int:
        seed = _number(value, "seed", "0", int)
        try:
            sample_seeds(seed, 1)
        except ValueError as e:
            raise InputError(str(e)) from None
        return int(seed)

    def _text(self, text: str | None, what: str, notify: Notify, required: bool = False) -> str:
        """A checked prompt / question; a notice when the model cannot read all of it."""
        text = check_prompt(text, self.max_chars, what, required)
        loss = self.model.processor.text_loss([text])
        if loss:
            notify(Notice("warning", loss.message(what)))
        return text

    def _sampling_notices(self, sampling: SamplingConfig, notify: Notify) -> None:
        if sampling.temperature_ignored:
            notify(Notice("info", f"temperature {sampling.temperature} has no effect with the "
                                  "ddim scheduler (eta 0 injects no noise): use ddpm"))  # fmt: skip

    def read_image(self, path: str | None, notify: Notify) -> Image.Image:
        """The uploaded image at ``path``, checked and fitted to the model's size; a notice when
        it was resized, unless it has the size the app shows images at (the editor's copy of the
        last generated image: reduced exactly)."""
        if not path:
            raise InputError(
                "no image: upload one (PNG, JPEG, ...) or press 'use the last generated image'"
            )
        c = self.config
        upload = read_image_file(path, c.max_upload_bytes, c.max_pixels)
        image, notice = fit_to_model(upload, self.size)
        shown = upscale(Image.new("L", (self.size, self.size)), c.display_size).size
        if notice is not None and upload.size != shown:
            notify(notice)
        return image

    # --- the tasks ------------------------------------------------------------------------------
    def generate(
        self, prompt: str | None, sampling: SamplingConfig, seed: Any, notify: Notify
    ) -> Iterator[Frame]:
        """Text to image, one frame per masked-AR iteration, the finished image last."""
        text = self._text(prompt, "prompt", notify)
        seed = self.seed(seed)
        self._sampling_notices(sampling, notify)
        total = iterations(self.model.processor.num_image_tokens, sampling.num_iter)
        return _frames(self.model.stream_images(text, sampling, seed=seed), total)

    def caption(self, path: str | None, notify: Notify) -> str:
        image = self.read_image(path, notify)
        with torch.no_grad():
            return self.model.caption(image)[0]

    def answer(self, path: str | None, question: str | None, notify: Notify) -> str:
        q = self._text(question, "question", notify, required=True)
        image = self.read_image(path, notify)
        with torch.no_grad():
            return self.model.answer(image, q)[0]

    def edit(
        self,
        background: str | None,
        layers: Sequence[str],
        mode: str,
        box: str | None,
        direction: str,
        amount: Any,
        prompt: str | None,
        sampling: SamplingConfig,
        seed: Any,
        notify: Notify,
    ) -> Iterator[Frame]:
        """Inpaint (regenerate the box and the painted pixels of the layers) or outpaint (shift
        the image away from ``direction`` by ``amount`` of the canvas, generate the rest),
        streamed like ``generate``."""
        if mode not in MODES:
            raise InputError(f"mode must be one of {list(MODES)}, got {mode!r}")
        text = self._text(prompt, "prompt", notify)
        seed = self.seed(seed)
        image = self.read_image(background, notify)
        self._sampling_notices(sampling, notify)
        c = self.config
        if mode == "outpaint":
            if direction not in DIRECTIONS:
                raise InputError(f"direction must be one of {list(DIRECTIONS)}, got {direction!r}")
            share = _number(amount, "amount", "0.5")
            if not 0.0 < share < 1.0:
                raise InputError(f"amount (the share of the canvas to generate) must be in "
                                 f"(0, 1), got {share}; e.g. 0.5")  # fmt: skip
            side = cast(Direction, direction)  # checked above
            canvas, keep = self.model.editor.outpaint_canvas(image, side, share)
            source: Image.Image | torch.Tensor = canvas
        else:
            painted = painted_mask(
                [read_image_file(p, c.max_upload_bytes, c.max_pixels) for p in layers], self.size
            )
            keep = torch.from_numpy(keep_mask(self.size, parse_box(box, self.size), painted))
            source = image
        _, kept_tokens = self.model.editor.keep_masks(keep, 1)  # (1, N)
        total = iterations(int((~kept_tokens).sum()), sampling.num_iter)
        return _frames(self.model.stream_inpaint(source, keep, text, sampling, seed=seed), total)


def _frames(images: Iterable[list[Image.Image]], total: int) -> Iterator[Frame]:
    """The first image of each step of ``images`` as a Frame k of ``total``."""
    for k, step in enumerate(images, 1):
        yield Frame(step[0], k, total)
