"""Triton kernel of rtmo::dcc_decode: one program per (instance, axis, block of keypoints).

The program walks the bins in tiles of BLOCK_B with the encodings built in registers
(`rtmo_kernels.triton.dcc_encoding`). Two tl.dot of the queries' halves (BLOCK_K x BLOCK_F, fp32)
with a tile's encodings give its logits, folded into an online softmax (and a running argmax).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from rtmo_kernels._backend import triton_interpreted
from rtmo_kernels.ops.dcc_decode import fake_dcc_decode
from rtmo_kernels.triton.dcc_encoding import (
    MAX_DIM,
    MIN_DOT,
    _bin_walk,
    _encoding_dot,
    _frequencies,
    _load_query_halves,
    _rotate,
    _tile_anchor,
    define_op,
    split_float64,
)

FLOAT32_MAX: tl.constexpr = tl.constexpr(3.4028234663852886e38)


@dataclass(frozen=True)
class TritonConfig:
    """Block sizes and warps of one launch (also compiled ahead of time by the GPU compile test)."""

    block_k: int
    block_f: int
    block_b: int
    num_warps: int
    reanchor_bins: int = 256

    def constexprs(self, axis: int, argmax: bool) -> dict[str, int | bool]:
        """The kernel's constexpr arguments for one launch."""
        return {
            "AXIS": axis,
            "ARGMAX": argmax,
            "BLOCK_K": self.block_k,
            "BLOCK_F": self.block_f,
            "BLOCK_B": self.block_b,
            "LOG2_BLOCK_B": self.block_b.bit_length() - 1,
            "REANCHOR_BINS": self.reanchor_bins,
        }


def triton_config(num_keypoints: int, dim: int) -> TritonConfig:
    """The configuration the launcher uses for K keypoints and query dimension D (F = D / 2)."""
    if dim > MAX_DIM:
        raise ValueError(
            f"dcc_decode (triton): the query dimension D must be <= {MAX_DIM}, got {dim}"
        )
    block_k = min(max(MIN_DOT, triton.next_power_of_2(num_keypoints)), 32)
    block_f = max(MIN_DOT, triton.next_power_of_2(dim // 2))
    # 32 bins per tile and 4 warps: per thread 16 registers each for the cos/sin tables, the two
    # phi halves and the queries' halves at F = 64, K <= 32.
    return TritonConfig(block_k=block_k, block_f=block_f, block_b=32, num_warps=4)


@triton.jit
def dcc_decode_kernel(
    query_ptr,  # (N, K, D) of one axis
    boxes_ptr,  # (N, 4) xyxy
    priors_ptr,  # (N, 2)
    keypoints_ptr,  # (N, K, 2) fp32, contiguous
    confidence_ptr,  # (N, K, 2) fp32, contiguous
    num_keypoints,
    dim,
    num_bins,
    stride_qn,
    stride_qk,
    stride_qd,
    stride_bn,
    stride_bc,
    stride_pn,
    stride_pc,
    padding_hi,  # float64 scalars as two float32 parts: Triton passes Python floats as fp32
    padding_lo,
    log_temperature_hi,
    log_temperature_lo,
    AXIS: tl.constexpr,  # noqa: N803 (Triton constexprs are upper case)
    ARGMAX: tl.constexpr,  # noqa: N803
    BLOCK_K: tl.constexpr,  # noqa: N803
    BLOCK_F: tl.constexpr,  # noqa: N803
    BLOCK_B: tl.constexpr,  # noqa: N803
    LOG2_BLOCK_B: tl.constexpr,  # noqa: N803
    REANCHOR_BINS: tl.constexpr,  # noqa: N803
):
    n = tl.program_id(0).to(tl.int64)
    offs_k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    offs_f = tl.arange(0, BLOCK_F)
    offs_t = tl.arange(0, BLOCK_B)
    num_freqs = dim // 2
    mask_k = offs_k < num_keypoints

    # The cos half and the sin half of the queries: two dots instead of one over a phi whose rows
    # would each need both the cos and the sin expression (and twice the table).
    q_cos, q_sin = _load_query_halves(
        query_ptr, n, offs_k, mask_k, offs_f, num_freqs, stride_qn, stride_qk, stride_qd
    )

    # Geometry in float64 (see csrc/common/dcc_decode.h: AxisGeometry).
    lo = tl.load(boxes_ptr + n * stride_bn + AXIS * stride_bc).to(tl.float64)
    hi = tl.load(boxes_ptr + n * stride_bn + (AXIS + 2) * stride_bc).to(tl.float64)
    prior = tl.load(priors_ptr + n * stride_pn + AXIS * stride_pc).to(tl.float64)
    padding = tl.cast(padding_hi, tl.float64) + tl.cast(padding_lo, tl.float64)
    log_temperature = tl.cast(log_temperature_hi, tl.float64) + tl.cast(
        log_temperature_lo, tl.float64
    )
    center = 0.5 * (lo + hi)
    size = padding * (hi - lo)
    rel0 = center - 0.5 * size - prior
    step = size / (num_bins - 1)
    w = _frequencies(offs_f, num_freqs, log_temperature)
    # The tables cost ~5 float32 roundings (3e-7); the anchors drift by <= 8 (~1e-6).
    table_cos, table_sin, tile_cos, tile_sin = _bin_walk(step, w, offs_t, BLOCK_F, LOG2_BLOCK_B)
    anchor_cos = tl.zeros((BLOCK_F,), tl.float32)
    anchor_sin = tl.zeros((BLOCK_F,), tl.float32)

    run_max = tl.full((BLOCK_K,), float("-inf"), tl.float32)
    run_sum = tl.zeros((BLOCK_K,), tl.float32)
    run_index = tl.zeros((BLOCK_K,), tl.float32)
    run_arg = tl.zeros((BLOCK_K,), tl.int32)
    for first_bin in range(0, num_bins, BLOCK_B):
        anchor_cos, anchor_sin = _tile_anchor(
            anchor_cos,
            anchor_sin,
            first_bin,
            rel0,
            step,
            offs_f,
            num_freqs,
            log_temperature,
            REANCHOR_BINS,
        )
        phi_cos, phi_sin = _rotate(anchor_cos[:, None], anchor_sin[:, None], table_cos, table_sin)
        logits = _encoding_dot(q_cos, q_sin, phi_cos, phi_sin)
        bins = first_bin + offs_t
        logits = tl.where((bins < num_bins)[None, :], logits, float("-inf"))
        tile_max = tl.max(logits, axis=1)
        # First index of the tile maximum: the smallest bin among those equal to it.
        tile_arg = tl.min(tl.where(logits == tile_max[:, None], bins[None, :], num_bins), axis=1)
        new_max = tl.maximum(run_max, tile_max)
        scale = tl.exp(run_max - new_max)  # 0 on the first tile (run_max = -inf)
        e = tl.exp(logits - new_max[:, None])
        run_sum = run_sum * scale + tl.sum(e, axis=1)
        run_index = run_index * scale + tl.sum(e * bins.to(tl.float32)[None, :], axis=1)
        run_arg = tl.where(tile_max > run_max, tile_arg, run_arg)  # strict: first tile wins ties
        run_max = new_max
        anchor_cos, anchor_sin = _rotate(anchor_cos, anchor_sin, tile_cos, tile_sin)

    index = run_index.to(tl.float64) / run_sum.to(tl.float64)
    if ARGMAX:
        index = run_arg.to(tl.float64)
    coordinate = ((-0.5 + index / (num_bins - 1)) * size + center).to(tl.float32)
    confidence = 1.0 / run_sum
    # NaN policy (rtmo_kernels.ops.dcc_decode): a NaN or +inf logit, or only -inf ones, leave a
    # non-finite sum; that, or a coordinate beyond the float32 range, makes both outputs NaN.
    undefined = (run_sum != run_sum) | (run_sum > FLOAT32_MAX) | (run_max > FLOAT32_MAX)
    undefined |= (coordinate != coordinate) | (tl.abs(coordinate) > FLOAT32_MAX)
    coordinate = tl.where(undefined, float("nan"), coordinate)
    confidence = tl.where(undefined, float("nan"), confidence)
    out = n * num_keypoints * 2 + offs_k * 2 + AXIS
    tl.store(keypoints_ptr + out, coordinate, mask=mask_k)
    tl.store(confidence_ptr + out, confidence, mask=mask_k)


@define_op("rtmo::dcc_decode_triton", mutates_args=())
def dcc_decode_triton(
    query_x: torch.Tensor,
    query_y: torch.Tensor,
    boxes: torch.Tensor,
    priors: torch.Tensor,
    num_bins_x: int,
    num_bins_y: int,
    padding: float,
    temperature: float,
    mode: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """rtmo::dcc_decode on the Triton kernel (arguments as the op; inputs already validated).

    Returns keypoints (Tensor[N, K, 2]) and confidence (Tensor[N, K, 2]), float32.
    """
    n, k, d = query_x.shape
    keypoints = query_x.new_empty((n, k, 2), dtype=torch.float32)
    confidence = query_x.new_empty((n, k, 2), dtype=torch.float32)
    if n == 0 or k == 0:
        return keypoints, confidence
    cfg = triton_config(k, d)
    grid = (n, triton.cdiv(k, cfg.block_k))
    for axis, (query, bins) in enumerate(((query_x, num_bins_x), (query_y, num_bins_y))):
        torch.library.wrap_triton(dcc_decode_kernel)[grid](
            query,
            boxes,
            priors,
            keypoints,
            confidence,
            k,
            d,
            bins,
            *query.stride(),
            *boxes.stride(),
            *priors.stride(),
            *split_float64(padding),
            *split_float64(math.log(temperature)),
            **cfg.constexprs(axis, mode == "argmax"),
            num_warps=cfg.num_warps,
        )
    return keypoints, confidence


if triton_interpreted():
    dcc_decode_triton.register_fake(fake_dcc_decode)
