"""Checks of the option values shared by the Python API and the command line, in one place.

Each check takes the name to report (the Python argument, e.g. "score_thr", or the command-line
option, e.g. "--score-thr") so that both front ends say the same thing in their own words. The
module imports neither torch nor cv2: the command line checks values before it loads anything.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

DEVICE_PATTERN = re.compile(r"cpu|cuda(:\d+)?")


@dataclass(frozen=True)
class Interval:
    """A range of floats with open or closed ends, printed as "[0, 1)"."""

    low: float
    high: float
    low_closed: bool = True
    high_closed: bool = True

    def __contains__(self, value: float) -> bool:
        above = value >= self.low if self.low_closed else value > self.low
        below = value <= self.high if self.high_closed else value < self.high
        return above and below

    def __str__(self) -> str:
        return (
            f"{'[' if self.low_closed else '('}{self.low:g}, "
            f"{self.high:g}{']' if self.high_closed else ')'}"
        )


# A person score is a sigmoid, in (0, 1): a threshold of 1 would keep nobody.
SCORE_THR = Interval(0.0, 1.0, high_closed=False)
# Box IoU: 1 suppresses nothing; 0 (any overlap suppresses) is refused like mmdeploy refuses it.
NMS_THR = Interval(0.0, 1.0, low_closed=False)
# Keypoint scores for drawing are sigmoids too; 0 draws every keypoint, 1 none.
KPT_THR = Interval(0.0, 1.0)


def interval_violation(value: object, interval: Interval) -> str | None:
    """What is wrong with `value` for `interval` ("must be in [0, 1), got -1"), or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"must be a number in {interval}, got {value!r}"
    if math.isnan(value) or value not in interval:
        return f"must be in {interval}, got {value:g}"
    return None


def check_interval(name: str, value: object, interval: Interval) -> float:
    """`value` as a float when it lies in `interval`; else ValueError/TypeError naming `name`."""
    problem = interval_violation(value, interval)
    if problem is not None:
        error = TypeError if problem.startswith("must be a number") else ValueError
        raise error(f"{name} {problem}")
    return float(value)  # type: ignore[arg-type]


def positive_int_violation(value: object) -> str | None:
    """What is wrong with `value` as a count of at least 1, or None."""
    if isinstance(value, bool) or not isinstance(value, int):
        return f"must be an int >= 1, got {value!r}"
    if value < 1:
        return f"must be at least 1, got {value}"
    return None


def check_positive_int(name: str, value: object) -> int:
    """`value` when it is an int >= 1; else ValueError/TypeError naming `name`."""
    problem = positive_int_violation(value)
    if problem is not None:
        raise (TypeError if problem.startswith("must be an int") else ValueError)(
            f"{name} {problem}"
        )
    return value  # type: ignore[return-value]


def default_device() -> str:
    """The device used when none is given: "cuda" when a GPU is visible, else "cpu"."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(name: str, device: object) -> str:
    """The device string ("cpu", "cuda", "cuda:N") when it exists here; ValueError naming `name`
    otherwise (an unknown device, no GPU, a GPU index past the last one). Imports torch."""
    import torch

    text = str(device)
    if not DEVICE_PATTERN.fullmatch(text):
        raise ValueError(f"{name} must be cpu, cuda or cuda:N, got {text!r}")
    if text.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"{name} {text}: no CUDA GPU is visible; use cpu")
        index = int(text.partition(":")[2] or 0)
        if index >= count:
            raise ValueError(f"{name} {text}: only {count} CUDA device(s) are visible")
    return text


def check_backend(name: str, backend: object, device_type: str) -> str:
    """The kernel backend when it is known and can run on `device_type` here; ValueError naming
    `name` and the reason otherwise. Imports rtmo_kernels (and torch)."""
    from rtmo_kernels import _backend

    names = ("auto", *_backend.BACKEND_NAMES)
    if backend not in names:
        raise ValueError(f"{name} must be one of {', '.join(names)}, got {backend!r}")
    if backend == "auto":
        return backend
    status = _backend.backends()[backend]
    if not status.available:
        raise ValueError(f"{name} {backend} is not available here: {status.reason}")
    needs_gpu = backend == "cuda" or (backend == "triton" and not _backend.triton_interpreted())
    if needs_gpu and device_type != "cuda":
        raise ValueError(f"{name} {backend} runs on CUDA tensors; the device is {device_type}")
    if backend == "cpu" and device_type != "cpu":
        raise ValueError(f"{name} cpu runs on CPU tensors; the device is {device_type}")
    return backend
