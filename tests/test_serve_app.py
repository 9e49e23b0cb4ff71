"""mmar serve's app over HTTP (gradio_client, in-process server, tiny model): streaming, bad
input answered in the page and never a crash, binding, and the command line."""

import logging
import re

import httpx
import numpy as np
import pytest
from PIL import Image

from helpers_model import one_thread, tiny_model  # noqa: F401 (fixture)
from mmar.cli import main

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from helpers_serve import running_app  # noqa: E402
from mmar.serve.config import free_port  # noqa: E402

MAX_UPLOAD_MB = 0.05


@pytest.fixture(scope="module")
def client():
    with running_app(tiny_model(), max_upload_mb=MAX_UPLOAD_MB, max_prompt_chars=40) as url:
        yield Client(url, verbose=False, analytics_enabled=False)


def _generate(client, prompt="a red circle"):
    sampling = [16, 3.0, 4, "ddim", 1.0, 0]
    return client.submit(prompt, *sampling, api_name="/generate")


def test_generate_streams_every_iteration(client):
    job = _generate(client)
    path, counter, *_ = job.result(timeout=60)
    frames = job.outputs()
    assert counter == "iteration 16 / 16"
    assert [f[1] for f in frames] == [f"iteration {k} / 16" for k in range(1, 17)]
    image = np.asarray(Image.open(path))
    assert image.shape[:2] == (256, 256)  # 8 x 8 enlarged 32x, nearest neighbour
    assert np.array_equal(image[::32, ::32], image[31::32, 31::32])


def test_caption_of_an_upload(client, tmp_path):
    path = tmp_path / "a.png"
    Image.new("L", (8, 8), 200).save(path)
    text = client.predict(handle_file(str(path)), api_name="/caption")
    assert isinstance(text, str) and text


def test_non_image_upload_gets_a_message_and_the_server_stays_up(client, tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not an image\n")
    with pytest.raises(AppError, match="notes.png is not an image this app can read"):
        client.predict(handle_file(str(path)), api_name="/caption")
    assert _generate(client).result(timeout=60)[1] == "iteration 16 / 16"


def test_oversized_upload_is_refused(client, tmp_path):
    """Gradio enforces launch(max_file_size=...) twice: gradio_client and the page check it
    before sending, the server's upload route answers 413; the server stays up."""
    path = tmp_path / "noise.png"
    noise = np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path)
    limit = int(MAX_UPLOAD_MB * 2**20)
    assert path.stat().st_size > limit
    with pytest.raises(ValueError, match=f"exceeds the maximum file size of {limit} bytes"):
        client.predict(handle_file(str(path)), api_name="/caption")
    with path.open("rb") as f:
        r = httpx.post(client.src + "gradio_api/upload", files={"files": f}, timeout=30)
    assert r.status_code == 413 and f"maximum allowed size of {limit} bytes" in r.text
    assert _generate(client).result(timeout=60)[1] == "iteration 16 / 16"


def test_too_long_prompt_and_bad_settings_get_messages(client):
    with pytest.raises(AppError, match="at most 40 are accepted"):
        _generate(client, "a" * 41).result(timeout=60)
    with pytest.raises(AppError, match=re.escape("num_steps: must be >= 1")):
        client.submit("a red circle", 16, 3.0, 0, "ddim", 1.0, 0, api_name="/generate").result(
            timeout=60
        )


def test_empty_question_gets_a_message(client, tmp_path):
    path = tmp_path / "a.png"
    Image.new("L", (8, 8)).save(path)
    with pytest.raises(AppError, match="the question is empty"):
        client.predict(handle_file(str(path)), "", api_name="/answer")


class _FakeDemo:
    def launch(self, **kw):
        self.kw = kw

    def block_thread(self):
        self.blocked = True


def test_launch_binds_locally_and_never_shares(caplog):
    from mmar.serve.app import launch
    from mmar.serve.config import ServeConfig

    demo = _FakeDemo()
    with caplog.at_level(logging.WARNING, "mmar.serve"):
        launch(demo, ServeConfig())
    assert demo.kw["server_name"] == "127.0.0.1" and demo.kw["server_port"] == 7860
    assert demo.kw["share"] is False and demo.kw["max_file_size"] == 10 * 2**20
    assert demo.blocked  # serves until Ctrl+C
    assert not caplog.records


def test_launch_on_another_host_warns_that_it_is_reachable(caplog):
    from mmar.serve.app import launch
    from mmar.serve.config import ServeConfig

    demo = _FakeDemo()
    with caplog.at_level(logging.WARNING, "mmar.serve"):
        launch(demo, ServeConfig(host="0.0.0.0", port=8080))
    assert demo.kw["server_name"] == "0.0.0.0" and demo.kw["share"] is False
    assert "reachable from the network" in caplog.text and "8080" in caplog.text


def test_cli_bad_flag_raises_before_loading(tmp_path, capsys):
    assert main(["serve", "--model", str(tmp_path / "none"), "--max-queue", "0"]) == 2
    assert "mmar serve: --max-queue: must be >= 1" in capsys.readouterr().err


def test_cli_port_in_use_raises_before_loading(tmp_path, capsys):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["serve", "--model", str(tmp_path / "none"), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"mmar serve: cannot listen on 127.0.0.1:{port}" in err and f"--port {port + 1}" in err


def test_cli_without_gradio_says_what_to_install(tmp_path, capsys, monkeypatch):
    from mmar import _versions

    real = _versions.installed_version
    monkeypatch.setattr(
        _versions, "installed_version", lambda n: None if n == "gradio" else real(n)
    )
    monkeypatch.setattr(_versions, "_satisfied", set())
    assert main(["serve", "--model", str(tmp_path), "--port", str(free_port())]) == 2
    err = capsys.readouterr().err
    assert "mmar needs gradio>=6.31 (not installed)" in err and "mmar[serve]" in err


def test_unexpected_failure_points_at_the_log_and_the_server_stays_up(caplog):
    model = tiny_model()
    real = model.stream_images

    def failing(prompt, *args, **kw):
        if prompt == "fail":
            raise RuntimeError("boom")
        return real(prompt, *args, **kw)

    model.stream_images = failing
    with running_app(model) as url, caplog.at_level(logging.ERROR, "mmar.serve"):
        client = Client(url, verbose=False, analytics_enabled=False)
        with pytest.raises(AppError) as e:
            _generate(client, "fail").result(timeout=60)
        assert str(e.value) == (
            "text to image failed (RuntimeError); the server log has the details"
        )
        assert "boom" not in str(e.value)
        assert _generate(client).result(timeout=60)[1] == "iteration 16 / 16"
    failure = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert failure and failure[0].exc_info and "boom" in str(failure[0].exc_info[1])
