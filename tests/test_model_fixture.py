"""Layer-by-layer parity with mmpose 1.3.2's own RTMO-t run (shared/fixtures/mmpose-rtmo-t)."""

import numpy as np
import pytest
import torch
from checkpoints import shared_dir

from rtmo.checkpoint import load_model
from rtmo.model import DenseOutputs
from rtmo.model.head import grid_priors
from rtmo.model.postprocess import postprocess_padded, split_predictions

# float32 through ~60 conv layers and a transformer: mmpose and we sum in different orders.
# Measured max |ours - mmpose| / max |mmpose| per stage: 1e-6 .. 4.4e-6.
STAGE_RTOL = 1e-4


@pytest.fixture(scope="module")
def fixture():
    root = shared_dir() / "fixtures" / "mmpose-rtmo-t"
    stages = dict(np.load(root / "rtmo-t_stages.npz"))
    model = load_model(root / "rtmo-t_random.pth", use_kernels=False)
    return model, {k: torch.from_numpy(v) for k, v in stages.items()}


def _rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    assert ours.shape == ref.shape
    return ((ours - ref).abs().max() / ref.abs().max()).item()


@torch.no_grad()
def test_backbone_neck_and_head_stages_match_mmpose(fixture):
    model, ref = fixture
    feats = model.backbone(ref["input"])
    for i, f in enumerate(feats):
        assert _rel_err(f, ref[f"backbone.{i}"]) < STAGE_RTOL, f"backbone.{i}"
    neck = model.neck(feats)
    for i, f in enumerate(neck):
        assert _rel_err(f, ref[f"neck.{i}"]) < STAGE_RTOL, f"neck.{i}"
    for i, f in enumerate(neck):
        outputs = model.head.head_module.forward_level(i, f)
        for name, ours in zip(("cls", "bbox", "kpt_vis", "pose_vec"), outputs, strict=True):
            assert _rel_err(ours, ref[f"head.{name}.{i}"]) < STAGE_RTOL, f"head.{name}.{i}"


def _match_rows(ours: np.ndarray, ref: np.ndarray, atol: np.ndarray) -> int:
    """Size of a maximum matching between rows of `ours` and `ref` that agree within the
    per-column atol (NaN == NaN): greedy pairing, then augmenting paths (Kuhn) for the rest."""
    nan_o, nan_r = np.isnan(ours), np.isnan(ref)
    diff = np.abs(np.nan_to_num(ours)[:, None] - np.nan_to_num(ref)[None])
    diff[nan_o[:, None] != nan_r[None]] = np.inf
    candidates = [np.flatnonzero(row) for row in (diff <= atol).all(-1)]
    owner = np.full(len(ref), -1)

    def augment(row: int, seen: set) -> bool:
        for col in candidates[row]:
            if col not in seen:
                seen.add(col)
                if owner[col] < 0 or augment(owner[col], seen):
                    owner[col] = row
                    return True
        return False

    unmatched = []
    for row, cols in enumerate(candidates):
        free = cols[owner[cols] < 0]
        if len(free):
            owner[free[0]] = row
        else:
            unmatched.append(row)
    return len(ours) - len(unmatched) + sum(augment(row, set()) for row in unmatched)


def _mmpose_dense_outputs(ref: dict) -> DenseOutputs:
    """The fixture's own head outputs (mmpose's numbers) in our flattened layout."""

    def flat(name: str) -> torch.Tensor:
        return torch.cat([ref[f"head.{name}.{i}"].flatten(2).transpose(1, 2) for i in (0, 1)], 1)

    sizes = [tuple(ref[f"head.cls.{i}"].shape[-2:]) for i in (0, 1)]
    priors, strides = grid_priors(sizes, torch.device("cpu"))
    return DenseOutputs(
        flat("cls")[..., 0], flat("bbox"), flat("kpt_vis"), flat("pose_vec"), priors, strides
    )


def _rows(scores, boxes, keypoint_scores) -> np.ndarray:
    return torch.cat([scores[:, None], boxes, keypoint_scores], 1).double().numpy()


@pytest.mark.parametrize("use_kernels", [False, True], ids=["reference", "kernels"])
@torch.no_grad()
def test_postprocess_of_mmpose_head_outputs_matches_its_predictions(fixture, use_kernels):
    """Our post-process on mmpose's own dense head outputs gives mmpose's predictions.

    The fixture's random head is numerically extreme: cls logits reach +-3e4 (740 of 741
    scores are exactly 1.0) and log box sizes ~700, so almost every box overflows to +-inf
    before the clamp, and the DCC decodes NaN or ~1e30 px keypoints in mmpose as in any
    float32 implementation. What is well defined is compared: the number of survivors of the
    threshold + NMS, the scores in order, the rows (score, clamped box, keypoint scores) as a
    multiset (ties make their order arbitrary) and, for mmpose's decode (the reference path),
    how many keypoints are NaN."""
    model, ref = fixture
    dense = _mmpose_dense_outputs(ref)
    padded = postprocess_padded(
        dense, model.head.dcc, (416, 416), 0.1, 0.65, 800, use_kernels, "auto"
    )  # max_det 800 > the 741/752 survivors: no cap
    for i, pred in enumerate(split_predictions(padded)):
        n = len(ref[f"pred.{i}.bbox_scores"])
        assert len(pred["scores"]) == n
        torch.testing.assert_close(pred["scores"], ref[f"pred.{i}.bbox_scores"], atol=1e-6, rtol=0)
        ours = _rows(pred["scores"], pred["boxes"], pred["keypoint_scores"])
        theirs = _rows(
            ref[f"pred.{i}.bbox_scores"], ref[f"pred.{i}.bboxes"], ref[f"pred.{i}.keypoint_scores"]
        )
        atol = np.array([1e-6] + [1e-3] * 4 + [1e-6] * model.config.num_keypoints)
        assert _match_rows(ours, theirs, atol) == n
        if not use_kernels:  # the fused decode leaves what an infinite box gives unspecified
            assert pred["keypoints"].isnan().sum() == ref[f"pred.{i}.keypoints"].isnan().sum()


@pytest.mark.parametrize("use_kernels", [False, True], ids=["reference", "kernels"])
@torch.no_grad()
def test_end_to_end_predictions_match_mmpose(fixture, use_kernels):
    """From the images: the same survivors, scores and NaN keypoints. The box coordinates are
    exp() of log sizes of ~700 carrying float32 stage errors of ~0.05 (several px after exp),
    so boxes are compared in the test above, on mmpose's own head outputs."""
    model, ref = fixture
    model.use_kernels = use_kernels
    for i, pred in enumerate(model.predict(ref["input"], max_det=800)):
        n = len(ref[f"pred.{i}.bbox_scores"])
        assert len(pred["scores"]) == n
        # cls logits of up to 3e4 carry float32 stage errors up to 0.14 (measured above), times
        # the sigmoid's slope (0.14 at the lowest surviving score, 0.17).
        torch.testing.assert_close(pred["scores"], ref[f"pred.{i}.bbox_scores"], atol=0.02, rtol=0)
        if not use_kernels:  # the fused decode leaves what an infinite box gives unspecified
            assert pred["keypoints"].isnan().sum() == ref[f"pred.{i}.keypoints"].isnan().sum()
