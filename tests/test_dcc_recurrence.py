"""Rounding drift of the encoding walks: the angle-addition walk of csrc/common/dcc_decode.h (CPU
and CUDA kernels) against exact sin/cos, its polynomial exp, and the Triton kernel's sin/cos."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import triton
import triton.language as tl

from rtmo_kernels.triton.dcc_encoding import _cos_sin

ROOT = Path(__file__).resolve().parents[1]
DRIVER = ROOT / "tests" / "cpp" / "dcc_walk_drift.cpp"
FLOAT_UNIT = 2.0**-24  # float32 unit roundoff
# Per encoding element the walk rounds the two anchors, the two table entries, two products and
# their sum: ~7 half-ulps of 1; 4 units bound it with room, and must hold for any bin count (the
# anchors are recomputed exactly every kReanchorBins bins, the double rotations drift ~1e-15).
WALK_BOUND = 4 * FLOAT_UNIT
# exp_nonpositive: a degree-7 Taylor polynomial (5e-9 truncation) and float rounding: 2 ulps.
EXP_BOUND = 2 * 2.0**-23


@pytest.fixture(scope="module")
def driver(tmp_path_factory) -> Path:
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.skip("no C++ compiler")
    exe = tmp_path_factory.mktemp("dcc") / "dcc_walk_drift"
    subprocess.run(
        [compiler, "-O2", "-std=c++20", f"-I{ROOT / 'csrc'}", str(DRIVER), "-o", str(exe)],
        check=True,
    )
    return exe


def _run(driver: Path, *args: object) -> dict:
    out = subprocess.run([str(driver), *map(str, args)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


# (lo, hi, prior, bins, D, temperature, tile): RTMO, the CPU (16) and CUDA (32) tiles, boxes at
# +-1e4 px with the prior outside the box (angles ~1e3 rad), 100k bins (390 re-anchors), D = 2.
WALKS = [
    (0.0, 600.0, 300.0, 192, 128, 300.0, 16),
    (0.0, 600.0, 300.0, 256, 128, 300.0, 32),
    (9800.0, 10200.0, 10000.0, 100_000, 128, 300.0, 16),
    (-10000.0, -9600.0, -10500.0, 100_000, 64, 300.0, 32),
    (-3.0, 5000.0, 2500.0, 4099, 2, 10.0, 16),
]


@pytest.mark.parametrize("walk", WALKS)
def test_encoding_walk_drift_is_bounded(driver, walk):
    report = _run(driver, "walk", *walk)
    assert report["max_error"] <= WALK_BOUND, report
    # No growth with the number of bins: the whole walk is as good as its first stretch.
    assert report["max_error"] <= report["max_error_first_reanchor"] + FLOAT_UNIT, report


def test_polynomial_exp(driver):
    report = _run(driver, "exp")
    assert report["max_relative_error"] <= EXP_BOUND, report
    assert report["exp0"] == 1.0
    assert report["masked_zero"]


@triton.jit
def _cos_sin_probe(angle_ptr, cos_ptr, sin_ptr, n, BLOCK: tl.constexpr):  # noqa: N803
    offs = tl.arange(0, BLOCK)
    mask = offs < n
    c, s = _cos_sin(tl.load(angle_ptr + offs, mask=mask, other=0.0))
    tl.store(cos_ptr + offs, c, mask=mask)
    tl.store(sin_ptr + offs, s, mask=mask)


def test_triton_cos_sin_of_large_angles():
    # Float64 angles up to 1e6 rad in every quadrant and at the quadrant edges.
    rng = np.random.default_rng(0)
    quarter = np.pi / 2 * np.arange(-8, 9)
    angles = np.concatenate([rng.uniform(-1e6, 1e6, 200), rng.uniform(-50, 50, 200), quarter])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    angle = torch.tensor(angles, dtype=torch.float64, device=device)
    cos = torch.empty(angle.shape, dtype=torch.float32, device=device)
    sin = torch.empty_like(cos)
    _cos_sin_probe[(1,)](angle, cos, sin, angle.numel(), BLOCK=triton.next_power_of_2(len(angles)))
    # Reduction to |x| <= pi/4 in float64, x rounded to float32 (half an ulp of pi/4), polynomials
    # and sign flips in float32: within 2 units of the exact values.
    assert np.abs(cos.cpu().numpy() - np.cos(angles)).max() <= 2 * FLOAT_UNIT
    assert np.abs(sin.cpu().numpy() - np.sin(angles)).max() <= 2 * FLOAT_UNIT
