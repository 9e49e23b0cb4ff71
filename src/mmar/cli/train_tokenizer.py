"""`mmar train-tokenizer`: train a small KL (or VQ) autoencoder on a dataset, for
`image_tokenizer`."""

from __future__ import annotations

import argparse
import sys

from mmar.cli.options import add_set_option, check_out_dir

DESCRIPTION = """\
Train an image tokenizer on a dataset mmar reads (mnist, digits, shapes, folder, jsonl,
webdataset): a diffusers AutoencoderKL (kind kl; reconstruction L1/L2 + a small KL term, no
LPIPS or GAN loss, which need pretrained networks), or with --kind vq a diffusers VQModel
(reconstruction L1/L2 + the VQ-VAE codebook and commitment terms; settings under vq.*). The
config (see mmar.training.tokenizer_config.TokenizerTrainConfig) comes from --config, --set or
both and is validated before any work. OUT then holds the VAE (config.json with scaling_factor
and shift_factor measured on the training images, so that its latents have zero mean and unit
variance; diffusion_pytorch_model.safetensors), train_tokenizer.yaml and metrics.json (held-out
reconstruction MSE and PSNR, steps, minutes, the config). Use it in a run config as
  model: {image_tokenizer: {kind: diffusers, path: OUT, image_size: S, image_channels: 3}}
and a VQ one (scale 1: its latents are codebook vectors; metrics.json adds the share of the
codebook in use) as
  model: {image_tokenizer: {kind: diffusers_vq, path: OUT, image_size: S, image_channels: 3,
          patch_size: 1}, image_head: codebook}
Exit status: 0 done, 1 the run diverged (non-finite losses in a row), 2 a bad config, device,
data or file.

examples:
  mmar train-tokenizer --set data.name=shapes --set minutes=5 --out runs/shapes-kl
  mmar train-tokenizer --kind vq --set data.name=shapes minutes=5 vq.num_vq_embeddings=256 \\
      --out runs/shapes-vq
  mmar train-tokenizer --set data.name=shapes 'kl.block_out_channels=[16,32,32]' --out runs/kl-s4
  mmar train-tokenizer --config tokenizer.yaml --set steps=500 lr=5e-4 --out runs/my-kl
  mmar train-tokenizer --set data.name=folder data.path=data/my_images data.image_size=64 \\
      --out runs/my-kl
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train-tokenizer",
        help="train a small KL (or --kind vq: VQ) autoencoder on a dataset",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--config",
        default=None,
        help="a TokenizerTrainConfig YAML (default: the defaults, changed by --set)",
    )
    p.add_argument(
        "--kind",
        choices=["kl", "vq"],
        default=None,
        help="kl: AutoencoderKL, vq: VQModel (default: the config's kind, kl)",
    )
    p.add_argument("--out", required=True, help="output directory (new, or without a config.json)")
    add_set_option(
        p,
        "override config fields, values parsed as YAML, e.g. --set data.name=shapes steps=500 "
        "kl.latent_channels=8",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mmar.training.tokenizer_config import load_tokenizer_train_config

    out = check_out_dir(args.out)
    overrides = [*args.overrides, *([f"kind={args.kind}"] if args.kind else [])]
    cfg = load_tokenizer_train_config(args.config, overrides)  # ConfigError: file, field

    from mmar.training.tokenizer_trainer import summary_line, train_tokenizer

    try:
        summary = train_tokenizer(cfg, out)
    except RuntimeError as e:  # the run failed, not its input: status 1
        from mmar.training.trainer import TrainingDiverged

        if not isinstance(e, TrainingDiverged):
            raise
        print(f"mmar train-tokenizer: {e}", file=sys.stderr)
        return 1
    print(summary_line(summary))
    return 0
