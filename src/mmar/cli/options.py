"""The options several sub-commands share, defined once: one flag name and meaning per concept.

--model DIR, --device, --no-ema      which checkpoint, on which device, raw or EMA weights
--num-iter ... --batch-size          the fields of SamplingConfig; unset = the checkpoint's
--json FILE                          write the command's results as JSON ("-": stdout)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mmar.model.config import SamplingConfig
    from mmar.pipelines.mmar import MMAR


class CliError(Exception):
    """A user error: ``mmar`` prints "mmar COMMAND: message" and exits with status 2."""


# SamplingConfig field -> (flag, type, help); image: text-to-image, text: captioning/answering
_SAMPLING_FLAGS: dict[str, tuple[str, type, str, str]] = {
    "num_iter": (
        "--num-iter",
        int,
        "image",
        "masked-AR iterations K; K more than the model's image tokens N runs as K = N (one "
        "token per iteration: any K costs at most N iterations)",
    ),
    "guidance_scale": (
        "--guidance-scale",
        float,
        "image",
        "classifier-free guidance scale w (1 = none), ramped with the revealed fraction",
    ),
    "scheduler": (
        "--scheduler",
        str,
        "image",
        "the diffusion head's noise scheduler: ddim | ddpm | dpm++2m",
    ),
    "num_steps": (
        "--num-steps",
        int,
        "image",
        "diffusion steps per token (at most the model's diffusion.num_timesteps)",
    ),
    "num_steps_final": (
        "--num-steps-final",
        int,
        "image",
        "diffusion-step annealing: the steps fall linearly over the masked-AR iterations from "
        "--num-steps to this (DiSA); unset = the checkpoint's (default: no annealing)",
    ),
    "eta": ("--eta", float, "image", "DDIM stochasticity in [0, 1] (0 = deterministic)"),
    "temperature": (
        "--temperature",
        float,
        "image",
        "scales the noise the scheduler injects (DDPM, or DDIM with eta > 0); no "
        "effect with DDIM at eta 0",
    ),
    "timestep_spacing": (
        "--timestep-spacing",
        str,
        "image",
        "the head's timestep grid: linspace (from t = T-1) | leading (diffusers': t_i = i T//n, "
        "from T - T//n)",
    ),
    "precision": (
        "--precision",
        str,
        "image",
        "image sampling precision: fp32 | bf16 (backbone and head under bf16 autocast)",
    ),
    "max_new_tokens": (
        "--max-new-tokens",
        int,
        "text",
        "longest caption or answer, in tokens (at most the backbone's positions after the "
        "image and the question)",
    ),
    "text_temperature": (
        "--text-temperature",
        float,
        "text",
        "caption / answer sampling temperature (0 = greedy)",
    ),
    "batch_size": (
        "--batch-size",
        int,
        "both",
        "prompts / images per forward pass (memory only: seeded results do not depend on it)",
    ),
}


MODEL_HELP = (
    "checkpoint directory (mmar train's final/ or checkpoints/step_*, save_pretrained's, "
    "mmar quickstart's OUT), or a Hugging Face Hub repo id owner/name (read through the Hugging "
    "Face cache; HF_HUB_OFFLINE=1: from the cache only)"
)


def add_model_options(
    p: argparse.ArgumentParser,
    model_group: argparse._MutuallyExclusiveGroup | None = None,
    weights: bool = True,
    device: bool = True,
) -> None:
    """--model DIR (in ``model_group`` when it is one of several alternatives), --device and
    --no-ema (``weights``: commands that only read the checkpoint's processor have none)."""
    if model_group is not None:
        model_group.add_argument("--model", metavar="DIR", help=MODEL_HELP)
    else:
        p.add_argument("--model", required=True, metavar="DIR", help=MODEL_HELP)
    if device:
        add_device_option(p)
    if weights:
        p.add_argument(
            "--no-ema", action="store_true", help="use the raw weights instead of the EMA weights"
        )


def add_device_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device",
        default=None,
        help="torch device, e.g. cpu, cuda, cuda:1 (default: cuda if available)",
    )


def add_sampling_options(p: argparse.ArgumentParser, image: bool = True, text: bool = True) -> None:
    """One flag per SamplingConfig field (of the tasks the command runs); unset flags keep the
    checkpoint's recommended value."""
    g = p.add_argument_group("sampling (default: the checkpoint's recommended SamplingConfig)")
    for field, (flag, tp, task, help_) in _SAMPLING_FLAGS.items():
        if task == "both" or (task == "image" and image) or (task == "text" and text):
            # no argparse choices for --scheduler: the list lives in mmar.diffusion.schedulers
            # (importing it imports torch, and --help stays instant); SamplingConfig.validate
            # refuses an unknown name with the list
            g.add_argument(flag, dest=field, type=tp, default=None, help=help_)


def sampling_from_args(base: SamplingConfig, args: argparse.Namespace) -> SamplingConfig:
    """``base`` with the sampling flags the user gave, validated (ConfigError names the field)."""
    from mmar.pipelines.base import sampling_config

    given = {f: getattr(args, f) for f in _SAMPLING_FLAGS if getattr(args, f, None) is not None}
    return sampling_config(base, **given)


def add_set_option(p: argparse.ArgumentParser, help: str) -> None:
    """--set KEY.PATH=VALUE ... (values parsed as YAML) into ``args.overrides``."""
    p.add_argument(
        "--set",
        nargs="+",
        action="extend",
        default=[],
        dest="overrides",
        metavar="KEY.PATH=VALUE",
        help=help,
    )


def add_tokenizer_set_option(p: argparse.ArgumentParser, help: str) -> None:
    """--tokenizer-set KEY.PATH=VALUE ... (`mmar train-tokenizer` overrides) into
    ``args.tokenizer_set``."""
    p.add_argument(
        "--tokenizer-set",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY.PATH=VALUE",
        help=help,
    )


def add_json_option(p: argparse.ArgumentParser, what: str = "the results") -> None:
    p.add_argument(
        "--json",
        default=None,
        metavar="FILE",
        help=f"also write {what} as JSON to FILE ('-' = stdout)",
    )


def human_output(args: argparse.Namespace) -> Any:
    """Where a command prints its readable report: stdout, or stderr when ``--json -`` puts the
    JSON on stdout (so that stdout stays parseable)."""
    return sys.stderr if getattr(args, "json", None) == "-" else sys.stdout


def write_json(obj: Any, path: str | None) -> None:
    """Write ``obj`` to ``path`` (``--json``'s value; "-" = stdout, None = nothing)."""
    if path is None:
        return
    text = json.dumps(obj, indent=1)
    if path == "-":
        print(text)
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text + "\n")
    print(f"wrote {path}", file=sys.stderr)


def check_model_dir(path: str) -> Path:
    """--model's directory, refused (CliError) unless it holds a checkpoint's files: saying which
    are missing, and pointing at OUT/final when given a training run's OUT. A Hub repo id
    owner/name that is no local path is its snapshot in the Hugging Face cache
    (``mmar.model.hub.resolve_checkpoint``; downloaded unless HF_HUB_OFFLINE=1)."""
    from mmar.model.files import REQUIRED, missing_files
    from mmar.model.hub import is_hub_name, resolve_checkpoint

    d = Path(path)
    kinds = (
        "a checkpoint directory: mmar train's OUT/final or OUT/checkpoints/step_*, "
        "save_pretrained's directory or mmar quickstart's OUT, e.g. --model runs/quickstart, "
        "or a Hugging Face Hub repo id owner/name"
    )
    if is_hub_name(path):
        try:
            d = resolve_checkpoint(path)
        except FileNotFoundError as e:
            raise CliError(f"--model {e}") from e
    if not d.exists():
        raise CliError(f"--model {path} does not exist; give {kinds}")
    if not d.is_dir():
        raise CliError(f"--model {path} is a file; give {kinds}")
    missing = missing_files(d)
    if not missing:
        return d
    if not missing_files(d / "final"):
        raise CliError(
            f"--model {path} is a training run's directory; its model is --model {d / 'final'}"
        )
    raise CliError(
        f"--model {path} is not a checkpoint directory: missing {', '.join(missing)} (a "
        f"checkpoint holds {', '.join(REQUIRED)}); give {kinds}"
    )


def check_out_dir(path: str | Path, flag: str = "--out") -> Path:
    """An output directory (CliError if ``path`` is an existing file), checked before any work:
    it is created only when the command writes to it."""
    d = Path(path)
    if d.exists() and not d.is_dir():
        raise CliError(
            f"{flag} {path} is a file, not a directory; give a directory to write into, e.g. "
            f"{flag} {d.with_suffix('')}_out"
        )
    return d


def load_model(args: argparse.Namespace) -> MMAR:
    """The checkpoint of --model, on --device, EMA weights unless --no-ema."""
    from mmar.pipelines.mmar import MMAR
    from mmar.torch_utils import resolve_device

    d = check_model_dir(args.model)
    device = resolve_device(args.device)  # before reading the checkpoint
    try:
        return MMAR.from_pretrained(d, device=device, use_ema=not args.no_ema)
    except (OSError, ValueError, RuntimeError) as e:  # ConfigError: a ValueError; names the file
        raise CliError(f"cannot load --model {args.model}: {e}") from e
