// Fused DCC MLE loss on the CPU: rtmo::dcc_mle_loss_forward and rtmo::dcc_mle_loss_backward for
// CPU tensors (the math is in common/dcc_mle_loss.h).
//
// Work item = one instance, both axes (at::parallel_for threads take items from a shared counter,
// as dcc_decode does). Per axis the bins are walked in tiles of kTileBins: the tile's encodings
// are built by angle addition (dcc_decode's walk), the logits of all K keypoints against the tile
// are a small register-blocked GEMM, and
// - the forward folds them into each keypoint's online softmax with the target-weighted sum; only
//   (max, sum, P) per keypoint and axis leave the item;
// - the backward recomputes the logits and the derivative logits <q', phi> of the tile, turns them
//   into the per-bin gradients, and accumulates the query gradient as a second small GEMM against
//   the transposed encodings (bins x D), the box gradient in per-lane sums and the sigma gradient
//   per keypoint.
// Neither the (N, K, B) logits nor the (N, B, D) encodings exist in memory; the scratch per thread
// is ~80 KB for K = 17, D = 128.
//
// float32 computes with the walk and a polynomial exp on vector lanes; float64 (for gradcheck)
// takes exact sin/cos per element and std::exp, with the same per-element math.
#pragma GCC diagnostic ignored "-Wpsabi"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#include "common/dcc_decode.h"
#include "common/dcc_mle_loss.h"
#include "common/dcc_mle_loss_checks.h"
#include "cpu/isa_clones.h"

namespace {

using rtmo::dcc::AxisGeometry;
using rtmo::mle::BinGrads;
using rtmo::mle::GradRow;
using rtmo::mle::TargetRow;

// 16 bins = one AVX-512 or two AVX2 vectors per keypoint row (float32).
constexpr int kTileBins = 16;
// 6 keypoints x 16 bins of accumulators per GEMM pass (see dcc_decode_kernel.cpp); K = 17 runs as
// 6 + 6 + 5.
constexpr int kKeypointBlock = 6;
static_assert(rtmo::dcc::kReanchorBins % kTileBins == 0, "re-anchor on a tile boundary");
constexpr size_t kAlign = 64;

// A tile row (kTileBins lanes of S) as a GCC vector; each ISA clone maps it onto its registers.
template <typename S>
struct Lanes {
  typedef S Vec __attribute__((vector_size(kTileBins * sizeof(S))));
};
template <typename S>
using Vec = typename Lanes<S>::Vec;
typedef int32_t IntLanes __attribute__((vector_size(kTileBins * sizeof(int32_t))));

// exp of non-positive arguments. float32: dcc_decode's polynomial (2 ulp, vectorises);
// float64: std::exp, lane by lane.
struct FloatExp {
  RTMO_INLINE float operator()(float x) const { return rtmo::dcc::exp_nonpositive(x); }
  RTMO_INLINE Vec<float> operator()(Vec<float> x) const {
    return rtmo::dcc::exp_nonpositive_impl(x, [](Vec<float> shifted) {
      const IntLanes bits = (IntLanes)shifted;  // same-size vector cast: reinterprets the bits
      return (Vec<float>)((bits - rtmo::dcc::kExpRoundMagicBits + 127) << 23);
    });
  }
};

struct DoubleExp {
  double operator()(double x) const { return std::exp(x); }
  Vec<double> operator()(Vec<double> x) const {
    for (int t = 0; t < kTileBins; ++t) x[t] = std::exp(x[t]);
    return x;
  }
};

template <typename S>
using ExpOf = std::conditional_t<std::is_same_v<S, float>, FloatExp, DoubleExp>;

template <typename S>
RTMO_INLINE S lane_sum(Vec<S> v) {
  S sum = 0;
  for (int t = 0; t < kTileBins; ++t) sum += v[t];
  return sum;
}

template <typename S>
RTMO_INLINE S lane_max(Vec<S> v) {
  S m = v[0];
  for (int t = 1; t < kTileBins; ++t) m = std::max(m, v[t]);
  return m;
}

// Lanes >= valid set to `value` (the last tile of an axis).
template <typename S>
RTMO_INLINE Vec<S> mask_tail(Vec<S> v, int valid, S value) {
  for (int t = valid; t < kTileBins; ++t) v[t] = value;
  return v;
}

// Owning, 64-byte aligned, zero-initialised array (the AVX-512 clone loads vectors aligned).
template <typename T>
class AlignedArray {
 public:
  explicit AlignedArray(size_t count) {
    const size_t bytes = std::max<size_t>((count * sizeof(T) + kAlign - 1) / kAlign * kAlign, kAlign);
    data_ = static_cast<T*>(std::aligned_alloc(kAlign, bytes));
    TORCH_CHECK(data_ != nullptr, "dcc_mle_loss: out of memory for ", bytes, " bytes of scratch");
    std::memset(static_cast<void*>(data_), 0, bytes);
  }
  ~AlignedArray() { std::free(data_); }
  AlignedArray(const AlignedArray&) = delete;
  AlignedArray& operator=(const AlignedArray&) = delete;
  T* get() const { return data_; }
  T& operator[](size_t i) const { return data_[i]; }

 private:
  T* data_;
};

// The encodings of one axis, tile by tile, in two layouts: `rows` (D rows of kTileBins lanes: cos
// rows, then sin rows) for the logits, and `columns` (kTileBins rows of 2 Fp values, cos then sin,
// Fp = F rounded up to the lanes) for the query gradient. Fp pads with zeros, so any even D works.
template <typename S>
struct EncodingWalk {
  EncodingWalk(int dim, const double* freqs)
      : num_freqs(dim / 2),
        padded_freqs((dim / 2 + kTileBins - 1) / kTileBins * kTileBins),
        freqs(freqs),
        rows(dim),
        columns(static_cast<size_t>(kTileBins) * 2 * padded_freqs),
        step_rows(dim),
        step_columns(static_cast<size_t>(kTileBins) * 2 * padded_freqs),
        anchor(2 * padded_freqs),
        anchor_cos(num_freqs),
        anchor_sin(num_freqs),
        tile_cos(num_freqs),
        tile_sin(num_freqs) {}

  int num_freqs, padded_freqs;
  const double* freqs;
  AxisGeometry geometry{};
  AlignedArray<Vec<S>> rows;
  AlignedArray<S> columns;
  // float32 walk: rotations by t bins (t < kTileBins) per frequency, as rows (F cos rows, F sin
  // rows) and as columns (per t: Fp cos, Fp sin); the tile anchors in double and as S.
  AlignedArray<Vec<S>> step_rows;
  AlignedArray<S> step_columns;
  AlignedArray<S> anchor;
  std::vector<double> anchor_cos, anchor_sin, tile_cos, tile_sin;

  S* column(int t) const { return columns.get() + static_cast<size_t>(t) * 2 * padded_freqs; }

  RTMO_INLINE void start(const AxisGeometry& g) {
    geometry = g;
    if constexpr (std::is_same_v<S, float>) {
      for (int j = 0; j < num_freqs; ++j) {
        float* cos_t = reinterpret_cast<float*>(&step_rows[j]);
        float* sin_t = reinterpret_cast<float*>(&step_rows[num_freqs + j]);
        rtmo::dcc::step_table(g, freqs[j], kTileBins, cos_t, sin_t, tile_cos[j], tile_sin[j]);
        for (int t = 0; t < kTileBins; ++t) {
          step_columns[static_cast<size_t>(t) * 2 * padded_freqs + j] = cos_t[t];
          step_columns[static_cast<size_t>(t) * 2 * padded_freqs + padded_freqs + j] = sin_t[t];
        }
      }
    }
  }

  // The tile starting at first_bin; `with_columns` also fills the column layout (backward).
  RTMO_INLINE void build(int first_bin, bool with_columns) {
    if constexpr (std::is_same_v<S, float>) {
      build_walk(first_bin, with_columns);
    } else {
      build_exact(first_bin);
    }
  }

 private:
  // Angle addition from the tile anchor (rtmo::dcc::advance_anchor / encode_from_anchor).
  RTMO_INLINE void build_walk(int first_bin, bool with_columns) {
    const int f = num_freqs, fp = padded_freqs;
    for (int j = 0; j < f; ++j) {
      rtmo::dcc::advance_anchor(geometry, freqs[j], first_bin, tile_cos[j], tile_sin[j],
                                anchor_cos[j], anchor_sin[j]);
      rtmo::dcc::encode_from_anchor(anchor_cos[j], anchor_sin[j], step_rows[j], step_rows[f + j],
                                    rows[j], rows[f + j]);
      anchor[j] = static_cast<S>(anchor_cos[j]);
      anchor[fp + j] = static_cast<S>(anchor_sin[j]);
    }
    if (!with_columns) return;
    // The same products as encode_from_anchor, vectorised over the frequencies.
    const Vec<S>* ac = reinterpret_cast<const Vec<S>*>(anchor.get());
    const Vec<S>* as = reinterpret_cast<const Vec<S>*>(anchor.get() + fp);
    for (int t = 0; t < kTileBins; ++t) {
      const Vec<S>* ct = reinterpret_cast<const Vec<S>*>(step_columns.get() + t * 2 * fp);
      const Vec<S>* st = reinterpret_cast<const Vec<S>*>(step_columns.get() + t * 2 * fp + fp);
      Vec<S>* out_cos = reinterpret_cast<Vec<S>*>(column(t));
      Vec<S>* out_sin = reinterpret_cast<Vec<S>*>(column(t) + fp);
      for (int c = 0; c < fp / kTileBins; ++c) {
        out_cos[c] = ac[c] * ct[c] - as[c] * st[c];
        out_sin[c] = as[c] * ct[c] + ac[c] * st[c];
      }
    }
  }

  // float64: exact sin and cos of every angle.
  RTMO_INLINE void build_exact(int first_bin) {
    const int f = num_freqs, fp = padded_freqs;
    for (int j = 0; j < f; ++j) {
      for (int t = 0; t < kTileBins; ++t) {
        const double angle = rtmo::dcc::bin_angle(geometry, first_bin + t, freqs[j]);
        rows[j][t] = column(t)[j] = std::cos(angle);
        rows[f + j][t] = column(t)[fp + j] = std::sin(angle);
      }
    }
  }
};

// Per-thread buffers for one item.
template <typename S>
struct Scratch {
  Scratch(int num_keypoints, int dim, const double* freqs)
      : walk(dim, freqs),
        queries(static_cast<size_t>(num_keypoints) * dim),
        slope_queries(static_cast<size_t>(num_keypoints) * dim),
        states(num_keypoints),
        target_rows(num_keypoints),
        grad_rows(num_keypoints),
        alpha(num_keypoints),
        sigma_lanes(num_keypoints),
        query_grads(static_cast<size_t>(num_keypoints) * 2 * walk.padded_freqs) {}

  EncodingWalk<S> walk;
  AlignedArray<S> queries;        // K x D of the current axis
  AlignedArray<S> slope_queries;  // K x D: q' = [w q_sin, -w q_cos] (backward)
  AlignedArray<rtmo::mle::MleState<Vec<S>, S>> states;
  std::vector<TargetRow<S>> target_rows;
  std::vector<GradRow<S>> grad_rows;
  AlignedArray<Vec<S>> alpha;        // K: the tile's d nll / d logit
  AlignedArray<Vec<S>> sigma_lanes;  // K: per-lane sums of the sigma terms, both axes
  AlignedArray<S> query_grads;       // K x 2 Fp (cos block, sin block), the column layout
};

// logits[k][t] = <q_k, phi_t> for KB keypoints: the accumulators stay in registers over D.
template <int KB, typename S>
RTMO_INLINE void tile_logits(const S* queries, int dim, const Vec<S>* rows, Vec<S>* logits) {
  Vec<S> acc[KB] = {};
  for (int d = 0; d < dim; ++d) {
    const Vec<S> row = rows[d];
    for (int k = 0; k < KB; ++k) acc[k] += queries[k * dim + d] * row;
  }
  for (int k = 0; k < KB; ++k) logits[k] = acc[k];
}

// query_grads[k][:] += sum_t alpha[k][t] * column_t for KB keypoints, kTileBins values at a time.
template <int KB, typename S>
RTMO_INLINE void accumulate_query_grads(const Vec<S>* alpha, const EncodingWalk<S>& walk,
                                        S* query_grads) {
  const int width = 2 * walk.padded_freqs;
  for (int c = 0; c < width / kTileBins; ++c) {
    Vec<S> acc[KB];
    for (int k = 0; k < KB; ++k) acc[k] = reinterpret_cast<Vec<S>*>(query_grads + k * width)[c];
    for (int t = 0; t < kTileBins; ++t) {
      const Vec<S> column = reinterpret_cast<const Vec<S>*>(walk.column(t))[c];
      for (int k = 0; k < KB; ++k) acc[k] += alpha[k][t] * column;
    }
    for (int k = 0; k < KB; ++k) reinterpret_cast<Vec<S>*>(query_grads + k * width)[c] = acc[k];
  }
}

// Calls body.template operator()<KB>(k) for the blocks of kKeypointBlock keypoints and the
// remainder block, each with its size as a template argument.
template <typename Body>
RTMO_INLINE void for_keypoint_blocks(int num_keypoints, Body&& body) {
  static_assert(kKeypointBlock == 6, "one case per remainder size");
  int k = 0;
  for (; k + kKeypointBlock <= num_keypoints; k += kKeypointBlock) body.template operator()<6>(k);
  switch (num_keypoints - k) {
    case 1: return body.template operator()<1>(k);
    case 2: return body.template operator()<2>(k);
    case 3: return body.template operator()<3>(k);
    case 4: return body.template operator()<4>(k);
    case 5: return body.template operator()<5>(k);
    default: return;
  }
}

// Bin indices and offsets i * step of the tile's lanes.
template <typename S>
struct TileBins {
  Vec<S> index, offset;
  int valid;
};

template <typename S>
RTMO_INLINE TileBins<S> tile_bins(const AxisGeometry& g, int first_bin) {
  TileBins<S> out;
  for (int t = 0; t < kTileBins; ++t) {
    out.index[t] = static_cast<S>(first_bin + t);
    out.offset[t] = static_cast<S>(static_cast<double>(first_bin + t) * g.step);
  }
  out.valid = std::min(kTileBins, g.num_bins - first_bin);
  return out;
}

// One instance along one axis.
template <typename S>
struct AxisJob {
  AxisGeometry geometry;
  int num_keypoints;
  int dim;
  double padding;
};

// Forward of one axis: s.queries and s.target_rows are set; the rows' (max, sum, P) and
// coordinates go to stats (stride 6 per keypoint) and coordinates (stride 2).
template <typename S>
RTMO_INLINE void forward_axis(const AxisJob<S>& job, Scratch<S>& s, S* stats, S* coordinates) {
  const ExpOf<S> exp_np;
  const AxisGeometry& g = job.geometry;
  const int num_keypoints = job.num_keypoints, dim = job.dim;
  std::fill(s.states.get(), s.states.get() + num_keypoints, rtmo::mle::mle_init<Vec<S>, S>());
  s.walk.start(g);
  for (int first_bin = 0; first_bin < g.num_bins; first_bin += kTileBins) {
    s.walk.build(first_bin, false);
    const TileBins<S> bins = tile_bins<S>(g, first_bin);
    for_keypoint_blocks(num_keypoints, [&]<int KB>(int k0) __attribute__((always_inline)) {
      Vec<S> logits[KB];
      tile_logits<KB>(s.queries.get() + k0 * dim, dim, s.walk.rows.get(), logits);
      for (int i = 0; i < KB; ++i) {
        const TargetRow<S>& row = s.target_rows[k0 + i];
        auto& st = s.states[k0 + i];
        Vec<S> clamped = rtmo::mle::clamp_logit(logits[i]);
        clamped = mask_tail<S>(clamped, bins.valid, -INFINITY);
        rtmo::mle::mle_update_max(st, lane_max<S>(clamped), exp_np);
        const Vec<S> distance =
            rtmo::mle::absolute(rtmo::mle::signed_distance(row, bins.offset));
        const Vec<S> target = rtmo::mle::laplace_target(row, distance, exp_np);
        rtmo::mle::mle_add(st, clamped, target, bins.index, exp_np);
      }
    });
  }
  for (int k = 0; k < num_keypoints; ++k) {
    const auto& lanes = s.states[k];
    const rtmo::mle::MleState<S, S> st{lanes.max, lane_sum<S>(lanes.sum),
                                       lane_sum<S>(lanes.target_sum),
                                       lane_sum<S>(lanes.weighted_index)};
    const auto r = rtmo::mle::mle_finish(st, g);
    stats[6 * k] = r.stats.max;
    stats[6 * k + 1] = r.stats.sum;
    stats[6 * k + 2] = r.stats.likelihood;
    coordinates[2 * k] = r.coordinate;
  }
}

// Backward of one axis: s.queries, s.slope_queries, s.target_rows and s.grad_rows are set. Writes
// the query gradient (K x D, row stride dim) and the box gradient of the axis's (lo, hi); adds the
// sigma terms to s.sigma_lanes.
template <typename S>
RTMO_INLINE void backward_axis(const AxisJob<S>& job, Scratch<S>& s, S* query_grad, S* grad_lo,
                               S* grad_hi) {
  const ExpOf<S> exp_np;
  const AxisGeometry& g = job.geometry;
  const int num_keypoints = job.num_keypoints, dim = job.dim;
  const int num_freqs = dim / 2, fp = s.walk.padded_freqs;
  std::fill(s.query_grads.get(), s.query_grads.get() + static_cast<size_t>(num_keypoints) * 2 * fp,
            S{0});
  Vec<S> bin_sum{}, bin_unit_sum{};  // sum_i d/db_i and sum_i d/db_i u_i, per lane
  s.walk.start(g);
  for (int first_bin = 0; first_bin < g.num_bins; first_bin += kTileBins) {
    s.walk.build(first_bin, true);
    const TileBins<S> bins = tile_bins<S>(g, first_bin);
    Vec<S> bin_grads{};
    for_keypoint_blocks(num_keypoints, [&]<int KB>(int k0) __attribute__((always_inline)) {
      Vec<S> raw[KB], slope[KB];
      tile_logits<KB>(s.queries.get() + k0 * dim, dim, s.walk.rows.get(), raw);
      tile_logits<KB>(s.slope_queries.get() + k0 * dim, dim, s.walk.rows.get(), slope);
      for (int i = 0; i < KB; ++i) {
        const int k = k0 + i;
        const TargetRow<S>& row = s.target_rows[k];
        BinGrads<Vec<S>> grads = rtmo::mle::bin_grads(
            raw[i], slope[i], rtmo::mle::signed_distance(row, bins.offset), row, s.grad_rows[k],
            exp_np);
        if (bins.valid < kTileBins) {
          grads.logit = mask_tail<S>(grads.logit, bins.valid, 0);
          grads.bin = mask_tail<S>(grads.bin, bins.valid, 0);
          grads.sigma = mask_tail<S>(grads.sigma, bins.valid, 0);
        }
        s.alpha[k] = grads.logit;
        bin_grads += grads.bin;
        s.sigma_lanes[k] += grads.sigma;
      }
      accumulate_query_grads<KB>(s.alpha.get() + k0, s.walk, s.query_grads.get() + k0 * 2 * fp);
    });
    Vec<S> unit;  // u_i = -1/2 + i / (B - 1)
    for (int t = 0; t < kTileBins; ++t) {
      unit[t] = static_cast<S>(-0.5 + static_cast<double>(first_bin + t) / (g.num_bins - 1));
    }
    bin_sum += bin_grads;
    bin_unit_sum += bin_grads * unit;
  }
  for (int k = 0; k < num_keypoints; ++k) {
    const S* grads = s.query_grads.get() + static_cast<size_t>(k) * 2 * fp;
    for (int j = 0; j < num_freqs; ++j) {
      query_grad[k * dim + j] = grads[j];
      query_grad[k * dim + num_freqs + j] = grads[fp + j];
    }
  }
  const S total = lane_sum<S>(bin_sum), unit_total = lane_sum<S>(bin_unit_sum);
  const S padding = static_cast<S>(job.padding);
  *grad_lo = S(0.5) * total - padding * unit_total;
  *grad_hi = S(0.5) * total + padding * unit_total;
}

// ISA clones of the float32 item functions (the templates above are inlined into each).
RTMO_ISA_CLONES void forward_axis_float(const AxisJob<float>& job, Scratch<float>& s,
                                        float* stats, float* coordinates) {
  forward_axis(job, s, stats, coordinates);
}

RTMO_ISA_CLONES void backward_axis_float(const AxisJob<float>& job, Scratch<float>& s,
                                         float* query_grad, float* grad_lo, float* grad_hi) {
  backward_axis(job, s, query_grad, grad_lo, grad_hi);
}

template <typename S>
void run_forward_axis(const AxisJob<S>& job, Scratch<S>& s, S* stats, S* coordinates) {
  if constexpr (std::is_same_v<S, float>) {
    forward_axis_float(job, s, stats, coordinates);
  } else {
    forward_axis(job, s, stats, coordinates);
  }
}

template <typename S>
void run_backward_axis(const AxisJob<S>& job, Scratch<S>& s, S* query_grad, S* grad_lo,
                       S* grad_hi) {
  if constexpr (std::is_same_v<S, float>) {
    backward_axis_float(job, s, query_grad, grad_lo, grad_hi);
  } else {
    backward_axis(job, s, query_grad, grad_lo, grad_hi);
  }
}

// Copies one instance's queries (any strides and float dtype) into the K x D scratch.
template <typename S, typename scalar_t>
void copy_queries(const at::Tensor& query, int64_t n, S* out) {
  const scalar_t* base = query.const_data_ptr<scalar_t>() + n * query.stride(0);
  const int64_t num_keypoints = query.size(1), dim = query.size(2);
  const int64_t sk = query.stride(1), sd = query.stride(2);
  for (int64_t k = 0; k < num_keypoints; ++k)
    for (int64_t d = 0; d < dim; ++d) out[k * dim + d] = static_cast<S>(base[k * sk + d * sd]);
}

template <typename S>
void load_queries(const at::Tensor& query, int64_t n, S* out) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, query.scalar_type(), "load_queries",
                                  [&] { copy_queries<S, scalar_t>(query, n, out); });
}

// The small per-instance inputs, as contiguous float64.
struct InstanceInputs {
  at::Tensor boxes, priors, sigmas, targets, areas;
  explicit InstanceInputs(const at::Tensor& b, const at::Tensor& p, const at::Tensor& s,
                          const at::Tensor& t, const at::Tensor& a)
      : boxes(b.to(at::kDouble).contiguous()),
        priors(p.to(at::kDouble).contiguous()),
        sigmas(s.to(at::kDouble).contiguous()),
        targets(t.to(at::kDouble).contiguous()),
        areas(a.to(at::kDouble).contiguous()) {}

  AxisGeometry geometry(int64_t n, int axis, int64_t num_bins, double padding) const {
    const double* box = boxes.const_data_ptr<double>() + 4 * n;
    return rtmo::dcc::axis_geometry(box[axis], box[axis + 2],
                                    priors.const_data_ptr<double>()[2 * n + axis],
                                    static_cast<int>(num_bins), padding);
  }

  double sigma(int64_t n, int64_t k, int64_t num_keypoints) const {
    return sigmas.const_data_ptr<double>()[n * num_keypoints + k];
  }

  template <typename S>
  void set_target_rows(int64_t n, int axis, const AxisGeometry& g, int64_t num_keypoints,
                       std::vector<TargetRow<S>>& rows) const {
    const double* target = targets.const_data_ptr<double>() + n * num_keypoints * 2;
    const double area = areas.const_data_ptr<double>()[n];
    for (int64_t k = 0; k < num_keypoints; ++k) {
      rows[k] = rtmo::mle::target_row<S>(target[2 * k + axis], g, sigma(n, k, num_keypoints),
                                         area);
    }
  }
};

std::vector<double> frequencies(int dim, double temperature) {
  std::vector<double> freqs(dim / 2);
  for (int j = 0; j < dim / 2; ++j) {
    freqs[j] = rtmo::dcc::frequency(j, dim / 2, std::log(temperature));
  }
  return freqs;
}

// Runs body(n, scratch) for every instance on at::parallel_for threads, one instance at a time
// from a shared counter (a thread that loses its core on a shared machine then holds up one item,
// not half of them).
template <typename S, typename Body>
void for_each_instance(int64_t num_instances, int num_keypoints, int dim, const double* freqs,
                       Body&& body) {
  std::atomic<int64_t> next{0};
  const int64_t workers = std::min<int64_t>(num_instances, at::get_num_threads());
  at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
    Scratch<S> scratch(num_keypoints, dim, freqs);
    for (int64_t n; (n = next.fetch_add(1)) < num_instances;) body(n, scratch);
  });
}

template <typename S>
void forward_cpu(const at::Tensor& query_x, const at::Tensor& query_y, const InstanceInputs& in,
                 int64_t num_bins_x, int64_t num_bins_y, double padding, double temperature,
                 at::Tensor& nll, at::Tensor& keypoints, at::Tensor& stats) {
  const int64_t num_instances = query_x.size(0);
  const int num_keypoints = static_cast<int>(query_x.size(1));
  const int dim = static_cast<int>(query_x.size(2));
  const std::vector<double> freqs = frequencies(dim, temperature);
  const int64_t bins[2] = {num_bins_x, num_bins_y};
  const at::Tensor* queries[2] = {&query_x, &query_y};
  S* nll_out = nll.data_ptr<S>();
  S* kp_out = keypoints.data_ptr<S>();
  S* stats_out = stats.data_ptr<S>();
  for_each_instance<S>(num_instances, num_keypoints, dim, freqs.data(), [&](int64_t n,
                                                                            Scratch<S>& s) {
    S* item_stats = stats_out + n * num_keypoints * 6;
    for (int axis = 0; axis < 2; ++axis) {
      load_queries<S>(*queries[axis], n, s.queries.get());
      const AxisJob<S> job{in.geometry(n, axis, bins[axis], padding), num_keypoints, dim, padding};
      in.set_target_rows<S>(n, axis, job.geometry, num_keypoints, s.target_rows);
      run_forward_axis(job, s, item_stats + 3 * axis, kp_out + n * num_keypoints * 2 + axis);
    }
    for (int k = 0; k < num_keypoints; ++k) {
      nll_out[n * num_keypoints + k] = rtmo::mle::mle_nll(item_stats[6 * k + 2],
                                                          item_stats[6 * k + 5]);
    }
  });
}

template <typename S>
void backward_cpu(const at::Tensor& grad_nll, const at::Tensor& query_x, const at::Tensor& query_y,
                  const InstanceInputs& in, const at::Tensor& stats, int64_t num_bins_x,
                  int64_t num_bins_y, double padding, double temperature, at::Tensor& grad_qx,
                  at::Tensor& grad_qy, at::Tensor& grad_boxes, at::Tensor& grad_sigmas) {
  const int64_t num_instances = query_x.size(0);
  const int num_keypoints = static_cast<int>(query_x.size(1));
  const int dim = static_cast<int>(query_x.size(2));
  const int num_freqs = dim / 2;
  const std::vector<double> freqs = frequencies(dim, temperature);
  const int64_t bins[2] = {num_bins_x, num_bins_y};
  const at::Tensor* queries[2] = {&query_x, &query_y};
  S* query_grads[2] = {grad_qx.data_ptr<S>(), grad_qy.data_ptr<S>()};
  const at::Tensor grad64 = grad_nll.to(at::kDouble).contiguous();
  const double* upstream = grad64.const_data_ptr<double>();
  const S* stats_in = stats.const_data_ptr<S>();
  S* box_out = grad_boxes.data_ptr<S>();
  S* sigma_out = grad_sigmas.data_ptr<S>();
  for_each_instance<S>(num_instances, num_keypoints, dim, freqs.data(), [&](int64_t n,
                                                                            Scratch<S>& s) {
    const S* item_stats = stats_in + n * num_keypoints * 6;
    std::fill(s.sigma_lanes.get(), s.sigma_lanes.get() + num_keypoints, Vec<S>{});
    for (int axis = 0; axis < 2; ++axis) {
      load_queries<S>(*queries[axis], n, s.queries.get());
      // q' = [w q_sin, -w q_cos]: <q', phi(r)> = d/dr <q, phi(r)>.
      for (int k = 0; k < num_keypoints; ++k) {
        const S* q = s.queries.get() + k * dim;
        S* slope = s.slope_queries.get() + k * dim;
        for (int j = 0; j < num_freqs; ++j) {
          slope[j] = static_cast<S>(freqs[j]) * q[num_freqs + j];
          slope[num_freqs + j] = -static_cast<S>(freqs[j]) * q[j];
        }
      }
      const AxisJob<S> job{in.geometry(n, axis, bins[axis], padding), num_keypoints, dim, padding};
      in.set_target_rows<S>(n, axis, job.geometry, num_keypoints, s.target_rows);
      for (int k = 0; k < num_keypoints; ++k) {
        const S* row = item_stats + 6 * k;
        S grad_x, grad_y;
        rtmo::mle::likelihood_grads(static_cast<S>(upstream[n * num_keypoints + k]), row[2],
                                    row[5], grad_x, grad_y);
        const rtmo::mle::RowStats<S> axis_stats{row[3 * axis], row[3 * axis + 1],
                                                row[3 * axis + 2]};
        s.grad_rows[k] = rtmo::mle::grad_row(axis_stats, axis == 0 ? grad_x : grad_y);
      }
      run_backward_axis(job, s, query_grads[axis] + n * num_keypoints * dim,
                        box_out + 4 * n + axis, box_out + 4 * n + axis + 2);
    }
    for (int k = 0; k < num_keypoints; ++k) {
      const double sigma = in.sigma(n, k, num_keypoints);
      const S inv_sigma = static_cast<S>(1.0 / rtmo::mle::clipped_sigma(sigma));
      sigma_out[n * num_keypoints + k] =
          rtmo::mle::sigma_unclipped(sigma) ? lane_sum<S>(s.sigma_lanes[k]) * inv_sigma : S(0);
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> dcc_mle_loss_forward_cpu(
    const at::Tensor& query_x, const at::Tensor& query_y, const at::Tensor& boxes,
    const at::Tensor& priors, const at::Tensor& sigmas, const at::Tensor& target_keypoints,
    const at::Tensor& areas, int64_t num_bins_x, int64_t num_bins_y, double padding,
    double temperature) {
  rtmo::mle::check_mle_inputs("dcc_mle_loss_forward", query_x, query_y, boxes, priors, sigmas,
                              target_keypoints, areas, num_bins_x, num_bins_y, padding,
                              temperature);
  TORCH_CHECK(query_x.device().is_cpu(),
              "dcc_mle_loss_forward (CPU kernel): tensors must be on the CPU");
  const int64_t n = query_x.size(0), k = query_x.size(1);
  const auto opts = query_x.options().dtype(rtmo::mle::compute_dtype(query_x));
  at::Tensor nll = at::empty({n, k}, opts);
  at::Tensor keypoints = at::empty({n, k, 2}, opts);
  at::Tensor stats = at::empty({n, k, 2, 3}, opts);
  if (n == 0 || k == 0) return {nll, keypoints, stats};
  const InstanceInputs in(boxes, priors, sigmas, target_keypoints, areas);
  if (opts.dtype() == at::kDouble) {
    forward_cpu<double>(query_x, query_y, in, num_bins_x, num_bins_y, padding, temperature, nll,
                        keypoints, stats);
  } else {
    forward_cpu<float>(query_x, query_y, in, num_bins_x, num_bins_y, padding, temperature, nll,
                       keypoints, stats);
  }
  return {nll, keypoints, stats};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> dcc_mle_loss_backward_cpu(
    const at::Tensor& grad_nll, const at::Tensor& query_x, const at::Tensor& query_y,
    const at::Tensor& boxes, const at::Tensor& priors, const at::Tensor& sigmas,
    const at::Tensor& target_keypoints, const at::Tensor& areas, const at::Tensor& stats,
    int64_t num_bins_x, int64_t num_bins_y, double padding, double temperature) {
  rtmo::mle::check_mle_inputs("dcc_mle_loss_backward", query_x, query_y, boxes, priors, sigmas,
                              target_keypoints, areas, num_bins_x, num_bins_y, padding,
                              temperature);
  rtmo::mle::check_mle_backward_inputs(grad_nll, stats, query_x);
  TORCH_CHECK(query_x.device().is_cpu(),
              "dcc_mle_loss_backward (CPU kernel): tensors must be on the CPU");
  const auto compute = rtmo::mle::compute_dtype(query_x);
  const auto opts = query_x.options().dtype(compute);
  at::Tensor grad_qx = at::empty(query_x.sizes(), opts);
  at::Tensor grad_qy = at::empty(query_x.sizes(), opts);
  at::Tensor grad_boxes = at::empty({query_x.size(0), 4}, opts);
  at::Tensor grad_sigmas = at::empty({query_x.size(0), query_x.size(1)}, opts);
  if (query_x.numel() > 0) {
    const InstanceInputs in(boxes, priors, sigmas, target_keypoints, areas);
    const at::Tensor stats_c = stats.contiguous();
    if (compute == at::kDouble) {
      backward_cpu<double>(grad_nll, query_x, query_y, in, stats_c, num_bins_x, num_bins_y,
                           padding, temperature, grad_qx, grad_qy, grad_boxes, grad_sigmas);
    } else {
      backward_cpu<float>(grad_nll, query_x, query_y, in, stats_c, num_bins_x, num_bins_y,
                          padding, temperature, grad_qx, grad_qy, grad_boxes, grad_sigmas);
    }
  } else {
    grad_boxes.zero_();
    grad_sigmas.zero_();
  }
  // Each gradient in the dtype of its input.
  return {grad_qx.to(query_x.scalar_type()), grad_qy.to(query_y.scalar_type()),
          grad_boxes.to(boxes.scalar_type()), grad_sigmas.to(sigmas.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(rtmo, CPU, m) {
  m.impl("dcc_mle_loss_forward", &dcc_mle_loss_forward_cpu);
  m.impl("dcc_mle_loss_backward", &dcc_mle_loss_backward_cpu);
}
