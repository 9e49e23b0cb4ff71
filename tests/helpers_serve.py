"""The web app of ``mmar serve`` run in-process on a free port, for the app, browser and load
tests (needs gradio: ``pytest.importorskip`` it first)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from mmar.serve.config import ServeConfig, free_port
from mmar.serve.handlers import Service


@contextlib.contextmanager
def running_app(model, model_dir: str = "tiny", **config) -> Iterator[str]:
    """Serve ``model`` on 127.0.0.1 (ServeConfig fields in ``config``); yields the URL and
    closes the server afterwards."""
    from mmar.serve.app import build_demo, launch

    cfg = ServeConfig(port=free_port(), **config)
    cfg.validate()
    demo = build_demo(Service(model, cfg, model_dir))
    launch(demo, cfg, block=False)
    try:
        yield f"http://127.0.0.1:{cfg.port}/"
    finally:
        demo.close()
