"""Layer-by-layer parity with mmpose 1.3.2's own RTMO-t run (shared/fixtures/mmpose-rtmo-t)."""

import numpy as np
import pytest
import torch
from checkpoints import shared_dir

from rtmo.checkpoint import load_model

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
