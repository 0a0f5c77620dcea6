"""`rtmo info`: versions, kernel backends, build flags, devices and CPU precision modes."""

from __future__ import annotations

import argparse
import platform


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`rtmo info` takes no arguments."""


def run(args: argparse.Namespace) -> int:
    for line in info_lines():
        print(line)
    return 0


def info_lines() -> list[str]:
    """Versions, kernel backends, build flags and devices, one item per line."""
    import os

    import cv2
    import numpy as np
    import torch

    import rtmo
    import rtmo_kernels
    from rtmo.precision import precision_lines
    from rtmo_kernels import _backend

    lines = [
        f"rtmo {rtmo.__version__}",
        f"python {platform.python_version()} ({platform.platform()})",
        f"torch {torch.__version__} (CUDA {torch.version.cuda or 'none'})",
        f"numpy {np.__version__}, opencv {cv2.__version__}, triton {_version_of('triton')}",
        "kernel backends:",
    ]
    for name, status in rtmo_kernels.backends().items():
        lines.append(f"  {name:<10} {'yes' if status.available else 'no ':<4} {status.reason}")
    ext = _backend.extension()
    lines += [
        "build:",
        f"  rtmo_kernels._C built: {f'yes ({ext.__file__})' if ext else 'no'}",
        f"  CUDA kernels compiled: {'yes' if ext and ext.cuda_kernels_compiled() else 'no'}",
        f"  TORCH_CUDA_ARCH_LIST: {os.environ.get('TORCH_CUDA_ARCH_LIST', '(unset)')}",
        f"  RTMO_KERNELS_BACKEND: {os.environ.get('RTMO_KERNELS_BACKEND', '(unset)')}",
        f"  torch CPU capability: {torch.backends.cpu.get_cpu_capability()}",
        f"  torch CUDA archs: {' '.join(torch.cuda.get_arch_list()) or 'none'}",
        "devices:",
        f"  cpu: {os.cpu_count()} cores, torch threads {torch.get_num_threads()}",
    ]
    for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        props = torch.cuda.get_device_properties(i)
        lines.append(
            f"  cuda:{i}: {props.name}, compute capability {props.major}.{props.minor}, "
            f"{props.total_memory / 2**30:.1f} GiB"
        )
    if not torch.cuda.is_available():
        lines.append("  cuda: no GPU visible")
    return lines + precision_lines()


def _version_of(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"
