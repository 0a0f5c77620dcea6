// Measures the shared encoding walk of csrc/common/dcc_decode.h against exact sin/cos, and the
// polynomial exp against libm. Built and run by tests/test_dcc_recurrence.py; prints JSON.
//   dcc_walk_drift walk <lo> <hi> <prior> <num_bins> <dim> <temperature> <tile>
//   dcc_walk_drift exp
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "common/dcc_decode.h"

namespace dcc = rtmo::dcc;

static int walk(int argc, char** argv) {
  if (argc != 9) return 2;
  const double lo = std::atof(argv[2]), hi = std::atof(argv[3]), prior = std::atof(argv[4]);
  const int num_bins = std::atoi(argv[5]), dim = std::atoi(argv[6]);
  const double log_temperature = std::log(std::atof(argv[7]));
  const int tile = std::atoi(argv[8]);
  const int num_freqs = dim / 2;
  const dcc::AxisGeometry g = dcc::axis_geometry(lo, hi, prior, num_bins, 1.25);
  std::vector<float> step_cos(tile), step_sin(tile);
  double max_error = 0.0, max_error_first_reanchor = 0.0, max_angle = 0.0;
  for (int j = 0; j < num_freqs; ++j) {
    const double w = dcc::frequency(j, num_freqs, log_temperature);
    double tile_cos, tile_sin, anchor_cos = 0.0, anchor_sin = 0.0;
    dcc::step_table(g, w, tile, step_cos.data(), step_sin.data(), tile_cos, tile_sin);
    for (int first = 0; first < num_bins; first += tile) {
      dcc::advance_anchor(g, w, first, tile_cos, tile_sin, anchor_cos, anchor_sin);
      for (int t = 0; t < tile && first + t < num_bins; ++t) {
        float c, s;
        dcc::encode_from_anchor(anchor_cos, anchor_sin, step_cos[t], step_sin[t], c, s);
        const double angle = dcc::bin_angle(g, first + t, w);
        const double err =
            std::fmax(std::fabs(c - std::cos(angle)), std::fabs(s - std::sin(angle)));
        max_error = std::fmax(max_error, err);
        if (first < dcc::kReanchorBins) {
          max_error_first_reanchor = std::fmax(max_error_first_reanchor, err);
        }
        max_angle = std::fmax(max_angle, std::fabs(angle));
      }
    }
  }
  std::printf("{\"max_error\": %.9g, \"max_error_first_reanchor\": %.9g, \"max_angle\": %.9g}\n",
              max_error, max_error_first_reanchor, max_angle);
  return 0;
}

static int exp_accuracy() {
  double max_rel = 0.0;
  float worst = 0.0f;
  for (float x = 0.0f; x >= -87.0f; x = std::nextafter(x, -100.0f) - 1e-4f) {
    const double want = std::exp(static_cast<double>(x));
    const double rel = std::fabs(dcc::exp_nonpositive(x) - want) / want;
    if (rel > max_rel) max_rel = rel, worst = x;
  }
  const bool masked_zero =
      dcc::exp_nonpositive(-INFINITY) == 0.0f && dcc::exp_nonpositive(-90.0f) == 0.0f;
  std::printf("{\"max_relative_error\": %.9g, \"at\": %.9g, \"exp0\": %.9g, \"masked_zero\": %s}\n",
              max_rel, worst, dcc::exp_nonpositive(0.0f), masked_zero ? "true" : "false");
  return 0;
}

int main(int argc, char** argv) {
  if (argc >= 2 && std::strcmp(argv[1], "walk") == 0) return walk(argc, argv);
  if (argc == 2 && std::strcmp(argv[1], "exp") == 0) return exp_accuracy();
  std::fprintf(stderr, "usage: dcc_walk_drift walk lo hi prior bins dim temperature tile | exp\n");
  return 2;
}
