"""Timers shared by every benchmark script, one contract on CPU and GPU.

* CPU: `time.perf_counter` around each call; the ops are synchronous.
* CUDA: each call is bracketed by CUDA events (the time the GPU spent, launch overhead included),
  kernels are timed with `triton.testing.do_bench` (warm-up, L2 flush, many repetitions), and a
  static-shape callable can be captured in a CUDA graph and replayed (`graph_callable`).
* Several callables compared with each other are timed in interleaved rounds (`time_interleaved`),
  so that a burst of load from another process on a shared machine hits all of them alike.

Every timer returns a `Timing` of per-call samples in milliseconds; reports quote the median.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Timing:
    """Per-call wall times in milliseconds."""

    samples_ms: list[float] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def min_ms(self) -> float:
        return min(self.samples_ms)

    def quantile_ms(self, q: float) -> float:
        """The q-quantile (0..1) of the samples, linearly interpolated."""
        ordered = sorted(self.samples_ms)
        pos = q * (len(ordered) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(ordered) - 1)
        return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)

    def to_dict(self) -> dict[str, Any]:
        return {
            "median_ms": self.median_ms,
            "min_ms": self.min_ms,
            "p10_ms": self.quantile_ms(0.1),
            "p90_ms": self.quantile_ms(0.9),
            "rounds": len(self.samples_ms),
            "samples_ms": self.samples_ms,
        }


def as_device(device: torch.device | str) -> torch.device:
    return torch.device(device)


def synchronize(device: torch.device | str) -> None:
    """Waits for the device's queued work (a no-op on the CPU)."""
    device = as_device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _CallTimer:
    """Times one call: CUDA events on a GPU, perf_counter on the CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def __call__(self, fn: Callable[[], Any]) -> float:
        if self.cuda:
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end)
        begin = time.perf_counter()
        fn()
        return (time.perf_counter() - begin) * 1e3


def time_callable(
    fn: Callable[[], Any],
    device: torch.device | str = "cpu",
    *,
    warmup: int = 1,
    min_rounds: int = 5,
    max_rounds: int = 100,
    min_seconds: float = 0.0,
) -> Timing:
    """Calls fn `warmup` times untimed, then times it until it has `min_rounds` samples and
    `min_seconds` of timed work, or `max_rounds` samples."""
    device = as_device(device)
    timer = _CallTimer(device)
    for _ in range(warmup):
        fn()
    synchronize(device)
    timing = Timing()
    spent = 0.0
    while len(timing.samples_ms) < max_rounds and (
        len(timing.samples_ms) < min_rounds or spent < min_seconds
    ):
        ms = timer(fn)
        timing.samples_ms.append(ms)
        spent += ms / 1e3
    return timing


def time_interleaved(
    fns: dict[str, Callable[[], Any]],
    device: torch.device | str = "cpu",
    *,
    warmup: int = 1,
    rounds: int = 5,
) -> dict[str, Timing]:
    """Times several callables in interleaved rounds; the order rotates each round so that none is
    always first after another's cache-polluting run."""
    device = as_device(device)
    timer = _CallTimer(device)
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    synchronize(device)
    timings = {name: Timing() for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            timings[name].samples_ms.append(timer(fns[name]))
    return timings


def bench_kernel(
    fn: Callable[[], Any],
    device: torch.device | str = "cpu",
    *,
    warmup_ms: float = 25.0,
    rep_ms: float = 100.0,
    min_rounds: int = 5,
    max_rounds: int = 200,
) -> Timing:
    """Times a kernel-sized callable: `triton.testing.do_bench` on CUDA (it flushes L2 between
    repetitions and returns every sample), else `time_callable` for about `rep_ms` of work."""
    device = as_device(device)
    if device.type == "cuda":
        from triton.testing import do_bench

        samples = do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="all")
        return Timing(list(samples))
    return time_callable(
        fn,
        device,
        warmup=1,
        min_rounds=min_rounds,
        max_rounds=max_rounds,
        min_seconds=rep_ms / 1e3,
    )


class StageClock:
    """Wall-clock laps of a pipeline run (pre-process, network, post-process, ...).

    On CUDA each lap synchronises first, so a lap holds the GPU work queued in it; this costs one
    sync per lap, which is why totals of graphs are timed separately without laps.
    """

    def __init__(self, device: torch.device | str) -> None:
        self.device = as_device(device)
        self.laps: dict[str, float] = {}
        self._last = 0.0

    def start(self) -> None:
        synchronize(self.device)
        self.laps = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        synchronize(self.device)
        now = time.perf_counter()
        self.laps[name] = (now - self._last) * 1e3
        self._last = now

    @property
    def total_ms(self) -> float:
        return sum(self.laps.values())


def graph_callable(
    fn: Callable[..., Any], *example_inputs: torch.Tensor, warmup: int = 3
) -> Callable[..., Any]:
    """A callable that replays `fn(*inputs)` from a CUDA graph, for static shapes and a static
    control flow (no host sync inside fn). On the CPU, fn itself is returned.

    The returned callable copies its tensor arguments into the captured input buffers, replays the
    graph and returns the captured output tensors (overwritten by the next call).
    """
    if not example_inputs or example_inputs[0].device.type != "cuda":
        return fn
    static_inputs = [x.clone() for x in example_inputs]
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(warmup):  # lazy initialisation (cuBLAS handles, autotuning) outside capture
            fn(*static_inputs)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_output = fn(*static_inputs)

    def replay(*inputs: torch.Tensor) -> Any:
        for dst, src in zip(static_inputs, inputs, strict=True):
            dst.copy_(src, non_blocking=True)
        graph.replay()
        return static_output

    return replay
