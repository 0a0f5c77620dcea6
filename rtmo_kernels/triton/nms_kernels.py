"""Triton kernels of greedy NMS over score-sorted candidates, shared by batched_nms and nms_padded.

Two launches for the whole batch, the algorithm of the CUDA kernel:
1. `_iou_mask_kernel`, grid (row blocks, 64-column words, images): bit j of word w of row i is set
   when candidate i suppresses candidate 64*w + j (j > i: the upper triangle; same group when
   groups are given). The per-pair math is the one of csrc/common/nms.h, in the same order.
2. `_greedy_scan_kernel`, one program per image: walks the candidates in rank order keeping a
   bitmask of removed candidates in registers; a candidate not yet removed is kept and its mask row
   is OR-ed in. The mask never leaves the device, and the scan stops once `max_out` are kept.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

BITS = 64
# A 64 x 64 tile of IoUs per program. ptxas (sm_80 / sm_90, no fp fusion): 4 warps (32 pairs per
# thread) need 128 registers, 8 warps (16 pairs) 99 / 80, so twice the warps fit on an SM.
MASK_BLOCK_ROWS = 64
MASK_NUM_WARPS = 8
# The scan is one sequential walk; one warp holds up to 32 mask words (2048 candidates) in one
# register per lane.
SCAN_NUM_WARPS = 1
# Fused multiply-adds would round `area_a + area_b - w * h` differently from the CPU kernel.
LAUNCH_OPTIONS = {"enable_fp_fusion": False}


@triton.jit
def _load_boxes(base, idx, valid):
    x1 = tl.load(base + idx * 4 + 0, mask=valid, other=0.0)
    y1 = tl.load(base + idx * 4 + 1, mask=valid, other=0.0)
    x2 = tl.load(base + idx * 4 + 2, mask=valid, other=0.0)
    y2 = tl.load(base + idx * 4 + 3, mask=valid, other=0.0)
    return x1, y1, x2, y2


@triton.jit
def _iou_mask_kernel(
    boxes_ptr,  # (B, N, 4) fp32, candidates sorted by rank
    groups_ptr,  # (B, N) int64 when HAS_GROUPS
    counts_ptr,  # (B,) int64: the first counts[b] boxes of image b are candidates
    mask_ptr,  # (B, N, words) int64 output
    n,
    words,
    iou_threshold,
    HAS_GROUPS: tl.constexpr,  # noqa: N803 (Triton convention: constexprs in capitals)
    BLOCK_ROWS: tl.constexpr,  # noqa: N803
):
    row_block = tl.program_id(0)
    word = tl.program_id(1)
    image = tl.program_id(2).to(tl.int64)
    count = tl.load(counts_ptr + image)
    rows = row_block * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    cols = word * 64 + tl.arange(0, 64)
    row_ok = rows < count
    col_ok = cols < count
    base = boxes_ptr + image * n * 4
    rx1, ry1, rx2, ry2 = _load_boxes(base, rows, row_ok)
    cx1, cy1, cx2, cy2 = _load_boxes(base, cols, col_ok)
    row_area = (rx2 - rx1) * (ry2 - ry1)
    col_area = (cx2 - cx1) * (cy2 - cy1)
    w = tl.maximum(
        tl.minimum(rx2[:, None], cx2[None, :]) - tl.maximum(rx1[:, None], cx1[None, :]), 0.0
    )
    h = tl.maximum(
        tl.minimum(ry2[:, None], cy2[None, :]) - tl.maximum(ry1[:, None], cy1[None, :]), 0.0
    )
    inter = w * h
    union = (row_area[:, None] + col_area[None, :]) - inter
    # IEEE division: Triton's `/` on fp32 is an approximate division on the GPU.
    iou = tl.math.div_rn(inter, tl.where(union > 0.0, union, 1.0))
    suppress = (union > 0.0) & (iou > iou_threshold)
    suppress = suppress & (cols[None, :] > rows[:, None]) & row_ok[:, None] & col_ok[None, :]
    if HAS_GROUPS:
        row_group = tl.load(groups_ptr + image * n + rows, mask=row_ok, other=0)
        col_group = tl.load(groups_ptr + image * n + cols, mask=col_ok, other=0)
        suppress = suppress & (row_group[:, None] == col_group[None, :])
    one = tl.full([1, 64], 1, tl.int64)
    bits = tl.where(suppress, one << tl.arange(0, 64).to(tl.int64)[None, :], 0)
    # Distinct powers of two: their sum is their bitwise OR.
    row_words = tl.sum(bits, axis=1)
    tl.store(mask_ptr + (image * n + rows) * words + word, row_words, mask=rows < n)


@triton.jit
def _greedy_scan_kernel(
    mask_ptr,  # (B, N, words) int64
    counts_ptr,  # (B,) int64
    positions_ptr,  # (B, max_out) int64, pre-filled with -1
    num_kept_ptr,  # (B,) int64 output
    n,
    words,
    max_out,
    WORDS_BLOCK: tl.constexpr,  # noqa: N803
):
    image = tl.program_id(0).to(tl.int64)
    count = tl.load(counts_ptr + image)
    offs = tl.arange(0, WORDS_BLOCK)
    removed = tl.zeros([WORDS_BLOCK], dtype=tl.int64)
    kept = tl.zeros([], dtype=tl.int64)
    i = tl.zeros([], dtype=tl.int64)
    while (i < count) & (kept < max_out):
        word = tl.sum(tl.where(offs == i // 64, removed, 0), axis=0)
        if ((word >> (i % 64)) & 1) == 0:
            tl.store(positions_ptr + image * max_out + kept, i)
            row = tl.load(mask_ptr + (image * n + i) * words + offs, mask=offs < words, other=0)
            removed = removed | row
            kept += 1
        i += 1
    tl.store(num_kept_ptr + image, kept)


@triton_op("rtmo::nms_sorted_triton", mutates_args=())
def nms_sorted_triton(
    boxes: torch.Tensor,
    groups: torch.Tensor | None,
    counts: torch.Tensor,
    iou_threshold: float,
    max_out: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy NMS over candidates already sorted by rank.

    boxes (Tensor[B, N, 4]) fp32 contiguous, groups (Tensor[B, N] int64 or None: one group),
    counts (Tensor[B] int64): the first counts[b] boxes of image b are candidates.
    Returns positions (Tensor[B, max_out] int64) into the sorted candidates, padded with -1, and
    num_kept (Tensor[B] int64).
    """
    batch, n = boxes.shape[0], boxes.shape[1]
    positions = torch.full((batch, max_out), -1, dtype=torch.int64, device=boxes.device)
    num_kept = torch.zeros(batch, dtype=torch.int64, device=boxes.device)
    if n == 0 or max_out == 0 or batch == 0:
        return positions, num_kept
    words = triton.cdiv(n, BITS)
    mask = torch.empty((batch, n, words), dtype=torch.int64, device=boxes.device)
    mask_grid = (triton.cdiv(n, MASK_BLOCK_ROWS), words, batch)
    wrap_triton(_iou_mask_kernel)[mask_grid](
        boxes,
        boxes if groups is None else groups,
        counts,
        mask,
        n,
        words,
        iou_threshold,
        HAS_GROUPS=groups is not None,
        BLOCK_ROWS=MASK_BLOCK_ROWS,
        num_warps=MASK_NUM_WARPS,
        **LAUNCH_OPTIONS,
    )
    wrap_triton(_greedy_scan_kernel)[(batch,)](
        mask,
        counts,
        positions,
        num_kept,
        n,
        words,
        max_out,
        WORDS_BLOCK=max(triton.next_power_of_2(words), 2),
        num_warps=SCAN_NUM_WARPS,
        **LAUNCH_OPTIONS,
    )
    return positions, num_kept
