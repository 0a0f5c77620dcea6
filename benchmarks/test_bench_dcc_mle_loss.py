"""dcc_mle_loss benchmark: the MLE loss forward + backward at 200 / 1000 / 4000 positives, RTMO-s
shapes (K = 17, D = C = 128, bins 192 / 256), float32.

    PYTHONPATH=. python -m pytest benchmarks/test_bench_dcc_mle_loss.py --benchmark-json=out.json

Every case starts from the same keypoint features (N, K, C), the x_fc / y_fc Linears, predicted
boxes and sigma_fc outputs, and returns the gradients of the loss w.r.t. the features, both
Linears' weights, the boxes and the sigmas (what training needs):
  unfused_reference   mmpose's training path: bin encodings through the Linears, materialised
                      (N, B, D) encodings and (N, K, B) logits, autograd
  folded_reference    the queries folded (feats @ W), then the op's reference (still materialised)
  cpu_kernel          the fold, then the fused op on the C++ CPU kernel
  triton / cuda       the fused op on the GPU kernels, when a GPU is present
Each case's extra_info holds the peak memory of one forward + backward (tensor allocations, from
the profiler's memory events: honest on the CPU, where tracemalloc does not see torch's
allocator; the CPU kernel's per-thread scratch of ~80 KB, malloc'd outside torch, is not in it),
the speedup and memory ratio over the unfused reference of the same N, and the accuracy of the
same case on ACCURACY_POSITIVES positives against mmpose's unfused path in float64: the loss's
absolute and each gradient's relative L2 error (the unfused_reference row gives the error of
float32 itself).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

import rtmo_kernels
from rtmo_kernels.reference import dcc_mle_loss as reference
from rtmo_kernels.reference.dcc import fold_queries

K, D, C = 17, 128, 128
NUM_BINS = (192, 256)
POSITIVES = (200, 1000, 4000)
ACCURACY_POSITIVES = 64
ROUNDS = 5
# The references materialise ~1.5 MB per positive (encodings, logits and their gradients): at
# 4000 positives ~6 GB. They run there only with this much memory available.
LARGE_REFERENCE_POSITIVES = 4000
LARGE_REFERENCE_MIN_AVAILABLE_GB = 12.0

_results: dict[tuple[str, int], dict] = {}


class Case:
    """Inputs of one batch of positives, and the loss + gradients through each implementation."""

    def __init__(self, n: int, device: str = "cpu", dtype: torch.dtype = torch.float32):
        g = torch.Generator().manual_seed(n)
        torch.manual_seed(n)  # the Linears' initialisation

        def put(t: torch.Tensor) -> torch.Tensor:
            return t.to(device, dtype)

        self.feats = put(torch.randn(n, K, C, generator=g) * 0.1).requires_grad_()
        self.x_fc = nn.Linear(D, C).to(device, dtype)
        self.y_fc = nn.Linear(D, C).to(device, dtype)
        top_left = torch.rand(n, 2, generator=g) * 500
        size = 20 + torch.rand(n, 2, generator=g) * 300
        self.boxes = put(torch.cat([top_left, top_left + size], 1)).requires_grad_()
        self.priors = put(top_left + size * torch.rand(n, 2, generator=g))
        self.sigmas = put(0.1 * torch.rand(n, K, generator=g)).requires_grad_()
        unit = -0.15 + 1.3 * torch.rand(n, K, 2, generator=g)
        self.targets = put(top_left[:, None, :] + size[:, None, :] * unit)
        self.areas = put(0.53 * size.prod(1))
        self.visible = put((torch.rand(n, K, generator=g) > 0.2).float())

    def _wrt(self) -> tuple[torch.Tensor, ...]:
        return (self.feats, self.x_fc.weight, self.y_fc.weight, self.boxes, self.sigmas)

    def _backward(self, nll: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # mmpose's MLECCLoss: times visibility, mean over K, mean over the positives.
        loss = (nll * self.visible).mean()
        return (loss.detach(), *torch.autograd.grad(loss, self._wrt(), allow_unused=True))

    def unfused(self) -> tuple[torch.Tensor, ...]:
        nll, _ = reference.dcc_mle_loss_unfolded(
            self.feats, self.x_fc, self.y_fc, self.boxes, self.priors, self.sigmas,
            self.targets, self.areas, NUM_BINS,
        )  # fmt: skip
        return self._backward(nll)

    def folded(self, backend: str) -> tuple[torch.Tensor, ...]:
        nll, _ = rtmo_kernels.dcc_mle_loss(
            fold_queries(self.feats, self.x_fc), fold_queries(self.feats, self.y_fc),
            self.boxes, self.priors, self.sigmas, self.targets, self.areas, NUM_BINS,
            backend=backend,
        )  # fmt: skip
        return self._backward(nll)


def peak_tensor_bytes(fn: Callable[[], object]) -> int:
    """Peak of the bytes of tensors allocated by fn and alive at once (the running sum of the
    profiler's allocation and free events on the CPU), above what was allocated before."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    peak = current = 0
    for event in events:
        current += event.nbytes()
        peak = max(peak, current)
    return peak


def accuracy(got: tuple[torch.Tensor, ...], want: tuple[torch.Tensor, ...]) -> dict[str, float]:
    """The loss's absolute difference and each gradient's relative L2 difference."""
    names = ("loss", "feats", "x_fc", "y_fc", "boxes", "sigmas")
    out = {"loss_abs": (got[0].double() - want[0].double()).abs().item()}
    for name, a, b in zip(names[1:], got[1:], want[1:], strict=True):
        diff = (a.double() - b.double()).norm() / b.double().norm().clamp(min=1e-30)
        out[f"grad_{name}_rel_l2"] = diff.item()
    return out


def _accuracy(run: Callable[[Case], tuple[torch.Tensor, ...]], device: str) -> dict[str, float]:
    """run's loss and gradients on ACCURACY_POSITIVES positives against the float64 unfused path."""
    got = run(Case(ACCURACY_POSITIVES, device))
    want = Case(ACCURACY_POSITIVES, "cpu", torch.float64).unfused()
    return accuracy(tuple(t.cpu() for t in got), want)


def _gpu_backends() -> list[str]:
    if not torch.cuda.is_available():
        return []
    status = rtmo_kernels.backends()
    return [name for name in ("triton", "cuda") if status[name].available]


def _available_gb() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("inf")


CASES = [
    ("unfused_reference", "cpu", lambda c: c.unfused()),
    ("folded_reference", "cpu", lambda c: c.folded("reference")),
    ("cpu_kernel", "cpu", lambda c: c.folded("cpu")),
] + [(name, "cuda", lambda c, b=name: c.folded(b)) for name in _gpu_backends()]


@pytest.mark.parametrize("n", POSITIVES)
@pytest.mark.parametrize(("name", "device", "run"), CASES, ids=[c[0] for c in CASES])
def test_dcc_mle_loss(benchmark, name, device, run, n):
    is_reference = name.endswith("reference")
    if is_reference and n >= LARGE_REFERENCE_POSITIVES:
        available = _available_gb()
        if available < LARGE_REFERENCE_MIN_AVAILABLE_GB:
            pytest.skip(f"{name} at {n} positives needs ~6 GB; {available:.1f} GB available")
    case = Case(n, device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def call():
        out = run(case)
        sync()
        return out

    call()  # warm-up
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        call()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = peak_tensor_bytes(call)
    benchmark.pedantic(call, rounds=ROUNDS, iterations=1)
    median = benchmark.stats.stats.median
    _results[(name, n)] = {"median": median, "peak": peak}
    benchmark.extra_info.update(
        {
            "case": name,
            "device": device,
            "positives": n,
            "threads": torch.get_num_threads(),
            "shapes": {"K": K, "D": D, "C": C, "num_bins": NUM_BINS},
            "dtype": "float32",
            "peak_memory_mb": peak / 2**20,
            "accuracy_vs_float64": _accuracy(run, device),
        }
    )
    unfused = _results.get(("unfused_reference", n))
    if unfused is not None:
        benchmark.extra_info["speedup_over_unfused_reference"] = unfused["median"] / median
        benchmark.extra_info["memory_ratio_unfused_over_this"] = unfused["peak"] / max(peak, 1)
