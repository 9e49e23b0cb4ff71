"""Editing by masked autoregression: inpainting, outpainting and variations (docs/method.md §3).

A masked-AR sampler can start from any set of known tokens: the kept tokens are visible from the
first iteration and never resampled, and the others are revealed by the usual schedule,
conditioned on the prompt and on what is kept (``KnownTokens`` in text_to_image.py). So

    inpaint    keep the tokens outside a region (a per-pixel or per-token keep mask), generate it
    outpaint   place the image on the model's canvas (shifted, or resized and placed), keep its
               tokens, generate the rest: inpainting on the model's fixed token grid
    vary       regenerate a random fraction of the tokens

A per-pixel keep mask keeps a token only when all its pixels are kept (a token that is partly
edited is regenerated), and the kept pixels of the input are pasted back into the decoded image,
so they are returned bit-identical whatever the image tokenizer (with the lossless pixel tokenizer
the decoded kept tokens already are). ``*_tokens`` methods return the tokens (B, N, D), whose kept
rows are the input's encoded tokens, bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal

import numpy as np
import torch
from PIL import Image

from mmar.model.config import SamplingConfig
from mmar.model.masking import random_orders
from mmar.model.processor import ImagesLike
from mmar.pipelines.base import Seed, as_list, generators, sample_seeds
from mmar.pipelines.text_to_image import KnownTokens, SamplingStep, TextToImagePipeline

Direction = Literal["left", "right", "up", "down"]
DIRECTIONS = ("left", "right", "up", "down")
MaskLike = torch.Tensor | np.ndarray


def box_keep_mask(size: int, box: Sequence[int]) -> torch.Tensor:
    """A (size, size) bool keep mask that is False inside ``box = (x0, y0, x1, y1)`` (pixels,
    x1/y1 exclusive; the region to regenerate) and True elsewhere."""
    if len(box) != 4:
        raise ValueError(f"box: expected 4 numbers x0,y0,x1,y1, got {list(box)}; e.g. 8,8,24,24")
    x0, y0, x1, y1 = (int(v) for v in box)
    if not (0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size):
        raise ValueError(
            f"box {x0},{y0},{x1},{y1} is not a non-empty box inside the {size} x {size} image "
            f"(need 0 <= x0 < x1 <= {size} and 0 <= y0 < y1 <= {size}); e.g. 8,8,24,24"
        )
    keep = torch.ones(size, size, dtype=torch.bool)
    keep[y0:y1, x0:x1] = False
    return keep


def _upsample(grid: torch.Tensor, factor: int) -> torch.Tensor:
    """(B, g, g) -> (B, g f, g f), each cell repeated f x f."""
    return grid.repeat_interleave(factor, 1).repeat_interleave(factor, 2)


class EditingPipeline:
    """Inpainting, outpainting and variations with a ``TextToImagePipeline``'s sampler.

    edit = EditingPipeline(TextToImagePipeline(model, processor))
    out = edit.inpaint(images, box_keep_mask(32, (8, 8, 24, 24)), "a red circle", seed=0)
    """

    def __init__(self, text_to_image: TextToImagePipeline):
        self.t2i = text_to_image
        self.processor = text_to_image.processor
        self.size = self.processor.image_tokenizer.image_size
        self.grid = text_to_image.model.geometry.grid  # g: tokens per side
        self.cell = self.size // self.grid  # pixels per token side

    # --- masks ----------------------------------------------------------------------------------
    def keep_masks(self, keep_mask: MaskLike, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-pixel (B, H, W), per-token (B, N)) bool keep masks of a keep mask given per pixel
        ((H, W) / (B, H, W), H = the image size) or per token ((g, g) / (B, g, g), the token
        grid; both readings agree when a token is one pixel). A 2-D mask applies to every image.
        """
        keep = torch.as_tensor(keep_mask)
        if keep.dtype != torch.bool:
            raise ValueError(f"keep_mask: expected a bool mask (True = keep), got {keep.dtype}")
        keep = keep.cpu()
        if keep.dim() == 2:
            keep = keep.expand(batch, -1, -1)
        if (
            keep.dim() != 3
            or keep.shape[0] != batch
            or keep.shape[1] != keep.shape[2]
            or keep.shape[1] not in (self.size, self.grid)
        ):
            raise ValueError(
                f"keep_mask: expected (H, W) or ({batch}, H, W) with H = W = {self.size} "
                f"(pixels) or {self.grid} (the token grid), got {tuple(keep.shape)}; e.g. "
                f"box_keep_mask({self.size}, (8, 8, 24, 24))"
            )
        if keep.shape[1] == self.size:  # per pixel: a token is kept when all its pixels are
            pixels = keep
            c = self.cell
            tokens = pixels.reshape(batch, self.grid, c, self.grid, c).all(4).all(2)
        else:
            tokens = keep
            pixels = _upsample(tokens, self.cell)
        full = tokens.flatten(1).all(1).nonzero().flatten().tolist()
        if full:
            raise ValueError(
                f"keep_mask keeps every token of image(s) {full}, so there is nothing to generate: "
                "mark the region to regenerate with False (a token is regenerated when any of its "
                "pixels is False)"
            )
        return pixels.contiguous(), tokens.reshape(batch, -1)

    # --- inpainting -----------------------------------------------------------------------------
    def inpaint_tokens(
        self,
        images: ImagesLike,
        keep_mask: MaskLike,
        prompts: str | Sequence[str] = "",
        sampling: SamplingConfig | None = None,
        seed: Seed = 0,
    ) -> torch.Tensor:
        """Tokens (B, N, D): the images' own where kept (bit-identical), generated elsewhere."""
        pixels = self.processor.preprocess(images)
        _, keep = self.keep_masks(keep_mask, pixels.shape[0])
        *_, last = self._steps(pixels, keep, prompts, sampling, seed)
        return last.tokens

    def inpaint(
        self,
        images: ImagesLike,
        keep_mask: MaskLike,
        prompts: str | Sequence[str] = "",
        sampling: SamplingConfig | None = None,
        seed: Seed = 0,
    ) -> list[Image.Image]:
        """Inpainted PIL images (the kept pixels bit-identical to the preprocessed input).
        prompts: one per image, or one for all ("" = unconditional). seed: image i uses seed + i.
        """
        *_, last = self.stream_inpaint(images, keep_mask, prompts, sampling, seed, every=0)
        return last

    def stream_inpaint(
        self,
        images: ImagesLike,
        keep_mask: MaskLike,
        prompts: str | Sequence[str] = "",
        sampling: SamplingConfig | None = None,
        seed: Seed = 0,
        every: int = 1,
    ) -> Iterator[list[Image.Image]]:
        """``inpaint``, yielding the images after every ``every``-th iteration (regions not yet
        revealed grey; the kept pixels pasted back in every frame) and always the result last
        (``every=0``: only the result)."""
        pixels = self.processor.preprocess(images)  # (B, C, H, W) in [-1, 1]
        keep_px, keep = self.keep_masks(keep_mask, pixels.shape[0])
        steps = self._steps(pixels, keep, prompts, sampling, seed)
        for step in self.t2i.frames(steps, every):
            out = self.t2i.render(step.tokens, step.masked).cpu()
            yield self.processor.postprocess(torch.where(keep_px[:, None], pixels, out))

    def _steps(
        self,
        pixels: torch.Tensor,
        keep: torch.Tensor,
        prompts: str | Sequence[str],
        sampling: SamplingConfig | None,
        seed: Seed,
    ) -> Iterator[SamplingStep]:
        """The sampler's steps from the tokens of ``pixels`` (B, C, H, W), kept where keep
        (B, N) is True."""
        B = pixels.shape[0]
        texts = as_list(prompts)
        if len(texts) == 1:
            texts = texts * B
        if len(texts) != B:
            raise ValueError(f"prompts: got {len(texts)} prompts for {B} images; give one per "
                             "image or one for all, e.g. 'a red circle'")  # fmt: skip
        dev = self.t2i.model.device
        tokens = self.processor.encode_images(pixels.to(dev))  # (B, N, D), posterior mode
        return self.t2i.steps(texts, sampling, seed, known=KnownTokens(tokens, keep.to(dev)))

    # --- outpainting ----------------------------------------------------------------------------
    def outpaint_canvas(
        self,
        images: ImagesLike,
        direction: Direction | None = "right",
        amount: float = 0.5,
        placement: Sequence[int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(canvas (B, C, H, W) in [-1, 1], per-pixel keep mask (B, H, W)) for ``outpaint``.

        direction + amount: the image is shifted away from ``direction`` by ``amount`` of the
        canvas, rounded to whole tokens (at least one, at most all but one), and the uncovered
        side is to be generated. placement = (x, y, size): the image is resized to size x size
        pixels and placed with its top-left corner at (x, y); everything around it is to be
        generated. Either way the canvas is the model's fixed size: outpainting is inpainting on
        the model's token grid."""
        pixels = self.processor.preprocess(images)
        B, _, S, _ = pixels.shape
        canvas = torch.zeros_like(pixels)
        keep = torch.zeros(B, S, S, dtype=torch.bool)
        if placement is not None:
            if len(placement) != 3:
                raise ValueError(
                    f"placement: expected x,y,size, got {list(placement)}; e.g. 8,8,16"
                )
            x, y, size = (int(v) for v in placement)
            if not (size >= 1 and min(x, y) >= 0 and max(x, y) + size <= S):
                raise ValueError(f"placement {x},{y},{size}: the {size} px image must lie inside "
                                 f"the {S} x {S} canvas; e.g. 8,8,16")  # fmt: skip
            small = torch.nn.functional.interpolate(pixels, size=(size, size), mode="area")
            canvas[:, :, y : y + size, x : x + size] = small
            keep[:, y : y + size, x : x + size] = True
            return canvas, keep
        if direction not in DIRECTIONS:
            raise ValueError(f"direction: expected one of {DIRECTIONS}, got {direction!r}")
        if not 0.0 < amount < 1.0:
            raise ValueError(f"amount: the share of the canvas to generate, in (0, 1), got "
                             f"{amount}; e.g. 0.5")  # fmt: skip
        n = min(max(round(amount * self.grid), 1), self.grid - 1) * self.cell  # whole tokens
        keep_part = {  # (destination slice, source slice) along the shifted axis
            "right": (slice(0, S - n), slice(n, S)),
            "left": (slice(n, S), slice(0, S - n)),
            "down": (slice(0, S - n), slice(n, S)),
            "up": (slice(n, S), slice(0, S - n)),
        }[direction]
        dst, src = keep_part
        if direction in ("left", "right"):
            canvas[..., dst] = pixels[..., src]
            keep[..., dst] = True
        else:
            canvas[..., dst, :] = pixels[..., src, :]
            keep[:, dst, :] = True
        return canvas, keep

    # --- variations -----------------------------------------------------------------------------
    def variation_mask(self, batch: int, fraction: float, seed: Seed = 0) -> torch.Tensor:
        """Token keep masks (B, g, g): round(fraction N) tokens (at least 1) of each image to
        regenerate, chosen uniformly at random from generator seed + i (seed[i])."""
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"fraction: the share of tokens to regenerate, in (0, 1], got "
                             f"{fraction}; e.g. 0.25")  # fmt: skip
        N = self.grid * self.grid
        k = max(1, round(fraction * N))
        keep = torch.ones(batch, N, dtype=torch.bool)
        for i, g in enumerate(generators(sample_seeds(seed, batch), torch.device("cpu"))):
            keep[i, random_orders(1, N, g)[0, :k]] = False
        return keep.view(batch, self.grid, self.grid)
