"""dcc_decode's GPU kernels compile for sm_80 and sm_90 without a GPU: the Triton kernel ahead of
time with the dispatcher's configuration (the interpreter accepts programs the real compiler
rejects), the CUDA kernel through nvcc. Neither may spill registers; the resources go to
build/gpu_compile/*.json."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest
from gpu_compile import compile_triton, find_nvcc, ptxas_resources, write_report

from rtmo_kernels.triton.dcc_decode import dcc_decode_kernel, triton_config

CAPABILITIES = (80, 90)
CUDA_FILE = Path(__file__).resolve().parents[1] / "csrc" / "cuda" / "dcc_decode_kernel.cu"
# Runtime arguments as a launch specialises them: pointers by dtype, small ints as i32, Python
# floats as fp32 (hence the float64 scalars split in two).
_POINTERS = ("query_ptr", "boxes_ptr", "priors_ptr", "keypoints_ptr", "confidence_ptr")
_FLOATS = ("padding_hi", "padding_lo", "log_temperature_hi", "log_temperature_lo")


def _signature(query_dtype: str, constexprs: dict) -> dict[str, str]:
    signature = {}
    for name in dcc_decode_kernel.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name in _POINTERS:
            signature[name] = f"*{query_dtype}" if name == "query_ptr" else "*fp32"
        else:
            signature[name] = "fp32" if name in _FLOATS else "i32"
    return signature


# (capability, K, D, query dtype, argmax): RTMO's configuration (K = 17, D = 128) on both sms; the
# other constexprs (argmax, BLOCK_F = 32 of the odd shape K = 14, D = 64) and dtypes once each,
# to keep the suite's time (~5 s per compile).
TRITON_CASES = [
    (80, 17, 128, "fp32", False),
    (90, 17, 128, "fp32", False),
    (90, 17, 128, "bf16", True),
    (80, 14, 64, "fp16", False),
]


@pytest.mark.parametrize(("capability", "k", "d", "query_dtype", "argmax"), TRITON_CASES)
def test_triton_kernel_compiles_ahead_of_time(capability, k, d, query_dtype, argmax):
    cfg = triton_config(k, d)
    constexprs = cfg.constexprs(axis=1, argmax=argmax)
    compiled = compile_triton(
        "rtmo_kernels.triton.dcc_decode:dcc_decode_kernel",
        _signature(query_dtype, constexprs),
        constexprs,
        capability,
        cfg.num_warps,
    )
    assert f".target sm_{capability}" in compiled.ptx
    assert compiled.cubin[:4] == b"\x7fELF"
    res = compiled.resources
    write_report(
        f"triton_dcc_decode_sm{capability}_k{k}_d{d}_{query_dtype}{'_argmax' if argmax else ''}",
        {"config": asdict(cfg), "shared_bytes": compiled.shared_bytes, "ptxas": asdict(res)},
    )
    assert res.spill_stores == 0, res
    assert res.spill_loads == 0, res
    assert res.registers <= 255


@pytest.mark.skipif(find_nvcc() is None, reason="nvcc is not installed")
def test_cuda_kernel_compiles_without_spills():
    resources = ptxas_resources(CUDA_FILE, CAPABILITIES)
    write_report("cuda_dcc_decode", [asdict(r) for r in resources])
    kernels = [r for r in resources if "dcc_decode_kernel" in r.kernel]
    # One instantiation per query dtype (float, half, bfloat16) per sm.
    assert len(kernels) == 3 * len(CAPABILITIES), resources
    assert {r.sm for r in kernels} == set(CAPABILITIES)
    for r in kernels:
        assert r.spill_stores == 0, r
        assert r.spill_loads == 0, r
        # __launch_bounds__(128): anything up to 255 registers still runs; above 128 it would
        # halve the blocks per SM, which this kernel (one block per instance and axis) avoids.
        assert r.registers <= 128, r
