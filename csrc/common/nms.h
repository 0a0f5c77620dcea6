// Per-pair math of greedy NMS shared by the CPU and CUDA kernels, so that every backend takes the
// same decision for the same pair of boxes (the Python reference and the Triton kernel spell out the
// same operations in the same order).
//
// Conventions (the contract of rtmo::batched_nms / rtmo::nms_padded):
// - boxes are xyxy in fp32, IoU without the "+1" pixel convention;
// - area = (x2 - x1) * (y2 - y1), unclamped as in torchvision: an inverted box has a clamped
//   intersection of 0 with everything, so the sign of its area never makes it suppress;
// - union = (area_a + area_b) - intersection, IoU = intersection / union, suppress when IoU > thr;
// - a pair whose union is not > 0 (zero-area boxes) or NaN (any NaN coordinate makes the area NaN)
//   never suppresses: no division by zero decides anything, and NaN boxes never interact.
// Products and sums are rounded one by one (no fused multiply-add) so that CPU and GPU agree bit for
// bit; nvcc would otherwise contract `a + b - x * y` into an fma.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define RTMO_HD __host__ __device__ __forceinline__
#else
#define RTMO_HD inline
#endif

namespace rtmo::nms {

RTMO_HD float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

RTMO_HD float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

RTMO_HD float max_f(float a, float b) { return a > b ? a : b; }
RTMO_HD float min_f(float a, float b) { return a < b ? a : b; }

// Unclamped area; NaN when any coordinate is NaN.
RTMO_HD float box_area(float x1, float y1, float x2, float y2) { return mul_rn(x2 - x1, y2 - y1); }

// Whether box b is suppressed by box a: IoU(a, b) > iou_threshold, computed in fp32.
RTMO_HD bool iou_exceeds(float ax1, float ay1, float ax2, float ay2, float area_a, float bx1,
                         float by1, float bx2, float by2, float area_b, float iou_threshold) {
  const float w = max_f(min_f(ax2, bx2) - max_f(ax1, bx1), 0.f);
  const float h = max_f(min_f(ay2, by2) - max_f(ay1, by1), 0.f);
  const float inter = mul_rn(w, h);
  const float uni = add_rn(area_a, area_b) - inter;
  // `&`, not `&&`: no branch, so the CPU kernel's fixed-width block of tests vectorises (the
  // division by a zero or NaN union is evaluated and discarded).
  return (uni > 0.f) & (inter / uni > iou_threshold);
}

// Sort key of a candidate: ascending key order is descending score, then ascending index (a stable
// descending sort). The score's bits are mapped to an unsigned integer whose order is the float
// order; -0 is folded into +0 so that the two compare equal, as they do for torch.sort.
RTMO_HD uint64_t score_index_key(float score, uint32_t index) {
  const float folded = score + 0.f;  // -0 + 0 == +0 under round-to-nearest
  uint32_t bits;
#if defined(__CUDA_ARCH__)
  bits = __float_as_uint(folded);
#else
  __builtin_memcpy(&bits, &folded, sizeof(bits));
#endif
  const uint32_t ascending = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
  return (static_cast<uint64_t>(~ascending) << 32) | index;
}

RTMO_HD uint32_t key_index(uint64_t key) { return static_cast<uint32_t>(key & 0xffffffffu); }

}  // namespace rtmo::nms
