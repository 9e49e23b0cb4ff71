"""mmar serve in a real browser: headless Chromium (Debian's) driven by Playwright, against the
app served in-process with a tiny random model (its images are noise, but the page must show
them). Generates an image (streamed to "iteration K / K"), captions it, inpaints a brush stroke
(after an empty mask is refused in the page) and then a box, and saves a screenshot of each step:
into pytest's tmp_path, or into $MMAR_SCREENSHOTS when set.

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


def _src(page: Page, elem_id: str) -> str:
    return page.evaluate(
        f"() => {{ const i = document.querySelector('#{elem_id} img'); return i ? i.src : ''; }}"
    )


def _run(page: Page, button: str, counter: str, image: str) -> tuple[str, str]:
    """Click ``button`` and wait for that run's last frame: an image in ``image`` that replaced
    the one shown before and has loaded, with the counter at "iteration k / k" (a frame's image
    and counter arrive together, so an earlier run's counter cannot pass). -> (counter, src)"""
    before = _src(page, image)
    page.click(f"#{button}")
    page.wait_for_function(
        """([image, counter, before]) => {
            const i = document.querySelector(`#${image} img`);
            const e = document.querySelector(`#${counter} textarea, #${counter} input`);
            return i !== null && i.src !== before && i.complete && i.naturalWidth > 0
                && e !== null && /^iteration (\\d+) \\/ \\1$/.test(e.value);
        }""",
        arg=[image, counter, before],
        timeout=WAIT_MS,
    )
    return _field(page, counter).input_value(), _src(page, image)


def _brush_stroke(page: Page, elem_id: str) -> None:
    """Pick the image editor's brush and paint a short stroke over the lower right of its
    canvas."""
    page.locator(f"#{elem_id} button[aria-label='Brush']").first.click()
    box = page.locator(f"#{elem_id} canvas").first.bounding_box()
    assert box is not None
    x, y = box["x"] + 0.6 * box["width"], box["y"] + 0.6 * box["height"]
    page.mouse.move(x, y)
    page.mouse.down()
    for k in range(1, 11):
        page.mouse.move(x + 8 * k, y + 5 * k)
    page.mouse.up()


def test_generate_caption_and_inpaint_in_the_browser(page, screenshots):
    page.get_by_text("grey cells are image tokens not yet revealed").wait_for(state="visible")
    assert "model: tiny" in page.inner_text("#summary")

    _field(page, "t2i-prompt").fill("a red circle")
    counter, src = _run(page, "t2i-run", "t2i-counter", "t2i-image")
    assert counter == f"iteration {K} / {K}"
    assert src.startswith(("data:", "http"))
    page.screenshot(path=str(screenshots / "1_text_to_image.png"), full_page=True)

    page.get_by_role("tab", name="Caption / ask a question").click()
    page.click("#cap-last")
    page.locator("#cap-image img").first.wait_for(state="visible")
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

    _brush_stroke(page, "edit-image")  # the lower right of the image
    counter, src = _run(page, "edit-run", "edit-counter", "edit-result")
    assert src.startswith(("data:", "http"))  # a k / k counter: _run checked it
    page.screenshot(path=str(screenshots / "4_brush.png"), full_page=True)

    page.click("#edit-last")  # the brushed result, without the brush layer
    page.locator("#edit-image canvas").first.wait_for(state="visible")
    _field(page, "edit-box").fill("0,0,4,4")
    counter, src = _run(page, "edit-run", "edit-counter", "edit-result")
    assert counter == "iteration 4 / 4"  # 2 x 2 tokens regenerated, one per iteration
    assert src.startswith(("data:", "http"))
    page.screenshot(path=str(screenshots / "5_box.png"), full_page=True)
    names = {"1_text_to_image.png", "2_caption.png", "3_empty_mask.png", "4_brush.png", "5_box.png"}
    assert names <= {p.name for p in screenshots.iterdir()}
