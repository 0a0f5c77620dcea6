"""The NMS GPU kernels compile for sm_80 and sm_90 without a GPU: the Triton kernels ahead of time
in the configurations the dispatcher launches (the interpreter accepts programs the real compiler
rejects), the CUDA kernels through nvcc with ptxas's report. No kernel may spill; the resources go
to build/gpu_compile/*.json."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest
from gpu_compile import compile_triton, find_nvcc, ptxas_resources, write_report

from rtmo_kernels.triton import nms_kernels

CAPABILITIES = (80, 90)
CUDA_FILE = Path(__file__).resolve().parents[1] / "csrc" / "cuda" / "nms_kernel.cu"
MODULE = "rtmo_kernels.triton.nms_kernels"
# Runtime arguments as a launch specialises them: int64 tensors as *i64, Python ints as i32 and the
# IoU threshold (a Python float) as fp32.
MASK_SIGNATURE = {
    "boxes_ptr": "*fp32",
    "groups_ptr": "*i64",
    "counts_ptr": "*i64",
    "mask_ptr": "*i64",
    "n": "i32",
    "words": "i32",
    "iou_threshold": "fp32",
    "HAS_GROUPS": "constexpr",
    "BLOCK_ROWS": "constexpr",
}
SCAN_SIGNATURE = {
    "mask_ptr": "*i64",
    "counts_ptr": "*i64",
    "positions_ptr": "*i64",
    "num_kept_ptr": "*i64",
    "n": "i32",
    "words": "i32",
    "max_out": "i32",
    "WORDS_BLOCK": "constexpr",
}


def _check(compiled, capability: int, name: str, payload: dict) -> None:
    assert f".target sm_{capability}" in compiled.ptx
    assert compiled.cubin[:4] == b"\x7fELF"
    res = compiled.resources
    write_report(name, payload | {"shared_bytes": compiled.shared_bytes, "ptxas": asdict(res)})
    assert res.spill_stores == 0, res
    assert res.spill_loads == 0, res


@pytest.mark.parametrize("capability", CAPABILITIES)
@pytest.mark.parametrize("has_groups", [False, True])  # nms_padded / batched_nms
def test_triton_mask_kernel_compiles(capability, has_groups):
    constexprs = {"HAS_GROUPS": has_groups, "BLOCK_ROWS": nms_kernels.MASK_BLOCK_ROWS}
    compiled = compile_triton(
        f"{MODULE}:_iou_mask_kernel",
        MASK_SIGNATURE,
        constexprs,
        capability,
        nms_kernels.MASK_NUM_WARPS,
        nms_kernels.LAUNCH_OPTIONS,
    )
    # The IoU division must be the IEEE one, as on the CPU.
    assert "div.rn.f32" in compiled.ptx
    name = f"triton_nms_mask_sm{capability}_{'groups' if has_groups else 'nogroups'}"
    _check(compiled, capability, name, {"constexprs": constexprs})


# 32 words: 2000 candidates (RTMO-s at 640); 256 words: 16000.
@pytest.mark.parametrize("capability", CAPABILITIES)
@pytest.mark.parametrize("words_block", [32, 256])
def test_triton_scan_kernel_compiles(capability, words_block):
    constexprs = {"WORDS_BLOCK": words_block}
    compiled = compile_triton(
        f"{MODULE}:_greedy_scan_kernel",
        SCAN_SIGNATURE,
        constexprs,
        capability,
        nms_kernels.SCAN_NUM_WARPS,
        nms_kernels.LAUNCH_OPTIONS,
    )
    _check(compiled, capability, f"triton_nms_scan_sm{capability}_w{words_block}", constexprs)


@pytest.mark.skipif(find_nvcc() is None, reason="nvcc is not installed")
def test_cuda_kernels_compile_without_spills():
    resources = ptxas_resources(CUDA_FILE, CAPABILITIES)
    write_report("cuda_nms", [asdict(r) for r in resources])
    for kernel in ("iou_mask_kernel", "greedy_scan_kernel"):
        found = [r for r in resources if kernel in r.kernel]
        assert {r.sm for r in found} == set(CAPABILITIES), resources
        for r in found:
            assert r.spill_stores == 0, r
            assert r.spill_loads == 0, r
            # The scan is one warp per image (__launch_bounds__(32)); the mask 64 threads.
            assert r.registers <= 128, r
