// Argument checks of rtmo::dcc_mle_loss_forward / _backward shared by the CPU and CUDA kernels.
// The Python boundary (rtmo_kernels/ops/dcc_mle_loss.py) validates first with friendlier messages;
// these keep a direct torch.ops.rtmo call from ever reading out of bounds.
#pragma once

#include <ATen/ATen.h>

#include <initializer_list>

namespace rtmo::mle {

inline bool is_mle_dtype(const at::Tensor& t) {
  const auto d = t.scalar_type();
  return d == at::kFloat || d == at::kHalf || d == at::kBFloat16 || d == at::kDouble;
}

// The dtype the kernels compute in and return the loss, keypoints and statistics in.
inline at::ScalarType compute_dtype(const at::Tensor& query_x) {
  return query_x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

inline void check_mle_inputs(const char* op, const at::Tensor& query_x, const at::Tensor& query_y,
                             const at::Tensor& boxes, const at::Tensor& priors,
                             const at::Tensor& sigmas, const at::Tensor& target_keypoints,
                             const at::Tensor& areas, int64_t num_bins_x, int64_t num_bins_y,
                             double padding, double temperature) {
  TORCH_CHECK(query_x.dim() == 3, op, ": query_x must be (N, K, D), got ", query_x.sizes());
  TORCH_CHECK(query_y.sizes() == query_x.sizes(), op, ": query_y ", query_y.sizes(),
              " must have the shape of query_x ", query_x.sizes());
  TORCH_CHECK(query_x.size(2) % 2 == 0, op, ": D must be even, got ", query_x.size(2));
  const int64_t n = query_x.size(0), k = query_x.size(1);
  TORCH_CHECK(boxes.dim() == 2 && boxes.size(0) == n && boxes.size(1) == 4, op,
              ": boxes must be (N, 4) with N=", n, ", got ", boxes.sizes());
  TORCH_CHECK(priors.dim() == 2 && priors.size(0) == n && priors.size(1) == 2, op,
              ": priors must be (N, 2) with N=", n, ", got ", priors.sizes());
  TORCH_CHECK(sigmas.dim() == 2 && sigmas.size(0) == n && sigmas.size(1) == k, op,
              ": sigmas must be (N, K) = (", n, ", ", k, "), got ", sigmas.sizes());
  TORCH_CHECK(target_keypoints.dim() == 3 && target_keypoints.size(0) == n &&
                  target_keypoints.size(1) == k && target_keypoints.size(2) == 2,
              op, ": target_keypoints must be (N, K, 2) = (", n, ", ", k, ", 2), got ",
              target_keypoints.sizes());
  TORCH_CHECK(areas.dim() == 1 && areas.size(0) == n, op, ": areas must be (N,) with N=", n,
              ", got ", areas.sizes());
  for (const at::Tensor* t : {&query_x, &query_y, &boxes, &priors, &sigmas, &target_keypoints,
                              &areas}) {
    TORCH_CHECK(is_mle_dtype(*t), op, ": inputs must be float32/float16/bfloat16/float64, got ",
                t->scalar_type());
    TORCH_CHECK(t->device() == query_x.device(), op, ": all inputs must be on ",
                query_x.device(), ", got ", t->device());
  }
  TORCH_CHECK(num_bins_x >= 2 && num_bins_y >= 2, op, ": num_bins must be >= 2, got (",
              num_bins_x, ", ", num_bins_y, ")");
  TORCH_CHECK(num_bins_x < (int64_t{1} << 24) && num_bins_y < (int64_t{1} << 24), op,
              ": num_bins must be < 2^24 (bin indices are accumulated in float32)");
  TORCH_CHECK(k < (int64_t{1} << 31) && query_x.size(2) < (int64_t{1} << 31), op,
              ": K and D must fit in int32");
  TORCH_CHECK(padding > 0 && temperature > 0, op, ": padding and temperature must be > 0, got ",
              padding, " and ", temperature);
}

// The backward's extra arguments: the upstream gradient (N, K) and the forward's statistics
// (N, K, 2, 3) in the compute dtype.
inline void check_mle_backward_inputs(const at::Tensor& grad_nll, const at::Tensor& stats,
                                      const at::Tensor& query_x) {
  const int64_t n = query_x.size(0), k = query_x.size(1);
  const char* op = "dcc_mle_loss_backward";
  TORCH_CHECK(grad_nll.dim() == 2 && grad_nll.size(0) == n && grad_nll.size(1) == k, op,
              ": grad_nll must be (N, K) = (", n, ", ", k, "), got ", grad_nll.sizes());
  TORCH_CHECK(is_mle_dtype(grad_nll), op, ": grad_nll must be a float tensor, got ",
              grad_nll.scalar_type());
  TORCH_CHECK(stats.dim() == 4 && stats.size(0) == n && stats.size(1) == k &&
                  stats.size(2) == 2 && stats.size(3) == 3,
              op, ": stats must be (N, K, 2, 3) = (", n, ", ", k, ", 2, 3), got ", stats.sizes());
  TORCH_CHECK(stats.scalar_type() == compute_dtype(query_x), op, ": stats must be ",
              compute_dtype(query_x), " for ", query_x.scalar_type(), " queries, got ",
              stats.scalar_type());
  for (const at::Tensor* t : {&grad_nll, &stats}) {
    TORCH_CHECK(t->device() == query_x.device(), op, ": all inputs must be on ",
                query_x.device(), ", got ", t->device());
  }
}

}  // namespace rtmo::mle
