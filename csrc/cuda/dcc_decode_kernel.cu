// Fused Dynamic Coordinate Classifier decode on CUDA: rtmo::dcc_decode for CUDA tensors.
//
// One block of 4 warps per (instance, axis). The bins are walked in tiles of 32 (one bin per lane).
// Per tile the block builds the encodings phi (D x 32, shared memory) by angle addition from the
// tile anchors (rtmo::dcc::advance_anchor / encode_from_anchor, the CPU kernel's math), then warp w
// computes the logits of keypoints w, w + 4, ... against its lane's bin, reduces the tile's max and
// sums with warp shuffles and folds them into the keypoint's online softmax state (shared memory).
// Neither the (N, K, B) logits nor the (N, B, D) encodings reach global memory.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <string_view>

#include "common/dcc_decode.h"
#include "common/dcc_decode_checks.h"

namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kTileBins = 32;  // one bin per lane
// Keypoints per warp per pass: 4 warps x 5 cover K = 17 in one pass; 5 accumulators per thread.
constexpr int kKeypointsPerWarp = 5;
static_assert(rtmo::dcc::kReanchorBins % kTileBins == 0, "re-anchor on a tile boundary");

struct QueryView {
  const void* data;
  int64_t stride_n, stride_k, stride_d;
};

struct Params {
  QueryView query[2];      // x, y
  const float* boxes;      // (N, 4) contiguous float32
  const float* priors;     // (N, 2) contiguous float32
  float* keypoints;        // (N, K, 2)
  float* confidence;       // (N, K, 2)
  int num_keypoints, dim;
  int num_bins[2];
  double padding, log_temperature;
  bool argmax;
};

// Shared memory carve-up; doubles first for alignment.
struct SharedLayout {
  double *anchor_cos, *anchor_sin, *tile_cos, *tile_sin;  // F each
  float* queries;                                        // K x D
  float* encodings;                                      // D x kTileBins
  float *step_cos, *step_sin;                            // F x kTileBins
  float *max, *sum, *weighted_index;                     // K each
  int* argmax;                                           // K

  __host__ __device__ static size_t bytes(int num_keypoints, int dim) {
    const size_t f = dim / 2;
    return 4 * f * sizeof(double) +
           (static_cast<size_t>(num_keypoints) * dim + dim * kTileBins + 2 * f * kTileBins +
            3 * num_keypoints) * sizeof(float) +
           num_keypoints * sizeof(int);
  }

  __device__ SharedLayout(char* base, int num_keypoints, int dim) {
    const int f = dim / 2;
    double* d = reinterpret_cast<double*>(base);
    anchor_cos = d;
    anchor_sin = d + f;
    tile_cos = d + 2 * f;
    tile_sin = d + 3 * f;
    float* p = reinterpret_cast<float*>(d + 4 * f);
    queries = p;
    encodings = queries + num_keypoints * dim;
    step_cos = encodings + dim * kTileBins;
    step_sin = step_cos + f * kTileBins;
    max = step_sin + f * kTileBins;
    sum = max + num_keypoints;
    weighted_index = sum + num_keypoints;
    argmax = reinterpret_cast<int*>(weighted_index + num_keypoints);
  }
};

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ int warp_min(int v) {
  for (int o = 16; o > 0; o >>= 1) v = min(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// One keypoint's logit at this lane's bin folded into its state (all lanes hold the same result;
// lane 0 writes it back).
__device__ __forceinline__ void fold_logit(const SharedLayout& sh, int k, float logit, int bin,
                                           bool valid, int lane) {
  logit = valid ? logit : -INFINITY;
  rtmo::dcc::SoftmaxState<float> st{sh.max[k], sh.sum[k], sh.weighted_index[k], sh.argmax[k]};
  const float tile_max = warp_max(logit);
  const int tile_argmax = warp_min(logit == tile_max ? bin : INT_MAX);
  rtmo::dcc::softmax_update_max(st, tile_max, tile_argmax);
  const float e = rtmo::dcc::exp_nonpositive(logit - st.max);
  rtmo::dcc::softmax_add(st, warp_sum(e), warp_sum(e * static_cast<float>(bin)));
  __syncwarp();
  if (lane == 0) {
    sh.max[k] = st.max;
    sh.sum[k] = st.sum;
    sh.weighted_index[k] = st.weighted_index;
    sh.argmax[k] = st.argmax;
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads) dcc_decode_kernel(const Params p) {
  extern __shared__ __align__(16) char smem[];
  const int n = blockIdx.x, axis = blockIdx.y;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int num_keypoints = p.num_keypoints, dim = p.dim, num_freqs = dim / 2;
  const SharedLayout sh(smem, num_keypoints, dim);
  const rtmo::dcc::AxisGeometry g = rtmo::dcc::axis_geometry(
      p.boxes[4 * n + axis], p.boxes[4 * n + axis + 2], p.priors[2 * n + axis],
      p.num_bins[axis], p.padding);

  const QueryView q = p.query[axis];
  const scalar_t* query = static_cast<const scalar_t*>(q.data) + n * q.stride_n;
  for (int i = tid; i < num_keypoints * dim; i += kThreads) {
    const int k = i / dim, d = i % dim;
    sh.queries[i] = static_cast<float>(query[k * q.stride_k + d * q.stride_d]);
  }
  for (int k = tid; k < num_keypoints; k += kThreads) {
    sh.max[k] = -INFINITY;
    sh.sum[k] = 0.0f;
    sh.weighted_index[k] = 0.0f;
    sh.argmax[k] = 0;
  }
  for (int j = tid; j < num_freqs; j += kThreads) {
    rtmo::dcc::step_table(g, rtmo::dcc::frequency(j, num_freqs, p.log_temperature), kTileBins,
                          sh.step_cos + j * kTileBins, sh.step_sin + j * kTileBins,
                          sh.tile_cos[j], sh.tile_sin[j]);
  }

  for (int first_bin = 0; first_bin < g.num_bins; first_bin += kTileBins) {
    for (int j = tid; j < num_freqs; j += kThreads) {
      rtmo::dcc::advance_anchor(g, rtmo::dcc::frequency(j, num_freqs, p.log_temperature),
                                first_bin, sh.tile_cos[j], sh.tile_sin[j], sh.anchor_cos[j],
                                sh.anchor_sin[j]);
    }
    __syncthreads();  // anchors (and on the first tile the tables and queries) are ready
    for (int i = tid; i < num_freqs * kTileBins; i += kThreads) {
      const int j = i / kTileBins;
      rtmo::dcc::encode_from_anchor(sh.anchor_cos[j], sh.anchor_sin[j], sh.step_cos[i],
                                    sh.step_sin[i], sh.encodings[i],
                                    sh.encodings[num_freqs * kTileBins + i]);
    }
    __syncthreads();  // phi of the tile is ready

    const int bin = first_bin + lane;
    const bool valid = bin < g.num_bins;
    for (int k0 = warp; k0 < num_keypoints; k0 += kWarps * kKeypointsPerWarp) {
      float acc[kKeypointsPerWarp] = {};
      for (int d = 0; d < dim; ++d) {
        const float e = sh.encodings[d * kTileBins + lane];
#pragma unroll
        for (int i = 0; i < kKeypointsPerWarp; ++i) {
          const int k = k0 + i * kWarps;
          if (k < num_keypoints) acc[i] = fmaf(sh.queries[k * dim + d], e, acc[i]);
        }
      }
#pragma unroll
      for (int i = 0; i < kKeypointsPerWarp; ++i) {
        const int k = k0 + i * kWarps;
        if (k < num_keypoints) fold_logit(sh, k, acc[i], bin, valid, lane);
      }
    }
    __syncthreads();  // the next tile overwrites phi and the anchors
  }

  for (int k = tid; k < num_keypoints; k += kThreads) {
    const rtmo::dcc::SoftmaxState<float> st{sh.max[k], sh.sum[k], sh.weighted_index[k],
                                            sh.argmax[k]};
    const auto r = rtmo::dcc::softmax_finish(st, g, p.argmax);
    const int64_t out = (static_cast<int64_t>(n) * num_keypoints + k) * 2 + axis;
    p.keypoints[out] = r.coordinate;
    p.confidence[out] = r.confidence;
  }
}

std::tuple<at::Tensor, at::Tensor> dcc_decode_cuda(const at::Tensor& query_x,
                                                   const at::Tensor& query_y,
                                                   const at::Tensor& boxes,
                                                   const at::Tensor& priors, int64_t num_bins_x,
                                                   int64_t num_bins_y, double padding,
                                                   double temperature, c10::string_view mode) {
  const bool argmax = rtmo::dcc::check_dcc_inputs(query_x, query_y, boxes, priors, num_bins_x,
                                                  num_bins_y, std::string_view(mode));
  TORCH_CHECK(query_x.is_cuda(), "dcc_decode (CUDA kernel): tensors must be on a CUDA device");
  const c10::cuda::CUDAGuard guard(query_x.device());
  const int64_t n = query_x.size(0);
  const int num_keypoints = static_cast<int>(query_x.size(1));
  const int dim = static_cast<int>(query_x.size(2));
  auto opts = query_x.options().dtype(at::kFloat);
  at::Tensor keypoints = at::empty({n, num_keypoints, 2}, opts);
  at::Tensor confidence = at::empty({n, num_keypoints, 2}, opts);
  if (n == 0 || num_keypoints == 0) return {keypoints, confidence};
  TORCH_CHECK(n <= INT32_MAX, "dcc_decode (CUDA kernel): N must fit in the grid, got ", n);

  const size_t smem = SharedLayout::bytes(num_keypoints, dim);
  int max_smem = 0;
  AT_CUDA_CHECK(cudaDeviceGetAttribute(&max_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin,
                                       query_x.get_device()));
  TORCH_CHECK(smem <= static_cast<size_t>(max_smem), "dcc_decode (CUDA kernel): K=",
              num_keypoints, ", D=", dim, " need ", smem,
              " bytes of shared memory, the device has ", max_smem);
  // Both queries in one dtype; boxes and priors as float32 (no copy when they already are).
  const at::Tensor qy = query_y.to(query_x.scalar_type());
  const at::Tensor boxes32 = boxes.to(at::kFloat).contiguous();
  const at::Tensor priors32 = priors.to(at::kFloat).contiguous();

  Params p;
  const at::Tensor* queries[2] = {&query_x, &qy};
  for (int a = 0; a < 2; ++a) {
    p.query[a] = {queries[a]->data_ptr(), queries[a]->stride(0), queries[a]->stride(1),
                  queries[a]->stride(2)};
  }
  p.boxes = boxes32.data_ptr<float>();
  p.priors = priors32.data_ptr<float>();
  p.keypoints = keypoints.data_ptr<float>();
  p.confidence = confidence.data_ptr<float>();
  p.num_keypoints = num_keypoints;
  p.dim = dim;
  p.num_bins[0] = static_cast<int>(num_bins_x);
  p.num_bins[1] = static_cast<int>(num_bins_y);
  p.padding = padding;
  p.log_temperature = std::log(temperature);
  p.argmax = argmax;

  const dim3 grid(static_cast<unsigned>(n), 2);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  RTMO_DISPATCH_DCC_TYPES(query_x.scalar_type(), "dcc_decode_cuda", [&] {
    auto kernel = dcc_decode_kernel<scalar_t>;
    if (smem > 48 * 1024) {  // beyond the default limit the kernel must opt in
      AT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(smem)));
    }
    kernel<<<grid, kThreads, smem, stream>>>(p);
  });
  AT_CUDA_CHECK(cudaGetLastError());
  return {keypoints, confidence};
}

}  // namespace

TORCH_LIBRARY_IMPL(rtmo, CUDA, m) { m.impl("dcc_decode", &dcc_decode_cuda); }
