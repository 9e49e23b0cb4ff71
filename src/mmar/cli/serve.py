"""``mmar serve``: the web app over a trained checkpoint (needs the serve extra: gradio)."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING

from mmar.cli.options import CliError, add_model_options

if TYPE_CHECKING:
    from mmar.serve.config import ServeConfig

DESCRIPTION = """\
A web page (Gradio) over one checkpoint: text to image, shown while it forms (one frame per
masked-AR iteration, tokens not yet revealed grey); a caption of, or an answer about, an uploaded
or the last generated image; inpainting (a box and / or a brush mask) and outpainting, streamed.
Sampling settings default to the checkpoint's.

It listens on 127.0.0.1 (this machine only) unless --host says otherwise: another host logs a
warning that the app is reachable from the network. There is no public share link.
--concurrency requests run at once (all tabs together); --max-queue more may wait, and a request
beyond that gets "This application is currently busy. Please try again." (HTTP 503). Bad input
(a file that is not an image, an upload over --max-upload-mb or --max-pixels, an empty mask, a
prompt over --max-prompt-chars) is refused in the page and logged; the server stays up.

Needs gradio: pip install 'mmar[serve]'.

examples:
  mmar serve --model runs/quickstart
  mmar serve --model runs/shapes/final --device cuda --port 8080 --concurrency 2
  mmar serve --model runs/quickstart --host 0.0.0.0     # reachable from the network: warns
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="a web app (Gradio) over a checkpoint: text to image, captions, questions, editing",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_options(p)
    p.add_argument(
        "--host",
        default="127.0.0.1",
        metavar="H",
        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every "
        "interface, reachable from the network)",
    )
    p.add_argument("--port", type=int, default=7860, metavar="P", help="TCP port (default 7860)")
    p.add_argument(
        "--concurrency",
        type=int,
        default=1,
        metavar="C",
        help="model requests run at once, all tabs together (default 1)",
    )
    p.add_argument(
        "--max-queue",
        type=int,
        default=16,
        metavar="Q",
        help="requests that may wait; one more is answered 'busy, try again' (default 16)",
    )
    p.add_argument(
        "--max-upload-mb",
        type=float,
        default=10.0,
        metavar="MB",
        help="largest upload in MiB (default 10)",
    )
    p.add_argument(
        "--max-pixels",
        type=int,
        default=4096 * 4096,
        metavar="N",
        help="largest upload in pixels, width x height (default 4096 x 4096)",
    )
    p.add_argument(
        "--max-prompt-chars",
        type=int,
        default=None,
        metavar="N",
        help="longest prompt or question in characters (default: 16 per token the model "
        "reads, max_text_len)",
    )
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    """The ServeConfig of the flags (CliError naming the flag's field when out of range)."""
    from mmar.config import ConfigError
    from mmar.serve.config import ServeConfig

    config = ServeConfig(
        host=args.host,
        port=args.port,
        concurrency=args.concurrency,
        max_queue=args.max_queue,
        max_upload_mb=args.max_upload_mb,
        max_pixels=args.max_pixels,
        max_prompt_chars=args.max_prompt_chars,
    )
    try:
        config.validate()
    except ConfigError as e:  # "ServeConfig.max_queue: ..." -> "--max-queue: ..."
        msg = str(e)
        for name in vars(config):
            msg = msg.replace(f"ServeConfig.{name}", "--" + name.replace("_", "-"))
        raise CliError(msg) from None
    return config


def check_port_free(host: str, port: int) -> None:
    """CliError unless ``host``:``port`` can be listened on now (bound and released at once,
    with SO_REUSEADDR as the server will: a port in TIME_WAIT is free)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise CliError(f"--host {host}: cannot resolve it ({e.strerror}); e.g. 127.0.0.1") from None
    family, *_, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError as e:
            raise CliError(
                f"cannot listen on {host}:{port} ({e.strerror}); is another server using it? "
                f"Pick another port, e.g. --port {port + 1 if port < 65535 else 7860}"
            ) from None


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)  # before the model loads: a usage error costs nothing
    check_port_free(config.host, config.port)
    from mmar._versions import require

    try:
        require("gradio")
    except ImportError as e:  # "mmar needs gradio>=6.31 (not installed): pip install ..."
        raise CliError(f"{e} (or pip install 'mmar[serve]')") from None
    from mmar.cli.options import load_model
    from mmar.serve.app import build_demo, launch
    from mmar.serve.handlers import Service

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s",
        stream=sys.stderr,
    )  # fmt: skip
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's requests to itself
    model = load_model(args)
    service = Service(model, config, args.model)
    log = logging.getLogger("mmar.serve")
    for line in service.summary():
        log.info("%s", line)
    launch(build_demo(service), config)
    return 0
