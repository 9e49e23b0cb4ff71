"""Shared test set-up: offline hub, a fixed thread count, small deterministic defaults."""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# precision: auto caches its per-machine measurement; tests keep theirs out of the user's cache
if "MMAR_CACHE_DIR" not in os.environ:
    os.environ["MMAR_CACHE_DIR"] = tempfile.mkdtemp(prefix="mmar-test-cache-")
    atexit.register(shutil.rmtree, os.environ["MMAR_CACHE_DIR"], ignore_errors=True)

import pytest
import torch

# Tiny test models are per-op-overhead bound: one thread is faster than two and does not
# fight a second process for the cores.
torch.set_num_threads(1)


@pytest.fixture
def generator():
    return torch.Generator().manual_seed(0)
