"""Loading of the compiled extension and the backend choice shared by every op.

`backend="auto"` picks, for CUDA tensors, Triton, else the CUDA extension, else the reference; for
CPU tensors, the C++ CPU kernel, else the reference. `RTMO_KERNELS_BACKEND` overrides "auto"
process-wide. A forced backend that cannot run raises a `BackendUnavailableError` naming why.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
from dataclasses import dataclass
from types import ModuleType

import torch

BACKEND_NAMES = ("reference", "cpu", "cuda", "triton")
_ENV_BACKEND = "RTMO_KERNELS_BACKEND"


class BackendUnavailableError(RuntimeError):
    """A backend was requested that cannot run on this machine or for these tensors."""


@dataclass(frozen=True)
class BackendStatus:
    """Whether a backend can run here, and if not, why."""

    available: bool
    reason: str


def _load_extension() -> tuple[ModuleType | None, str]:
    try:
        module = importlib.import_module("rtmo_kernels._C")
    except ImportError as err:
        return None, f"rtmo_kernels._C is not built ({err})"
    return module, ""


_C, _C_ERROR = _load_extension()


def extension() -> ModuleType | None:
    """The compiled extension module, or None when it was not built."""
    return _C


@functools.cache
def _triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


@functools.cache
def _gpu_present() -> bool:
    # Cached: every op call resolves its backend, and the uncached probes cost 14-110 us per call.
    return torch.cuda.is_available()


def triton_interpreted() -> bool:
    """True when Triton kernels run through the interpreter on CPU tensors (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def _triton_status() -> BackendStatus:
    if not _triton_installed():
        return BackendStatus(False, "triton is not installed")
    if _gpu_present():
        return BackendStatus(True, "CUDA GPU")
    if triton_interpreted():
        return BackendStatus(True, "interpreter on CPU tensors (TRITON_INTERPRET=1)")
    return BackendStatus(False, "no CUDA GPU (set TRITON_INTERPRET=1 to interpret on the CPU)")


def _cuda_status() -> BackendStatus:
    if _C is None:
        return BackendStatus(False, _C_ERROR)
    if not _C.cuda_kernels_compiled():
        return BackendStatus(False, "rtmo_kernels._C was built without the CUDA kernels")
    if not _gpu_present():
        return BackendStatus(False, "no CUDA GPU (the CUDA kernels are compiled in)")
    return BackendStatus(True, "CUDA GPU")


def _reference_status() -> BackendStatus:
    return BackendStatus(True, "pure PyTorch")


def _cpu_status() -> BackendStatus:
    return BackendStatus(True, "C++ CPU kernels") if _C else BackendStatus(False, _C_ERROR)


_STATUS = {
    "reference": _reference_status,
    "cpu": _cpu_status,
    "cuda": _cuda_status,
    "triton": _triton_status,
}


def backends() -> dict[str, BackendStatus]:
    """Every backend with whether it is available here and why (not)."""
    return {name: status() for name, status in _STATUS.items()}


def _auto_backend(device: torch.device) -> str:
    # Only the candidates for this device are probed: this runs on every op call.
    candidates = ("triton", "cuda") if device.type == "cuda" else ("cpu",)
    for name in candidates:
        if _STATUS[name]().available:
            return name
    return "reference"


def _check_device(backend: str, device: torch.device, op: str) -> None:
    if backend == "cpu" and device.type != "cpu":
        raise BackendUnavailableError(f"{op}: backend 'cpu' needs CPU tensors, got {device}")
    if backend == "cuda" and device.type != "cuda":
        raise BackendUnavailableError(f"{op}: backend 'cuda' needs CUDA tensors, got {device}")
    if backend == "triton" and device.type != "cuda" and not triton_interpreted():
        raise BackendUnavailableError(
            f"{op}: backend 'triton' needs CUDA tensors, got {device} "
            "(or set TRITON_INTERPRET=1 before importing triton to interpret on the CPU)"
        )


def resolve_backend(requested: str, device: torch.device, op: str) -> str:
    """The backend that will run `op` on tensors of `device` for a `backend=` argument."""
    if requested == "auto":
        requested = os.environ.get(_ENV_BACKEND, "auto")
    if requested == "auto":
        return _auto_backend(device)
    if requested not in BACKEND_NAMES:
        raise ValueError(
            f"{op}: unknown backend {requested!r}; expected 'auto' or one of {BACKEND_NAMES}"
        )
    _check_device(requested, device, op)
    status = _STATUS[requested]()
    if not status.available:
        raise BackendUnavailableError(
            f"{op}: backend {requested!r} is unavailable: {status.reason}"
        )
    return requested
