// Fused DCC MLE loss on CUDA: rtmo::dcc_mle_loss_forward and rtmo::dcc_mle_loss_backward for CUDA
// tensors (the math is in common/dcc_mle_loss.h).
//
// One block of 4 warps per instance, both axes in turn. The bins are walked in tiles of 32 (one
// bin per lane); per tile the block builds the encodings phi (D x 32, shared memory) by angle
// addition as dcc_decode's kernel does. Warp w takes keypoints w, w + 4, ...:
// - forward: the lane's logit, the tile's max and sums by warp shuffles, folded into the
//   keypoint's online softmax with the target-weighted sum (shared memory). Only (max, sum, P)
//   per keypoint and axis, the keypoints and the nll reach global memory.
// - backward: the lane's logit and derivative logit <q', phi>, turned into the bin's gradients;
//   d/d logit goes to a K x 32 tile in shared memory, from which the block then accumulates the
//   query gradient (K x D, shared) against the encodings; the box gradient stays in per-thread
//   sums until a block reduction at the end of the axis, the sigma terms in per-keypoint sums.
// Neither the (N, K, B) logits nor the (N, B, D) encodings reach global memory.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "common/dcc_decode.h"
#include "common/dcc_decode_checks.h"
#include "common/dcc_mle_loss.h"
#include "common/dcc_mle_loss_checks.h"

namespace {

using rtmo::dcc::AxisGeometry;
using rtmo::mle::TargetRow;

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kTileBins = 32;  // one bin per lane
// Encoding rows padded to 33 floats: the query-gradient pass reads phi[d][t] for consecutive d
// across a warp, which a stride of 32 would put in one bank.
constexpr int kEncodingStride = kTileBins + 1;
// Keypoints per warp per pass: 4 warps x 5 cover K = 17 in one pass.
constexpr int kKeypointsPerWarp = 5;
static_assert(rtmo::dcc::kReanchorBins % kTileBins == 0, "re-anchor on a tile boundary");

struct ExpNonpositive {
  __device__ float operator()(float x) const { return rtmo::dcc::exp_nonpositive(x); }
};

struct QueryView {
  const void* data;
  int64_t stride_n, stride_k, stride_d;
};

// The small per-instance inputs as contiguous float64.
struct InstanceView {
  const double* boxes;    // (N, 4)
  const double* priors;   // (N, 2)
  const double* sigmas;   // (N, K)
  const double* targets;  // (N, K, 2)
  const double* areas;    // (N,)
};

struct Params {
  QueryView query[2];  // x, y
  InstanceView in;
  int num_keypoints, dim;
  int num_bins[2];
  double padding, log_temperature;
  // forward outputs
  float *nll, *keypoints, *stats;  // (N, K), (N, K, 2), (N, K, 2, 3)
  // backward inputs and outputs
  const float* grad_nll;     // (N, K)
  const float* saved_stats;  // (N, K, 2, 3) from the forward
  float *grad_query[2], *grad_boxes, *grad_sigmas;  // (N, K, D) x 2, (N, 4), (N, K)
};

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Shared memory: the encoding walk (doubles first for alignment), the queries, the tile.
struct WalkLayout {
  double *anchor_cos, *anchor_sin, *tile_cos, *tile_sin;  // F each
  float *step_cos, *step_sin;                            // F x kTileBins each
  float* encodings;                                      // D x kEncodingStride

  __host__ __device__ static size_t bytes(int dim) {
    const size_t f = dim / 2;
    return 4 * f * sizeof(double) +
           (2 * f * kTileBins + static_cast<size_t>(dim) * kEncodingStride) * sizeof(float);
  }

  __device__ WalkLayout(char*& base, int dim) {
    const int f = dim / 2;
    double* d = reinterpret_cast<double*>(base);
    anchor_cos = d;
    anchor_sin = d + f;
    tile_cos = d + 2 * f;
    tile_sin = d + 3 * f;
    step_cos = reinterpret_cast<float*>(d + 4 * f);
    step_sin = step_cos + f * kTileBins;
    encodings = step_sin + f * kTileBins;
    base = reinterpret_cast<char*>(encodings + dim * kEncodingStride);
  }
};

// Per-axis set-up of the walk (rotation tables); the caller syncs before the first tile.
__device__ void start_walk(const WalkLayout& w, const AxisGeometry& g, const Params& p) {
  const int num_freqs = p.dim / 2;
  for (int j = threadIdx.x; j < num_freqs; j += kThreads) {
    rtmo::dcc::step_table(g, rtmo::dcc::frequency(j, num_freqs, p.log_temperature), kTileBins,
                          w.step_cos + j * kTileBins, w.step_sin + j * kTileBins, w.tile_cos[j],
                          w.tile_sin[j]);
  }
}

// phi of the tile starting at first_bin; the caller syncs after (and before, when the previous
// tile's phi is still being read).
__device__ void build_tile(const WalkLayout& w, const AxisGeometry& g, const Params& p,
                           int first_bin) {
  const int num_freqs = p.dim / 2;
  for (int j = threadIdx.x; j < num_freqs; j += kThreads) {
    rtmo::dcc::advance_anchor(g, rtmo::dcc::frequency(j, num_freqs, p.log_temperature),
                              first_bin, w.tile_cos[j], w.tile_sin[j], w.anchor_cos[j],
                              w.anchor_sin[j]);
  }
  __syncthreads();
  for (int i = threadIdx.x; i < num_freqs * kTileBins; i += kThreads) {
    const int j = i / kTileBins, t = i % kTileBins;
    rtmo::dcc::encode_from_anchor(w.anchor_cos[j], w.anchor_sin[j], w.step_cos[i], w.step_sin[i],
                                  w.encodings[j * kEncodingStride + t],
                                  w.encodings[(num_freqs + j) * kEncodingStride + t]);
  }
}

template <typename scalar_t>
__device__ void load_queries(const Params& p, int n, int axis, float* queries) {
  const QueryView q = p.query[axis];
  const scalar_t* base = static_cast<const scalar_t*>(q.data) + n * q.stride_n;
  for (int i = threadIdx.x; i < p.num_keypoints * p.dim; i += kThreads) {
    const int k = i / p.dim, d = i % p.dim;
    queries[i] = static_cast<float>(base[k * q.stride_k + d * q.stride_d]);
  }
}

__device__ AxisGeometry geometry(const Params& p, int n, int axis) {
  return rtmo::dcc::axis_geometry(p.in.boxes[4 * n + axis], p.in.boxes[4 * n + axis + 2],
                                  p.in.priors[2 * n + axis], p.num_bins[axis], p.padding);
}

// The keypoints' Laplace target constants of both axes into shared memory (2 x K x 3), once per
// instance: their float64 divisions and square root call slow paths, and calls inside the axis
// loop made ptxas spill the values live across them. The caller syncs before `target_row`.
__device__ void set_target_rows(const Params& p, int n, float* rows) {
  for (int i = threadIdx.x; i < 2 * p.num_keypoints; i += kThreads) {
    const int axis = i / p.num_keypoints, k = i % p.num_keypoints;
    const int64_t row = static_cast<int64_t>(n) * p.num_keypoints + k;
    const auto tr = rtmo::mle::target_row<float>(p.in.targets[2 * row + axis], geometry(p, n, axis),
                                                 p.in.sigmas[row], p.in.areas[n]);
    rows[3 * i] = tr.offset0;
    rows[3 * i + 1] = tr.rate;
    rows[3 * i + 2] = tr.inv_sigma;
  }
}

__device__ __forceinline__ TargetRow<float> target_row(const float* rows, int num_keypoints,
                                                       int axis, int k) {
  const float* row = rows + 3 * (axis * num_keypoints + k);
  return TargetRow<float>{row[0], row[1], row[2]};
}

// ---- forward ---------------------------------------------------------------------------------

struct ForwardLayout {
  WalkLayout walk;
  float* queries;      // K x D
  float* state;        // 2 x K x 4: max, sum, target sum, weighted index per axis
  float* target_rows;  // 2 x K x 3

  __host__ __device__ static size_t bytes(int num_keypoints, int dim) {
    return WalkLayout::bytes(dim) +
           (static_cast<size_t>(num_keypoints) * dim + 14 * num_keypoints) * sizeof(float);
  }

  __device__ ForwardLayout(char* base, int num_keypoints, int dim) : walk(base, dim) {
    queries = reinterpret_cast<float*>(base);
    state = queries + num_keypoints * dim;
    target_rows = state + 8 * num_keypoints;
  }
};

// Folds keypoint k's logit at this lane's bin into its state (lane 0 writes it back).
__device__ __forceinline__ void fold_logit(float* state, float raw, bool valid, float bin,
                                           float bin_offset, const TargetRow<float>& row) {
  const ExpNonpositive exp_np;
  rtmo::mle::MleState<float, float> st{state[0], state[1], state[2], state[3]};
  const float logit = valid ? rtmo::mle::clamp_logit(raw) : -INFINITY;
  rtmo::mle::mle_update_max(st, warp_max(logit), exp_np);
  const float distance = rtmo::mle::absolute(rtmo::mle::signed_distance(row, bin_offset));
  const float target = rtmo::mle::laplace_target(row, distance, exp_np);
  const float e = exp_np(logit - st.max);
  st.sum += warp_sum(e);
  st.target_sum += warp_sum(e * target);
  st.weighted_index += warp_sum(e * bin);
  __syncwarp();
  if (threadIdx.x % 32 == 0) {
    state[0] = st.max;
    state[1] = st.sum;
    state[2] = st.target_sum;
    state[3] = st.weighted_index;
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads) dcc_mle_loss_forward_kernel(const Params p) {
  extern __shared__ __align__(16) char smem[];
  const int n = blockIdx.x;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int num_keypoints = p.num_keypoints, dim = p.dim;
  const ForwardLayout sh(smem, num_keypoints, dim);
  set_target_rows(p, n, sh.target_rows);
  for (int i = tid; i < 2 * num_keypoints; i += kThreads) {
    sh.state[4 * i] = -INFINITY;
    sh.state[4 * i + 1] = sh.state[4 * i + 2] = sh.state[4 * i + 3] = 0.0f;
  }

  // Not unrolled: each axis is a full walk, and two copies of it cost registers.
#pragma unroll 1
  for (int axis = 0; axis < 2; ++axis) {
    const AxisGeometry g = geometry(p, n, axis);
    float* state = sh.state + 4 * num_keypoints * axis;
    load_queries<scalar_t>(p, n, axis, sh.queries);
    start_walk(sh.walk, g, p);
    for (int first_bin = 0; first_bin < g.num_bins; first_bin += kTileBins) {
      __syncthreads();  // tables ready; the previous tile's phi is no longer read
      build_tile(sh.walk, g, p, first_bin);
      __syncthreads();  // phi of the tile is ready
      const int bin = first_bin + lane;
      const bool valid = bin < g.num_bins;
      const float bin_offset = static_cast<float>(static_cast<double>(bin) * g.step);
      for (int k0 = warp; k0 < num_keypoints; k0 += kWarps * kKeypointsPerWarp) {
        float acc[kKeypointsPerWarp] = {};
        for (int d = 0; d < dim; ++d) {
          const float e = sh.walk.encodings[d * kEncodingStride + lane];
#pragma unroll
          for (int i = 0; i < kKeypointsPerWarp; ++i) {
            const int k = k0 + i * kWarps;
            if (k < num_keypoints) acc[i] = fmaf(sh.queries[k * dim + d], e, acc[i]);
          }
        }
#pragma unroll
        for (int i = 0; i < kKeypointsPerWarp; ++i) {
          const int k = k0 + i * kWarps;
          if (k < num_keypoints) {
            fold_logit(state + 4 * k, acc[i], valid, static_cast<float>(bin), bin_offset,
                       target_row(sh.target_rows, num_keypoints, axis, k));
          }
        }
      }
    }
    __syncthreads();  // the next axis reuses the queries and the walk
  }
  // The rows' float64 finish (divisions with slow-path calls) after the walks, for the same
  // reason as set_target_rows.
  for (int i = tid; i < 2 * num_keypoints; i += kThreads) {
    const int axis = i / num_keypoints, k = i % num_keypoints;
    const float* s = sh.state + 4 * i;
    const rtmo::mle::MleState<float, float> st{s[0], s[1], s[2], s[3]};
    const auto r = rtmo::mle::mle_finish(st, geometry(p, n, axis));
    const int64_t row = static_cast<int64_t>(n) * num_keypoints + k;
    float* stats = p.stats + row * 6 + 3 * axis;
    stats[0] = r.stats.max;
    stats[1] = r.stats.sum;
    stats[2] = r.stats.likelihood;
    p.keypoints[row * 2 + axis] = r.coordinate;
  }
  __syncthreads();  // both axes' likelihoods are stored
  for (int k = tid; k < num_keypoints; k += kThreads) {
    const int64_t row = static_cast<int64_t>(n) * num_keypoints + k;
    p.nll[row] = rtmo::mle::mle_nll(p.stats[row * 6 + 2], p.stats[row * 6 + 5]);
  }
}

// ---- backward --------------------------------------------------------------------------------

struct BackwardLayout {
  WalkLayout walk;
  float* queries;        // K x D
  float* slope_queries;  // K x D: q' = [w q_sin, -w q_cos]
  float* query_grads;    // K x D
  float* alpha;          // K x kTileBins: the tile's d nll / d logit
  float* sigma_terms;    // K, both axes
  float* grad_rows;      // K x 4: max, 1 / (sum + eps), P, gP
  float* target_rows;    // 2 x K x 3
  float* reduce;         // kWarps

  __host__ __device__ static size_t bytes(int num_keypoints, int dim) {
    return WalkLayout::bytes(dim) +
           (3 * static_cast<size_t>(num_keypoints) * dim + num_keypoints * kTileBins +
            11 * num_keypoints + kWarps) * sizeof(float);
  }

  __device__ BackwardLayout(char* base, int num_keypoints, int dim) : walk(base, dim) {
    queries = reinterpret_cast<float*>(base);
    slope_queries = queries + num_keypoints * dim;
    query_grads = slope_queries + num_keypoints * dim;
    alpha = query_grads + num_keypoints * dim;
    sigma_terms = alpha + num_keypoints * kTileBins;
    grad_rows = sigma_terms + num_keypoints;
    target_rows = grad_rows + 4 * num_keypoints;
    reduce = target_rows + 6 * num_keypoints;
  }
};

__device__ void set_axis_rows(const BackwardLayout& sh, const Params& p, int n, int axis) {
  const int num_keypoints = p.num_keypoints, dim = p.dim, num_freqs = dim / 2;
  for (int i = threadIdx.x; i < num_keypoints * num_freqs; i += kThreads) {
    const int k = i / num_freqs, j = i % num_freqs;
    const float w = static_cast<float>(rtmo::dcc::frequency(j, num_freqs, p.log_temperature));
    sh.slope_queries[k * dim + j] = w * sh.queries[k * dim + num_freqs + j];
    sh.slope_queries[k * dim + num_freqs + j] = -w * sh.queries[k * dim + j];
  }
  for (int i = threadIdx.x; i < num_keypoints * dim; i += kThreads) sh.query_grads[i] = 0.0f;
  for (int k = threadIdx.x; k < num_keypoints; k += kThreads) {
    const int64_t row = static_cast<int64_t>(n) * num_keypoints + k;
    const float* stats = p.saved_stats + row * 6;
    float grad_x, grad_y;
    rtmo::mle::likelihood_grads(p.grad_nll[row], stats[2], stats[5], grad_x, grad_y);
    const rtmo::mle::RowStats<float> axis_stats{stats[3 * axis], stats[3 * axis + 1],
                                                stats[3 * axis + 2]};
    const auto gr = rtmo::mle::grad_row(axis_stats, axis == 0 ? grad_x : grad_y);
    float* out = sh.grad_rows + 4 * k;
    out[0] = gr.max;
    out[1] = gr.inv_norm;
    out[2] = gr.likelihood;
    out[3] = gr.grad_likelihood;
  }
}

// Block sum of one value per thread (every thread gets it).
__device__ float block_sum(float v, float* reduce) {
  v = warp_sum(v);
  if (threadIdx.x % 32 == 0) reduce[threadIdx.x / 32] = v;
  __syncthreads();
  float total = 0.0f;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) total += reduce[w];
  __syncthreads();
  return total;
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads) dcc_mle_loss_backward_kernel(const Params p) {
  extern __shared__ __align__(16) char smem[];
  const int n = blockIdx.x;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int num_keypoints = p.num_keypoints, dim = p.dim;
  const BackwardLayout sh(smem, num_keypoints, dim);
  const ExpNonpositive exp_np;
  for (int k = tid; k < num_keypoints; k += kThreads) sh.sigma_terms[k] = 0.0f;
  set_target_rows(p, n, sh.target_rows);

  // Not unrolled: each axis is a full walk, and two copies of it cost registers (spills on sm_90).
#pragma unroll 1
  for (int axis = 0; axis < 2; ++axis) {
    const AxisGeometry g = geometry(p, n, axis);
    load_queries<scalar_t>(p, n, axis, sh.queries);
    __syncthreads();  // the queries are in place for q'
    set_axis_rows(sh, p, n, axis);
    start_walk(sh.walk, g, p);
    float bin_sum = 0.0f, bin_unit_sum = 0.0f;  // this thread's sum of d/db_i and d/db_i u_i
    for (int first_bin = 0; first_bin < g.num_bins; first_bin += kTileBins) {
      __syncthreads();  // rows and tables ready; the previous tile is no longer read
      build_tile(sh.walk, g, p, first_bin);
      __syncthreads();
      const int bin = first_bin + lane;
      const bool valid = bin < g.num_bins;
      const float bin_offset = static_cast<float>(static_cast<double>(bin) * g.step);
      float bin_grad = 0.0f;
      for (int k0 = warp; k0 < num_keypoints; k0 += kWarps * kKeypointsPerWarp) {
        float raw[kKeypointsPerWarp] = {}, slope[kKeypointsPerWarp] = {};
        for (int d = 0; d < dim; ++d) {
          const float e = sh.walk.encodings[d * kEncodingStride + lane];
#pragma unroll
          for (int i = 0; i < kKeypointsPerWarp; ++i) {
            const int k = k0 + i * kWarps;
            if (k < num_keypoints) {
              raw[i] = fmaf(sh.queries[k * dim + d], e, raw[i]);
              slope[i] = fmaf(sh.slope_queries[k * dim + d], e, slope[i]);
            }
          }
        }
#pragma unroll
        for (int i = 0; i < kKeypointsPerWarp; ++i) {
          const int k = k0 + i * kWarps;
          if (k >= num_keypoints) continue;
          const TargetRow<float> tr = target_row(sh.target_rows, num_keypoints, axis, k);
          const float* r = sh.grad_rows + 4 * k;
          const rtmo::mle::GradRow<float> gr{r[0], r[1], r[2], r[3]};
          auto grads = rtmo::mle::bin_grads(raw[i], slope[i],
                                            rtmo::mle::signed_distance(tr, bin_offset), tr, gr,
                                            exp_np);
          const float sigma_term = warp_sum(valid ? grads.sigma : 0.0f);
          sh.alpha[k * kTileBins + lane] = valid ? grads.logit : 0.0f;
          bin_grad += valid ? grads.bin : 0.0f;
          if (lane == 0) sh.sigma_terms[k] += sigma_term;
        }
      }
      const float unit =
          static_cast<float>(-0.5 + static_cast<double>(bin) / (g.num_bins - 1));
      bin_sum += bin_grad;
      bin_unit_sum += bin_grad * unit;
      __syncthreads();  // alpha of the tile is complete
      for (int i = tid; i < num_keypoints * dim; i += kThreads) {
        const int k = i / dim, d = i % dim;
        const float* a = sh.alpha + k * kTileBins;
        const float* e = sh.walk.encodings + d * kEncodingStride;
        float acc = sh.query_grads[i];
#pragma unroll 8
        for (int t = 0; t < kTileBins; ++t) acc = fmaf(a[t], e[t], acc);
        sh.query_grads[i] = acc;
      }
    }
    __syncthreads();  // the query gradient is complete
    float* out = p.grad_query[axis] + static_cast<int64_t>(n) * num_keypoints * dim;
    for (int i = tid; i < num_keypoints * dim; i += kThreads) out[i] = sh.query_grads[i];
    const float total = block_sum(bin_sum, sh.reduce);
    const float unit_total = block_sum(bin_unit_sum, sh.reduce);
    if (tid == 0) {
      const float padding = static_cast<float>(p.padding);
      p.grad_boxes[4 * n + axis] = 0.5f * total - padding * unit_total;
      p.grad_boxes[4 * n + axis + 2] = 0.5f * total + padding * unit_total;
    }
  }
  __syncthreads();
  for (int k = tid; k < num_keypoints; k += kThreads) {
    const int64_t row = static_cast<int64_t>(n) * num_keypoints + k;
    const double sigma = p.in.sigmas[row];
    p.grad_sigmas[row] = rtmo::mle::sigma_unclipped(sigma)
                             ? sh.sigma_terms[k] / static_cast<float>(
                                                       rtmo::mle::clipped_sigma(sigma))
                             : 0.0f;
  }
}

// ---- host ------------------------------------------------------------------------------------

// Keeps the float64 copies alive for the launch.
struct InstanceTensors {
  at::Tensor boxes, priors, sigmas, targets, areas;
  InstanceTensors(const at::Tensor& b, const at::Tensor& p, const at::Tensor& s,
                  const at::Tensor& t, const at::Tensor& a)
      : boxes(b.to(at::kDouble).contiguous()),
        priors(p.to(at::kDouble).contiguous()),
        sigmas(s.to(at::kDouble).contiguous()),
        targets(t.to(at::kDouble).contiguous()),
        areas(a.to(at::kDouble).contiguous()) {}

  InstanceView view() const {
    return {boxes.const_data_ptr<double>(), priors.const_data_ptr<double>(),
            sigmas.const_data_ptr<double>(), targets.const_data_ptr<double>(),
            areas.const_data_ptr<double>()};
  }
};

Params base_params(const at::Tensor& query_x, const at::Tensor& query_y, int64_t num_bins_x,
                   int64_t num_bins_y, double padding, double temperature) {
  Params p{};
  const at::Tensor* queries[2] = {&query_x, &query_y};
  for (int a = 0; a < 2; ++a) {
    p.query[a] = {queries[a]->data_ptr(), queries[a]->stride(0), queries[a]->stride(1),
                  queries[a]->stride(2)};
  }
  p.num_keypoints = static_cast<int>(query_x.size(1));
  p.dim = static_cast<int>(query_x.size(2));
  p.num_bins[0] = static_cast<int>(num_bins_x);
  p.num_bins[1] = static_cast<int>(num_bins_y);
  p.padding = padding;
  p.log_temperature = std::log(temperature);
  return p;
}

void check_cuda(const char* op, const at::Tensor& query_x, size_t smem) {
  TORCH_CHECK(query_x.is_cuda(), op, " (CUDA kernel): tensors must be on a CUDA device");
  TORCH_CHECK(query_x.scalar_type() != at::kDouble, op,
              " (CUDA kernel): float64 runs on the CPU kernel and the reference only");
  TORCH_CHECK(query_x.size(0) <= INT32_MAX, op, " (CUDA kernel): N must fit in the grid, got ",
              query_x.size(0));
  int max_smem = 0;
  AT_CUDA_CHECK(cudaDeviceGetAttribute(&max_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin,
                                       query_x.get_device()));
  TORCH_CHECK(smem <= static_cast<size_t>(max_smem), op, " (CUDA kernel): K=", query_x.size(1),
              ", D=", query_x.size(2), " need ", smem, " bytes of shared memory, the device has ",
              max_smem);
}

template <typename Kernel>
void launch(Kernel kernel, int64_t n, size_t smem, const Params& p) {
  if (smem > 48 * 1024) {  // beyond the default limit the kernel must opt in
    AT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(smem)));
  }
  kernel<<<static_cast<unsigned>(n), kThreads, smem, at::cuda::getCurrentCUDAStream()>>>(p);
  AT_CUDA_CHECK(cudaGetLastError());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> dcc_mle_loss_forward_cuda(
    const at::Tensor& query_x, const at::Tensor& query_y, const at::Tensor& boxes,
    const at::Tensor& priors, const at::Tensor& sigmas, const at::Tensor& target_keypoints,
    const at::Tensor& areas, int64_t num_bins_x, int64_t num_bins_y, double padding,
    double temperature) {
  rtmo::mle::check_mle_inputs("dcc_mle_loss_forward", query_x, query_y, boxes, priors, sigmas,
                              target_keypoints, areas, num_bins_x, num_bins_y, padding,
                              temperature);
  const size_t smem = ForwardLayout::bytes(static_cast<int>(query_x.size(1)),
                                           static_cast<int>(query_x.size(2)));
  check_cuda("dcc_mle_loss_forward", query_x, smem);
  const c10::cuda::CUDAGuard guard(query_x.device());
  const int64_t n = query_x.size(0), k = query_x.size(1);
  const auto opts = query_x.options().dtype(at::kFloat);
  at::Tensor nll = at::empty({n, k}, opts);
  at::Tensor keypoints = at::empty({n, k, 2}, opts);
  at::Tensor stats = at::empty({n, k, 2, 3}, opts);
  if (n == 0 || k == 0) return {nll, keypoints, stats};
  const at::Tensor qy = query_y.to(query_x.scalar_type());  // both queries in one dtype
  const InstanceTensors in(boxes, priors, sigmas, target_keypoints, areas);
  Params p = base_params(query_x, qy, num_bins_x, num_bins_y, padding, temperature);
  p.in = in.view();
  p.nll = nll.data_ptr<float>();
  p.keypoints = keypoints.data_ptr<float>();
  p.stats = stats.data_ptr<float>();
  RTMO_DISPATCH_DCC_TYPES(query_x.scalar_type(), "dcc_mle_loss_forward_cuda", [&] {
    launch(dcc_mle_loss_forward_kernel<scalar_t>, n, smem, p);
  });
  return {nll, keypoints, stats};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> dcc_mle_loss_backward_cuda(
    const at::Tensor& grad_nll, const at::Tensor& query_x, const at::Tensor& query_y,
    const at::Tensor& boxes, const at::Tensor& priors, const at::Tensor& sigmas,
    const at::Tensor& target_keypoints, const at::Tensor& areas, const at::Tensor& stats,
    int64_t num_bins_x, int64_t num_bins_y, double padding, double temperature) {
  rtmo::mle::check_mle_inputs("dcc_mle_loss_backward", query_x, query_y, boxes, priors, sigmas,
                              target_keypoints, areas, num_bins_x, num_bins_y, padding,
                              temperature);
  rtmo::mle::check_mle_backward_inputs(grad_nll, stats, query_x);
  const size_t smem = BackwardLayout::bytes(static_cast<int>(query_x.size(1)),
                                            static_cast<int>(query_x.size(2)));
  check_cuda("dcc_mle_loss_backward", query_x, smem);
  const c10::cuda::CUDAGuard guard(query_x.device());
  const int64_t n = query_x.size(0), k = query_x.size(1);
  const auto opts = query_x.options().dtype(at::kFloat);
  at::Tensor grad_qx = at::empty(query_x.sizes(), opts);
  at::Tensor grad_qy = at::empty(query_x.sizes(), opts);
  at::Tensor grad_boxes = at::zeros({n, 4}, opts);
  at::Tensor grad_sigmas = at::zeros({n, k}, opts);
  if (n > 0 && k > 0) {
    const at::Tensor qy = query_y.to(query_x.scalar_type());
    const at::Tensor grad32 = grad_nll.to(at::kFloat).contiguous();
    const at::Tensor stats32 = stats.contiguous();
    const InstanceTensors in(boxes, priors, sigmas, target_keypoints, areas);
    Params p = base_params(query_x, qy, num_bins_x, num_bins_y, padding, temperature);
    p.in = in.view();
    p.saved_stats = stats32.const_data_ptr<float>();
    p.grad_nll = grad32.const_data_ptr<float>();
    p.grad_query[0] = grad_qx.data_ptr<float>();
    p.grad_query[1] = grad_qy.data_ptr<float>();
    p.grad_boxes = grad_boxes.data_ptr<float>();
    p.grad_sigmas = grad_sigmas.data_ptr<float>();
    RTMO_DISPATCH_DCC_TYPES(query_x.scalar_type(), "dcc_mle_loss_backward_cuda", [&] {
      launch(dcc_mle_loss_backward_kernel<scalar_t>, n, smem, p);
    });
  }
  // Each gradient in the dtype of its input.
  return {grad_qx.to(query_x.scalar_type()), grad_qy.to(query_y.scalar_type()),
          grad_boxes.to(boxes.scalar_type()), grad_sigmas.to(sigmas.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(rtmo, CUDA, m) {
  m.impl("dcc_mle_loss_forward", &dcc_mle_loss_forward_cuda);
  m.impl("dcc_mle_loss_backward", &dcc_mle_loss_backward_cuda);
}
