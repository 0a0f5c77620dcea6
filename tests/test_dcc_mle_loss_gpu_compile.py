"""dcc_mle_loss's GPU kernels compile for sm_80 and sm_90 without a GPU: the Triton forward and
backward ahead of time with the dispatcher's configurations (the interpreter accepts programs the
real compiler rejects), the CUDA kernels through nvcc. None may spill registers; the resources go
to build/gpu_compile/*.json."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest
from gpu_compile import compile_triton, find_nvcc, ptxas_resources, write_report

from rtmo_kernels.triton.dcc_mle_loss import (
    dcc_mle_loss_backward_kernel,
    dcc_mle_loss_forward_kernel,
    triton_config,
)

CAPABILITIES = (80, 90)
CUDA_FILE = Path(__file__).resolve().parents[1] / "csrc" / "cuda" / "dcc_mle_loss_kernel.cu"
KERNELS = {"forward": dcc_mle_loss_forward_kernel, "backward": dcc_mle_loss_backward_kernel}
# Runtime arguments as a launch specialises them: pointers by dtype (the queries in the tested
# dtype, everything else fp32: outputs, statistics and the small inputs), small ints as i32,
# Python floats as fp32 (hence the float64 scalars split in two).
_QUERY_POINTERS = ("query_ptr",)
_FLOATS = ("padding_hi", "padding_lo", "log_temperature_hi", "log_temperature_lo")


def _signature(kernel, query_dtype: str, constexprs: dict) -> dict[str, str]:
    signature = {}
    for name in kernel.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name.endswith("_ptr"):
            signature[name] = f"*{query_dtype}" if name in _QUERY_POINTERS else "*fp32"
        else:
            signature[name] = "fp32" if name in _FLOATS else "i32"
    return signature


# (pass, capability, K, D, query dtype, axis): RTMO's configuration (K = 17, D = 128) on both sms
# for both passes, as the y launch (its extra nll / sigma code); the odd shape (K = 14, D = 64:
# BLOCK_F = 32), the half dtypes and the x launch once each, to keep the suite's time (~10-30 s
# per compile).
TRITON_CASES = [
    ("forward", 80, 17, 128, "fp32", 1),
    ("forward", 90, 17, 128, "fp32", 1),
    ("backward", 80, 17, 128, "fp32", 1),
    ("backward", 90, 17, 128, "fp32", 1),
    ("forward", 90, 14, 64, "bf16", 0),
    ("backward", 80, 14, 64, "fp16", 0),
]


@pytest.mark.parametrize(("name", "capability", "k", "d", "query_dtype", "axis"), TRITON_CASES)
def test_triton_kernels_compile_ahead_of_time(name, capability, k, d, query_dtype, axis):
    kernel = KERNELS[name]
    cfg = triton_config(k, d, backward=name == "backward")
    constexprs = {"AXIS": axis, **cfg.constexprs()}
    compiled = compile_triton(
        f"rtmo_kernels.triton.dcc_mle_loss:{kernel.fn.__name__}",
        _signature(kernel, query_dtype, constexprs),
        constexprs,
        capability,
        cfg.num_warps,
    )
    assert f".target sm_{capability}" in compiled.ptx
    assert compiled.cubin[:4] == b"\x7fELF"
    res = compiled.resources
    write_report(
        f"triton_dcc_mle_loss_{name}_sm{capability}_k{k}_d{d}_{query_dtype}_axis{axis}",
        {"config": asdict(cfg), "shared_bytes": compiled.shared_bytes, "ptxas": asdict(res)},
    )
    assert res.spill_stores == 0, res
    assert res.spill_loads == 0, res
    assert res.registers <= 255


@pytest.mark.skipif(find_nvcc() is None, reason="nvcc is not installed")
def test_cuda_kernels_compile_without_spills():
    resources = ptxas_resources(CUDA_FILE, CAPABILITIES)
    write_report("cuda_dcc_mle_loss", [asdict(r) for r in resources])
    for name in ("dcc_mle_loss_forward_kernel", "dcc_mle_loss_backward_kernel"):
        kernels = [r for r in resources if name in r.kernel]
        # One instantiation per query dtype (float, half, bfloat16) per sm.
        assert len(kernels) == 3 * len(CAPABILITIES), resources
        assert {r.sm for r in kernels} == set(CAPABILITIES)
        for r in kernels:
            assert r.spill_stores == 0, r
            assert r.spill_loads == 0, r
            # __launch_bounds__(128), one block per instance: up to 128 registers keeps the
            # shared memory, not the registers, the limit on blocks per SM.
            assert r.registers <= 128, r
