// Per-element math of the fused Dynamic Coordinate Classifier decode, shared by the CPU kernel
// (csrc/cpu/dcc_decode_kernel.cpp) and the CUDA kernel (csrc/cuda/dcc_decode_kernel.cu). Plain C++:
// no torch headers, so it also compiles on its own (tests/test_dcc_recurrence.py builds a small
// driver around it to bound the rounding drift of the angle recurrence).
//
// One "axis task" is one instance along x or y. Its B bins form an arithmetic progression, so the
// angle of bin i at frequency w_j is r_0 w_j + i (step w_j): the encodings advance by rotating
// (cos, sin) with a fixed step rotation instead of calling sin/cos per bin and frequency.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define RTMO_HD __host__ __device__ __forceinline__
#elif defined(__GNUC__)
// always_inline: the CPU kernel is compiled in several ISA clones and must inline these into each.
#define RTMO_HD inline __attribute__((always_inline))
#else
#define RTMO_HD inline
#endif

namespace rtmo::dcc {

// Re-anchor the rotation with exact sin/cos after this many bins. The CPU kernel rotates in double
// (drift ~ steps * 2^-52); the bound keeps it independent of the bin count.
constexpr int kReanchorBins = 256;

// Geometry of one axis task, in double: pixel coordinates reach 1e4 and more, where a float bin
// position is only good to 1e-3 px and an angle of hundreds of radians to 1e-5 rad.
struct AxisGeometry {
  double center;    // (lo + hi) / 2
  double size;      // padding * (hi - lo)
  double rel0;      // r_0 = b_0 - prior
  double step;      // b_{i+1} - b_i = size / (B - 1)
  int num_bins;
};

RTMO_HD AxisGeometry axis_geometry(double lo, double hi, double prior, int num_bins,
                                   double padding) {
  AxisGeometry g;
  g.center = 0.5 * (lo + hi);
  g.size = padding * (hi - lo);
  g.rel0 = g.center - 0.5 * g.size - prior;
  g.step = g.size / static_cast<double>(num_bins - 1);
  g.num_bins = num_bins;
  return g;
}

// b_i = (-0.5 + i / (B - 1)) * size + center: a fractional i gives the expectation's coordinate.
RTMO_HD double bin_position(const AxisGeometry& g, double index) {
  return (-0.5 + index / static_cast<double>(g.num_bins - 1)) * g.size + g.center;
}

// w_j = temperature^(-j / F): the reciprocal of mmpose's dim_t_j.
RTMO_HD double frequency(int j, int num_freqs, double log_temperature) {
  return exp(-log_temperature * static_cast<double>(j) / static_cast<double>(num_freqs));
}

// (c, s) <- (c, s) rotated by the angle whose (cos, sin) is (rc, rs): angle addition.
template <typename T>
RTMO_HD void rotate(T& c, T& s, T rc, T rs) {
  const T c_next = c * rc - s * rs;
  s = s * rc + c * rs;
  c = c_next;
}

// The encoding walk shared by the kernels. The bins are cut into tiles of `tile` bins. Per
// frequency w_j the walk holds, in double, the (cos, sin) of the angle of the current tile's first
// bin (the anchor) and the rotation by one tile; a float table holds the rotation by t bins,
// t < tile. The encoding of bin first + t is then one angle addition of anchor and table entry
// (one rounding, no accumulation inside a tile); the anchor advances a tile by a double rotation
// and is recomputed exactly every kReanchorBins bins. tests/test_dcc_recurrence.py bounds the
// result against exact sin/cos.

// Angle of bin `bin` at frequency w: (r_0 + bin * step) * w, in double.
RTMO_HD double bin_angle(const AxisGeometry& g, int bin, double w) {
  return (g.rel0 + static_cast<double>(bin) * g.step) * w;
}

// Table of the rotations by t * step * w for t < tile (float), and the rotation by tile * step * w
// (double), by repeated rotation in double from one exact sin/cos (drift ~ tile * 2^-53).
RTMO_HD void step_table(const AxisGeometry& g, double w, int tile, float* cos_t, float* sin_t,
                        double& tile_cos, double& tile_sin) {
  const double angle = g.step * w;
  const double rc = cos(angle), rs = sin(angle);
  double c = 1.0, s = 0.0;
  for (int t = 0; t < tile; ++t) {
    cos_t[t] = static_cast<float>(c);
    sin_t[t] = static_cast<float>(s);
    rotate(c, s, rc, rs);
  }
  tile_cos = c;
  tile_sin = s;
}

// The anchor of the tile starting at `first_bin`: exact at multiples of kReanchorBins, else the
// previous tile's anchor rotated by one tile.
RTMO_HD void advance_anchor(const AxisGeometry& g, double w, int first_bin, double tile_cos,
                            double tile_sin, double& anchor_cos, double& anchor_sin) {
  if (first_bin % kReanchorBins == 0) {
    const double angle = bin_angle(g, first_bin, w);
    anchor_cos = cos(angle);
    anchor_sin = sin(angle);
  } else {
    rotate(anchor_cos, anchor_sin, tile_cos, tile_sin);
  }
}

// cos and sin of (anchor + t * step) * w from the anchor and the table entry/entries for t; T is
// float or a vector of table entries.
template <typename T>
RTMO_HD void encode_from_anchor(double anchor_cos, double anchor_sin, const T& cos_t,
                                const T& sin_t, T& cos_out, T& sin_out) {
  const float ac = static_cast<float>(anchor_cos), as = static_cast<float>(anchor_sin);
  cos_out = ac * cos_t - as * sin_t;
  sin_out = as * cos_t + ac * sin_t;
}

// exp(x) for x <= 0 with ~2 ulp relative error, in plain arithmetic so that it runs on vectors too
// (the CPU kernel instantiates it on GCC vector types; the libm call does not vectorise without
// -ffast-math). x = n ln2 + r, |r| <= ln2 / 2; e^r by its degree-7 Taylor polynomial (truncation
// 0.347^8 / 8! = 5e-9 relative); n is rounded by adding 1.5 * 2^23, which leaves it in the low
// mantissa bits of `shifted`, and `pow2(shifted)` turns those bits into 2^n. Below -87 the result
// would be subnormal: 0 is returned (< 1e-37 of the softmax peak), also for -inf (masked bins).
// NaN stays NaN: a NaN logit poisons its softmax (the NaN policy of softmax_finish).
constexpr float kExpLowest = -87.0f;
constexpr float kExpRoundMagic = 12582912.0f;  // 1.5 * 2^23
constexpr int32_t kExpRoundMagicBits = 0x4B400000;

template <typename T, typename Pow2>
RTMO_HD T exp_nonpositive_impl(T x, Pow2 pow2) {
  const float kLog2e = 1.44269504088896341f;
  const float kLn2Hi = 0.693145751953125f;  // few mantissa bits: n * kLn2Hi is exact
  const float kLn2Lo = 1.42860682030941723212e-6f;
  const T zero{};
  const T lowest = zero + kExpLowest;
  const auto underflow = x < lowest;
  x = underflow ? lowest : x;
  const T shifted = x * kLog2e + kExpRoundMagic;
  const T n = shifted - kExpRoundMagic;
  const T r = (x - n * kLn2Hi) - n * kLn2Lo;
  T p = zero + 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  return underflow ? zero : p * pow2(shifted);
}

// 2^n from the float `shifted` = 1.5 * 2^23 + n: the exponent field of 2^n is n + 127.
struct Pow2FromShiftedScalar {
  RTMO_HD float operator()(float shifted) const {
    int32_t bits;
#if defined(__CUDA_ARCH__)
    bits = __float_as_int(shifted);
#else
    std::memcpy(&bits, &shifted, sizeof(bits));
#endif
    bits = (bits - kExpRoundMagicBits + 127) << 23;
#if defined(__CUDA_ARCH__)
    return __int_as_float(bits);
#else
    float out;
    std::memcpy(&out, &bits, sizeof(out));
    return out;
#endif
  }
};

RTMO_HD float exp_nonpositive(float x) {
  return exp_nonpositive_impl(x, Pow2FromShiftedScalar{});
}

// Online softmax over the bins of one keypoint: running max, sum of e^(l - max), sum of
// e^(l - max) * i (bin index), and the first index of the maximum. The sums are of type T: float,
// or a vector of per-lane partial sums in the CPU kernel.
template <typename T = float>
struct SoftmaxState {
  float max;
  T sum;
  T weighted_index;
  int argmax;
};

template <typename T = float>
RTMO_HD SoftmaxState<T> softmax_init() {
  return SoftmaxState<T>{-INFINITY, T{}, T{}, 0};
}

// Folds in a tile's maximum `tile_max`, found first at bin `tile_argmax`: strict > keeps the first
// index on ties, and the running sums are rescaled to the new maximum. Afterwards the tile's
// exponentials e^(l - st.max) are added with `softmax_add`.
template <typename T>
RTMO_HD void softmax_update_max(SoftmaxState<T>& st, float tile_max, int tile_argmax) {
  if (tile_max > st.max) {
    const float scale = exp_nonpositive(st.max - tile_max);  // 0 on the first tile (max = -inf)
    st.sum = st.sum * scale;
    st.weighted_index = st.weighted_index * scale;
    st.max = tile_max;
    st.argmax = tile_argmax;
  }
}

template <typename T>
RTMO_HD void softmax_add(SoftmaxState<T>& st, T sum, T weighted_index) {
  st.sum += sum;
  st.weighted_index += weighted_index;
}

// Merges two partial states over disjoint bin ranges; `a` covers the lower bin indices, so on a
// tie of the maxima a's argmax (the first index) wins.
RTMO_HD SoftmaxState<float> softmax_merge(SoftmaxState<float> a, const SoftmaxState<float>& b) {
  const bool b_wins = b.max > a.max;
  const float top = b_wins ? b.max : a.max;
  const float scale_a = exp_nonpositive(a.max - top), scale_b = exp_nonpositive(b.max - top);
  a.sum = a.sum * scale_a + b.sum * scale_b;
  a.weighted_index = a.weighted_index * scale_a + b.weighted_index * scale_b;
  a.argmax = b_wins ? b.argmax : a.argmax;
  a.max = top;
  return a;
}

struct AxisResult {
  float coordinate;
  float confidence;
};

// Largest finite float: a sum of exponentials above it (inf) or failing the comparison (NaN) means
// a logit was NaN or +inf, or all were -inf.
constexpr float kFloatMax = 3.40282347e+38f;

// The coordinate (expectation over the bins, or the bin of the first maximum) and the peak
// probability e^0 / sum. NaN policy (rtmo_kernels.ops.dcc_decode): when the softmax is undefined
// (a NaN or +inf logit, or only -inf ones) or the coordinate is beyond the float32 range, both are
// NaN, in either mode.
RTMO_HD AxisResult softmax_finish(const SoftmaxState<float>& st, const AxisGeometry& g,
                                  bool argmax) {
  AxisResult out;
  const double index = argmax ? static_cast<double>(st.argmax)
                              : static_cast<double>(st.weighted_index) / st.sum;
  out.coordinate = static_cast<float>(bin_position(g, index));
  out.confidence = 1.0f / st.sum;
  const bool defined = st.sum <= kFloatMax && st.max <= kFloatMax &&
                       out.coordinate <= kFloatMax && out.coordinate >= -kFloatMax;
  if (!defined) out.coordinate = out.confidence = NAN;
  return out;
}

}  // namespace rtmo::dcc
