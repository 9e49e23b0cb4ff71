"""The Gradio app of ``mmar serve``: text to image (streamed), caption / questions, inpaint /
outpaint (streamed), over one loaded MMAR.

    demo = build_demo(Service(model, ServeConfig(), "runs/quickstart"))
    launch(demo, config)                # blocks; 127.0.0.1:7860 unless the config says otherwise

Every model call shares one concurrency slot group ("model"): at most ``concurrency`` run at
once, whichever tab sent them, and at most ``max_queue`` wait (Gradio's queue). When the queue is
full, Gradio refuses the request with HTTP 503 ("Queue is full. Max size is Q ..."); the page
shows "This application is currently busy. Please try again." and gradio_client raises
``QueueError("Queue is full! Please try again.")`` (Gradio 6.31 hard-codes these texts). Bad
input is shown in the page (gr.Error, never a crash) and logged; so is an unexpected failure,
with its traceback in the log only.

The handlers take the raw upload payloads (``preprocess=False``): Gradio has already moved the
files into its cache and checked that they came from its upload route, and the app opens them
itself, so that a file that is not an image, or too large, gets the app's message
(mmar.serve.inputs) rather than a decoding error, and every field is checked by the handlers.

Messages are plain text (they may quote the user's words). The page renders a toast as HTML
through its sanitizer (scripts and unsafe markup removed), so they are not escaped: API clients
read them as they are.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from PIL import Image

from mmar.diffusion.schedulers import SCHEDULERS
from mmar.pipelines.editing import DIRECTIONS
from mmar.serve.config import ServeConfig, is_loopback
from mmar.serve.handlers import MODES, Frame, Service
from mmar.serve.inputs import InputError, Notice, upscale

if TYPE_CHECKING:
    import gradio as gr

log = logging.getLogger("mmar.serve")
CONCURRENCY_ID = "model"  # every model call shares the `concurrency` slots

GREY_NOTE = (
    "The image forms over K masked-autoregressive iterations; **grey cells are image tokens not "
    "yet revealed**. Images are shown enlarged (nearest neighbour): each square is one model "
    "pixel."
)


def _notify(notice: Notice) -> None:
    import gradio as gr

    log.info("notice: %s", notice.message)
    show = gr.Info if notice.level == "info" else gr.Warning
    show(notice.message)


class _Reported:
    """``with _Reported(task):`` turns a refusal (InputError) into gr.Error with its message and
    an unexpected failure into gr.Error that points at the log (where its traceback goes); both
    are logged. Cancelling a stream (GeneratorExit) passes through."""

    def __init__(self, task: str):
        self.task = task

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, e: BaseException | None, tb: object) -> None:
        import gradio as gr

        if e is None or not isinstance(e, Exception) or isinstance(e, gr.Error):
            return
        if isinstance(e, InputError):
            log.warning("%s: refused: %s", self.task, e)
            raise gr.Error(str(e), title="Bad input", print_exception=False) from None
        log.error("%s failed", self.task, exc_info=e)
        raise gr.Error(
            f"{self.task} failed ({type(e).__name__}); the server log has the details",
            print_exception=False,
        ) from None


def _path(payload: Any) -> str | None:
    """The server-side path of a raw file payload (a FileData dict), or None."""
    if isinstance(payload, dict):
        return payload.get("path")
    return None


def _frame_outputs(frame: Frame, size: int) -> tuple[Image.Image, str, Any]:
    """(the enlarged image, the counter, the new "last image" state or no change)."""
    import gradio as gr

    return upscale(frame.image, size), frame.counter, frame.image if frame.last else gr.skip()


def summary_markdown(service: Service) -> str:
    return "\n".join(f"- {line}" for line in service.summary())


def build_demo(service: Service) -> gr.Blocks:
    """The app's gr.Blocks, queued as the service's ServeConfig says."""
    import gradio as gr

    model, cfg = service.model, service.config
    s, n_tokens = model.sampling, model.processor.num_image_tokens
    display = cfg.display_size
    events: dict[str, Any] = {"concurrency_limit": "default", "concurrency_id": CONCURRENCY_ID}

    with gr.Blocks(title="mmar serve", analytics_enabled=False) as demo:
        gr.Markdown("# MMAR: text to image, captions, questions, editing")
        gr.Markdown(summary_markdown(service), elem_id="summary")
        last = gr.State(None)  # the last generated or edited image, the model's size
        with gr.Accordion("Sampling settings (text to image and editing)", open=False):
            with gr.Row():
                num_iter = gr.Slider(
                    1,
                    n_tokens,
                    value=min(s.num_iter, n_tokens),
                    step=1,
                    label=f"iterations K (1 to N = {n_tokens} tokens)",
                )
                num_steps = gr.Slider(
                    1,
                    model.config.diffusion.num_timesteps,
                    value=s.num_steps,
                    step=1,
                    label="diffusion steps per token",
                )
                scheduler = gr.Dropdown(list(SCHEDULERS), value=s.scheduler, label="scheduler")
            with gr.Row():
                guidance = gr.Number(s.guidance_scale, minimum=0, label="guidance scale (1: none)")
                temperature = gr.Number(s.temperature, minimum=0, label="temperature")
                seed = gr.Number(0, precision=0, label="seed")
        settings = [num_iter, guidance, num_steps, scheduler, temperature]

        with gr.Tab("Text to image"):
            prompt = gr.Textbox(label="prompt", placeholder="a red circle", elem_id="t2i-prompt")
            generate = gr.Button("Generate", variant="primary", elem_id="t2i-run")
            gr.Markdown(GREY_NOTE)
            t2i_image = gr.Image(
                label="image", format="png", interactive=False, elem_id="t2i-image"
            )
            t2i_counter = gr.Textbox(label="progress", interactive=False, elem_id="t2i-counter")

        with gr.Tab("Caption / ask a question"), gr.Row():
            with gr.Column():
                cap_image = gr.Image(
                    label="image",
                    sources=["upload", "clipboard"],
                    type="filepath",
                    format="png",
                    elem_id="cap-image",
                )
                cap_last = gr.Button("Use the last generated image", elem_id="cap-last")
            with gr.Column():
                caption_run = gr.Button("Caption", variant="primary", elem_id="cap-run")
                caption = gr.Textbox(label="caption", interactive=False, elem_id="caption")
                question = gr.Textbox(
                    label="question", placeholder="what colour is it?", elem_id="question"
                )
                ask = gr.Button("Ask", elem_id="ask-run")
                answer = gr.Textbox(label="answer", interactive=False, elem_id="answer")

        with gr.Tab("Inpaint / outpaint"):
            with gr.Row():
                with gr.Column():
                    editor = gr.ImageEditor(
                        label="image: paint the region to regenerate (inpaint)",
                        sources=["upload", "clipboard"],
                        format="png",
                        elem_id="edit-image",
                    )
                    edit_last = gr.Button("Use the last generated image", elem_id="edit-last")
                with gr.Column():
                    mode = gr.Radio(list(MODES), value="inpaint", label="mode")
                    box = gr.Textbox(
                        label=f"inpaint box x0,y0,x1,y1 in the model's pixels (0 to "
                        f"{service.size}), optional with a brush mask",
                        placeholder=f"e.g. 0,0,{service.size // 2},{service.size}",
                        elem_id="edit-box",
                    )
                    with gr.Row():
                        direction = gr.Dropdown(
                            list(DIRECTIONS), value="right", label="outpaint direction"
                        )
                        amount = gr.Slider(
                            0.05,
                            0.95,
                            value=0.5,
                            step=0.05,
                            label="outpaint amount (share of the canvas)",
                        )
                    edit_prompt = gr.Textbox(label="prompt", elem_id="edit-prompt")
                    edit_run = gr.Button("Run", variant="primary", elem_id="edit-run")
            edit_image = gr.Image(
                label="result", format="png", interactive=False, elem_id="edit-result"
            )
            edit_counter = gr.Textbox(label="progress", interactive=False, elem_id="edit-counter")

        def run_generate(text: str, *form: Any) -> Iterator[tuple[Image.Image, str, Any]]:
            with _Reported("text to image"):
                sampling = service.sampling(*form[:5])
                log.info("text to image: %r, %s, seed %s", text, sampling, form[5])
                for frame in service.generate(text, sampling, form[5], _notify):
                    yield _frame_outputs(frame, display)

        def run_caption(image: Any) -> str:
            with _Reported("caption"):
                return service.caption(_path(image), _notify)

        def run_answer(image: Any, q: str) -> str:
            with _Reported("answer"):
                return service.answer(_path(image), q, _notify)

        def run_edit(
            value: Any, mode_: str, box_: str, direction_: str, amount_: Any, text: str, *form: Any
        ) -> Iterator[tuple[Image.Image, str, Any]]:
            with _Reported(mode_ if mode_ in MODES else "edit"):
                value = value if isinstance(value, dict) else {}
                layers = [p for p in map(_path, value.get("layers") or []) if p]
                sampling = service.sampling(*form[:5])
                log.info("%s: %r, box %r, %s, seed %s", mode_, text, box_, sampling, form[5])
                frames = service.edit(
                    _path(value.get("background")),
                    layers,
                    mode_,
                    box_,
                    direction_,
                    amount_,
                    text,
                    sampling,
                    form[5],
                    _notify,
                )
                for frame in frames:
                    yield _frame_outputs(frame, display)

        def last_for_caption(image: Image.Image | None) -> Image.Image:
            if image is None:
                raise gr.Error("nothing generated yet: generate an image first (Text to image)")
            return image

        def last_for_editor(image: Image.Image | None) -> dict[str, Any]:
            big = upscale(last_for_caption(image), display)
            return {"background": big, "layers": [], "composite": big}

        form = [*settings, seed]
        t2i_out = [t2i_image, t2i_counter, last]
        # a second trigger of a documented endpoint, and the buttons that copy the last image
        hidden: dict[str, Any] = {"api_visibility": "undocumented"}
        # raw values: the handlers open the uploads themselves and check every field, so that
        # each refusal names its field (a slider's own check would say "Value 0 is less ...")
        raw: dict[str, Any] = {"preprocess": False, **events}
        generate.click(run_generate, [prompt, *form], t2i_out, api_name="generate", **raw)
        prompt.submit(run_generate, [prompt, *form], t2i_out, **hidden, **raw)
        caption_run.click(run_caption, [cap_image], [caption], api_name="caption", **raw)
        ask.click(run_answer, [cap_image, question], [answer], api_name="answer", **raw)
        question.submit(run_answer, [cap_image, question], [answer], **hidden, **raw)
        edit_in = [editor, mode, box, direction, amount, edit_prompt, *form]
        edit_run.click(run_edit, edit_in, [edit_image, edit_counter, last], api_name="edit", **raw)
        cap_last.click(last_for_caption, [last], [cap_image], queue=False, **hidden)
        edit_last.click(last_for_editor, [last], [editor], queue=False, **hidden)

    demo.queue(default_concurrency_limit=cfg.concurrency, max_size=cfg.max_queue)
    return demo


def launch(demo: gr.Blocks, config: ServeConfig, block: bool = True) -> None:
    """Serve ``demo`` on ``config.host``:``config.port`` (never shared through Gradio's
    tunnel) and log its URL; warns in the log when the host is reachable from other machines.
    ``block=False`` returns once the server is up (tests); else it serves until Ctrl+C."""
    if not is_loopback(config.host):
        log.warning(
            "listening on %s: the app is reachable from the network (anyone who can reach this "
            "machine on port %d can use the model); use --host 127.0.0.1 to keep it local",
            config.host,
            config.port,
        )
    demo.launch(
        server_name=config.host,
        server_port=config.port,
        share=False,
        max_file_size=config.max_upload_bytes,
        prevent_thread_lock=True,
        ssr_mode=False,
        show_error=False,
        footer_links=["api"],
        quiet=True,  # Gradio's banner suggests share=True, which this app never offers
    )
    log.info("serving on http://%s:%d/", config.host, config.port)
    if block:
        demo.block_thread()
