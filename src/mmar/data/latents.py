"""Pre-computed image latents: encode a dataset once (as MAR caches its VAE latents), train on them.

Layout of a cache directory (written by ``write_latent_cache`` / ``mmar cache-latents``):

    manifest.json                 {"format", "version", the tokenizer record: "tokenizer"
                                   (ImageTokenizerConfig dict), "geometry" (channels, stride,
                                   latent_size, patch_size, num_tokens, token_dim), "scale",
                                   "shift", "weights_sha256" (null without weights);
                                   "latent_shape": [C, h, w], "data": DataConfig dict,
                                   "splits": {split: {"count", "skipped", "flip", "shards",
                                   "captions", "sha256": {file: hex digest}}}}
    <split>/shard-00000.safetensors  "latents" (n, C, h, w) float32, "latents_flip" (the encoded
                                   horizontal flips, unless --no-flip), "labels" (n,) int64
    <split>/captions.jsonl        one {"text", "label"} per item, in shard order

Latents are ``tokenizer.encode(images)``: already multiplied by the tokenizer's scale. Captions
are those of epoch 0 (digit datasets vary train templates with the epoch; a cache freezes them).
Reading checks every file against its sha256 and its shapes against the manifest: a damaged
or truncated file is refused by name (:class:`LatentCacheError`), never loaded. The tokenizer
record is compared with the model's by ``mmar.data.latent_manifest.check_fits``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mmar.data.collate import collate
from mmar.data.latent_manifest import (
    FORMAT,
    MANIFEST,
    RECACHE,
    VERSION,
    LatentCacheError,
    check_fits,
    one_line,
    read_manifest,
    tokenizer_record,
)

if TYPE_CHECKING:
    from mmar.tokenizers.base import ImageTokenizer
    from mmar.tokenizers.config import ImageTokenizerConfig


def _write_shard(
    directory: Path,
    k: int,
    latents: list[torch.Tensor],
    flips: list[torch.Tensor],
    labels: list[torch.Tensor],
) -> tuple[str, str]:
    """Write shard k; returns its file name and sha256."""
    from safetensors.torch import save

    name = f"shard-{k:05d}.safetensors"
    tensors = {"latents": torch.cat(latents), "labels": torch.cat(labels)}
    if flips:
        tensors["latents_flip"] = torch.cat(flips)
    data = save({k: v.contiguous() for k, v in tensors.items()})
    (directory / name).write_bytes(data)
    return name, hashlib.sha256(data).hexdigest()


@torch.inference_mode()
def write_latent_cache(
    dataset: torch.utils.data.Dataset,
    tokenizer: ImageTokenizer,
    out_dir: str | Path,
    split: str,
    *,
    tokenizer_config: ImageTokenizerConfig,
    data_config: dict[str, Any],
    batch_size: int = 64,
    flip: bool = True,
    shard_size: int = 10_000,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Encode every readable image of ``dataset`` (and its flip) into ``out_dir/split``.

    ``tokenizer`` is the one ``tokenizer_config`` builds (or a checkpoint's, with its stored
    weights); the manifest records both. Returns the split's manifest entry; ``manifest.json`` is
    created or updated (another split of the same tokenizer may already be there). Unreadable
    items are skipped and counted.
    """
    out_dir = Path(out_dir)
    manifest_path = out_dir / MANIFEST
    record = tokenizer_record(tokenizer_config, tokenizer)
    manifest: dict[str, Any] = read_manifest(manifest_path) if manifest_path.is_file() else {}
    if manifest and any(manifest[k] != v for k, v in record.items()):
        raise LatentCacheError(
            f"{manifest_path} holds latents of another tokenizer "
            f"({json.dumps(manifest['tokenizer'])}); write this one to a new --out directory"
        )
    split_dir = out_dir / split
    split_dir.mkdir(parents=True, exist_ok=True)
    for old in split_dir.glob("shard-*.safetensors"):  # a rerun replaces the split
        old.unlink()
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate
    )
    if progress:
        from tqdm import tqdm

        loader = tqdm(loader, desc=f"encode {split}")
    tokenizer = tokenizer.to(device).eval()
    shards: list[str] = []
    sha256: dict[str, str] = {}
    captions_sha = hashlib.sha256()
    buf: tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]] = ([], [], [])
    count, skipped, shape = 0, 0, None
    with open(split_dir / "captions.jsonl", "wb") as captions:
        for batch in loader:
            skipped += batch["skipped"]
            if not batch["texts"]:
                continue
            images = batch["images"].to(device)  # (B, C_img, H, W)
            z = tokenizer.encode(images, generator=generator).float().cpu()  # (B, C, h, w)
            buf[0].append(z)
            if flip:
                zf = tokenizer.encode(images.flip(-1), generator=generator).float().cpu()
                buf[1].append(zf)
            buf[2].append(batch["labels"])
            shape = list(z.shape[1:])
            for text, label in zip(batch["texts"], batch["labels"].tolist()):
                line = (json.dumps({"text": text, "label": label}) + "\n").encode("utf-8")
                captions.write(line)
                captions_sha.update(line)
            count += len(z)
            if sum(len(x) for x in buf[0]) >= shard_size:
                name, sha256[name] = _write_shard(split_dir, len(shards), *buf)
                shards.append(name)
                buf = ([], [], [])
        if buf[0]:
            name, sha256[name] = _write_shard(split_dir, len(shards), *buf)
            shards.append(name)
    if count == 0:
        raise ValueError(f"cache-latents: no readable image in split '{split}' ({skipped} skipped)")
    sha256["captions.jsonl"] = captions_sha.hexdigest()
    entry = {
        "count": count,
        "skipped": skipped,
        "flip": flip,
        "shards": shards,
        "captions": "captions.jsonl",
        "sha256": sha256,
    }
    if manifest.get("latent_shape", shape) != shape:
        raise ValueError(
            f"{manifest_path}: latent shape {shape} differs from {manifest['latent_shape']}"
        )
    manifest.update(format=FORMAT, version=VERSION, **record, data=data_config, latent_shape=shape)
    manifest.setdefault("splits", {})[split] = entry
    manifest_path.write_text(json.dumps(manifest, indent=2))
    return entry


def _read_checked(path: Path, sha256: str, manifest_path: Path) -> bytes:
    """The bytes of a cache file whose sha256 is the manifest's, else a LatentCacheError."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise LatentCacheError(
            f"{path}: cannot read this cache file ({one_line(e)}); {RECACHE}"
        ) from None
    if hashlib.sha256(data).hexdigest() != sha256:
        raise LatentCacheError(
            f"{path}: damaged or truncated ({len(data)} bytes, its sha256 is not the one "
            f"recorded in {manifest_path}); {RECACHE}"
        )
    return data


def _load_shard(path: Path, data: bytes, shape: list[int], flip: bool) -> dict[str, torch.Tensor]:
    """The tensors of one shard, checked: latents (and flips) (n, C, h, w), labels (n,)."""
    from safetensors.torch import load

    try:
        tensors = load(data)
    except Exception as e:  # safetensors' own error type: a file that is not a shard
        raise LatentCacheError(f"{path}: not a latent shard ({one_line(e)}); {RECACHE}") from None
    names = ["latents", "labels", *(["latents_flip"] if flip else [])]
    missing = [k for k in names if k not in tensors]
    if missing:
        raise LatentCacheError(f"{path}: no tensor {missing} in this shard; {RECACHE}")
    n = len(tensors["latents"])
    for k in names:
        t = tensors[k]
        want = (n,) if k == "labels" else (n, *shape)
        if tuple(t.shape) != want or t.is_floating_point() == (k == "labels"):
            raise LatentCacheError(
                f"{path}: tensor {k} is {t.dtype} {tuple(t.shape)}, expected shape {want} as "
                f"the manifest's latent_shape {shape} says; {RECACHE}"
            )
    return tensors


def _load_captions(path: Path, data: bytes) -> list[str]:
    texts = []
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise LatentCacheError(f"{path}: not UTF-8 ({one_line(e)}); {RECACHE}") from None
    for i, line in enumerate(lines, 1):
        try:
            item = json.loads(line)
        except (ValueError, RecursionError) as e:
            raise LatentCacheError(f"{path}:{i}: not JSON ({one_line(e)}); {RECACHE}") from None
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            raise LatentCacheError(f'{path}:{i}: expected {{"text": ..., "label": ...}}; {RECACHE}')
        texts.append(item["text"])
    return texts


class LatentDataset(torch.utils.data.Dataset):
    """Reads a cache: item {"latents": (C, h, w), "text": str, "label": int}.

    flip: "random" (the image or its flip, chosen from (seed, epoch, index): call ``set_epoch``),
    "both" (items 0..N-1 the images, N..2N-1 their flips), "none" (never flipped).
    Every file is checked (sha256, shapes, counts) as it is read; ``check_tokenizer`` compares
    the model's image tokenizer with the one that encoded the cache.
    """

    def __init__(self, root: str | Path, split: str = "train", flip: str = "random", seed: int = 0):
        root = Path(root)
        self.manifest_path = root / MANIFEST
        self.manifest = read_manifest(self.manifest_path)
        splits = self.manifest["splits"]
        if split not in splits:
            raise LatentCacheError(
                f"{self.manifest_path}: no split '{split}'; the cache has {sorted(splits)}"
            )
        entry = splits[split]
        if flip != "none" and not entry["flip"]:
            raise LatentCacheError(
                f"{self.manifest_path}: split '{split}' was cached with --no-flip: set "
                "DataConfig.latent_flip: none, or cache again without --no-flip"
            )
        shape = self.manifest["latent_shape"]
        shards = []
        for name in entry["shards"]:
            path = root / split / name
            data = _read_checked(path, entry["sha256"][name], self.manifest_path)
            shards.append(_load_shard(path, data, shape, entry["flip"]))
        self.latents = torch.cat([s["latents"] for s in shards])  # (N, C, h, w)
        self.flipped = torch.cat([s["latents_flip"] for s in shards]) if entry["flip"] else None
        self.labels = torch.cat([s["labels"] for s in shards])  # (N,)
        path = root / split / entry["captions"]
        self.texts = _load_captions(
            path, _read_checked(path, entry["sha256"][entry["captions"]], self.manifest_path)
        )
        if not len(self.texts) == len(self.latents) == entry["count"]:
            raise LatentCacheError(
                f"latents {root}/{split}: {len(self.latents)} latents, {len(self.texts)} captions, "
                f"{self.manifest_path} count {entry['count']}: the cache is incomplete; {RECACHE}"
            )
        self.flip, self.seed, self.epoch = flip, seed, 0

    def check_tokenizer(self, cfg: ImageTokenizerConfig, tokenizer: ImageTokenizer) -> None:
        """Raise a LatentCacheError unless ``tokenizer`` (built from ``cfg``, or a checkpoint's)
        is the one the cache was encoded with: geometry, scale, shift and weights."""
        check_fits(self.manifest, self.manifest_path, cfg, tokenizer)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.latents) * (2 if self.flip == "both" else 1)

    def __getitem__(self, index: int) -> dict:
        n = len(self.latents)
        if not 0 <= index < len(self):
            raise IndexError(f"latents: index {index} out of range for length {len(self)}")
        i, flipped = index % n, index >= n
        if self.flip == "random":
            flipped = bool(np.random.default_rng((self.seed, self.epoch, i)).integers(2))
        latents = self.flipped[i] if flipped and self.flipped is not None else self.latents[i]
        return {
            "latents": latents,
            "text": self.texts[i],
            "label": int(self.labels[i]),
            "key": index,
        }

    def captions(self) -> list[str]:
        return list(self.texts)
