// Argument checks of rtmo::batched_nms and rtmo::nms_padded shared by the CPU and CUDA kernels. The
// Python boundary (rtmo_kernels/ops/) validates first with friendlier messages; these keep a direct
// torch.ops.rtmo call from ever reading out of bounds.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace rtmo::nms {

// Returns M, the number of boxes.
inline int64_t check_batched_nms_inputs(const at::Tensor& boxes, const at::Tensor& scores,
                                        const at::Tensor& idxs) {
  TORCH_CHECK(boxes.dim() == 2 && boxes.size(1) == 4, "batched_nms: boxes must be (M, 4), got ",
              boxes.sizes());
  const int64_t m = boxes.size(0);
  TORCH_CHECK(scores.dim() == 1 && scores.size(0) == m, "batched_nms: scores must be (M,) with M=",
              m, ", got ", scores.sizes());
  TORCH_CHECK(idxs.dim() == 1 && idxs.size(0) == m, "batched_nms: idxs must be (M,) with M=", m,
              ", got ", idxs.sizes());
  return m;
}

inline void check_nms_padded_inputs(const at::Tensor& boxes, const at::Tensor& scores,
                                    int64_t max_det) {
  TORCH_CHECK(boxes.dim() == 3 && boxes.size(2) == 4, "nms_padded: boxes must be (B, N, 4), got ",
              boxes.sizes());
  TORCH_CHECK(scores.dim() == 2 && scores.size(0) == boxes.size(0) &&
                  scores.size(1) == boxes.size(1),
              "nms_padded: scores must be (B, N)=(", boxes.size(0), ", ", boxes.size(1), "), got ",
              scores.sizes());
  TORCH_CHECK(max_det >= 0, "nms_padded: max_det must be >= 0, got ", max_det);
}

}  // namespace rtmo::nms
