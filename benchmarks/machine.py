"""This machine's own rates, measured in the benchmark run: sgemm GFLOP/s and memcpy GB/s at the
torch thread count, so kernels report achieved throughput against what the machine does.

Shared, noisy machines: every rate is the median of several timed repetitions after a warm-up.
"""

from __future__ import annotations

import functools
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass

import torch

# 1024^3 sgemm: 2.1 GFLOP, ~30-70 ms on a 2-core AVX-512 machine; large enough for MKL's peak
# blocking, small enough to repeat.
SGEMM_SIZE = 1024
# 64 MiB copies: far beyond the caches, so the memcpy rate is DRAM's.
MEMCPY_BYTES = 64 * 2**20
REPEATS = 7


@dataclass(frozen=True)
class MachineRates:
    """Rates measured here, with what they were measured with."""

    sgemm_gflops: float
    memcpy_gbps: float
    threads: int
    cpu: str
    logical_cpus: int
    torch_version: str


def _median_seconds(fn, repeats: int = REPEATS) -> float:
    fn()  # warm-up: allocation, thread pool start, MKL dispatch
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_sgemm_gflops(size: int = SGEMM_SIZE) -> float:
    """float32 matrix multiply rate (GFLOP/s, 2 FLOP per multiply-add) of torch on the CPU."""
    a = torch.randn(size, size)
    b = torch.randn(size, size)
    out = torch.empty(size, size)
    seconds = _median_seconds(lambda: torch.mm(a, b, out=out))
    return 2 * size**3 / seconds / 1e9


def measure_memcpy_gbps(num_bytes: int = MEMCPY_BYTES) -> float:
    """Copy rate (GB/s, bytes read + bytes written) of one large tensor copy."""
    src = torch.empty(num_bytes, dtype=torch.uint8).random_()
    dst = torch.empty_like(src)
    seconds = _median_seconds(lambda: dst.copy_(src))
    return 2 * num_bytes / seconds / 1e9


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.lru_cache(maxsize=8)
def machine_rates(threads: int) -> MachineRates:
    """Rates at `threads` torch threads, measured once per process and thread count; later
    benchmarks in the same run reuse them. The caller's thread setting is restored."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return MachineRates(
            sgemm_gflops=measure_sgemm_gflops(),
            memcpy_gbps=measure_memcpy_gbps(),
            threads=threads,
            cpu=_cpu_name(),
            logical_cpus=os.cpu_count() or 0,
            torch_version=torch.__version__,
        )
    finally:
        torch.set_num_threads(previous)


def machine_info(threads: int | None = None) -> dict:
    """The rates at `threads` (default: torch's current setting) as a dict for extra_info."""
    return asdict(machine_rates(threads or torch.get_num_threads()))
