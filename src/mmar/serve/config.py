"""ServeConfig: how ``mmar serve`` binds, queues and limits what a request may send."""

from __future__ import annotations

import dataclasses
import ipaddress
import socket

from mmar.config import Config, check, check_at_least_one

LOOPBACK_NAMES = ("localhost",)
MIB = 1024 * 1024


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now on ``host`` (the OS's pick), for tests, benchmarks and
    scripts that start the app themselves."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class ServeConfig(Config):
    """The web app's settings (``mmar serve``'s flags).

    host, port: where it listens; 127.0.0.1 (this machine only) unless a host is given.
    concurrency: requests the model runs at once (all tabs together); the others wait.
    max_queue: requests that may wait; one more gets "busy, try again" (HTTP 503).
    max_pixels: the largest upload, width x height (4096 x 4096 by default).
    max_upload_mb: the largest upload in MiB (Gradio refuses a larger file at upload).
    max_prompt_chars: the longest prompt / question in characters; None = 16 per token of the
      model's ``max_text_len`` (1024 for 64 tokens; the model reads at most that many tokens).
    display_size: generated images are shown enlarged (nearest neighbour) to about this many
      pixels per side.
    """

    host: str = "127.0.0.1"
    port: int = 7860
    concurrency: int = 1
    max_queue: int = 16
    max_pixels: int = 4096 * 4096
    max_upload_mb: float = 10.0
    max_prompt_chars: int | None = None
    display_size: int = 256

    def validate(self) -> None:
        super().validate()
        n = type(self).__name__
        check_at_least_one(
            self,
            {"concurrency": 1, "max_queue": 16, "max_pixels": 4096 * 4096, "display_size": 256},
        )
        check(
            1 <= self.port <= 65535,
            f"{n}.port",
            f"must be a TCP port in [1, 65535], got {self.port}; e.g. 7860",
        )
        check(bool(self.host.strip()), f"{n}.host", "must not be empty; e.g. 127.0.0.1")
        check(
            self.max_upload_mb > 0,
            f"{n}.max_upload_mb",
            f"must be > 0, got {self.max_upload_mb}; e.g. 10",
        )
        check(
            self.max_prompt_chars is None or self.max_prompt_chars >= 1,
            f"{n}.max_prompt_chars",
            f"must be >= 1 (or unset: from the model), got {self.max_prompt_chars}; e.g. 1024",
        )

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MIB)

    def prompt_chars(self, max_text_len: int) -> int:
        """The prompt limit in characters for a model reading ``max_text_len`` tokens."""
        return self.max_prompt_chars if self.max_prompt_chars is not None else 16 * max_text_len
