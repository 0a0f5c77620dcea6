"""Test-wide set-up: Triton runs through its interpreter when there is no GPU, RNG state is restored
after every test, and `needs_cuda` skips GPU-only cases on CPU machines."""

import os

import torch

if not torch.cuda.is_available():
    # Must be set before anything imports triton, so every Triton kernel is testable on CPU tensors.
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "needs_cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _restore_rng_state():
    cpu_state = torch.get_rng_state()
    cuda_state = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    yield
    torch.set_rng_state(cpu_state)
    if cuda_state is not None:
        torch.cuda.set_rng_state_all(cuda_state)
