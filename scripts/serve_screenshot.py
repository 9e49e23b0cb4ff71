"""Screenshots of `mmar serve` over a trained checkpoint, for the README (docs/serve_*.png).

    python scripts/serve_screenshot.py --model runs/quickstart --out docs \
        --prompt "a handwritten digit seven" --box 0,0,32,16 --edit-prompt "a handwritten digit one"

Serves the model in-process on a free 127.0.0.1 port and drives the page in headless Chromium
(Debian's `chromium`, through Playwright). Writes:
  serve_forming.png   text to image while it forms (the first frame past a quarter of K)
  serve_screenshot.png  the finished image, then captioned
  serve_inpaint.png   the generated image with --box regenerated from --edit-prompt
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import mmar
from mmar.serve.app import build_demo, launch
from mmar.serve.config import ServeConfig, free_port
from mmar.serve.handlers import Service

WAIT_MS = 120_000


def field(page, elem_id: str):
    return page.locator(f"#{elem_id} textarea, #{elem_id} input").first


def wait_counter(page, elem_id: str, test: str) -> None:
    """Until the counter "iteration k / K" of ``elem_id`` passes ``test`` (JS on k and K)."""
    page.wait_for_function(
        f"""() => {{ const e = document.querySelector('#{elem_id} textarea, #{elem_id} input');
            const m = e ? /^iteration (\\d+) \\/ (\\d+)$/.exec(e.value) : null;
            if (!m) return false; const k = +m[1], K = +m[2]; return {test}; }}""",
        timeout=WAIT_MS,
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--out", default="docs")
    p.add_argument("--prompt", default="a handwritten digit seven")
    p.add_argument("--box", default="0,0,32,16")
    p.add_argument("--edit-prompt", default="a handwritten digit one")
    args = p.parse_args()
    from playwright.sync_api import sync_playwright

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = mmar.MMAR.from_pretrained(args.model, device="cpu")
    cfg = ServeConfig(port=free_port())
    demo = build_demo(Service(model, cfg, args.model))
    launch(demo, cfg, block=False)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=shutil.which("chromium"), args=["--no-sandbox"]
            )
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.set_default_timeout(WAIT_MS)
            page.goto(f"http://127.0.0.1:{cfg.port}/")
            field(page, "t2i-prompt").fill(args.prompt)
            page.click("#t2i-run")
            wait_counter(page, "t2i-counter", "k >= K / 4 && k < K")
            page.screenshot(path=str(out / "serve_forming.png"))
            wait_counter(page, "t2i-counter", "k == K")
            page.wait_for_timeout(500)
            page.screenshot(path=str(out / "serve_screenshot.png"))

            page.get_by_role("tab", name="Inpaint / outpaint").click()
            page.click("#edit-last")
            page.locator("#edit-image canvas").first.wait_for(state="visible")
            field(page, "edit-box").fill(args.box)
            field(page, "edit-prompt").fill(args.edit_prompt)
            page.click("#edit-run")
            wait_counter(page, "edit-counter", "k == K")
            page.wait_for_timeout(500)
            page.screenshot(path=str(out / "serve_inpaint.png"), full_page=True)
            browser.close()
    finally:
        demo.close()
    for name in ("serve_forming.png", "serve_screenshot.png", "serve_inpaint.png"):
        print(out / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
