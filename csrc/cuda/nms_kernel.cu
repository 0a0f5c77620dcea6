// Greedy NMS on CUDA for rtmo::batched_nms and rtmo::nms_padded: the whole batch in two launches
// after torch's stable sort, with no copy of the mask to the host.
//
// 1. iou_mask_kernel, grid (64-column words, 64-row blocks, images), upper triangle only: bit j of
//    word w of row i is set when candidate i suppresses candidate 64*w + j (j > i, same group).
// 2. greedy_scan_kernel, one warp per image: walks 64 candidates at a time. The 64 diagonal words
//    are loaded by the warp at once, lane 0 resolves the chunk sequentially from shared memory, and
//    then the lanes OR the rows of the kept candidates into the removed-bits of the later words.
//    The walk stops once max_out candidates are kept.
// The per-pair math is csrc/common/nms.h, shared with the CPU kernel.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cstdint>
#include <limits>
#include <optional>
#include <tuple>

#include "common/nms.h"
#include "common/nms_checks.h"

namespace {

using rtmo::nms::box_area;
using rtmo::nms::iou_exceeds;

constexpr int kBits = 64;
constexpr int kWarp = 32;
// The removed-bits of one image live in shared memory: 48 KiB of words without opting in.
constexpr int64_t kMaxWords = 48 * 1024 / sizeof(uint64_t) - kBits;
constexpr int64_t kMaxCandidates = kMaxWords * kBits;

__global__ void iou_mask_kernel(const float4* __restrict__ boxes, const int64_t* __restrict__ groups,
                                const int64_t* __restrict__ counts, uint64_t* __restrict__ mask,
                                int64_t n, int64_t words, float iou_threshold) {
  const int64_t word = blockIdx.x;
  const int64_t row_block = blockIdx.y;
  const int64_t image = blockIdx.z;
  // The scan reads row i only from its own word on: the lower triangle is never written or read.
  if (word < row_block) return;
  const int64_t count = counts[image];
  const int64_t row_start = row_block * kBits;
  const int64_t col_start = word * kBits;
  if (row_start >= count || col_start >= count) return;
  const int rows = static_cast<int>(min(static_cast<int64_t>(kBits), count - row_start));
  const int cols = static_cast<int>(min(static_cast<int64_t>(kBits), count - col_start));

  __shared__ float4 col_box[kBits];
  __shared__ float col_area[kBits];
  __shared__ int64_t col_group[kBits];
  const int t = threadIdx.x;
  const int64_t image_base = image * n;
  if (t < cols) {
    const float4 b = boxes[image_base + col_start + t];
    col_box[t] = b;
    col_area[t] = box_area(b.x, b.y, b.z, b.w);
    col_group[t] = groups ? groups[image_base + col_start + t] : 0;
  }
  __syncthreads();
  if (t >= rows) return;
  const int64_t i = row_start + t;
  const float4 a = boxes[image_base + i];
  const float area_a = box_area(a.x, a.y, a.z, a.w);
  const int64_t group_a = groups ? groups[image_base + i] : 0;
  uint64_t bits = 0;
  for (int j = word == row_block ? t + 1 : 0; j < cols; ++j) {
    const float4 b = col_box[j];
    const bool hit = col_group[j] == group_a &&
                     iou_exceeds(a.x, a.y, a.z, a.w, area_a, b.x, b.y, b.z, b.w, col_area[j],
                                 iou_threshold);
    bits |= static_cast<uint64_t>(hit) << j;
  }
  mask[(image_base + i) * words + word] = bits;
}

__global__ void __launch_bounds__(kWarp)
    greedy_scan_kernel(const uint64_t* __restrict__ mask, const int64_t* __restrict__ counts,
                       int64_t* __restrict__ positions, int64_t* __restrict__ num_kept, int64_t n,
                       int64_t words, int64_t max_out) {
  extern __shared__ uint64_t removed[];
  __shared__ uint64_t diagonal[kBits];
  __shared__ uint64_t chunk_kept_shared;
  __shared__ int64_t kept_shared;
  const int64_t image = blockIdx.x;
  const int lane = threadIdx.x;
  const int64_t count = counts[image];
  const int64_t used_words = (count + kBits - 1) / kBits;
  const uint64_t* image_mask = mask + image * n * words;
  for (int64_t w = lane; w < used_words; w += kWarp) removed[w] = 0;
  int64_t kept = 0;
  __syncwarp();
  for (int64_t w = 0; w < used_words && kept < max_out; ++w) {
    const int64_t chunk_start = w * kBits;
    const int chunk = static_cast<int>(min(static_cast<int64_t>(kBits), count - chunk_start));
    for (int t = lane; t < chunk; t += kWarp) {
      diagonal[t] = image_mask[(chunk_start + t) * words + w];
    }
    __syncwarp();
    if (lane == 0) {
      uint64_t removed_here = removed[w];
      uint64_t chunk_kept = 0;
      for (int t = 0; t < chunk && kept < max_out; ++t) {
        if ((removed_here >> t) & 1) continue;
        chunk_kept |= uint64_t{1} << t;
        positions[image * max_out + kept] = chunk_start + t;
        ++kept;
        removed_here |= diagonal[t];
      }
      chunk_kept_shared = chunk_kept;
      kept_shared = kept;
    }
    __syncwarp();
    const uint64_t chunk_kept = chunk_kept_shared;
    kept = kept_shared;
    for (int64_t v = w + 1 + lane; v < used_words; v += kWarp) {
      uint64_t acc = removed[v];
      for (uint64_t bits = chunk_kept; bits; bits &= bits - 1) {
        acc |= image_mask[(chunk_start + __ffsll(static_cast<long long>(bits)) - 1) * words + v];
      }
      removed[v] = acc;
    }
    __syncwarp();
  }
  if (lane == 0) num_kept[image] = kept;
}

// Greedy NMS over candidates sorted by rank. boxes (B, N, 4) fp32 contiguous, groups (B, N) int64
// or none, counts (B,) int64. Returns positions (B, max_out) into the sorted order padded with -1,
// and num_kept (B,).
std::tuple<at::Tensor, at::Tensor> nms_sorted_cuda(const at::Tensor& boxes,
                                                   const std::optional<at::Tensor>& groups,
                                                   const at::Tensor& counts, float iou_threshold,
                                                   int64_t max_out) {
  const int64_t batch = boxes.size(0);
  const int64_t n = boxes.size(1);
  at::Tensor positions = at::full({batch, max_out}, -1, boxes.options().dtype(at::kLong));
  at::Tensor num_kept = at::zeros({batch}, boxes.options().dtype(at::kLong));
  if (batch == 0 || n == 0 || max_out == 0) return {positions, num_kept};
  TORCH_CHECK(n <= kMaxCandidates, "rtmo NMS on CUDA: at most ", kMaxCandidates,
              " candidates per image, got ", n);
  TORCH_CHECK(batch <= 65535, "rtmo NMS on CUDA: at most 65535 images per call, got ", batch);
  const int64_t words = (n + kBits - 1) / kBits;
  at::Tensor mask = at::empty({batch, n, words}, boxes.options().dtype(at::kLong));
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const dim3 mask_grid(static_cast<unsigned>(words), static_cast<unsigned>(words),
                       static_cast<unsigned>(batch));
  iou_mask_kernel<<<mask_grid, kBits, 0, stream>>>(
      reinterpret_cast<const float4*>(boxes.data_ptr<float>()),
      groups ? groups->data_ptr<int64_t>() : nullptr, counts.data_ptr<int64_t>(),
      reinterpret_cast<uint64_t*>(mask.data_ptr<int64_t>()), n, words, iou_threshold);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  const size_t shared_bytes = static_cast<size_t>(words) * sizeof(uint64_t);
  greedy_scan_kernel<<<static_cast<unsigned>(batch), kWarp, shared_bytes, stream>>>(
      reinterpret_cast<const uint64_t*>(mask.data_ptr<int64_t>()), counts.data_ptr<int64_t>(),
      positions.data_ptr<int64_t>(), num_kept.data_ptr<int64_t>(), n, words, max_out);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {positions, num_kept};
}

at::Tensor batched_nms_cuda(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                            double iou_threshold) {
  const int64_t m = rtmo::nms::check_batched_nms_inputs(boxes, scores, idxs);
  const c10::cuda::CUDAGuard guard(boxes.device());
  const at::Tensor scores32 = scores.to(at::kFloat);
  // NaN scores are not candidates; the output size is data-dependent anyway (one host sync).
  const at::Tensor finite = at::nonzero(scores32.isnan().logical_not()).flatten();
  const at::Tensor ranked = scores32.index_select(0, finite);
  const at::Tensor order = finite.index_select(
      0, std::get<1>(at::sort(ranked, /*stable=*/true, /*dim=*/0, /*descending=*/true)));
  const int64_t n = order.numel();
  if (n == 0) return order;
  const at::Tensor sorted_boxes = boxes.to(at::kFloat).index_select(0, order).unsqueeze(0).contiguous();
  const at::Tensor groups = idxs.to(at::kLong).index_select(0, order).unsqueeze(0).contiguous();
  const at::Tensor counts = at::full({1}, n, boxes.options().dtype(at::kLong));
  auto [positions, num_kept] = nms_sorted_cuda(sorted_boxes, groups, counts,
                                               static_cast<float>(iou_threshold), n);
  const int64_t kept = num_kept.item<int64_t>();
  return order.index_select(0, positions.select(0, 0).narrow(0, 0, kept));
}

std::tuple<at::Tensor, at::Tensor> nms_padded_cuda(const at::Tensor& boxes, const at::Tensor& scores,
                                                   double iou_threshold, double score_threshold,
                                                   int64_t max_det) {
  rtmo::nms::check_nms_padded_inputs(boxes, scores, max_det);
  const int64_t batch = boxes.size(0);
  const int64_t n = boxes.size(1);
  const c10::cuda::CUDAGuard guard(boxes.device());
  if (n == 0 || max_det == 0) {
    return {at::full({batch, max_det}, -1, boxes.options().dtype(at::kLong)),
            at::zeros({batch}, boxes.options().dtype(at::kLong))};
  }
  const at::Tensor scores32 = scores.to(at::kFloat);
  const at::Tensor candidate = scores32.gt(score_threshold);  // fp32 compare; NaN is never one
  const at::Tensor ranked =
      at::where(candidate, scores32, -std::numeric_limits<float>::infinity());
  const at::Tensor order =
      std::get<1>(at::sort(ranked, /*stable=*/true, /*dim=*/1, /*descending=*/true));
  const at::Tensor sorted_boxes =
      boxes.to(at::kFloat).gather(1, order.unsqueeze(-1).expand({batch, n, 4})).contiguous();
  const at::Tensor counts = candidate.sum(1);
  auto [positions, num_kept] = nms_sorted_cuda(sorted_boxes, std::nullopt, counts,
                                               static_cast<float>(iou_threshold), max_det);
  const at::Tensor keep = at::where(positions.ge(0), order.gather(1, positions.clamp_min(0)),
                                    at::scalar_tensor(-1, positions.options()));
  return {keep, num_kept};
}

}  // namespace

TORCH_LIBRARY_IMPL(rtmo, CUDA, m) {
  m.impl("batched_nms", &batched_nms_cuda);
  m.impl("nms_padded", &nms_padded_cuda);
}
