"""dcc_decode benchmark, RTMO-s shapes (K = 17, D = 128, bins 192 / 256) at N = 1, 20, 50 people.

    PYTHONPATH=. python -m pytest benchmarks/test_bench_dcc_decode.py --benchmark-json=out.json

Cases, all from the same keypoint features (N, K, C = 128) and float32:
  unfused_reference   mmpose's decode: bin encodings through the x_fc / y_fc Linear, then logits
  folded_reference    the op's reference: queries with the Linear folded in, in PyTorch
  cpu_kernel          the fused C++ kernel on folded queries
  cpu_kernel_and_fold the fold (two (N*K, 128) x (128, 128) matmuls) plus the kernel: the like-for-
                      like replacement of the unfused reference
  triton / cuda       the GPU kernels, when a GPU is present
Each case's extra_info holds the op's FLOPs (2 K D (Bx + By) per person), its achieved GFLOP/s, the
sgemm GFLOP/s measured in the same run (benchmarks/machine.py), the time that FLOP count takes at
the sgemm rate (the floor), and the speedup over the unfused reference of the same N.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import rtmo_kernels
from benchmarks.machine import machine_info
from rtmo_kernels.reference import dcc as reference

K, D, C = 17, 128, 128
NUM_BINS = (192, 256)
PEOPLE = (1, 20, 50)
# The machine's thread count, and 1: on a shared machine a parallel region waits for whichever
# thread lost its core, so the single-thread numbers are the steadier ratio.
THREADS = sorted({torch.get_num_threads(), 1}, reverse=True)
# The op's FLOPs per person: the logits 2 K D (Bx + By). Building the encodings and the softmax
# are extra work on top, not counted.
OP_FLOPS_PER_PERSON = 2 * K * D * sum(NUM_BINS)
# PERFORMANCE.md's "8.3 MFLOP per person folded" covers the whole decoder (pose_to_kpts, GAU,
# fold, logits); the op's own share is OP_FLOPS_PER_PERSON (1.95 MFLOP).
DECODER_FLOPS_PER_PERSON = 8.3e6

_medians: dict[tuple[str, int, int], float] = {}


class _Case:
    def __init__(self, n: int, device: str):
        g = torch.Generator().manual_seed(n)
        self.feats = torch.randn(n, K, C, generator=g).to(device)
        self.x_fc = nn.Linear(D, C).to(device)
        self.y_fc = nn.Linear(D, C).to(device)
        top_left = torch.rand(n, 2, generator=g) * 500
        size = 20 + torch.rand(n, 2, generator=g) * 300
        self.boxes = torch.cat([top_left, top_left + size], 1).to(device)
        self.priors = (top_left + size * torch.rand(n, 2, generator=g)).to(device)
        self.query_x = reference.fold_queries(self.feats, self.x_fc).detach()
        self.query_y = reference.fold_queries(self.feats, self.y_fc).detach()

    def unfused(self):
        return reference.dcc_decode_unfolded(
            self.feats, self.x_fc, self.y_fc, self.boxes, self.priors, NUM_BINS
        )

    def folded(self, backend: str):
        return rtmo_kernels.dcc_decode(
            self.query_x, self.query_y, self.boxes, self.priors, NUM_BINS, backend=backend
        )

    def fold_and_kernel(self, backend: str):
        query_x = reference.fold_queries(self.feats, self.x_fc)
        query_y = reference.fold_queries(self.feats, self.y_fc)
        return rtmo_kernels.dcc_decode(
            query_x, query_y, self.boxes, self.priors, NUM_BINS, backend=backend
        )


def _gpu_backends() -> list[str]:
    status = rtmo_kernels.backends()
    if not torch.cuda.is_available():
        return []
    return [name for name in ("triton", "cuda") if status[name].available]


CASES = [
    ("unfused_reference", "cpu", lambda c: c.unfused()),
    ("folded_reference", "cpu", lambda c: c.folded("reference")),
    ("cpu_kernel", "cpu", lambda c: c.folded("cpu")),
    ("cpu_kernel_and_fold", "cpu", lambda c: c.fold_and_kernel("cpu")),
] + [(name, "cuda", lambda c, b=name: c.folded(b)) for name in _gpu_backends()]


@pytest.fixture
def torch_threads(request):
    previous = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(previous)


@pytest.mark.parametrize("torch_threads", THREADS, indirect=True, ids=lambda t: f"threads{t}")
@pytest.mark.parametrize("n", PEOPLE)
@pytest.mark.parametrize(("name", "device", "run"), CASES, ids=[c[0] for c in CASES])
def test_dcc_decode(benchmark, torch_threads, name, device, run, n):
    case = _Case(n, device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def call():
        out = run(case)
        sync()
        return out

    rates = machine_info(torch_threads)
    with torch.inference_mode():
        benchmark(call)
    median = benchmark.stats.stats.median
    _medians[(name, n, torch_threads)] = median
    flops = OP_FLOPS_PER_PERSON * n
    floor_s = flops / (rates["sgemm_gflops"] * 1e9)
    benchmark.extra_info.update(
        {
            "case": name,
            "device": device,
            "people": n,
            "threads": torch_threads,
            "shapes": {"K": K, "D": D, "C": C, "num_bins": NUM_BINS},
            "dtype": "float32",
            "machine": rates,
            "op_flops": flops,
            "achieved_gflops": flops / median / 1e9,
            "sgemm_gflops": rates["sgemm_gflops"],
            "fraction_of_sgemm": flops / median / 1e9 / rates["sgemm_gflops"],
            "op_floor_ms": floor_s * 1e3,
            "time_over_op_floor": median / floor_s,
            "decoder_floor_ms": DECODER_FLOPS_PER_PERSON * n / (rates["sgemm_gflops"] * 1e9) * 1e3,
        }
    )
    unfused = _medians.get(("unfused_reference", n, torch_threads))
    if unfused is not None:
        benchmark.extra_info["speedup_over_unfused_reference"] = unfused / median
