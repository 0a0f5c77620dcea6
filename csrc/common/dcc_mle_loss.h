// Per-element math of the fused DCC MLE loss (rtmo::dcc_mle_loss_forward / _backward), shared by
// the CPU kernel (csrc/cpu/dcc_mle_loss_kernel.cpp) and the CUDA kernel
// (csrc/cuda/dcc_mle_loss_kernel.cu). The bins, their encodings and the online softmax are those
// of dcc_decode (common/dcc_decode.h); this adds the Laplace target and the gradients.
//
// Per instance, keypoint and axis (bins b_i = b_0 + i step, logits l_i, learned sigma, GT x*):
//   l_i = clamp(raw_i, -5e4, 5e4),  e_i = exp(l_i - m) with m = max_i l_i (a constant for autograd)
//   S = sum e_i,  p_i = e_i / (S + 1e-8)                         mmpose's `_apply_softmax`
//   t_i = exp(-|x* - b_i| rate) / s,  s = max(sigma, 1e-3),  rate = 1 / (2 s max(sqrt(area), 1))
//   P = sum_i p_i t_i = T / (S + 1e-8) with T = sum e_i t_i;  nll = -log(P_x P_y + 1e-4)
// The forward keeps (m, S, P) per row. The backward, with gP = d nll / dP
// (= -g P_other / (P_x P_y + 1e-4)), recomputes l_i and t_i bin by bin:
//   d/d raw_i   alpha_i = gP p_i (t_i - P) [|raw_i| <= 5e4]     (softmax with the detached max)
//   d/d q       sum_i alpha_i phi(b_i - g)
//   d/d b_i     alpha_i dl_i/db_i + gP p_i t_i sign(x* - b_i) rate,
//               dl_i/db_i = <q', phi(b_i - g)>, q' = [w q_sin, -w q_cos] (derivative query)
//   d/d lo, hi  sum_i d/db_i (1/2 -+ padding u_i),  u_i = -1/2 + i / (B - 1)
//   d/d sigma   [sigma >= 1e-3] / s * sum_i gP p_i t_i (|x* - b_i| rate - 1)   (both axes)
// Every function below is written for a scalar or a GCC vector T (the CPU kernel's lanes); exp of
// a non-positive argument comes in as a functor, so float, double and vector lanes share the math.
#pragma once

#include <cmath>

#include "common/dcc_decode.h"

namespace rtmo::mle {

using rtmo::dcc::AxisGeometry;

// mmpose's `_apply_softmax`: the logits are clamped to +-5e4, the denominator gets 1e-8.
constexpr float kLogitClamp = 5e4f;
constexpr double kSoftmaxEps = 1e-8;
// `generate_target_heatmap`: sigma clipped at 1e-3, sqrt(area) at 1. MLECCLoss: log(P + 1e-4).
constexpr double kSigmaMin = 1e-3;
constexpr double kSqrtAreaMin = 1.0;
constexpr double kLikelihoodEps = 1e-4;

// The Laplace target of one (instance, keypoint, axis), from double inputs. The distance of bin i
// is |offset0 - i step|: offset0 = x* - b_0 is taken in double, so a GT at 1e4 px keeps its
// sub-pixel distance (a float bin position at 1e4 px is only good to 1e-3 px, and rate reaches
// 500 / px at the sigma clip).
template <typename S>
struct TargetRow {
  S offset0;    // x* - b_0
  S rate;       // 1 / (2 s a)
  S inv_sigma;  // 1 / s
};

// sigma < 1e-3 -> 1e-3, NaN stays NaN (torch.clip).
RTMO_HD double clipped_sigma(double sigma) { return sigma < kSigmaMin ? kSigmaMin : sigma; }

// The gradient passes where torch's clip passes it: sigma >= min.
RTMO_HD bool sigma_unclipped(double sigma) { return sigma >= kSigmaMin; }

template <typename S>
RTMO_HD TargetRow<S> target_row(double target, const AxisGeometry& g, double sigma, double area) {
  const double s = clipped_sigma(sigma);
  double a = sqrt(area);
  a = a < kSqrtAreaMin ? kSqrtAreaMin : a;
  TargetRow<S> row;
  row.offset0 = static_cast<S>(target - rtmo::dcc::bin_position(g, 0.0));
  row.rate = static_cast<S>(1.0 / (2.0 * s * a));
  row.inv_sigma = static_cast<S>(1.0 / s);
  return row;
}

// Constants as T (a scalar or every lane of a vector).
template <typename T, typename S>
RTMO_HD T splat(S value) {
  return T{} + value;
}

// x* - b_i from the bins' offsets i * step (T).
template <typename T, typename S>
RTMO_HD T signed_distance(const TargetRow<S>& row, T bin_offset) {
  return splat<T>(row.offset0) - bin_offset;
}

template <typename T>
RTMO_HD T absolute(T x) {
  return x < splat<T>(0.0f) ? -x : x;
}

// t = exp(-|x* - b| rate) / s.
template <typename T, typename S, typename Exp>
RTMO_HD T laplace_target(const TargetRow<S>& row, T distance, Exp exp_nonpositive) {
  return exp_nonpositive(-distance * row.rate) * row.inv_sigma;
}

// clamp(raw, -5e4, 5e4); NaN stays NaN.
template <typename T>
RTMO_HD T clamp_logit(T raw) {
  const T hi = splat<T>(kLogitClamp), lo = splat<T>(-kLogitClamp);
  raw = raw > hi ? hi : raw;
  return raw < lo ? lo : raw;
}

// Online softmax with the target: running max m, S = sum e, T = sum e t, E = sum e i (bin index).
// The sums are of type T: a scalar, or vectors of per-lane partial sums in the CPU kernel.
template <typename T, typename M = float>
struct MleState {
  M max;
  T sum;
  T target_sum;
  T weighted_index;
};

template <typename T, typename M = float>
RTMO_HD MleState<T, M> mle_init() {
  return MleState<T, M>{-INFINITY, T{}, T{}, T{}};
}

// Folds in a tile's maximum: the sums are rescaled to the new maximum.
template <typename T, typename M, typename ScalarExp>
RTMO_HD void mle_update_max(MleState<T, M>& st, M tile_max, ScalarExp exp_nonpositive) {
  if (tile_max > st.max) {
    const M scale = exp_nonpositive(st.max - tile_max);  // 0 on the first tile (max = -inf)
    st.sum = st.sum * scale;
    st.target_sum = st.target_sum * scale;
    st.weighted_index = st.weighted_index * scale;
    st.max = tile_max;
  }
}

// Adds a tile of logits (clamped, -inf past the last bin) with their targets and bin indices;
// the maximum is already folded in.
template <typename T, typename M, typename Exp>
RTMO_HD void mle_add(MleState<T, M>& st, T logits, T target, T bin_index, Exp exp_nonpositive) {
  const T e = exp_nonpositive(logits - st.max);
  st.sum += e;
  st.target_sum += e * target;
  st.weighted_index += e * bin_index;
}

// Merges two partial states over disjoint bin ranges.
template <typename M, typename ScalarExp>
RTMO_HD MleState<M, M> mle_merge(MleState<M, M> a, const MleState<M, M>& b,
                                 ScalarExp exp_nonpositive) {
  const M top = b.max > a.max ? b.max : a.max;
  const M scale_a = exp_nonpositive(a.max - top), scale_b = exp_nonpositive(b.max - top);
  a.sum = a.sum * scale_a + b.sum * scale_b;
  a.target_sum = a.target_sum * scale_a + b.target_sum * scale_b;
  a.weighted_index = a.weighted_index * scale_a + b.weighted_index * scale_b;
  a.max = top;
  return a;
}

// What a row keeps for the backward, and the decoded coordinate.
template <typename M>
struct RowStats {
  M max;
  M sum;
  M likelihood;  // P
};

template <typename M>
struct RowResult {
  RowStats<M> stats;
  M coordinate;  // sum_i p_i b_i
};

template <typename M>
RTMO_HD RowResult<M> mle_finish(const MleState<M, M>& st, const AxisGeometry& g) {
  const double sum = static_cast<double>(st.sum);
  const double norm = sum + kSoftmaxEps;
  RowResult<M> out;
  out.stats.max = st.max;
  out.stats.sum = st.sum;
  out.stats.likelihood = static_cast<M>(static_cast<double>(st.target_sum) / norm);
  // sum_i e_i b_i / norm with b_i = b(i): the expectation of the index, then the position.
  const double index = static_cast<double>(st.weighted_index) / sum;
  out.coordinate = static_cast<M>(rtmo::dcc::bin_position(g, index) * (sum / norm));
  return out;
}

// nll = -log(P_x P_y + 1e-4).
template <typename M>
RTMO_HD M mle_nll(M likelihood_x, M likelihood_y) {
  return static_cast<M>(-log(static_cast<double>(likelihood_x) * likelihood_y + kLikelihoodEps));
}

// d nll / d P_x and d nll / d P_y for an upstream gradient g of nll.
template <typename M>
RTMO_HD void likelihood_grads(M grad_nll, M likelihood_x, M likelihood_y, M& grad_x, M& grad_y) {
  const M inv = static_cast<M>(
      1.0 / (static_cast<double>(likelihood_x) * likelihood_y + kLikelihoodEps));
  grad_x = -grad_nll * likelihood_y * inv;
  grad_y = -grad_nll * likelihood_x * inv;
}

// The backward's per-row constants.
template <typename S>
struct GradRow {
  S max;
  S inv_norm;        // 1 / (S + 1e-8)
  S likelihood;      // P
  S grad_likelihood;  // gP
};

template <typename S>
RTMO_HD GradRow<S> grad_row(const RowStats<S>& stats, S grad_likelihood) {
  return GradRow<S>{stats.max,
                    static_cast<S>(1.0 / (static_cast<double>(stats.sum) + kSoftmaxEps)),
                    stats.likelihood, grad_likelihood};
}

// One bin's share of the gradients of one row.
template <typename T>
struct BinGrads {
  T logit;  // alpha: d / d raw logit (for the query gradient)
  T bin;    // d / d b_i (for the box gradient)
  T sigma;  // gP p t (|x* - b| rate - 1): times [unclipped] / s, summed, is d / d sigma
};

template <typename T, typename S, typename Exp>
RTMO_HD BinGrads<T> bin_grads(T raw_logit, T logit_slope, T signed_dist, const TargetRow<S>& tr,
                              const GradRow<S>& gr, Exp exp_nonpositive) {
  const T hi = splat<T>(kLogitClamp);
  const auto inside = !(raw_logit > hi) && !(raw_logit < -hi);  // NaN: outside, as torch.clamp
  const T prob = exp_nonpositive(clamp_logit(raw_logit) - gr.max) * gr.inv_norm;
  const T distance = absolute(signed_dist);
  const T target = laplace_target(tr, distance, exp_nonpositive);
  const T weighted = prob * target * gr.grad_likelihood;  // gP p t
  const T zero = splat<T>(0.0f);
  BinGrads<T> out;
  out.logit = inside ? (target - gr.likelihood) * prob * gr.grad_likelihood : zero;
  // sign(x* - b) (0 at 0, as torch.abs) times rate.
  const T slope = signed_dist > zero ? splat<T>(tr.rate)
                                     : (signed_dist < zero ? splat<T>(-tr.rate) : zero);
  out.bin = out.logit * logit_slope + weighted * slope;
  out.sigma = weighted * (distance * tr.rate - splat<T>(1.0f));
  return out;
}

}  // namespace rtmo::mle
