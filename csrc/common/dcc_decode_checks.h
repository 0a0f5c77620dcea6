// Argument checks of rtmo::dcc_decode shared by the CPU and CUDA kernels. The Python boundary
// (rtmo_kernels/ops/dcc_decode.py) validates first with friendlier messages; these keep a direct
// torch.ops.rtmo.dcc_decode call from ever reading out of bounds.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <string_view>

// The query dtypes the kernels are instantiated for (double is rejected by check_dcc_inputs).
#define RTMO_DISPATCH_DCC_TYPES(TYPE, NAME, ...)                 \
  AT_DISPATCH_SWITCH(TYPE, NAME, AT_DISPATCH_CASE(at::kFloat, __VA_ARGS__) \
                                     AT_DISPATCH_CASE(at::kHalf, __VA_ARGS__) \
                                     AT_DISPATCH_CASE(at::kBFloat16, __VA_ARGS__))

namespace rtmo::dcc {

inline bool is_float_dtype(const at::Tensor& t) {
  const auto d = t.scalar_type();
  return d == at::kFloat || d == at::kHalf || d == at::kBFloat16;
}

// Returns true for mode "argmax", false for "expectation".
inline bool check_dcc_inputs(const at::Tensor& query_x, const at::Tensor& query_y,
                             const at::Tensor& boxes, const at::Tensor& priors,
                             int64_t num_bins_x, int64_t num_bins_y, std::string_view mode) {
  TORCH_CHECK(query_x.dim() == 3, "dcc_decode: query_x must be (N, K, D), got ", query_x.sizes());
  TORCH_CHECK(query_y.sizes() == query_x.sizes(), "dcc_decode: query_y ", query_y.sizes(),
              " must have the shape of query_x ", query_x.sizes());
  TORCH_CHECK(query_x.size(2) % 2 == 0, "dcc_decode: D must be even, got ", query_x.size(2));
  const int64_t n = query_x.size(0);
  TORCH_CHECK(boxes.dim() == 2 && boxes.size(0) == n && boxes.size(1) == 4,
              "dcc_decode: boxes must be (N, 4) with N=", n, ", got ", boxes.sizes());
  TORCH_CHECK(priors.dim() == 2 && priors.size(0) == n && priors.size(1) == 2,
              "dcc_decode: priors must be (N, 2) with N=", n, ", got ", priors.sizes());
  for (const at::Tensor* t : {&query_x, &query_y, &boxes, &priors}) {
    TORCH_CHECK(is_float_dtype(*t), "dcc_decode: inputs must be float32/float16/bfloat16, got ",
                t->scalar_type());
    TORCH_CHECK(t->device() == query_x.device(), "dcc_decode: all inputs must be on ",
                query_x.device(), ", got ", t->device());
  }
  TORCH_CHECK(num_bins_x >= 2 && num_bins_y >= 2, "dcc_decode: num_bins must be >= 2, got (",
              num_bins_x, ", ", num_bins_y, ")");
  TORCH_CHECK(num_bins_x < (int64_t{1} << 24) && num_bins_y < (int64_t{1} << 24),
              "dcc_decode: num_bins must be < 2^24 (bin indices are accumulated in float32)");
  TORCH_CHECK(query_x.size(1) < (int64_t{1} << 31) && query_x.size(2) < (int64_t{1} << 31),
              "dcc_decode: K and D must fit in int32");
  TORCH_CHECK(mode == "expectation" || mode == "argmax",
              "dcc_decode: mode must be 'expectation' or 'argmax', got '", mode, "'");
  return mode == "argmax";
}

}  // namespace rtmo::dcc
