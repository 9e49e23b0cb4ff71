"""The single ``mmar`` command-line entry point.

Each sub-command lives in its own module of this package and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to the function that runs it.
Modules import torch and the model lazily inside ``func`` so that ``mmar --help`` is instant.
Options several commands share (--model, --device, --no-ema, the sampling flags, --json) are
defined once in :mod:`mmar.cli.options`.

Errors: an expected error -- ``CliError`` (a bad argument), ``ConfigError`` (a config field, a
config file that is not valid YAML / JSON, a device this machine lacks), ``DataError`` (a data
file and line, data unusable as a whole) or ``OSError`` (a file
missing, unreadable or damaged, named in the message) -- prints one line "mmar COMMAND: message"
and exits with status 2. Anything else is a bug and keeps its traceback; ``mmar --debug`` shows
the traceback of expected errors too.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Callable

# (module, one-line help). The order is the order shown by `mmar --help`.
COMMANDS = [
    "quickstart",
    "train",
    "generate",
    "caption",
    "answer",
    "inpaint",
    "serve",
    "eval",
    "ablate",
    "precision",
    "train_tokenizer",
    "vae_scale",
    "cache_latents",
    "perplexity",
]


DEBUG_HELP = "show the full traceback of an error instead of its one-line message"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmar",
        description="MMAR: one LLM that generates images (masked AR + v-prediction diffusion head) "
        "and understands them. Run `mmar COMMAND --help` for each command.",
        epilog="A bad argument, config or file ends with one line 'mmar COMMAND: message' and "
        "exit status 2; --debug shows its traceback.",
    )
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"mmar.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"mmar.cli.{name}":
                continue  # command not built yet
            raise
        mod.register(sub)
    for command in sub.choices.values():  # also accepted after the command: mmar train ... --debug
        command.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP
        )
    return parser


def error_message(e: BaseException) -> str | None:
    """The one-line message of an expected error, or None for a bug (which keeps its traceback).

    OSError: the file and the reason ("runs/x: Permission denied"), or the message of errors
    raised with one (mmar's own name their file). Messages spanning lines (some of transformers')
    are joined into one.
    """
    from mmar.cli.options import CliError
    from mmar.config import ConfigError, DataError

    if isinstance(e, (CliError, ConfigError, DataError)):
        msg = str(e)
    elif isinstance(e, OSError):
        if e.filename is not None and e.strerror:
            msg = f"{e.filename}: {e.strerror}"
            if e.filename2 is not None:
                msg += f" (-> {e.filename2})"
        else:
            msg = str(e)
    else:
        return None
    return " ".join(msg.split())


def _one_line_warnings(command: str) -> Callable[..., None]:
    """A ``warnings.showwarning`` that prints "mmar COMMAND: warning: message" on one line
    (Python's default adds the source file, line and code of the warn() call)."""

    def show(message: Warning | str, category: type[Warning], *args: object, **kw: object) -> None:
        print(f"mmar {command}: warning: {' '.join(str(message).split())}", file=sys.stderr)

    return show


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            if not args.debug:  # --debug: Python's own format, with where the warning came from
                warnings.showwarning = _one_line_warnings(args.command)
            rc = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        msg = error_message(e)
        if msg is None or args.debug:
            raise
        print(f"mmar {args.command}: {msg}", file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
