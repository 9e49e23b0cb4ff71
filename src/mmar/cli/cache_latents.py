"""`mmar cache-latents`: encode a dataset once with the image tokenizer, for latent training."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DESCRIPTION = """\
Run the image tokenizer's encoder once over a dataset, for every image and its horizontal
flip (as MAR does), and write latent shards (safetensors) + captions + manifest.json to --out.
Train on them with data: {name: latents, path: OUT}.

examples:
  mmar cache-latents --data mnist --tokenizer-config kl16.yaml --out cache/mnist-kl16
  mmar cache-latents --data data.yaml --model runs/quickstart --out cache/q --splits train
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "cache-latents",
        help="encode a dataset's images (and flips) into latent shards",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--data",
        required=True,
        help="a DataConfig YAML file, or a dataset name (mnist, digits, shapes, folder, jsonl, "
        "webdataset)",
    )
    p.add_argument("--data-path", help="DataConfig.path for folder/jsonl/webdataset names")
    tok = p.add_mutually_exclusive_group(required=True)
    tok.add_argument("--tokenizer-config", help="an ImageTokenizerConfig YAML file")
    tok.add_argument(
        "--model", help="an mmar checkpoint directory (uses its config.json's image_tokenizer)"
    )
    p.add_argument("--out", required=True, help="output directory of the cache")
    p.add_argument("--splits", default="train,test", help="comma-separated (default: train,test)")
    p.add_argument("--batch-size", type=int, default=64, help="images per encoder call")
    p.add_argument("--no-flip", action="store_true", help="do not also encode horizontal flips")
    p.add_argument("--shard-size", type=int, default=10_000, help="latents per shard file")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader workers")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    p.add_argument("--seed", type=int, default=0, help="seed of the posterior draw (posterior: sample)")
    p.set_defaults(func=run)


def _tokenizer_config(args):
    from mmar.tokenizers.config import ImageTokenizerConfig

    if args.tokenizer_config:
        return ImageTokenizerConfig.from_yaml(args.tokenizer_config)
    path = Path(args.model) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"--model {args.model}: no config.json; give an mmar checkpoint directory"
        )
    data = json.loads(path.read_text())
    if "image_tokenizer" not in data:
        raise ValueError(
            f"{path} has no 'image_tokenizer' section; pass --tokenizer-config instead"
        )
    return ImageTokenizerConfig.from_dict(data["image_tokenizer"])


def _data_config(args, tok_cfg):
    from mmar.data.config import DataConfig

    if Path(args.data).suffix in (".yaml", ".yml", ".json"):
        cfg = DataConfig.from_yaml(args.data)
        return cfg.replace(path=args.data_path) if args.data_path else cfg
    # a bare name: size and channels follow the tokenizer, so the encoder accepts the images
    return DataConfig.from_dict(
        {"name": args.data, "path": args.data_path, "image_size": tok_cfg.image_size,
         "channels": tok_cfg.image_channels}
    )


def run(args) -> int:
    import torch

    from mmar.config import ConfigError
    from mmar.data import build_dataset
    from mmar.data.latents import write_latent_cache
    from mmar.tokenizers import build_image_tokenizer

    try:
        tok_cfg = _tokenizer_config(args)
        data_cfg = _data_config(args, tok_cfg)
        splits = [s for s in args.splits.split(",") if s]
        datasets = {s: build_dataset(data_cfg, s) for s in splits}
    except (ConfigError, ValueError, FileNotFoundError) as e:
        print(f"mmar cache-latents: {e}", file=sys.stderr)
        return 2
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = build_image_tokenizer(tok_cfg)
    generator = torch.Generator(device).manual_seed(args.seed)
    for split, ds in datasets.items():
        entry = write_latent_cache(
            ds, tokenizer, args.out, split,
            tokenizer_config=tok_cfg.to_dict(), data_config=data_cfg.to_dict(),
            batch_size=args.batch_size, flip=not args.no_flip, shard_size=args.shard_size,
            num_workers=args.num_workers, device=device, generator=generator, progress=True,
        )
        print(f"{split}: {entry['count']} latents in {len(entry['shards'])} shard(s), "
              f"{entry['skipped']} skipped -> {Path(args.out) / split}")
    return 0
