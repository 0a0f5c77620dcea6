// Greedy NMS on the CPU for rtmo::batched_nms and rtmo::nms_padded.
//
// One sort of packed (score, index) keys, then a greedy scan that tests each candidate against the
// boxes kept so far and stops at the first overlap. The kept boxes sit in a structure of arrays
// padded to a multiple of kLanes with NaN boxes (which never suppress), so the test runs a fixed
// number of lanes per block and vectorises. Different idxs are handled explicitly: candidates are
// sorted by (idx, score) and scanned per idx, the kept ones merged back by score; no coordinate
// offsets (those lose fp32 precision once coordinates and offsets grow large).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "common/nms.h"
#include "common/nms_checks.h"

namespace {

using rtmo::nms::box_area;
using rtmo::nms::iou_exceeds;
using rtmo::nms::key_index;
using rtmo::nms::score_index_key;

// 8 lanes: two SSE vectors per block. Measured at 2000 clustered candidates, 8 beat 4 and 16.
constexpr size_t kLanes = 8;
// Images run in parallel (OpenMP, torch's thread count) only for large batches. On 2 cores, 8 x 500
// and 8 x 2000 clustered boxes took best-of-60 59 / 1018 us with 2 threads vs 107 / 1788 us with
// one, but medians of 20 / 39 ms vs 0.2 / 2 ms while other processes kept the cores busy: the join
// waits for a descheduled thread. Fork-join only pays once a batch costs several milliseconds.
constexpr int64_t kParallelMinBoxes = 32768;

class KeptBoxes {
 public:
  void clear() {
    size_ = 0;
    for (auto* v : {&x1_, &y1_, &x2_, &y2_, &area_}) v->clear();
  }

  bool suppresses(const float* box, float area, float iou_threshold) const {
    for (size_t k0 = 0; k0 < size_; k0 += kLanes) {
      int hit = 0;
      for (size_t k = k0; k < k0 + kLanes; ++k) {
        hit |= static_cast<int>(iou_exceeds(x1_[k], y1_[k], x2_[k], y2_[k], area_[k], box[0],
                                            box[1], box[2], box[3], area, iou_threshold));
      }
      if (hit) return true;
    }
    return false;
  }

  void add(const float* box, float area) {
    if (size_ % kLanes == 0) {
      const float nan = std::numeric_limits<float>::quiet_NaN();
      for (auto* v : {&x1_, &y1_, &x2_, &y2_, &area_}) v->resize(size_ + kLanes, nan);
    }
    x1_[size_] = box[0];
    y1_[size_] = box[1];
    x2_[size_] = box[2];
    y2_[size_] = box[3];
    area_[size_] = area;
    ++size_;
  }

 private:
  std::vector<float> x1_, y1_, x2_, y2_, area_;
  size_t size_ = 0;
};

// Scans `keys` (sorted ascending: score descending, index ascending) and appends the keys of the kept
// candidates to `kept_keys`, stopping once `max_keep` of them are kept in this scan.
void greedy_scan(const uint64_t* keys, size_t n, const float* boxes, float iou_threshold,
                 size_t max_keep, KeptBoxes& kept, std::vector<uint64_t>& kept_keys) {
  kept.clear();
  size_t count = 0;
  for (size_t i = 0; i < n && count < max_keep; ++i) {
    const float* box = boxes + 4 * static_cast<size_t>(key_index(keys[i]));
    const float area = box_area(box[0], box[1], box[2], box[3]);
    if (kept.suppresses(box, area, iou_threshold)) continue;
    kept.add(box, area);
    kept_keys.push_back(keys[i]);
    ++count;
  }
}

void check_index_range(int64_t n, const char* what) {
  TORCH_CHECK(n < (int64_t{1} << 32), "rtmo NMS: at most 2^32 - 1 boxes per ", what, ", got ", n);
}

at::Tensor batched_nms_cpu(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                           double iou_threshold) {
  const int64_t m = rtmo::nms::check_batched_nms_inputs(boxes, scores, idxs);
  check_index_range(m, "call");
  const at::Tensor b = boxes.to(at::kFloat).contiguous();
  const at::Tensor s = scores.to(at::kFloat).contiguous();
  const at::Tensor g = idxs.to(at::kLong).contiguous();
  const float* box_ptr = b.data_ptr<float>();
  const float* score_ptr = s.data_ptr<float>();
  const int64_t* group_ptr = g.data_ptr<int64_t>();
  const float thr = static_cast<float>(iou_threshold);

  // NaN scores are not candidates (and would break the strict weak order of the sort).
  std::vector<std::pair<int64_t, uint64_t>> candidates;
  candidates.reserve(m);
  bool one_group = true;
  for (int64_t i = 0; i < m; ++i) {
    if (std::isnan(score_ptr[i])) continue;
    candidates.emplace_back(group_ptr[i], score_index_key(score_ptr[i], static_cast<uint32_t>(i)));
    one_group = one_group && group_ptr[i] == candidates.front().first;
  }
  std::vector<uint64_t> keys(candidates.size());
  if (!one_group) std::sort(candidates.begin(), candidates.end());
  for (size_t i = 0; i < candidates.size(); ++i) keys[i] = candidates[i].second;
  if (one_group) std::sort(keys.begin(), keys.end());

  KeptBoxes kept;
  std::vector<uint64_t> kept_keys;
  for (size_t start = 0; start < keys.size();) {
    size_t end = start + 1;
    while (end < keys.size() && (one_group || candidates[end].first == candidates[start].first)) {
      ++end;
    }
    greedy_scan(keys.data() + start, end - start, box_ptr, thr, end - start, kept, kept_keys);
    start = end;
  }
  if (!one_group) std::sort(kept_keys.begin(), kept_keys.end());

  at::Tensor keep = at::empty({static_cast<int64_t>(kept_keys.size())}, boxes.options().dtype(at::kLong));
  int64_t* keep_ptr = keep.data_ptr<int64_t>();
  for (size_t i = 0; i < kept_keys.size(); ++i) keep_ptr[i] = key_index(kept_keys[i]);
  return keep;
}

std::tuple<at::Tensor, at::Tensor> nms_padded_cpu(const at::Tensor& boxes, const at::Tensor& scores,
                                                  double iou_threshold, double score_threshold,
                                                  int64_t max_det) {
  rtmo::nms::check_nms_padded_inputs(boxes, scores, max_det);
  const int64_t batch = boxes.size(0);
  const int64_t n = boxes.size(1);
  check_index_range(n, "image");
  const at::Tensor b = boxes.to(at::kFloat).contiguous();
  const at::Tensor s = scores.to(at::kFloat).contiguous();
  at::Tensor keep = at::full({batch, max_det}, -1, boxes.options().dtype(at::kLong));
  at::Tensor num_kept = at::zeros({batch}, boxes.options().dtype(at::kLong));
  const float* box_ptr = b.data_ptr<float>();
  const float* score_ptr = s.data_ptr<float>();
  int64_t* keep_ptr = keep.data_ptr<int64_t>();
  int64_t* num_ptr = num_kept.data_ptr<int64_t>();
  const float iou_thr = static_cast<float>(iou_threshold);
  const float score_thr = static_cast<float>(score_threshold);

#pragma omp parallel if (batch > 1 && batch * n >= kParallelMinBoxes)
  {
    std::vector<uint64_t> keys;
    std::vector<uint64_t> kept_keys;
    KeptBoxes kept;
#pragma omp for schedule(dynamic, 1)
    for (int64_t img = 0; img < batch; ++img) {
      const float* img_scores = score_ptr + img * n;
      keys.clear();
      kept_keys.clear();
      for (int64_t i = 0; i < n; ++i) {
        // NaN > threshold is false: NaN scores are never candidates.
        if (img_scores[i] > score_thr) {
          keys.push_back(score_index_key(img_scores[i], static_cast<uint32_t>(i)));
        }
      }
      std::sort(keys.begin(), keys.end());
      greedy_scan(keys.data(), keys.size(), box_ptr + img * n * 4, iou_thr,
                  static_cast<size_t>(max_det), kept, kept_keys);
      for (size_t k = 0; k < kept_keys.size(); ++k) {
        keep_ptr[img * max_det + static_cast<int64_t>(k)] = key_index(kept_keys[k]);
      }
      num_ptr[img] = static_cast<int64_t>(kept_keys.size());
    }
  }
  return {keep, num_kept};
}

}  // namespace

TORCH_LIBRARY_IMPL(rtmo, CPU, m) {
  m.impl("batched_nms", &batched_nms_cpu);
  m.impl("nms_padded", &nms_padded_cpu);
}
