"""`mmar cache-latents`: encode a dataset once with the image tokenizer, for latent training."""

from __future__ import annotations

import argparse
from pathlib import Path

from mmar.cli.options import CliError, add_device_option, add_model_options, check_out_dir
from mmar.data.config import DataConfig
from mmar.tokenizers.base import ImageTokenizer
from mmar.tokenizers.config import ImageTokenizerConfig

DESCRIPTION = """\
Run the image tokenizer's encoder once over a dataset, for every image and its horizontal
flip (as MAR does), and write latent shards (safetensors) + captions + manifest.json to --out.
Train on them with data: {name: latents, path: OUT}. The manifest records the tokenizer
(config, scale, shift, latent geometry, a sha256 of its weights) and a sha256 of every file:
training refuses a cache its model's tokenizer did not encode, or a damaged one, by file name.

examples:
  mmar cache-latents --data mnist --tokenizer-config kl16.yaml --out cache/mnist-kl16
  mmar cache-latents --data data.yaml --model runs/quickstart --out cache/q --splits train
"""


def register(subparsers: argparse._SubParsersAction) -> None:
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
    add_model_options(p, model_group=tok, weights=False, device=False)  # its image tokenizer
    p.add_argument("--out", required=True, help="output directory of the cache")
    p.add_argument(
        "--splits",
        default=None,
        help="comma-separated, e.g. train,test (default: train, and test where the data has a "
        "held-out split: the built-in sets, folder/jsonl unless test_fraction is 0 without a "
        "test_path, webdataset only with a test_path)",
    )
    p.add_argument("--batch-size", type=int, default=64, help="images per encoder call")
    p.add_argument("--no-flip", action="store_true", help="do not also encode horizontal flips")
    p.add_argument("--shard-size", type=int, default=10_000, help="latents per shard file")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader workers")
    add_device_option(p)
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the posterior draw (posterior: sample)"
    )
    p.set_defaults(func=run)


def _image_tokenizer(args: argparse.Namespace) -> tuple[ImageTokenizerConfig, ImageTokenizer]:
    """The config and the tokenizer to encode with: --tokenizer-config's, or --model's own (its
    stored weights: a random-init VAE is encoded exactly as the model was trained)."""
    from mmar.tokenizers import build_image_tokenizer

    if args.tokenizer_config:
        cfg = ImageTokenizerConfig.from_yaml(args.tokenizer_config)
        return cfg, build_image_tokenizer(cfg)
    from mmar.cli.options import check_model_dir
    from mmar.model.processor import MMARProcessor

    processor = MMARProcessor.from_pretrained(check_model_dir(args.model))
    return processor.config.image_tokenizer, processor.image_tokenizer


def _data_config(args: argparse.Namespace, tok_cfg: ImageTokenizerConfig) -> DataConfig:
    if Path(args.data).suffix in (".yaml", ".yml", ".json"):
        cfg = DataConfig.from_yaml(args.data)
        return cfg.replace(path=args.data_path) if args.data_path else cfg
    # a bare name: size and channels follow the tokenizer, so the encoder accepts the images
    return DataConfig.from_dict(
        {
            "name": args.data,
            "path": args.data_path,
            "image_size": tok_cfg.image_size,
            "channels": tok_cfg.image_channels,
        }
    )


def _default_splits(cfg: DataConfig) -> list[str]:
    """train, and test where ``cfg`` has held-out data (WebDataset shards only with test_path:
    the README's command on a shard pattern must not ask for a split that is not there)."""
    if cfg.test_path is not None or cfg.name in ("mnist", "digits", "shapes"):
        return ["train", "test"]
    if cfg.name in ("folder", "jsonl") and cfg.test_fraction > 0:
        return ["train", "test"]
    return ["train"]


def run(args: argparse.Namespace) -> int:
    import torch

    from mmar.data import build_dataset
    from mmar.data.latents import write_latent_cache
    from mmar.torch_utils import resolve_device

    check_out_dir(args.out)
    device = resolve_device(args.device)
    try:
        tok_cfg, tokenizer = _image_tokenizer(args)
        data_cfg = _data_config(args, tok_cfg)
        splits = (
            [s for s in args.splits.split(",") if s] if args.splits else _default_splits(data_cfg)
        )
        datasets = {s: build_dataset(data_cfg, s) for s in splits}
    except (ValueError, OSError) as e:  # ConfigError is a ValueError; FileNotFoundError an OSError
        raise CliError(str(e)) from None
    generator = torch.Generator(device).manual_seed(args.seed)
    for split, ds in datasets.items():
        try:
            entry = write_latent_cache(
                ds,
                tokenizer,
                args.out,
                split,
                tokenizer_config=tok_cfg,
                data_config=data_cfg.to_dict(),
                batch_size=args.batch_size,
                flip=not args.no_flip,
                shard_size=args.shard_size,
                num_workers=args.num_workers,
                device=device,
                generator=generator,
                progress=True,
            )
        except ValueError as e:  # an empty split, another tokenizer's cache at --out
            raise CliError(str(e)) from None
        print(
            f"{split}: {entry['count']} latents in {len(entry['shards'])} shard(s), "
            f"{entry['skipped']} skipped -> {Path(args.out) / split}"
        )
    return 0
