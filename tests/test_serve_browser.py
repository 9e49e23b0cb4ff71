"""mmar serve in a real browser: headless Chromium (Debian's) driven by Playwright, against the
app served in-process with a tiny random model (its images are noise, but the page must show
them). Generates an image (streamed to "iteration K / K"), captions it, inpaints a box (after an
empty mask is refused in the page), and saves a screenshot of each step: into pytest's tmp_path,
or into $MMAR_SCREENSHOTS when set.

Skips, saying what to install, when playwright, chromium or gradio is missing.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

from helpers_model import one_thread, tiny_model  # noqa: F401 (fixture)


def _missing() -> str | None:
    """What this test needs and does not find, with how to install it."""
    if importlib.util.find_spec("gradio") is None:
        return "gradio is not installed: pip install -e '.[serve]' (or the dev extra)"
    if importlib.util.find_spec("playwright") is None:
        return "the playwright Python package is not installed: pip install 'playwright>=1.65'"
    if shutil.which("chromium") is None:
        return (
            "no `chromium` on PATH: apt-get install -y chromium (Debian/Ubuntu; `make install` "
            "tries it when apt-get is available); Playwright drives the system's Chromium"
        )
    return None


if (_reason := _missing()) is not None:
    pytest.skip(_reason, allow_module_level=True)

from playwright.sync_api import Page, sync_playwright  # noqa: E402

from helpers_serve import running_app  # noqa: E402

WAIT_MS = 30_000
K = 16  # the tiny model's num_iter, with N = 16 tokens


@pytest.fixture
def screenshots(tmp_path) -> Path:
    d = Path(os.environ.get("MMAR_SCREENSHOTS") or tmp_path / "screenshots")
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture
def page():
    with running_app(tiny_model()) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1000})
            page.set_default_timeout(WAIT_MS)
            page.goto(url)
            yield page
        finally:
            browser.close()


def _field(page: Page, elem_id: str):
    return page.locator(f"#{elem_id} textarea, #{elem_id} input").first


def _wait_for_value(page: Page, elem_id: str, js_test: str) -> str:
    """Wait until the text field ``elem_id``'s value passes ``js_test`` (a JS expression in v)."""
    page.wait_for_function(
        f"() => {{ const e = document.querySelector('#{elem_id} textarea, #{elem_id} input');"
        f" const v = e ? e.value : ''; return {js_test}; }}",
        timeout=WAIT_MS,
    )
    return _field(page, elem_id).input_value()


def _shown_image(page: Page, elem_id: str) -> str:
    """The src of the image shown in ``elem_id``, once it has loaded."""
    img = page.locator(f"#{elem_id} img").first
    img.wait_for(state="visible")
    page.wait_for_function(
        f"() => {{ const i = document.querySelector('#{elem_id} img');"
        " return i && i.complete && i.naturalWidth > 0; }",
        timeout=WAIT_MS,
    )
    return img.get_attribute("src") or ""


def test_generate_caption_and_inpaint_in_the_browser(page, screenshots):
    assert "model: tiny" in page.inner_text("#summary")
    assert "grey cells are image tokens not yet revealed" in page.inner_text("body")

    _field(page, "t2i-prompt").fill("a red circle")
    page.click("#t2i-run")
    counter = _wait_for_value(page, "t2i-counter", f"v === 'iteration {K} / {K}'")
    assert counter == f"iteration {K} / {K}"
    assert _shown_image(page, "t2i-image").startswith(("data:", "http"))
    page.screenshot(path=str(screenshots / "1_text_to_image.png"), full_page=True)

    page.get_by_role("tab", name="Caption / ask a question").click()
    page.click("#cap-last")
    _shown_image(page, "cap-image")
    page.click("#cap-run")
    assert _wait_for_value(page, "caption", "v.trim().length > 0").strip()
    page.screenshot(path=str(screenshots / "2_caption.png"), full_page=True)

    page.get_by_role("tab", name="Inpaint / outpaint").click()
    page.click("#edit-last")
    page.locator("#edit-image canvas").first.wait_for(state="visible")
    page.click("#edit-run")  # neither a box nor a brush stroke: refused in the page
    page.get_by_text("the mask is empty").first.wait_for(state="visible")
    page.wait_for_timeout(500)  # the toast's fade-in, for a readable screenshot
    page.screenshot(path=str(screenshots / "3_empty_mask.png"), full_page=True)
    _field(page, "edit-box").fill("0,0,4,4")
    page.click("#edit-run")
    counter = _wait_for_value(page, "edit-counter", r"/^iteration (\d+) \/ \1$/.test(v)")
    assert counter == "iteration 4 / 4"  # 2 x 2 tokens regenerated: one per iteration
    assert _shown_image(page, "edit-result").startswith(("data:", "http"))
    page.screenshot(path=str(screenshots / "4_inpaint.png"), full_page=True)
    names = {"1_text_to_image.png", "2_caption.png", "3_empty_mask.png", "4_inpaint.png"}
    assert names <= {p.name for p in screenshots.iterdir()}
