// Every schema of the `rtmo` operator namespace, defined once. Backends register implementations in
// csrc/cpu/<op>_kernel.cpp (CPU) and csrc/cuda/<op>_kernel.cu (CUDA); fake kernels live in
// rtmo_kernels/ops/<op>.py.
#include <torch/extension.h>
#include <torch/library.h>

TORCH_LIBRARY(rtmo, m) {
  // Fused Dynamic Coordinate Classifier decode; mode is "expectation" or "argmax".
  m.def(
      "dcc_decode(Tensor query_x, Tensor query_y, Tensor boxes, Tensor priors, int num_bins_x, "
      "int num_bins_y, float padding, float temperature, str mode) -> (Tensor, Tensor)");
  // RTMO's MLE loss on the DCC heatmaps, fused: nll (N, K), the decoded keypoints (N, K, 2) and
  // per-row statistics (N, K, 2 axes, [max, sum, P]) for the backward, in float32 (float64 for
  // float64 queries).
  m.def(
      "dcc_mle_loss_forward(Tensor query_x, Tensor query_y, Tensor boxes, Tensor priors, "
      "Tensor sigmas, Tensor target_keypoints, Tensor areas, int num_bins_x, int num_bins_y, "
      "float padding, float temperature) -> (Tensor, Tensor, Tensor)");
  // Its backward: the gradients of sum(grad_nll * nll) w.r.t. query_x, query_y, boxes and sigmas,
  // each in the dtype of its input, recomputing the encodings and logits from the statistics.
  m.def(
      "dcc_mle_loss_backward(Tensor grad_nll, Tensor query_x, Tensor query_y, Tensor boxes, "
      "Tensor priors, Tensor sigmas, Tensor target_keypoints, Tensor areas, Tensor stats, "
      "int num_bins_x, int num_bins_y, float padding, float temperature) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
  // Greedy NMS with torchvision's batched_nms contract; boxes of different idxs never interact.
  m.def("batched_nms(Tensor boxes, Tensor scores, Tensor idxs, float iou_threshold) -> Tensor");
  // Static-shape NMS per image: keep (B, max_det) padded with -1 and num_kept (B,).
  m.def(
      "nms_padded(Tensor boxes, Tensor scores, float iou_threshold, float score_threshold, "
      "int max_det) -> (Tensor, Tensor)");
}

namespace {
bool cuda_kernels_compiled() {
#ifdef RTMO_WITH_CUDA
  return true;
#else
  return false;
#endif
}
}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "rtmo_kernels compiled kernels (CPU always, CUDA when built with nvcc)";
  m.def("cuda_kernels_compiled", &cuda_kernels_compiled,
        "Whether this build contains the CUDA kernels");
}
