"""Shared test set-up: offline hub, a fixed thread count, small deterministic defaults."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

# Tiny test models are per-op-overhead bound: one thread is faster than two and does not
# fight a second process for the cores.
torch.set_num_threads(1)


@pytest.fixture
def generator():
    return torch.Generator().manual_seed(0)
