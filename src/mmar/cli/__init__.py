"""The single ``mmar`` command-line entry point.

Each sub-command lives in its own module of this package and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to the function that runs it.
Modules import torch and the model lazily inside ``func`` so that ``mmar --help`` is instant.
Options several commands share (--model, --device, --no-ema, the sampling flags, --json) are
defined once in :mod:`mmar.cli.options`. A user error (``CliError``, a ``ConfigError`` naming
a config field, a ``DataError`` naming a data file) prints "mmar COMMAND: message" and exits
with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# (module, one-line help). The order is the order shown by `mmar --help`.
COMMANDS = [
    "quickstart",
    "train",
    "generate",
    "caption",
    "eval",
    "precision",
    "vae_scale",
    "cache_latents",
    "perplexity",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmar",
        description="MMAR: one LLM that generates images (masked AR + v-prediction diffusion head) "
        "and understands them. Run `mmar COMMAND --help` for each command.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"mmar.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"mmar.cli.{name}":
                continue  # command not built yet
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from mmar.cli.options import CliError
    from mmar.config import ConfigError, DataError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
    except (CliError, ConfigError, DataError) as e:
        print(f"mmar {args.command}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
