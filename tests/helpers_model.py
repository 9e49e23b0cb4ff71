"""Tiny MMAR models for the model/pipeline tests (fast: width 32, 2 layers, 16 tokens)."""

from __future__ import annotations

import pytest
import torch

from mmar.model.config import tiny_config
from mmar.model.processor import MMARProcessor
from mmar.pipelines.mmar import MMAR

CORPUS = [
    "a red circle",
    "a blue square at the top",
    "digit seven",
    "digit one",
    "a small green triangle",
]


def tiny_model(seed: int = 0, randomize_head: bool = True, **changes) -> MMAR:
    """A tiny MMAR (network + processor) in eval mode. ``randomize_head``: replace the head's
    AdaLN-zero init (which makes its output 0 whatever z is) by random weights, so sampling
    depends on the LLM."""
    cfg = tiny_config(**changes)
    torch.manual_seed(seed)
    model = MMAR.from_config(cfg, CORPUS)
    if randomize_head:
        g = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for p in model.model.head.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    model.model.eval()
    return model


def random_images(b: int, seed: int = 0, c: int = 1, s: int = 8) -> torch.Tensor:
    return torch.rand(b, c, s, s, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def training_inputs(
    processor: MMARProcessor,
    texts: list[str],
    kinds: list[str],
    images: torch.Tensor | None = None,
    seed: int | None = None,
):
    """(packed batch, image tokens) of a training batch; ``seed``: per-sample generators for the
    CFG prompt dropout (None: no dropout)."""
    gens = (
        None
        if seed is None
        else [torch.Generator().manual_seed(seed + i) for i in range(len(texts))]
    )
    inputs = processor(texts, kinds, images=images, generators=gens)
    tokens = None if inputs.images is None else processor.encode_images(inputs.images)
    return inputs.batch, tokens


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Run these tiny-model tests on one thread, restoring the count afterwards: on the shared
    2-core machine, 2 OpenMP threads made a tiny generate call ~100x slower (1.8 s vs 14 ms)
    once other processes load the cores. Import it into a test module to apply it there."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_transfusion_model(seed: int = 0, randomize: bool = True, **changes) -> MMAR:
    """A tiny ``image_head="transfusion"`` MMAR in eval mode. ``randomize``: replace the zero
    init of its linear output (and the timestep embedder's init) by random weights, so that its
    prediction depends on the LLM."""
    cfg = tiny_config(image_head="transfusion", **changes)
    torch.manual_seed(seed)
    model = MMAR.from_config(cfg, CORPUS)
    if randomize:
        g = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for p in model.model.transfusion.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    model.model.eval()
    return model
