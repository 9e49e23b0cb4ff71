"""The "holes" measures of stage 1 vs stage 2 (issue 11): can the model finish an image of which a
fraction is given, and what is its image loss at each mask ratio.

    acc = completion_accuracy(model, "shapes", fractions=(0, .25, .5, .75, .9), n=100, seed=0)
    # {"0.0": 0.31, "0.25": ..., "0.9": 0.85}
    loss = mask_ratio_losses(model, DataConfig(name="shapes"), n=256, seed=0)
    # {"0.0-0.2": 0.41, "0.2-0.4": ..., "0.8-1.0": 0.62}

MMAR's stage 1 trains with mask ratios in [0.7, 1] only, so it never sees an image that is mostly
given; stage 2 ([0, 1]) is claimed to remove the "holes" this leaves. Generation runs through
every ratio from 1 down to 1/N, so both measures look where stage 1 never trained.

``completion_accuracy``: for each of n held-out test images, keep a random fraction f of its
image tokens (k = round(f N), the first k of a random order drawn from generator seed + i, so the
kept sets are nested in f and the same for every model given the seed), prompt with the image's
own description and let the model generate the other N - k tokens (``KnownTokens``; f = 0 is
plain text-to-image on those prompts). Judge the decoded image:
- shapes: ``check_scene`` reads the objects back from the pixels, and they must be exactly the
  image's own scene (``matches(describe_scene(scene), objects)``: every object's colour, shape
  and size, the exact count); the prompt is that description, ``canonical_text``;
- digits (mnist, digits): the judge CNN of ``mmar eval`` must read the image's own label; the
  prompt is the image's own caption.
An image whose kept tokens already show the whole scene still needs the rest drawn as clean
background: at f = 0.9 a stray blob is an extra object.

``mask_ratio_losses``: the model's image loss (``loss_diff`` of ``MMARModel.forward``: diffusion
MSE, or the codebook head's CE) on n held-out t2i samples (caption, then image; no prompt dropout),
with the mask ratio drawn uniformly inside each bucket. Every bucket uses the same per-sample
generators (seed + i): the same uniform u gives ratio lo + (hi - lo) u, the same token order and
the same diffusion draws, so the buckets differ only in how much is masked.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import torch

from mmar.data import DataConfig, build_dataset
from mmar.data.images import pil_to_tensor
from mmar.data.scene_text import canonical_text, describe_scene
from mmar.data.shapes import ShapesDataset
from mmar.model.config import MaskConfig, SamplingConfig
from mmar.model.masking import random_orders
from mmar.pipelines.text_to_image import KnownTokens
from mmar.torch_utils import eval_mode

if TYPE_CHECKING:
    from mmar.evaluation.judge import Judge
    from mmar.model.mmar import MMARModel
    from mmar.pipelines.mmar import MMAR


class LabelPredictor(Protocol):
    """What judges a digit: the ``Judge`` CNN, or any object with its ``predict``."""

    def predict(self, x: torch.Tensor) -> torch.Tensor: ...


BENCHES = ("shapes", "mnist", "digits")
FRACTIONS = (0.0, 0.25, 0.5, 0.75, 0.9)
BUCKETS = ((0.0, 0.2), (0.2, 0.4), (0.4, 0.6), (0.6, 0.8), (0.8, 1.0))


def check_fractions(fractions: Sequence[float]) -> tuple[float, ...]:
    """The given fractions as floats; ValueError unless there is one and each is in [0, 1)."""
    out = tuple(float(f) for f in fractions)
    bad = [f for f in out if not 0.0 <= f < 1.0]
    if not out or bad:
        raise ValueError(
            f"fractions: the share of each image's tokens given, each in [0, 1) (1 would leave "
            f"nothing to generate), got {list(fractions)}; e.g. fractions=(0, 0.25, 0.5, 0.75, 0.9)"
        )
    return out


def kept_tokens(num_images: int, num_tokens: int, fraction: float, seed: int) -> torch.Tensor:
    """Keep masks (B, N) bool: image i keeps the first round(fraction N) tokens of a random order
    drawn from ``torch.Generator().manual_seed(seed + i)`` (the same order for every fraction, so
    a larger fraction keeps a superset)."""
    (f,) = check_fractions([fraction])
    k = round(f * num_tokens)
    keep = torch.zeros(num_images, num_tokens, dtype=torch.bool)
    for i in range(num_images):
        order = random_orders(1, num_tokens, torch.Generator().manual_seed(seed + i))[0]  # (N,)
        keep[i, order[:k]] = True
    return keep


def _test_images(
    model: MMAR, bench: str, n: int, seed: int
) -> tuple[torch.Tensor, list[str], list[Any], DataConfig]:
    """(images (n, C, H, W) in [-1, 1], prompts, truths, data config): n test images drawn by a
    permutation from ``seed``; truths are SceneQuery (shapes) or int labels (digits)."""
    from mmar.evaluation.evaluate import eval_data_config, load_split

    cfg = eval_data_config(model, bench)
    g = torch.Generator().manual_seed(seed)  # a random subset: the digit splits sort by label
    if bench == "shapes":
        ds = build_dataset(cfg, "test")
        if not isinstance(ds, ShapesDataset):  # eval_data_config refused a grey model
            raise TypeError(f"completion_accuracy: expected the shapes dataset, got {ds!r}")
        idx = torch.randperm(len(ds), generator=g)[:n].tolist()
        scenes = [ds.scene(i) for i in idx]
        images = torch.stack([ds[i]["image"] for i in idx]).float()
        queries = [describe_scene(s) for s in scenes]
        return images, [canonical_text(q) for q in queries], queries, cfg
    split = load_split(cfg, "test")
    rows = torch.randperm(len(split["texts"]), generator=g)[:n]
    labels = split["labels"][rows].tolist()
    return split["images"][rows], [split["texts"][i] for i in rows.tolist()], labels, cfg


def _digit_judge(cfg: DataConfig, cache_dir: str | None) -> Judge:
    """The cached digit judge ``mmar eval`` uses for this data config (trained on first use)."""
    from mmar.evaluation.evaluate import digit_judge

    return digit_judge(cfg, cache_dir)


@torch.no_grad()
def completion_accuracy(
    model: MMAR,
    bench: str = "shapes",
    fractions: Sequence[float] = FRACTIONS,
    n: int = 100,
    seed: int = 0,
    sampling: SamplingConfig | None = None,
    judge: LabelPredictor | None = None,
    judge_cache_dir: str | None = None,
) -> dict[str, float]:
    """Completion accuracy per given fraction f of tokens -> {str(f): accuracy in [0, 1]}, keys
    "0.0", "0.25", ... (see the module doc for what is kept, prompted and judged).

    bench: "shapes" (an RGB model: a grey one is refused, ConfigError), "mnist" or "digits".
    n: test images (fewer when the split is smaller).
    seed: which images, which tokens are kept, and the sampling seeds (image i samples with
      seed + i at every f).
    sampling: default the model's ``model.sampling``.
    judge: digits only, an object with ``predict(images (B, C, H, W)) -> labels (B,)`` instead
      of the cached ``mmar eval`` judge (trained on first use into ``judge_cache_dir``).
    The model is used through ``model.processor`` (encode / decode) and
    ``model.text_to_image.generate_tokens(..., known=KnownTokens)``.
    """
    from mmar.evaluation.check_scene import check_scene, matches

    fs = check_fractions(fractions)
    if bench not in BENCHES:
        raise ValueError(f"completion_accuracy: bench must be one of {list(BENCHES)}, got "
                         f"{bench!r}; e.g. bench='shapes'")  # fmt: skip
    if n < 1:
        raise ValueError(f"completion_accuracy: n must be >= 1 test images, got {n}; e.g. n=100")
    images, prompts, truths, cfg = _test_images(model, bench, n, seed)
    if bench != "shapes" and judge is None:
        judge = _digit_judge(cfg, judge_cache_dir)
    proc, dev = model.processor, model.device
    true_tokens = proc.encode_images(images.to(dev))  # (n, N, D), posterior mode
    B, N = true_tokens.shape[:2]
    seeds = [seed + i for i in range(B)]
    out: dict[str, float] = {}
    for f in fs:
        keep = kept_tokens(B, N, f, seed).to(dev)  # (n, N)
        tokens = model.text_to_image.generate_tokens(
            prompts, sampling, seeds, known=KnownTokens(true_tokens, keep)
        )  # (n, N, D)
        pil = proc.postprocess(proc.decode_tokens(tokens).cpu())
        if bench == "shapes":
            size = cfg.image_size
            hits = [matches(q, check_scene(im), size) for q, im in zip(truths, pil)]
        else:
            assert judge is not None
            pred = judge.predict(pil_to_tensor(pil, cfg.image_channels)).cpu()
            hits = (pred == torch.as_tensor(truths)).tolist()
        out[str(f)] = sum(hits) / len(hits)
    return out


@contextlib.contextmanager
def _mask_config(net: MMARModel, mask: MaskConfig) -> Iterator[None]:
    """``net.config`` with ``mask`` for the duration (a new config object: the original, which
    others may hold, is not changed), restored after, also on an error."""
    original = net.config
    net.config = original.replace(mask=mask)
    try:
        yield
    finally:
        net.config = original


def check_buckets(buckets: Sequence[tuple[float, float]]) -> tuple[tuple[float, float], ...]:
    """Buckets as (lo, hi) floats; ValueError unless there is one and each is 0 <= lo < hi <= 1."""
    out = tuple((float(lo), float(hi)) for lo, hi in buckets)
    bad = [b for b in out if not 0.0 <= b[0] < b[1] <= 1.0]
    if not out or bad:
        raise ValueError(
            f"buckets: mask-ratio intervals (lo, hi) with 0 <= lo < hi <= 1, got {list(buckets)}; "
            "e.g. buckets=((0, 0.2), (0.2, 0.4), (0.4, 0.6), (0.6, 0.8), (0.8, 1))"
        )
    return out


@torch.no_grad()
def mask_ratio_losses(
    model: MMAR,
    data_cfg: DataConfig,
    buckets: Sequence[tuple[float, float]] = BUCKETS,
    n: int = 256,
    seed: int = 0,
    batch_size: int = 64,
) -> dict[str, float]:
    """The image loss per mask-ratio bucket -> {f"{lo}-{hi}": loss}, e.g. "0.0-0.2".

    For each bucket (lo, hi): the n first test items of ``data_cfg`` after a permutation from
    ``seed`` (at the model's image size and channels), packed as t2i samples by the processor
    (their "text", the caption, then the image; no prompt dropout), tokens encoded with the
    posterior mode, and ``MMARModel.forward`` run in eval mode, without grad, with
    ``config.mask`` replaced by ``MaskConfig("uniform", lo, hi)`` for the call and sample i's
    generator seeded seed + i (the same in every bucket). The bucket's loss is the mean over all
    its masked tokens (each batch's ``loss_diff`` weighted by its ``n_masked``), i.e. exactly one
    forward over all n samples, whatever ``batch_size``.

    For ``image_head == "transfusion"`` returns {}: that model masks nothing (one noise level per
    image instead), so there is no mask ratio to bucket.
    """
    bs = check_buckets(buckets)
    if n < 1 or batch_size < 1:
        raise ValueError(f"mask_ratio_losses: n and batch_size must be >= 1, got n={n}, "
                         f"batch_size={batch_size}; e.g. n=256, batch_size=64")  # fmt: skip
    net, proc, dev = model.model, model.processor, model.device
    if net.config.image_head == "transfusion":
        return {}
    tok = net.config.image_tokenizer
    cfg = data_cfg.replace(image_size=tok.image_size, channels=tok.image_channels)
    ds = build_dataset(cfg, "test")
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n].tolist()
    items = [ds[i] for i in idx]
    chunks = []
    for j in range(0, len(items), batch_size):
        part = items[j : j + batch_size]
        images = torch.stack([it["image"] for it in part]).float()
        inputs = proc([it["text"] for it in part], ["t2i"] * len(part), images=images)
        tokens = proc.encode_images(inputs.images.to(dev) if inputs.images is not None else None)
        chunks.append((j, inputs.batch.to(dev), tokens))
    out: dict[str, float] = {}
    with eval_mode(net):
        for lo, hi in bs:
            total, count = 0.0, 0
            with _mask_config(net, MaskConfig(distribution="uniform", ratio_min=lo, ratio_max=hi)):
                for j, batch, tokens in chunks:
                    gens = [
                        torch.Generator(dev).manual_seed(seed + j + i) for i in range(len(batch))
                    ]
                    res = net(batch, tokens, generator=gens)
                    total += float(res["loss_diff"]) * res["n_masked"]
                    count += res["n_masked"]
            out[f"{lo}-{hi}"] = total / count  # count >= 1: every sample masks at least 1 token
    return out
