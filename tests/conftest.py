"""Shared test set-up: offline hub, a fixed thread count, small deterministic defaults."""

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# precision: auto caches its per-machine measurement; tests keep theirs out of the user's cache
os.environ.setdefault("MMAR_CACHE_DIR", tempfile.mkdtemp(prefix="mmar-test-cache-"))

import pytest
import torch

# Tiny test models are per-op-overhead bound: one thread is faster than two and does not
# fight a second process for the cores.
torch.set_num_threads(1)


@pytest.fixture
def generator():
    return torch.Generator().manual_seed(0)
