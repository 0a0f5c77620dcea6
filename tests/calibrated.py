"""Test models and comparisons shared by the exported-graph tests (test_onnx_runtime.py,
test_raw_head.py).

Random weights give nearly equal scores everywhere (no order to compare), so the test models are
calibrated on the test images: BatchNorm statistics from the images, cls logits spread to a std of
2 around a chosen centre (that sets how many priors pass the 0.1 threshold), boxes six strides
wide so neighbouring priors overlap and the NMS has work to do, and DCC queries scaled to
a trained model's sharpness.
"""

from __future__ import annotations

import copy

import torch

from rtmo.config import from_name
from rtmo.model import RTMOModel

# Box agreement asked of the fp32 graph (measured <= 4e-3 px) and the floor of the keypoints'.
PX_TOL = 1e-2
# The keypoints' floor: onnxruntime's float32 kernels on an Intel Xeon (AVX-512) put one image's
# keypoints 0.026 px from float64 where torch is 0.005 px off (0.01 px on AMD EPYC).
KEYPOINT_FLOOR = 3e-2
# Scores are sigmoids of logits that went through ~80 convolutions whose float32 rounding differs
# between torch and onnxruntime: 3e-5 relative measured on the dense outputs.
SCORE_TOL = 1e-4
MAX_DET = 20
# Mean query norm of the test models. Random weights give ~200: bin logits in the thousands, a
# one-hot softmax in which a float32 rounding of the box (1e-3 px) moves a keypoint by a whole
# bin (0.1-0.2 px measured). A trained DCC spreads its heatmaps over several bins; with norm 2 the
# logits span about +-16 and the peak probability is well below 1.
QUERY_NORM = 2.0
# Boxes exp(1.8) = 6 strides wide: a box and its row/column neighbour overlap with IoU 0.72 > 0.65
# (suppressed), boxes two priors apart with IoU 0.5 (kept).
BOX_LOG_SIZE = 1.8


def calibrated_model(name: str, images: torch.Tensor, centre_logit: float, seed: int = 0):
    """Random-weight model with BatchNorm statistics taken from `images` (a freshly initialised
    network's activations fade to ~1e-4 and every prior looks alike), cls logits on `images`
    spread to std 2 around `centre_logit` per level, and boxes ~6 strides wide."""
    torch.manual_seed(seed)
    model = RTMOModel(from_name(name))
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # a plain average over the one calibration batch
    head = model.head.head_module
    with torch.no_grad():
        model.train()(images)
        model.eval()
        for conv in head.out_bbox:
            conv.bias[2:] = BOX_LOG_SIZE
        logits = model(images).cls_logits
        w, h = images.shape[-1], images.shape[-2]
        level_sizes = [(h // s) * (w // s) for s in (16, 32)]
        for conv, level in zip(head.out_cls, logits.split(level_sizes, dim=1), strict=True):
            scale = 2.0 / level.std()
            conv.weight *= scale
            conv.bias.mul_(scale).add_(centre_logit - level.mean() * scale)
        dcc = model.head.dcc
        queries = dcc.queries(dcc.keypoint_features(model(images).pose_vecs.flatten(0, 1)))
        scale = QUERY_NORM / torch.cat(queries, -1).norm(dim=-1).mean()
        dcc.x_fc.weight *= scale
        dcc.y_fc.weight *= scale
    return model


def noise_images(batch: int, size: tuple[int, int], seed: int) -> torch.Tensor:
    w, h = size
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, h, w, generator=generator) * 255


def float64_predictions(
    model: RTMOModel, images: torch.Tensor, max_det: int = MAX_DET, **options
) -> list[dict]:
    """The same model's prediction in float64 through the reference ops: the truth that both
    float32 runs are measured against (each image's result does not depend on the batch)."""
    model64 = copy.deepcopy(model).double()
    model64.use_kernels = False
    with torch.no_grad():
        return model64.predict(images.double(), max_det=max_det, **options)


def assert_same_people(expected: list[dict], actual: list[dict], truth: list[dict]) -> None:
    """Same people in the same order, scores and boxes close; keypoints per the project's
    tolerance policy: the runtime's error against float64 at most twice torch float32's, or
    PX_TOL (the DCC's soft-argmax turns ~3e-5 relative rounding of the network into ~1e-2 px on
    100 px boxes: torch float32 itself is up to 4e-2 px from float64 on these inputs). People
    whose scores tie within SCORE_TOL may come in either order (float32 rounding decides it)."""
    assert len(actual) == len(expected)
    for i, (ref, out, exact) in enumerate(zip(expected, actual, truth, strict=True)):
        assert len(out["scores"]) == len(ref["scores"]), f"image {i}: number of people"
        out = {k: v[tie_order(ref, out)] for k, v in out.items()}
        exact = {k: v[tie_order(ref, exact)] for k, v in exact.items()}
        torch.testing.assert_close(out["scores"], ref["scores"], rtol=0, atol=SCORE_TOL)
        torch.testing.assert_close(out["boxes"], ref["boxes"], rtol=0, atol=PX_TOL)
        torch.testing.assert_close(
            out["keypoint_scores"], ref["keypoint_scores"], rtol=0, atol=SCORE_TOL
        )
        torch_error = (ref["keypoints"].double() - exact["keypoints"]).abs().max().item()
        ort_error = (out["keypoints"].double() - exact["keypoints"]).abs().max().item()
        assert ort_error <= max(2 * torch_error, KEYPOINT_FLOOR), (i, ort_error, torch_error)


def tie_order(reference: dict, other: dict) -> torch.Tensor:
    """Indices into `other`'s people aligning them with `reference`'s: each reference person in
    turn takes, among the unused people whose score is within SCORE_TOL of its own, the one with
    the nearest box. Without ties this is the identity; a person with no such candidate keeps its
    own slot (and fails the comparison that follows)."""
    n = len(reference["scores"])
    used: set[int] = set()
    order = []
    for i in range(n):
        close = (other["scores"].double() - reference["scores"][i].double()).abs() <= SCORE_TOL
        candidates = [j for j in close.nonzero().flatten().tolist() if j not in used]
        if not candidates:
            order.append(i)
            continue
        distance = (other["boxes"][candidates].double() - reference["boxes"][i].double()).abs()
        best = candidates[int(distance.amax(dim=1).argmin())]
        used.add(best)
        order.append(best)
    return torch.tensor(order, dtype=torch.long)
