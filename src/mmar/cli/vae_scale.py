"""`mmar vae-scale`: estimate a VAE's latent scale on your images.

The diffusion head assumes unit-variance tokens, so latents are multiplied by
scale = 1 / std(z), with std over every element of the raw (scale 1.0) latents z of N images
(LDM's recipe; MAR's KL-16 value 0.2325 came from ImageNet). Put the printed value in the config
as `image_tokenizer.scale`. (`mmar train-tokenizer` stores its own VAE's scale itself.)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from mmar.cli.options import (
    CliError,
    add_device_option,
    add_json_option,
    human_output,
    write_json,
)
from mmar.data.folder import load_image

if TYPE_CHECKING:
    import torch

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff"}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "vae-scale",
        help="estimate a VAE's latent scale (1/std of its latents) on a set of images",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--tokenizer",
        choices=["kl16", "diffusers"],
        required=True,
        help="kl16: MAR's KL-16 VAE; diffusers: a diffusers AutoencoderKL directory",
    )
    p.add_argument(
        "--path",
        default=None,
        help="kl16: the kl16.ckpt file (omitted: random weights, for testing only); "
        "diffusers: the local model directory",
    )
    p.add_argument(
        "--data",
        required=True,
        help="a folder of images (searched recursively) or a built-in dataset name",
    )
    p.add_argument("--num", type=int, default=256, help="number of images to encode (default 256)")
    p.add_argument(
        "--image-size",
        type=int,
        default=256,
        help="images are center-cropped and resized to this size (default 256)",
    )
    p.add_argument(
        "--posterior",
        choices=["mode", "sample"],
        default="mode",
        help="encode with the posterior mean (default, as training does) or a sample",
    )
    p.add_argument("--batch-size", type=int, default=16, help="images per encoder call")
    p.add_argument("--seed", type=int, default=0, help="seed for the image subset and sampling")
    add_device_option(p)
    add_json_option(p, 'the result {"scale", "mean", "std", "num_images", "latent_shape"}')
    p.set_defaults(func=run)


def _folder_images(
    folder: Path, num: int, size: int, generator: torch.Generator
) -> list[torch.Tensor]:
    import torch

    files = sorted(f for f in folder.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise CliError(f"no image files ({sorted(IMAGE_SUFFIXES)}) under --data {folder}")
    pick = torch.randperm(len(files), generator=generator)[:num].sort().values
    return [load_image(files[i], channels=3, size=size) for i in pick.tolist()]


def _builtin_images(
    name: str, num: int, size: int, generator: torch.Generator
) -> list[torch.Tensor]:
    import torch

    try:  # the data package is optional here: folders work without it
        from mmar.data import DataConfig, build_dataset
    except ImportError as e:
        raise CliError(
            f"--data {name!r} is not a folder, and built-in datasets are unavailable "
            f"({e}); give a folder of images"
        ) from None
    # the data pipeline resizes and converts grey to RGB, as the VAE needs
    dataset = build_dataset(
        DataConfig.from_dict({"name": name, "image_size": size, "channels": 3}), "train"
    )
    pick = torch.randperm(len(dataset), generator=generator)[:num].sort().values
    items = (dataset[i] for i in pick.tolist())
    return [item["image"].float() for item in items if item is not None]  # (3, S, S) each


def run(args: argparse.Namespace) -> int:
    import torch

    from mmar.tokenizers import ImageTokenizerConfig, build_image_tokenizer
    from mmar.tokenizers.scale import estimate_scale
    from mmar.torch_utils import resolve_device

    device = resolve_device(args.device)
    if args.tokenizer == "kl16" and args.path is None:
        print(
            "vae-scale: no --path given: KL-16 with random weights (testing only)", file=sys.stderr
        )
    cfg = ImageTokenizerConfig(
        kind=args.tokenizer,
        image_size=args.image_size,
        image_channels=3,
        path=args.path,
        scale=1.0,
        posterior=args.posterior,
    )
    cfg.validate()

    generator = torch.Generator().manual_seed(args.seed)
    data = Path(args.data)
    if data.is_dir():
        images = _folder_images(data, args.num, args.image_size, generator)
    else:
        images = _builtin_images(args.data, args.num, args.image_size, generator)
    tokenizer = build_image_tokenizer(cfg).to(device)
    sample_gen = torch.Generator(device=device).manual_seed(args.seed)
    result = estimate_scale(tokenizer, images, args.batch_size, sample_gen)

    report = human_output(args)
    print(f"images {result['num_images']}, latents {tuple(result['latent_shape'])}", file=report)
    print(f"mean {result['mean']:.6f}  std {result['std']:.6f}", file=report)
    print(
        f"estimated scale 1/std = {result['scale']:.6f}  (set image_tokenizer.scale)", file=report
    )
    write_json(result, args.json)
    return 0
