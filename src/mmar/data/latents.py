"""Pre-computed image latents: encode a dataset once (as MAR caches its VAE latents), train on them.

Layout of a cache directory (written by ``write_latent_cache`` / ``mmar cache-latents``):

    manifest.json                 {"format", "version", "tokenizer": ImageTokenizerConfig dict,
                                   "data": DataConfig dict, "latent_shape": [C, h, w], "scale",
                                   "splits": {split: {"count", "skipped", "flip", "shards",
                                   "captions"}}}
    <split>/shard-00000.safetensors  "latents" (n, C, h, w) float32, "latents_flip" (the encoded
                                   horizontal flips, unless --no-flip), "labels" (n,) int64
    <split>/captions.jsonl        one {"text", "label"} per item, in shard order

Latents are ``tokenizer.encode(images)``: already multiplied by the tokenizer's scale. Captions
are those of epoch 0 (digit datasets vary train templates with the epoch; a cache freezes them).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mmar.data.collate import collate

if TYPE_CHECKING:
    from mmar.tokenizers.base import ImageTokenizer

FORMAT = "mmar-latents"
VERSION = 1


def _write_shard(
    directory: Path,
    k: int,
    latents: list[torch.Tensor],
    flips: list[torch.Tensor],
    labels: list[torch.Tensor],
) -> str:
    from safetensors.torch import save_file

    name = f"shard-{k:05d}.safetensors"
    tensors = {"latents": torch.cat(latents), "labels": torch.cat(labels)}
    if flips:
        tensors["latents_flip"] = torch.cat(flips)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(directory / name))
    return name


@torch.inference_mode()
def write_latent_cache(
    dataset: torch.utils.data.Dataset,
    tokenizer: ImageTokenizer,
    out_dir: str | Path,
    split: str,
    *,
    tokenizer_config: dict[str, Any],
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

    Returns the split's manifest entry; ``manifest.json`` is created or updated (another split
    of the same tokenizer may already be there). Unreadable items are skipped and counted.
    """
    out_dir = Path(out_dir)
    manifest_path = out_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    if manifest and manifest.get("tokenizer") != tokenizer_config:
        raise ValueError(
            f"{manifest_path} holds latents of another tokenizer ({manifest.get('tokenizer')}); "
            "write this one to a new --out directory"
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
    buf: tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]] = ([], [], [])
    count, skipped, shape = 0, 0, None
    with open(split_dir / "captions.jsonl", "w", encoding="utf-8") as captions:
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
                captions.write(json.dumps({"text": text, "label": label}) + "\n")
            count += len(z)
            if sum(len(x) for x in buf[0]) >= shard_size:
                shards.append(_write_shard(split_dir, len(shards), *buf))
                buf = ([], [], [])
        if buf[0]:
            shards.append(_write_shard(split_dir, len(shards), *buf))
    if count == 0:
        raise ValueError(f"cache-latents: no readable image in split '{split}' ({skipped} skipped)")
    entry = {
        "count": count,
        "skipped": skipped,
        "flip": flip,
        "shards": shards,
        "captions": "captions.jsonl",
    }
    if manifest.get("latent_shape", shape) != shape:
        raise ValueError(
            f"{manifest_path}: latent shape {shape} differs from {manifest['latent_shape']}"
        )
    manifest.update(
        format=FORMAT,
        version=VERSION,
        tokenizer=tokenizer_config,
        data=data_config,
        latent_shape=shape,
        scale=float(tokenizer.scale),
    )
    manifest.setdefault("splits", {})[split] = entry
    manifest_path.write_text(json.dumps(manifest, indent=2))
    return entry


class LatentDataset(torch.utils.data.Dataset):
    """Reads a cache: item {"latents": (C, h, w), "text": str, "label": int}.

    flip: "random" (the image or its flip, chosen from (seed, epoch, index): call ``set_epoch``),
    "both" (items 0..N-1 the images, N..2N-1 their flips), "none" (never flipped).
    """

    def __init__(self, root: str | Path, split: str = "train", flip: str = "random", seed: int = 0):
        from safetensors.torch import load_file

        root = Path(root)
        manifest_path = root / "manifest.json"
        if not manifest_path.is_file():
            raise FileNotFoundError(
                f"latents: {manifest_path} not found; write a cache first, e.g. "
                f"`mmar cache-latents --data mnist --tokenizer-config tok.yaml --out {root}`"
            )
        self.manifest = json.loads(manifest_path.read_text())
        splits = self.manifest.get("splits", {})
        if split not in splits:
            raise ValueError(f"latents {root}: no split '{split}'; the cache has {sorted(splits)}")
        entry = splits[split]
        if flip != "none" and not entry["flip"]:
            raise ValueError(
                f"latents {root}/{split} was cached with --no-flip: set DataConfig.latent_flip: "
                "none, or cache again without --no-flip"
            )
        shards = [load_file(str(root / split / name)) for name in entry["shards"]]
        self.latents = torch.cat([s["latents"] for s in shards])  # (N, C, h, w)
        self.flipped = torch.cat([s["latents_flip"] for s in shards]) if entry["flip"] else None
        self.labels = torch.cat([s["labels"] for s in shards])  # (N,)
        with open(root / split / entry["captions"], encoding="utf-8") as f:
            self.texts = [json.loads(line)["text"] for line in f]
        if not len(self.texts) == len(self.latents) == entry["count"]:
            raise ValueError(
                f"latents {root}/{split}: {len(self.latents)} latents, {len(self.texts)} captions, "
                f"manifest count {entry['count']}: the cache is incomplete; write it again"
            )
        self.flip, self.seed, self.epoch = flip, seed, 0

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
