"""Precision modes on the CPU: which ones this CPU runs natively, and the model put in that form.

bf16 runs the dense network (backbone, neck, head convolutions: ~99% of the FLOPs) in bfloat16
through oneDNN. That is only faster than float32 where the CPU multiplies bfloat16 in hardware:
AVX512-BF16 (Intel Cooper Lake, AMD Zen 4 and later) or AMX-BF16 (Intel Sapphire Rapids and
later). Elsewhere oneDNN emulates it, slower than float32, so bf16 is refused there rather than
run as a silent slow path. fp16 is refused on the CPU: ATen's CPU convolutions have no fast
half-precision path; bf16 is the CPU's reduced precision.

The person scores, boxes and keypoints still come out in float32: the box decode, the NMS and the
DCC decode accumulate in float32 whatever the network's dtype (`rtmo.model.postprocess`).
"""

from __future__ import annotations

import torch
from torch import nn

# CPU feature flags (torch.cpu.get_capabilities' names, which are /proc/cpuinfo's) that give
# native bfloat16 dot products, best first, with their usual names.
BF16_FEATURES = {"amx_bf16": "AMX-BF16", "avx512_bf16": "AVX512-BF16"}
BF16_CPUS = "Intel Cooper Lake or Sapphire Rapids and later, AMD Zen 4 and later"


def cpu_features() -> frozenset[str]:
    """The feature flags of this CPU that torch's own probe reports as present."""
    capabilities = torch.cpu.get_capabilities()
    return frozenset(name for name, present in capabilities.items() if present is True)


def bf16_support() -> str | None:
    """The feature that runs bfloat16 natively here ("AMX-BF16" or "AVX512-BF16"), or None when
    bfloat16 would be emulated (no such feature, or torch built without oneDNN)."""
    if not torch.backends.mkldnn.is_available():
        return None
    features = cpu_features()
    return next((label for flag, label in BF16_FEATURES.items() if flag in features), None)


def check_cpu_dtype(name: str, dtype: torch.dtype) -> None:
    """ValueError naming `name` (the option, "dtype" or "--dtype") when `dtype` has no fast path
    on this CPU: fp16 always, bf16 without native bfloat16."""
    if dtype == torch.float16:
        raise ValueError(
            f"{name} fp16 runs on a CUDA device only; on the CPU use bf16 (where the CPU has "
            "native bfloat16, see `rtmo info`) or fp32"
        )
    if dtype == torch.bfloat16 and bf16_support() is None:
        raise ValueError(
            f"{name} bf16: this CPU has no native bfloat16 (AVX512-BF16 or AMX-BF16: {BF16_CPUS}),"
            " so bf16 would be emulated and slower than fp32; use fp32"
        )


def to_precision(model: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """`model` (modified in place) on `device`, its weights converted once to `dtype`.

    bf16 on the CPU: the weights in channels_last, the layout oneDNN's bf16 convolutions run in
    without reordering, and the DCC kept in float32. Converted once rather than run under
    torch.autocast, which recasts every weight on each call: best of interleaved rounds on a
    loaded 2-core AMX Xeon, RTMO-t 389 vs 482 ms, RTMO-s 3326 vs 4013 ms (medians 1509 vs 1907
    and 5090 vs 5050 ms: the load's noise). The DCC runs on the kept people only, so
    float32 costs nothing measurable there (100 rows: 73 vs 67 ms under load), while a bfloat16
    DCC moved keypoints by up to 1.7 px (median 0.07 px, 106 px boxes) on the calibrated RTMO-t.
    """
    model = model.to(device=device, dtype=dtype)
    if device.type != "cpu" or dtype != torch.bfloat16:
        return model
    from rtmo.model import RTMOModel

    model = model.to(memory_format=torch.channels_last)
    if isinstance(model, RTMOModel):
        model.head.dcc.float()
    return model


def precision_lines() -> list[str]:
    """`rtmo info`'s lines on the CPU precision modes."""
    native = bf16_support()
    bf16 = f"yes ({native})" if native else f"no (needs AVX512-BF16 or AMX-BF16: {BF16_CPUS})"
    return [
        "CPU precision (--dtype):",
        "  fp32       yes",
        f"  bf16       {bf16}",
        "  fp16       no (CUDA only)",
    ]
