"""Deterministic benchmark inputs: random-weight models, a synthetic crowd frame, and head outputs
that put a chosen number of people and candidates in front of the post-process.

Random weights give the network its real cost but meaningless detections: the cls map of an
untrained head is either all below the score threshold or all above it, so the post-process would
see 0 or 2000 candidates and no people. The crowd is therefore planted in the head's outputs:

* `crowd_boxes` lays `num_people` person boxes (about 0.45 x 0.85 of a grid cell) on a grid over
  the model input, so that no two people overlap.
* `crowd_head_maps` makes `num_candidates` priors candidates: every prior is owned by its nearest
  person, each person's priors are ranked by distance, and the candidates are the lowest ranks of
  all people (so they spread evenly). A candidate's score falls with its rank from 0.9 to 0.3
  (above the 0.1 threshold); its box is its person's box with every edge moved by up to 2% of the
  box size, so the boxes of one person overlap with IoU >= 0.85 > 0.65 and NMS keeps exactly one
  box per person. Every other prior scores 0.0025 (logit -6).
* `plant_crowd` puts these maps into a model: the weights of the head's `out_cls` and `out_bbox`
  1x1 convolutions are zeroed and a forward hook adds the planted map as a spatial bias. Every
  layer still runs at its real cost (a zero weight costs the same as any other), the pose vectors
  and keypoint visibilities stay the network's own, and torch.compile and the ONNX export trace the
  hook like any other op.
* `crowd_dense_outputs` builds the same head outputs directly, without a network, for the
  post-process scaling benchmark.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
from torch import Tensor

from rtmo.config import RTMOConfig, from_name
from rtmo.model import DenseOutputs, RTMOModel
from rtmo.model.head import STRIDES, grid_priors

SCORE_THR = 0.1
# Scores of a person's candidates fall from the first to the last rank over this range.
_TOP_SCORE, _LOW_SCORE = 0.9, 0.3
_BACKGROUND_LOGIT = -6.0  # sigmoid -> 0.0025, far below SCORE_THR
_BOX_JITTER = 0.02  # edge moves as a fraction of the box size: IoU within a person >= 0.85
FRAME_SIZE = (1280, 720)  # (W, H) of the synthetic camera frame


def build_model(
    variant: str | RTMOConfig = "rtmo-s", seed: int = 0, use_kernels: bool = True
) -> RTMOModel:
    """RTMO with deterministic random weights (PyTorch's default init under `seed`), eval mode."""
    config = from_name(variant) if isinstance(variant, str) else variant
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = RTMOModel(config, use_kernels=use_kernels)
    return model.eval()


def level_sizes(input_size: tuple[int, int]) -> list[tuple[int, int]]:
    """(h, w) of each head level for a (w, h) model input."""
    w, h = input_size
    return [(h // s, w // s) for s in STRIDES]


def crowd_boxes(num_people: int, input_size: tuple[int, int], seed: int = 0) -> Tensor:
    """(P, 4) xyxy person boxes in model-input pixels, one per cell of a grid, never overlapping."""
    if num_people < 1:
        raise ValueError(f"num_people must be at least 1, got {num_people}")
    w, h = input_size
    gen = np.random.default_rng(seed)
    cols = math.ceil(math.sqrt(num_people * w / h))
    rows = math.ceil(num_people / cols)
    cell_w, cell_h = w / cols, h / rows
    cells = np.arange(num_people)
    cx = (cells % cols + 0.5 + gen.uniform(-0.05, 0.05, num_people)) * cell_w
    cy = (cells // cols + 0.5 + gen.uniform(-0.05, 0.05, num_people)) * cell_h
    bw = 0.45 * cell_w * gen.uniform(0.8, 1.0, num_people)
    bh = 0.85 * cell_h * gen.uniform(0.8, 1.0, num_people)
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
    return torch.from_numpy(boxes).float()


def _candidate_ranks(priors: Tensor, people: Tensor) -> tuple[Tensor, Tensor]:
    """For every prior: its owner (nearest person centre) and its distance rank among the owner's
    priors. priors (N, 2), people (P, 4) -> owner (N,), rank (N,)."""
    centres = (people[:, :2] + people[:, 2:]) / 2
    owner = torch.cdist(priors, centres).argmin(dim=1)
    dist = (priors - centres[owner]).norm(dim=1)
    order = np.lexsort((dist.numpy(), owner.numpy()))  # by owner, then by distance
    sorted_owner = owner[order]
    group_start = torch.searchsorted(sorted_owner, sorted_owner, side="left")
    rank = torch.empty_like(owner)
    rank[torch.from_numpy(order)] = torch.arange(len(order)) - group_start
    return owner, rank


def crowd_head_maps(
    priors: Tensor, strides: Tensor, people: Tensor, num_candidates: int, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Planted cls logits (N,) and raw box outputs (N, 4) as (dx, dy, log w, log h) in strides.

    priors (N, 2), strides (N,), people (P, 4) xyxy; `num_candidates` (clipped to N) priors score
    above SCORE_THR, each predicting its owner's box jittered (see the module docstring).
    """
    n = priors.shape[0]
    num_candidates = min(num_candidates, n)
    gen = torch.Generator().manual_seed(seed)
    owner, rank = _candidate_ranks(priors, people)
    distance = torch.cdist(priors, ((people[:, :2] + people[:, 2:]) / 2))[torch.arange(n), owner]
    chosen = torch.from_numpy(np.lexsort((distance.numpy(), rank.numpy()))[:num_candidates])
    logits = torch.full((n,), _BACKGROUND_LOGIT)
    span = rank[chosen].max().item() + 1
    score = _TOP_SCORE - (_TOP_SCORE - _LOW_SCORE) * rank[chosen].float() / span
    score = score + torch.rand(num_candidates, generator=gen) * 0.01
    logits[chosen] = torch.log(score / (1 - score))

    raw = torch.zeros(n, 4)
    raw[:, 2:] = math.log(2.0)  # non-candidates: a box of two strides on its prior
    box = people[owner[chosen]]
    size = (box[:, 2:] - box[:, :2]).repeat(1, 2)
    box = box + (torch.rand(num_candidates, 4, generator=gen) * 2 - 1) * _BOX_JITTER * size
    stride = strides[chosen, None]
    raw[chosen, :2] = ((box[:, :2] + box[:, 2:]) / 2 - priors[chosen]) / stride
    raw[chosen, 2:] = torch.log((box[:, 2:] - box[:, :2]) / stride)
    return logits, raw


def crowd_dense_outputs(
    config: RTMOConfig,
    num_people: int,
    num_candidates: int,
    batch: int = 1,
    input_size: tuple[int, int] | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> DenseOutputs:
    """Head outputs for `batch` images (the same crowd in each) without running a network.

    Pose vectors and keypoint-visibility logits are standard normal (their values do not change
    the post-process's work). Every image has `num_people` people and `num_candidates` candidates.
    """
    size = input_size or config.input_size
    priors, strides = grid_priors(level_sizes(size), torch.device("cpu"))
    people = crowd_boxes(num_people, size, seed)
    logits, raw = crowd_head_maps(priors, strides, people, num_candidates, seed)
    gen = torch.Generator().manual_seed(seed)
    n = priors.shape[0]
    vis = torch.randn(batch, n, config.num_keypoints, generator=gen)
    pose = torch.randn(batch, n, config.pose_vec_channels, generator=gen)
    dense = DenseOutputs(
        logits.expand(batch, n).contiguous(),
        raw.expand(batch, n, 4).contiguous(),
        vis,
        pose,
        priors,
        strides,
    )
    return DenseOutputs(*(t.to(device) for t in dense))


def _add_planted_bias(module: torch.nn.Module, inputs: tuple, output: Tensor) -> Tensor:
    return output + module.planted_bias


def plant_crowd(
    model: RTMOModel,
    num_people: int = 20,
    num_candidates: int = 400,
    input_size: tuple[int, int] | None = None,
    seed: int = 0,
) -> RTMOModel:
    """Makes `model` see a crowd of `num_people` people and `num_candidates` candidates in any
    image of `input_size` (default: the config's). Call after `reparameterize()` and `.to()`.

    The head's out_cls / out_bbox 1x1 convolutions get zero weights and a forward hook adding the
    planted maps (see the module docstring). Returns the model.
    """
    size = input_size or model.config.input_size
    sizes = level_sizes(size)
    head = model.head.head_module
    device = head.out_cls[0].weight.device
    priors, strides = grid_priors(sizes, torch.device("cpu"))
    logits, raw = crowd_head_maps(
        priors, strides, crowd_boxes(num_people, size, seed), num_candidates, seed
    )
    start = 0
    for level, (h, w) in enumerate(sizes):
        stop = start + h * w
        maps = {
            head.out_cls[level]: logits[start:stop].reshape(1, 1, h, w),
            head.out_bbox[level]: raw[start:stop].T.reshape(1, 4, h, w),
        }
        for conv, bias in maps.items():
            with torch.no_grad():
                conv.weight.zero_()
                conv.bias.zero_()
            conv.register_buffer("planted_bias", bias.to(device), persistent=False)
            conv.register_forward_hook(_add_planted_bias)
        start = stop
    return model


def crowd_frame(num_people: int, frame_size: tuple[int, int] = FRAME_SIZE, seed: int = 0):
    """A (H, W, 3) BGR uint8 camera frame with `num_people` stick figures on a textured ground.

    Only its size matters to the cost of the pre-processing; the figures make it look like what
    the benchmark claims to be. Returns a numpy array.
    """
    w, h = frame_size
    gen = np.random.default_rng(seed)
    ramp = np.linspace(60, 190, h, dtype=np.float32)[:, None, None]
    frame = ramp + gen.normal(0, 12, (h, w, 3)).astype(np.float32)
    frame = np.clip(frame, 0, 255).astype(np.uint8)
    for x1, y1, x2, y2 in crowd_boxes(num_people, frame_size, seed).tolist():
        _draw_person(frame, x1, y1, x2, y2, tuple(int(c) for c in gen.integers(0, 255, 3)))
    return frame


def _draw_person(frame: np.ndarray, x1: float, y1: float, x2: float, y2: float, color) -> None:
    bw, bh = x2 - x1, y2 - y1
    cx = (x1 + x2) / 2
    thick = max(1, int(bw / 8))

    def pt(fx: float, fy: float) -> tuple[int, int]:
        return int(cx + fx * bw), int(y1 + fy * bh)

    cv2.circle(frame, pt(0, 0.08), max(2, int(bh * 0.07)), color, -1)
    limbs = [
        ((0, 0.15), (0, 0.55)),  # torso
        ((0, 0.22), (-0.45, 0.45)),  # arms
        ((0, 0.22), (0.45, 0.45)),
        ((0, 0.55), (-0.3, 1.0)),  # legs
        ((0, 0.55), (0.3, 1.0)),
    ]
    for a, b in limbs:
        cv2.line(frame, pt(*a), pt(*b), color, thick)
