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


@pytest.fixture(scope="session")
def calibrated_rtmo_t():
    """Calibrated RTMO-t (tests/calibrated.py) on three 160x160 noise images, with more NMS
    survivors than MAX_DET, and its float64 reference prediction: (model, images, truth). Shared
    by the exported-graph tests (full and raw head), which must not modify the model."""
    from calibrated import calibrated_model, float64_predictions, noise_images

    images = noise_images(3, (160, 160), seed=1)
    model = calibrated_model("rtmo-t", images, centre_logit=0.0)
    return model, images, float64_predictions(model, images)
