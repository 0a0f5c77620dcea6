"""Argument checks shared by the ops: one message format naming the argument, what it got and what
was expected, raised at the boundary before any kernel runs."""

from __future__ import annotations

import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def check_tensor(
    op: str,
    name: str,
    value: object,
    ndim: int,
    dtypes: tuple[torch.dtype, ...] = FLOAT_DTYPES,
    last_dim: int | None = None,
) -> torch.Tensor:
    """Checks type, rank, dtype and (optionally) the size of the last dimension of one argument."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dim() != ndim:
        raise ValueError(
            f"{op}: {name} must have {ndim} dimensions, got shape {tuple(value.shape)}"
        )
    if value.dtype not in dtypes:
        names = ", ".join(str(d).removeprefix("torch.") for d in dtypes)
        raise TypeError(f"{op}: {name} must have dtype in ({names}), got {value.dtype}")
    if last_dim is not None and value.shape[-1] != last_dim:
        raise ValueError(
            f"{op}: {name} must have last dimension {last_dim}, got shape {tuple(value.shape)}"
        )
    return value


def check_same_device(op: str, **tensors: torch.Tensor) -> torch.device:
    """All tensors on one device; returns it."""
    devices = {name: t.device for name, t in tensors.items()}
    first = next(iter(devices.values()))
    if any(d != first for d in devices.values()):
        listed = ", ".join(f"{n} on {d}" for n, d in devices.items())
        raise ValueError(f"{op}: all tensors must be on one device, got {listed}")
    return first


def check_leading_dims(op: str, size: int, what: str, **tensors: torch.Tensor) -> None:
    """Every tensor's first dimension equals `size` (what names the dimension, e.g. 'N')."""
    for name, t in tensors.items():
        if t.shape[0] != size:
            raise ValueError(
                f"{op}: {name} has {t.shape[0]} rows but {what}={size}; shape {tuple(t.shape)}"
            )
