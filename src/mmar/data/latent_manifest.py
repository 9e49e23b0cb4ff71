"""The manifest of a latent cache: what it records, reading it safely, and checking a model's
image tokenizer against it.

A cache is only right for the image tokenizer that encoded it: latents of another size fail deep
in the model, and latents of another VAE or scale train without an error into a model whose
decoder does not match them. So ``manifest.json`` records the tokenizer (its config, the
resolved scale and shift, the latent geometry and a sha256 of its weights), and the trainer
compares the model's tokenizer with it before any work starts: from the config alone in
``RunConfig.validate``, then from the built tokenizer (scale defaults, weights) in the trainer.

What must match: kind, image size and channels, latent geometry (channels, stride, latent size),
scale, shift, the weights, and for a random-init KL-16 its seed. What need not: the patch size
(latents are cached before patchify, so one cache serves p = 1 and p = 4), the posterior (how the
encoder was sampled; the decoder is the same), the checkpoint path (the weights are compared).

Every problem is a :class:`LatentCacheError` (a ``ConfigError``: the CLI prints it as one line)
naming the file and what to do.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmar.config import ConfigError
from mmar.tokenizers.config import ImageTokenizerConfig

if TYPE_CHECKING:
    from mmar.tokenizers.base import ImageTokenizer

FORMAT = "mmar-latents"
VERSION = 2  # 2: the tokenizer record (geometry, shift, weights_sha256) and per-file sha256
MANIFEST = "manifest.json"
RECACHE = "write it again with `mmar cache-latents ... --out NEW_DIR`"
# the geometry fields a cache and a model must agree on (patch_size is the model's own choice)
LATENT_GEOMETRY = ("channels", "stride", "latent_size")


class LatentCacheError(ConfigError):
    """A latent cache that cannot be read, is damaged, or does not fit the model."""


def one_line(e: BaseException) -> str:
    """An exception's message on one line (library messages may span several)."""
    return " ".join(str(e).split()) or type(e).__name__


def tokenizer_record(cfg: ImageTokenizerConfig, tokenizer: ImageTokenizer) -> dict[str, Any]:
    """The manifest fields that describe the tokenizer a cache is encoded with."""
    geometry = cfg.geometry()
    return {
        "tokenizer": cfg.to_dict(),
        "geometry": {
            "channels": tokenizer.channels,
            "stride": tokenizer.stride,
            "latent_size": tokenizer.latent_size,
            "patch_size": geometry.patch_size,
            "num_tokens": geometry.num_tokens,
            "token_dim": geometry.token_dim,
        },
        "scale": float(tokenizer.scale),
        "shift": float(tokenizer.shift),
        "weights_sha256": tokenizer.weights_sha256(),
    }


def _require(cond: bool, path: Path, what: str) -> None:
    if not cond:
        raise LatentCacheError(f"{path}: {what}; the cache is damaged: {RECACHE}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_split(path: Path, name: str, entry: Any) -> None:
    where = f"splits.{name}"
    _require(isinstance(entry, dict), path, f"{where} is not a mapping")
    _require(
        _is_int(entry.get("count")) and entry["count"] >= 1, path, f"{where}.count is not >= 1"
    )
    _require(_is_int(entry.get("skipped")), path, f"{where}.skipped is not an integer")
    _require(isinstance(entry.get("flip"), bool), path, f"{where}.flip is not true/false")
    shards, captions, sha = entry.get("shards"), entry.get("captions"), entry.get("sha256")
    _require(
        isinstance(shards, list) and len(shards) > 0 and all(isinstance(s, str) for s in shards),
        path,
        f"{where}.shards is not a list of file names",
    )
    _require(isinstance(captions, str), path, f"{where}.captions is not a file name")
    files = [*shards, captions]
    _require(all(f and Path(f).name == f for f in files), path, f"{where} names a file outside it")
    _require(
        isinstance(sha, dict) and all(isinstance(sha.get(f), str) for f in files),
        path,
        f"{where}.sha256 lacks the checksum of a file",
    )


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest at ``path``, checked field by field (the types and the format version).

    A missing file is a FileNotFoundError; anything else wrong a LatentCacheError naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"latents: {path} not found; write a cache first, e.g. "
            f"`mmar cache-latents --data mnist --tokenizer-config tok.yaml --out {path.parent}`"
        )
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise LatentCacheError(
            f"{path}: not a readable manifest ({one_line(e)}); {RECACHE}"
        ) from None
    _require(isinstance(manifest, dict), path, "expected a JSON mapping")
    _require(manifest.get("format") == FORMAT, path, f"format is not {FORMAT!r}")
    version = manifest.get("version")
    _require(_is_int(version), path, "version is not an integer")
    if version < VERSION:
        raise LatentCacheError(
            f"{path}: a cache of format version {version}, which does not record the tokenizer's "
            "geometry, shift and weights (or checksums), so it cannot be checked against the "
            f"model (version {VERSION} does); re-run `mmar cache-latents ... --out NEW_DIR`"
        )
    if version > VERSION:
        raise LatentCacheError(
            f"{path}: a cache of format version {version}, written by a newer mmar (this one "
            f"reads version {VERSION}): upgrade mmar, e.g. pip install -U mmar"
        )
    try:
        ImageTokenizerConfig.from_dict(manifest.get("tokenizer"))
    except ConfigError as e:
        raise LatentCacheError(f"{path}: tokenizer: {e}; {RECACHE}") from None
    geometry = manifest.get("geometry")
    _require(isinstance(geometry, dict), path, "geometry is not a mapping")
    _require(
        all(_is_int(geometry.get(k)) for k in LATENT_GEOMETRY),
        path,
        f"geometry lacks an integer {' / '.join(LATENT_GEOMETRY)}",
    )
    _require(_is_number(manifest.get("scale")), path, "scale is not a number")
    _require(_is_number(manifest.get("shift")), path, "shift is not a number")
    sha = manifest.get("weights_sha256", 0)  # null (no weights) or a hex digest
    _require(sha is None or isinstance(sha, str), path, "weights_sha256 is not a digest")
    shape = manifest.get("latent_shape")
    _require(
        isinstance(shape, list) and len(shape) == 3 and all(_is_int(n) and n > 0 for n in shape),
        path,
        "latent_shape is not [C, h, w]",
    )
    expected = [geometry["channels"], geometry["latent_size"], geometry["latent_size"]]
    _require(shape == expected, path, f"latent_shape {shape} differs from the geometry's")
    splits = manifest.get("splits")
    _require(isinstance(splits, dict), path, "splits is not a mapping")
    for name, entry in splits.items():
        _check_split(path, name, entry)
    return manifest


def _same(a: Any, b: Any) -> bool:
    if _is_number(a) and _is_number(b):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)
    return bool(a == b)


def _short(v: Any) -> str:
    return f"{v[:16]}..." if isinstance(v, str) and len(v) == 64 else repr(v).strip("'")


def check_fits(
    manifest: dict[str, Any],
    path: str | Path,
    cfg: ImageTokenizerConfig,
    tokenizer: ImageTokenizer | None = None,
) -> None:
    """Raise a LatentCacheError naming every difference between the cache (``manifest``, read
    from ``path``) and the model's image tokenizer: its config ``cfg`` and, once built,
    ``tokenizer`` (which resolves the default scale and shift, and has the weights).

    Without ``tokenizer``, only what the config fixes is compared: a scale of null and the
    geometry of a diffusers VAE (in its config.json) wait for the built tokenizer.
    """
    cached_cfg = ImageTokenizerConfig.from_dict(manifest["tokenizer"])
    cached: dict[str, Any] = {
        "kind": cached_cfg.kind,
        "image_size": cached_cfg.image_size,
        "image_channels": cached_cfg.image_channels,
        **{k: manifest["geometry"][k] for k in LATENT_GEOMETRY},
        "scale": manifest["scale"],
        "shift": manifest["shift"],
        "weights_sha256": manifest["weights_sha256"],
    }
    model: dict[str, Any] = {
        "kind": cfg.kind,
        "image_size": cfg.image_size,
        "image_channels": cfg.image_channels,
    }
    if tokenizer is not None:
        model.update(
            channels=tokenizer.channels,
            stride=tokenizer.stride,
            latent_size=tokenizer.latent_size,
            scale=float(tokenizer.scale),
            shift=float(tokenizer.shift),
            weights_sha256=tokenizer.weights_sha256(),
        )
    else:
        if not cfg.reads_directory:
            geometry = cfg.geometry()
            model.update({k: getattr(geometry, k) for k in LATENT_GEOMETRY})
        if cfg.scale is not None:
            model["scale"] = cfg.scale
    if cfg.kind == cached_cfg.kind == "kl16" and cfg.path is None and cached_cfg.path is None:
        cached["seed"], model["seed"] = cached_cfg.seed, cfg.seed  # random init: its seed
    diff = [
        f"{k}: cache {_short(cached[k])}, model {_short(model[k])}"
        for k in model
        if not _same(cached[k], model[k])
    ]
    if diff:
        raise LatentCacheError(
            f"{path}: this latent cache was encoded by another image tokenizer than the "
            f"model's ({'; '.join(diff)}). Train with the cache's tokenizer, "
            f"model.image_tokenizer: {json.dumps(manifest['tokenizer'])}, or encode the data "
            "again with the model's, e.g. `mmar cache-latents --data data.yaml "
            "--tokenizer-config tok.yaml --out NEW_DIR`"
        )
