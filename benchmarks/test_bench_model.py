"""End-to-end model speed on the CPU: RTMO-s at 640x640, one image, `model.predict` (network +
threshold/NMS + DCC + split) with the fused kernels, with the reference ops (mmpose's way:
reference NMS, unfolded DCC), and with the kernels on the reparameterised model. Run:
    PYTHONPATH=. python -m pytest benchmarks/test_bench_model.py --benchmark-json=model.json
Ratios are taken between medians of the same run.
"""

from __future__ import annotations

import copy

import pytest
import torch

from rtmo.model import RTMOModel
from rtmo.model.postprocess import postprocess_padded, split_predictions
from tests.test_model_predict import lively_model

VARIANT = "rtmo-s"
SIDE = 640
MAX_DET = 100  # the predictor's default


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.rand(1, 3, SIDE, SIDE, generator=gen) * 255


@pytest.fixture(scope="module")
def models() -> dict[str, RTMOModel]:
    # Calibrated random weights: tens of people-like survivors per image, like a trained model.
    kernels = lively_model(VARIANT)
    reference = copy.deepcopy(kernels)
    reference.use_kernels = False
    fused = copy.deepcopy(kernels).reparameterize()
    return {"kernels": kernels, "reference": reference, "kernels_reparameterized": fused}


@pytest.mark.parametrize("mode", ["kernels", "reference", "kernels_reparameterized"])
def test_predict_rtmo_s_640(benchmark, models, image, mode):
    model = models[mode]
    benchmark.group = f"{VARIANT} {SIDE}x{SIDE} CPU predict, {torch.get_num_threads()} threads"
    benchmark.extra_info.update(variant=VARIANT, input=[1, 3, SIDE, SIDE], max_det=MAX_DET)
    with torch.inference_mode():
        model.predict(image, max_det=MAX_DET)  # warm-up
        result = benchmark.pedantic(
            model.predict, args=(image,), kwargs={"max_det": MAX_DET}, rounds=5, iterations=1
        )
    benchmark.extra_info["detections"] = len(result[0]["scores"])


def test_network_only_rtmo_s_640(benchmark, models, image):
    """The dense forward alone (backbone, neck, head convs): what the post-process adds to."""
    model = models["kernels"]
    benchmark.group = f"{VARIANT} {SIDE}x{SIDE} CPU predict, {torch.get_num_threads()} threads"
    with torch.inference_mode():
        model(image)
        benchmark.pedantic(model, args=(image,), rounds=5, iterations=1)


@pytest.mark.parametrize("mode", ["kernels", "reference"])
def test_postprocess_rtmo_s_640(benchmark, models, image, mode):
    """Threshold + NMS + DCC + split from fixed dense outputs: the part the kernels replace."""
    model = models[mode]
    benchmark.group = f"{VARIANT} {SIDE}x{SIDE} CPU post-process, {torch.get_num_threads()} threads"
    with torch.inference_mode():
        dense = model(image)
        size = (SIDE, SIDE)

        def run():
            padded = postprocess_padded(
                dense, model.head.dcc, size, 0.1, 0.65, MAX_DET, model.use_kernels, "auto"
            )
            return split_predictions(padded)

        run()
        result = benchmark.pedantic(run, rounds=20, iterations=1)
    benchmark.extra_info["detections"] = len(result[0]["scores"])
