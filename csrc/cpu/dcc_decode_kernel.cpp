// Fused Dynamic Coordinate Classifier decode on the CPU: rtmo::dcc_decode for CPU tensors.
//
// Work item = one instance along one axis (2N items; at::parallel_for threads take them in turn).
// Per item the bins are walked in tiles of kTileBins: the tile's encodings phi (D x kTileBins,
// transposed so a row is one vector) are built by angle addition, then the logits of all K
// keypoints against the tile are a small GEMM (kKeypointBlock keypoints x kTileBins bins held in
// registers, streaming D), then an online softmax folds the tile into each keypoint's running
// (max, sum, sum * index, argmax). Neither the (N, K, B) logits nor the (N, B, D) encodings exist
// in memory; the scratch per thread is ~20 KB for D = 128.
// The helpers taking and returning vectors are always inlined into one ISA clone, so the vector ABI
// change GCC warns about never crosses a call.
#pragma GCC diagnostic ignored "-Wpsabi"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <vector>

#include "common/dcc_decode.h"
#include "common/dcc_decode_checks.h"
#include "cpu/isa_clones.h"

namespace {

using rtmo::dcc::AxisGeometry;

// 16 bins = one AVX-512 or two AVX2 vectors per keypoint row.
constexpr int kTileBins = 16;
// 6 keypoints x 16 bins of accumulators = 12 AVX2 registers (of 16), leaving room for the encoding
// row and the broadcast query; K = 17 runs as 6 + 6 + 5.
constexpr int kKeypointBlock = 6;
static_assert(rtmo::dcc::kReanchorBins % kTileBins == 0, "re-anchor on a tile boundary");

// One tile row (kTileBins floats) as a GCC vector: each ISA clone maps it onto its widest registers
// (1 zmm, 2 ymm or 4 xmm). Written as plain loops, GCC vectorised the GEMM along D instead and ran
// at 6 GFLOP/s.
typedef float TileVec __attribute__((vector_size(kTileBins * sizeof(float))));
typedef int32_t TileIntVec __attribute__((vector_size(kTileBins * sizeof(int32_t))));
// Per keypoint: scalar running max and argmax, per-lane partial sums (reduced at the end).
using LaneState = rtmo::dcc::SoftmaxState<TileVec>;

// The AVX-512 clone keeps TileVec in zmm registers and loads them with aligned moves.
constexpr size_t kScratchAlign = 64;
static_assert(sizeof(TileVec) % kScratchAlign == 0 && sizeof(LaneState) % kScratchAlign == 0);

// Thread-local buffers, allocated once per parallel chunk. The vector-typed rows and states need
// 64-byte alignment, which std::vector<TileVec> does not give here: one aligned block holds them.
struct Scratch {
  explicit Scratch(int num_keypoints, int dim)
      : queries(static_cast<size_t>(num_keypoints) * dim),
        anchor_cos(dim / 2),
        anchor_sin(dim / 2),
        tile_cos(dim / 2),
        tile_sin(dim / 2) {
    const size_t rows = static_cast<size_t>(2 * dim);  // D encoding rows + 2 x F step rows
    size_t bytes = rows * sizeof(TileVec) + num_keypoints * sizeof(LaneState);
    bytes = (bytes + kScratchAlign - 1) / kScratchAlign * kScratchAlign;  // aligned_alloc needs it
    block_ = static_cast<char*>(std::aligned_alloc(kScratchAlign, bytes));
    TORCH_CHECK(block_ != nullptr, "dcc_decode: out of memory for ", bytes, " bytes of scratch");
    encodings = reinterpret_cast<TileVec*>(block_);
    step_cos = encodings + dim;
    step_sin = step_cos + dim / 2;
    states = reinterpret_cast<LaneState*>(block_ + rows * sizeof(TileVec));
  }
  ~Scratch() { std::free(block_); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;

  std::vector<float> queries;                  // K x D, float32
  TileVec* encodings;                          // D rows: cos rows, then sin rows
  TileVec *step_cos, *step_sin;                // F rows each: rotation by t * step * w_j
  std::vector<double> anchor_cos, anchor_sin;  // F: angle of the tile's first bin
  std::vector<double> tile_cos, tile_sin;      // F: rotation by kTileBins * step * w_j
  LaneState* states;                           // K

 private:
  char* block_;
};

struct AxisTask {
  AxisGeometry geometry;
  int num_keypoints;
  int dim;
  const double* freqs;  // F = dim / 2 frequencies w_j
  bool argmax;
  float* coordinates;  // &keypoints[n][0][axis], stride 2 per keypoint
  float* confidences;
};

// Per frequency: the rotations by t bins within a tile (rtmo::dcc::step_table).
RTMO_INLINE void build_step_tables(const AxisTask& task, Scratch& s) {
  for (int j = 0; j < task.dim / 2; ++j) {
    // A TileVec row is kTileBins floats: the table is written straight into it.
    rtmo::dcc::step_table(task.geometry, task.freqs[j], kTileBins,
                          reinterpret_cast<float*>(&s.step_cos[j]),
                          reinterpret_cast<float*>(&s.step_sin[j]), s.tile_cos[j], s.tile_sin[j]);
  }
}

// phi of the tile's bins (D rows: cos rows, then sin rows) by angle addition from the tile anchor.
RTMO_INLINE void build_encoding_tile(const AxisTask& task, int first_bin, Scratch& s) {
  const int num_freqs = task.dim / 2;
  for (int j = 0; j < num_freqs; ++j) {
    rtmo::dcc::advance_anchor(task.geometry, task.freqs[j], first_bin, s.tile_cos[j],
                              s.tile_sin[j], s.anchor_cos[j], s.anchor_sin[j]);
    rtmo::dcc::encode_from_anchor(s.anchor_cos[j], s.anchor_sin[j], s.step_cos[j], s.step_sin[j],
                                  s.encodings[j], s.encodings[num_freqs + j]);
  }
}

// logits[k][t] = <q_k, phi_t> for KB keypoints: the accumulators stay in registers over D.
template <int KB>
RTMO_INLINE void tile_logits(const float* queries, int dim, const TileVec* encodings,
                             TileVec* logits) {
  TileVec acc[KB] = {};
  for (int d = 0; d < dim; ++d) {
    const TileVec row = encodings[d];
    for (int k = 0; k < KB; ++k) acc[k] += queries[k * dim + d] * row;
  }
  for (int k = 0; k < KB; ++k) logits[k] = acc[k];
}

// 2^n from vector lanes holding 1.5 * 2^23 + n (see rtmo::dcc::exp_nonpositive_impl).
struct Pow2FromShiftedLanes {
  RTMO_INLINE TileVec operator()(TileVec shifted) const {
    // A cast between vector types of one size reinterprets the bits.
    const TileIntVec bits = (TileIntVec)shifted;
    return (TileVec)((bits - rtmo::dcc::kExpRoundMagicBits + 127) << 23);
  }
};

RTMO_INLINE float lane_max(TileVec v) {
  float m = v[0];
  for (int t = 1; t < kTileBins; ++t) m = std::max(m, v[t]);
  return m;
}

RTMO_INLINE float lane_sum(TileVec v) {
  float sum = 0.0f;
  for (int t = 0; t < kTileBins; ++t) sum += v[t];
  return sum;
}

// Folds one keypoint's tile of logits into its running softmax state. Bins >= `valid` (past the
// last bin) are masked to -inf.
RTMO_INLINE void fold_tile(TileVec logits, int valid, int first_bin, LaneState& st) {
  if (valid < kTileBins) {
    for (int t = valid; t < kTileBins; ++t) logits[t] = -INFINITY;
  }
  const float tile_max = lane_max(logits);
  if (tile_max > st.max) {
    int first = 0;
    while (logits[first] != tile_max) ++first;
    rtmo::dcc::softmax_update_max(st, tile_max, first_bin + first);
  }
  TileVec lane_index;
  for (int t = 0; t < kTileBins; ++t) lane_index[t] = static_cast<float>(first_bin + t);
  const TileVec e = rtmo::dcc::exp_nonpositive_impl(logits - st.max, Pow2FromShiftedLanes{});
  rtmo::dcc::softmax_add(st, e, e * lane_index);
}

template <int KB>
RTMO_INLINE void fold_keypoint_block(const float* queries, int dim, const TileVec* encodings,
                                     int valid, int first_bin, LaneState* states) {
  TileVec logits[KB];
  tile_logits<KB>(queries, dim, encodings, logits);
  for (int k = 0; k < KB; ++k) fold_tile(logits[k], valid, first_bin, states[k]);
}

// The remainder block of K % kKeypointBlock keypoints, with its size as a template argument.
RTMO_INLINE void fold_remainder_block(int count, const float* queries, int dim,
                                      const TileVec* encodings, int valid, int first_bin,
                                      LaneState* states) {
  static_assert(kKeypointBlock == 6, "one case per remainder size");
  switch (count) {
    case 1: return fold_keypoint_block<1>(queries, dim, encodings, valid, first_bin, states);
    case 2: return fold_keypoint_block<2>(queries, dim, encodings, valid, first_bin, states);
    case 3: return fold_keypoint_block<3>(queries, dim, encodings, valid, first_bin, states);
    case 4: return fold_keypoint_block<4>(queries, dim, encodings, valid, first_bin, states);
    case 5: return fold_keypoint_block<5>(queries, dim, encodings, valid, first_bin, states);
    default: return;
  }
}

// One instance along one axis; s.queries holds its K x D float32 queries.
RTMO_ISA_CLONES void decode_axis(const AxisTask& task, Scratch& s) {
  const int num_bins = task.geometry.num_bins;
  const int num_keypoints = task.num_keypoints;
  const int dim = task.dim;
  std::fill(s.states, s.states + num_keypoints, rtmo::dcc::softmax_init<TileVec>());
  build_step_tables(task, s);
  for (int first_bin = 0; first_bin < num_bins; first_bin += kTileBins) {
    build_encoding_tile(task, first_bin, s);
    const int valid = std::min(kTileBins, num_bins - first_bin);
    int k = 0;
    for (; k + kKeypointBlock <= num_keypoints; k += kKeypointBlock) {
      fold_keypoint_block<kKeypointBlock>(&s.queries[k * dim], dim, s.encodings, valid,
                                          first_bin, s.states + k);
    }
    fold_remainder_block(num_keypoints - k, &s.queries[k * dim], dim, s.encodings, valid,
                         first_bin, s.states + k);
  }
  for (int k = 0; k < num_keypoints; ++k) {
    const LaneState& lanes = s.states[k];
    const rtmo::dcc::SoftmaxState<float> st{lanes.max, lane_sum(lanes.sum),
                                            lane_sum(lanes.weighted_index), lanes.argmax};
    const auto r = rtmo::dcc::softmax_finish(st, task.geometry, task.argmax);
    task.coordinates[2 * k] = r.coordinate;
    task.confidences[2 * k] = r.confidence;
  }
}

// Copies one instance's queries (any strides, fp32/fp16/bf16) into the float32 K x D scratch.
template <typename scalar_t>
void load_queries(const at::Tensor& query, int64_t n, Scratch& s) {
  const scalar_t* base = query.const_data_ptr<scalar_t>() + n * query.stride(0);
  const int64_t num_keypoints = query.size(1), dim = query.size(2);
  const int64_t sk = query.stride(1), sd = query.stride(2);
  for (int64_t k = 0; k < num_keypoints; ++k)
    for (int64_t d = 0; d < dim; ++d)
      s.queries[k * dim + d] = static_cast<float>(base[k * sk + d * sd]);
}

std::tuple<at::Tensor, at::Tensor> dcc_decode_cpu(const at::Tensor& query_x,
                                                  const at::Tensor& query_y,
                                                  const at::Tensor& boxes,
                                                  const at::Tensor& priors, int64_t num_bins_x,
                                                  int64_t num_bins_y, double padding,
                                                  double temperature, c10::string_view mode) {
  const bool argmax = rtmo::dcc::check_dcc_inputs(query_x, query_y, boxes, priors, num_bins_x,
                                                  num_bins_y, std::string_view(mode));
  TORCH_CHECK(query_x.device().is_cpu(), "dcc_decode (CPU kernel): tensors must be on the CPU");
  const int64_t n_inst = query_x.size(0);
  const int num_keypoints = static_cast<int>(query_x.size(1));
  const int dim = static_cast<int>(query_x.size(2));
  auto opts = query_x.options().dtype(at::kFloat);
  at::Tensor keypoints = at::empty({n_inst, num_keypoints, 2}, opts);
  at::Tensor confidence = at::empty({n_inst, num_keypoints, 2}, opts);
  if (n_inst == 0 || num_keypoints == 0) return {keypoints, confidence};

  const at::Tensor boxes64 = boxes.to(at::kDouble).contiguous();
  const at::Tensor priors64 = priors.to(at::kDouble).contiguous();
  const double* box = boxes64.const_data_ptr<double>();
  const double* prior = priors64.const_data_ptr<double>();
  std::vector<double> freqs(dim / 2);
  for (int j = 0; j < dim / 2; ++j) {
    freqs[j] = rtmo::dcc::frequency(j, dim / 2, std::log(temperature));
  }
  const int64_t bins[2] = {num_bins_x, num_bins_y};
  const at::Tensor* queries[2] = {&query_x, &query_y};
  float* kp = keypoints.data_ptr<float>();
  float* conf = confidence.data_ptr<float>();

  // Items n * 2 + axis, handed out one at a time from a shared counter rather than in fixed
  // chunks: on a shared 2-core machine a thread that loses its core for a scheduler slice (~4 ms)
  // otherwise holds up half the items while the other thread idles at the barrier.
  const int64_t num_items = 2 * n_inst;
  std::atomic<int64_t> next_item{0};
  const int64_t num_workers = std::min<int64_t>(num_items, at::get_num_threads());
  at::parallel_for(0, num_workers, 1, [&](int64_t, int64_t) {
    Scratch scratch(num_keypoints, dim);
    for (int64_t item; (item = next_item.fetch_add(1)) < num_items;) {
      const int64_t n = item / 2;
      const int axis = static_cast<int>(item % 2);
      const at::Tensor& query = *queries[axis];
      RTMO_DISPATCH_DCC_TYPES(query.scalar_type(), "dcc_decode_cpu",
                              [&] { load_queries<scalar_t>(query, n, scratch); });
      AxisTask task;
      task.geometry = rtmo::dcc::axis_geometry(box[4 * n + axis], box[4 * n + axis + 2],
                                               prior[2 * n + axis], static_cast<int>(bins[axis]),
                                               padding);
      task.num_keypoints = num_keypoints;
      task.dim = dim;
      task.freqs = freqs.data();
      task.argmax = argmax;
      task.coordinates = kp + n * num_keypoints * 2 + axis;
      task.confidences = conf + n * num_keypoints * 2 + axis;
      decode_axis(task, scratch);
    }
  });
  return {keypoints, confidence};
}

}  // namespace

TORCH_LIBRARY_IMPL(rtmo, CPU, m) { m.impl("dcc_decode", &dcc_decode_cpu); }
