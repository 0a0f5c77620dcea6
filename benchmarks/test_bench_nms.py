"""NMS speed: 100 / 500 / 2000 candidates clustered like real detections, batch 1 and 8.

Compares the C++ CPU kernel (batched_nms and nms_padded) with the reference, torchvision's CPU
batched_nms and per-image nms, and a Python-loop NMS in the style of mmpose's `nms_torch`; Triton
and CUDA when a GPU is present. Run:
    PYTHONPATH=. python -m pytest benchmarks/test_bench_nms.py --benchmark-json=nms.json
Ratios are taken between medians of the same run (PERFORMANCE.md target 2).
"""

from __future__ import annotations

import pytest
import torch
import torchvision

import rtmo_kernels
from tests.nms_cases import clustered_boxes

IOU_THRESHOLD = 0.65  # every RTMO config
SIZES = (100, 500, 2000)
BATCHES = (1, 8)


def python_loop_nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """Greedy NMS as a Python loop over kept boxes (one IoU row per kept box), as mmpose does."""
    order = torch.argsort(scores, descending=True)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    kept = []
    while order.numel() > 0:
        best, rest = order[0], order[1:]
        kept.append(best)
        lt = torch.maximum(boxes[best, :2], boxes[rest, :2])
        rb = torch.minimum(boxes[best, 2:], boxes[rest, 2:])
        inter = (rb - lt).clamp(min=0).prod(dim=1)
        union = (area[best] + area[rest] - inter).clamp(min=1e-6)
        order = rest[inter / union <= threshold]
    return torch.stack(kept) if kept else order


def make_batch(n: int, batch: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    # About one person per 100 candidates, at least 3: many overlapping candidates per person.
    pairs = [clustered_boxes(n, people=3 + n // 100, seed=17 * n + i) for i in range(batch)]
    boxes = torch.stack([b for b, _ in pairs]).to(device)
    return boxes, torch.stack([s for _, s in pairs]).to(device)


def flat(boxes: torch.Tensor, scores: torch.Tensor):
    batch, n = scores.shape
    image = torch.arange(batch, device=boxes.device).repeat_interleave(n)
    return boxes.reshape(-1, 4), scores.reshape(-1), image


def batched(backend: str):
    def run(boxes, scores):
        return rtmo_kernels.batched_nms(*flat(boxes, scores), IOU_THRESHOLD, backend=backend)

    return run


def padded(backend: str):
    def run(boxes, scores):
        return rtmo_kernels.nms_padded(
            boxes, scores, IOU_THRESHOLD, 0.0, scores.shape[1], backend=backend
        )

    return run


def torchvision_nms(boxes, scores):
    return torchvision.ops.batched_nms(*flat(boxes, scores), IOU_THRESHOLD)


def torchvision_nms_per_image(boxes, scores):
    # torchvision's single-class nms, one call per image: its fastest CPU path here (batched_nms
    # above 1000 boxes loops over idxs in Python and measured several times slower).
    return [torchvision.ops.nms(b, s, IOU_THRESHOLD) for b, s in zip(boxes, scores, strict=True)]


def python_loop(boxes, scores):
    return [python_loop_nms(b, s, IOU_THRESHOLD) for b, s in zip(boxes, scores, strict=True)]


CPU_IMPLS = {
    "cpu_batched_nms": batched("cpu"),
    "cpu_nms_padded": padded("cpu"),
    "reference": batched("reference"),
    "torchvision": torchvision_nms,
    "torchvision_nms_per_image": torchvision_nms_per_image,
    "python_loop": python_loop,
}
GPU_IMPLS = {
    "cuda_batched_nms": batched("cuda"),
    "cuda_nms_padded": padded("cuda"),
    "triton_batched_nms": batched("triton"),
    "triton_nms_padded": padded("triton"),
    "torchvision_cuda": torchvision_nms,
}


def check_same_kept_set(result, boxes, scores) -> int:
    """Every implementation keeps what torchvision keeps (scores are distinct here)."""
    expected = torchvision_nms(boxes, scores)
    if isinstance(result, tuple):  # nms_padded: rows of image-local indices
        keep, num = result
        n = scores.shape[1]
        result = torch.cat([keep[i, : num[i]] + i * n for i in range(len(num))])
        expected = expected[torch.argsort(expected // n, stable=True)]
    elif isinstance(result, list):
        n = scores.shape[1]
        result = torch.cat([k + i * n for i, k in enumerate(result)])
        expected = expected[torch.argsort(expected // n, stable=True)]
    assert torch.equal(result.cpu(), expected.cpu())
    return len(expected)


# Seconds per call at 2000 x 8: a fixed, small number of rounds keeps the suite to minutes.
SLOW_IMPLS = ("reference", "python_loop")
SLOW_ROUNDS = 5


def _bench(benchmark, name, impl, n, batch, device):
    boxes, scores = make_batch(n, batch, device)
    kept = check_same_kept_set(impl(boxes, scores), boxes, scores)
    benchmark.extra_info.update(
        {"candidates": n, "batch": batch, "kept": kept, "dtype": "float32", "device": device}
    )
    benchmark.extra_info["torch"] = torch.__version__
    benchmark.extra_info["threads"] = torch.get_num_threads()
    if device == "cuda":

        def timed():
            out = impl(boxes, scores)
            torch.cuda.synchronize()
            return out

        benchmark(timed)
    elif name in SLOW_IMPLS:
        benchmark.pedantic(impl, args=(boxes, scores), rounds=SLOW_ROUNDS, iterations=1)
    else:
        benchmark(impl, boxes, scores)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("impl", list(CPU_IMPLS))
def test_nms_cpu(benchmark, impl, n, batch):
    benchmark.group = f"nms cpu n={n} batch={batch}"
    _bench(benchmark, impl, CPU_IMPLS[impl], n, batch, "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("impl", list(GPU_IMPLS))
def test_nms_gpu(benchmark, impl, n, batch):
    if not rtmo_kernels.backends()[impl.split("_")[0]].available and impl != "torchvision_cuda":
        pytest.skip(rtmo_kernels.backends()[impl.split("_")[0]].reason)
    benchmark.group = f"nms gpu n={n} batch={batch}"
    _bench(benchmark, impl, GPU_IMPLS[impl], n, batch, "cuda")
