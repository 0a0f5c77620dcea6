"""Checkpoint files for the tests: random weights in the layout of the published mmpose files,
and where the shared fixtures live."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from rtmo.model import RTMOModel


def shared_dir() -> Path:
    """The `shared/` directory (spec, fixtures) beside the repository clone."""
    for parent in Path(__file__).resolve().parents:
        if (parent / "shared" / "fixtures").is_dir():
            return parent / "shared"
    raise FileNotFoundError(
        "the shared/ directory with spec/ and fixtures/ was not found beside the repository"
    )


def write_published_checkpoint(model: RTMOModel, path: str | Path) -> Path:
    """Saves `model`'s weights like mmpose's released .pth files and returns the path.

    `{"meta": {"dataset_meta": {...numpy arrays...}, "cfg": str, ...}, "state_dict": {...}}`:
    the numpy arrays are what makes plain `torch.load(weights_only=True)` refuse these files.
    """
    cfg = model.config
    colors = np.array(cfg.keypoint_colors, dtype=np.uint8)
    meta = {
        "dataset_meta": {
            "dataset_name": "crowdpose" if cfg.crowdpose else "coco",
            "num_keypoints": cfg.num_keypoints,
            "keypoint_id2name": dict(enumerate(cfg.keypoint_names)),
            "skeleton_links": list(cfg.skeleton),
            "keypoint_colors": colors,
            "skeleton_link_colors": np.array(cfg.limb_colors, dtype=np.uint8),
            "sigmas": np.array(cfg.sigmas, dtype=np.float32),
            "dataset_keypoint_weights": np.ones(cfg.num_keypoints, dtype=np.float32),
        },
        "mmengine_version": "0.10.7",
        "cfg": f"model = dict(type='BottomupPoseEstimator')  # {cfg.name}\n",
        "epoch": 600,
        "iter": 0,
        "seed": 0,
    }
    path = Path(path)
    torch.save({"meta": meta, "state_dict": model.state_dict()}, path)
    return path
