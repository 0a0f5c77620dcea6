"""The models and batches of the training-loss fixtures (tests/fixtures/*_losses.npz), shared by
their generator (tests/fixtures/make_loss_fixtures.py, run with mmpose) and tests/test_losses.py.

RTMO-t uses the shared calibrated mmpose fixture's weights and batch. The other variants' weights
are rebuilt here from a seed (PyTorch's default initialisation in our layout, deterministic on the
CPU) plus the calibration stored in the fixture: every BatchNorm's running statistics and the
per-channel scale and bias of the head's output layers, measured once by the generator so that the
head's outputs have a trained model's ranges. The fixture holds a checksum of the rebuilt weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from checkpoints import shared_dir

from rtmo.checkpoint import load_model
from rtmo.config import from_name
from rtmo.model import RTMOModel

FIXTURE_DIR = Path(__file__).parent / "fixtures"
GT_FIELDS = ("boxes", "keypoints", "keypoints_visible", "areas", "keypoints_visible_weights")
# The fixtures store their images at a quarter of the input size; each pixel is a 4 x 4 block.
IMAGE_REPEAT = 4


@dataclass(frozen=True)
class LossFixture:
    """A variant, the mmpose config that trains it and how its batch is made."""

    variant: str
    mmpose_config: str  # relative to mmpose's configs/body_2d_keypoint/rtmo/
    seed: int = 0
    image_side: int = 224  # two images of this square size (a multiple of 32)


LOSS_FIXTURES = {
    f.variant: f
    for f in (
        LossFixture("rtmo-t-body7", "body7/rtmo-t_8xb32-600e_body7-416x416.py"),
        LossFixture("rtmo-s-body7", "body7/rtmo-s_8xb32-600e_body7-640x640.py", seed=1),
        # Smaller inputs for the larger models keep their test at a few seconds.
        LossFixture("rtmo-m-body7", "body7/rtmo-m_16xb16-600e_body7-640x640.py", 2, 192),
        LossFixture("rtmo-l-body7", "body7/rtmo-l_16xb16-600e_body7-640x640.py", 3, 160),
        LossFixture("rtmo-s-crowdpose", "crowdpose/rtmo-s_8xb32-700e_crowdpose-640x640.py", seed=4),
    )
}

# Parameters whose gradients the fixtures hold: one per part of the network the losses reach
# (backbone, neck, both head branches, every output layer, the DCC), small ones to keep the
# fixtures small.
GRADIENT_PARAMS = (
    "backbone.stem.conv.conv.weight",
    "neck.encoder.0.layers.0.norms.1.weight",
    "head.head_module.conv_pose.0.3.bn.weight",
    "head.head_module.out_cls.0.weight",
    "head.head_module.out_bbox.1.weight",
    "head.head_module.out_bbox.0.bias",
    "head.head_module.out_kpt_reg.0.bias",
    "head.head_module.out_kpt_vis.1.weight",
    "head.head_module.out_pose.0.bias",
    "head.dcc.pose_to_kpts.1.weight",
    "head.dcc.gau.gamma",
    "head.dcc.pos_enc",
    "head.dcc.x_fc.weight",
    "head.dcc.sigma_fc.0.bias",
)


def shared_t_fixture() -> Path:
    return shared_dir() / "fixtures" / "mmpose-rtmo-t-calibrated"


def seeded_model(variant: str, seed: int) -> RTMOModel:
    """The variant with PyTorch's default initialisation from `seed` (before calibration)."""
    generator_state = torch.get_rng_state()
    torch.manual_seed(seed)
    try:
        return RTMOModel(from_name(variant))
    finally:
        torch.set_rng_state(generator_state)


@torch.no_grad()
def apply_calibration(model: RTMOModel, arrays: Mapping[str, np.ndarray]) -> None:
    """Sets `calib/stat/<buffer>` buffers and scales/shifts `calib/scale/<layer>` output layers
    (weight rows times the scale, bias replaced by `calib/bias/<layer>`)."""
    buffers = dict(model.named_buffers())
    modules = dict(model.named_modules())
    for key, value in arrays.items():
        kind, _, name = key.removeprefix("calib/").partition("/")
        if kind == "stat":
            buffers[name].copy_(torch.from_numpy(value))
        elif kind == "scale":
            weight = modules[name].weight
            weight.mul_(torch.from_numpy(value).reshape(-1, *[1] * (weight.dim() - 1)))
            modules[name].bias.copy_(torch.from_numpy(arrays[f"calib/bias/{name}"]))


def weights_checksum(model: RTMOModel) -> float:
    """Sum of |value| over the state_dict in float64: equal weights give equal sums."""
    return float(sum(t.double().abs().sum() for t in model.state_dict().values()))


def expand_images(quarter: np.ndarray) -> torch.Tensor:
    """(B, 3, h, w) uint8 -> (B, 3, 4h, 4w) float32, each pixel repeated over a 4 x 4 block."""
    full = quarter.repeat(IMAGE_REPEAT, axis=-2).repeat(IMAGE_REPEAT, axis=-1)
    return torch.from_numpy(full).float()


def fixture_path(variant: str) -> Path:
    return FIXTURE_DIR / f"{variant}_losses.npz"


def load_fixture(variant: str) -> tuple[RTMOModel, torch.Tensor, list[dict], dict]:
    """(model with the fixture's weights, images (2, 3, H, W) float32, targets, reference
    arrays) of a variant's loss fixture."""
    ref = dict(np.load(fixture_path(variant)))
    if variant == "rtmo-t-body7":
        root = shared_t_fixture()
        model = load_model(root / "rtmo-t_calibrated.pth")
        batch = dict(np.load(root / "rtmo-t_losses.npz"))
        images = torch.from_numpy(batch["input"])
    else:
        model = seeded_model(variant, LOSS_FIXTURES[variant].seed)
        apply_calibration(model, {k: v for k, v in ref.items() if k.startswith("calib/")})
        batch = ref
        images = expand_images(ref["images"])
    targets = [
        {
            field: torch.from_numpy(batch[f"gt{i}/{field}"])
            for field in (*GT_FIELDS, "invalid_mask")
            if f"gt{i}/{field}" in batch
        }
        for i in range(images.shape[0])
    ]
    return model, images, targets, ref
