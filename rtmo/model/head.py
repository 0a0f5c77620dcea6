"""RTMO head: per level (strides 16, 32) a cls branch and a grouped pose branch with box,
keypoint-visibility and pose-vector outputs, flattened over both levels; plus the DCC."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from rtmo.config import RTMOConfig
from rtmo.model.dcc import DCC
from rtmo.model.layers import ConvModule

STRIDES = (16, 32)


class DenseOutputs(NamedTuple):
    """Raw head outputs for every prior of both levels (stride 16 first, row-major in a level).

    cls_logits (B, N), bbox_preds (B, N, 4) as (dx, dy, log w, log h) in stride units,
    kpt_vis_logits (B, N, K), pose_vecs (B, N, C), priors (N, 2) pixel centres, strides (N,).
    """

    cls_logits: Tensor
    bbox_preds: Tensor
    kpt_vis_logits: Tensor
    pose_vecs: Tensor
    priors: Tensor
    strides: Tensor


class TrainOutputs(NamedTuple):
    """What training needs of the head, for every prior (layout of `DenseOutputs`): the raw
    outputs plus the proxy keypoint regression `kpt_offsets` (B, N, K, 2), (x, y) offsets from
    the prior in stride units, which only serves the assignment and `loss_oks`.
    """

    cls_logits: Tensor
    bbox_preds: Tensor
    kpt_offsets: Tensor
    kpt_vis_logits: Tensor
    pose_vecs: Tensor
    priors: Tensor
    strides: Tensor


class RTMOHeadModule(nn.Module):
    """The convolutional part of the head; nothing is shared between levels."""

    def __init__(self, cfg: RTMOConfig) -> None:
        super().__init__()
        c_in, c_pose, k = cfg.head_channels, cfg.pose_channels, cfg.num_keypoints
        levels = range(len(STRIDES))
        self.conv_cls = nn.ModuleList(
            nn.Sequential(ConvModule(c_in, c_in, 3), ConvModule(c_in, c_in, 3)) for _ in levels
        )
        self.out_cls = nn.ModuleList(nn.Conv2d(c_in, 1, 1) for _ in levels)
        self.conv_pose = nn.ModuleList(
            nn.Sequential(
                ConvModule(c_in, c_pose, 3),
                *(ConvModule(c_pose, c_pose, 3, groups=8) for _ in range(3)),
            )
            for _ in levels
        )
        self.out_bbox = nn.ModuleList(nn.Conv2d(c_pose, 4, 1) for _ in levels)
        # The proxy keypoint regression only serves training (forward_level_train).
        self.out_kpt_reg = nn.ModuleList(nn.Conv2d(c_pose, 2 * k, 1) for _ in levels)
        self.out_kpt_vis = nn.ModuleList(nn.Conv2d(c_pose, k, 1) for _ in levels)
        self.out_pose = nn.ModuleList(nn.Conv2d(c_pose, cfg.pose_vec_channels, 1) for _ in levels)

    def branch_features(self, i: int, x: Tensor) -> tuple[Tensor, Tensor]:
        """Level i's map (B, 2*c_in, h, w) -> (cls features, pose features)."""
        cls_feat, reg_feat = x.chunk(2, dim=1)
        return self.conv_cls[i](cls_feat), self.conv_pose[i](reg_feat)

    def forward_level(self, i: int, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Level i's map (B, 2*c_in, h, w) -> cls (B,1,h,w), bbox (B,4,h,w), vis, pose_vec."""
        cls_feat, reg_feat = self.branch_features(i, x)
        return (
            self.out_cls[i](cls_feat),
            self.out_bbox[i](reg_feat),
            self.out_kpt_vis[i](reg_feat),
            self.out_pose[i](reg_feat),
        )

    def forward_level_train(self, i: int, x: Tensor) -> tuple[Tensor, ...]:
        """`forward_level` plus the proxy regression: cls, bbox, kpt_offsets (B,2K,h,w), vis,
        pose_vec."""
        cls_feat, reg_feat = self.branch_features(i, x)
        return (
            self.out_cls[i](cls_feat),
            self.out_bbox[i](reg_feat),
            self.out_kpt_reg[i](reg_feat),
            self.out_kpt_vis[i](reg_feat),
            self.out_pose[i](reg_feat),
        )


class KeypointSigmas(nn.Module):
    """Holds the per-keypoint OKS sigmas that mmpose's OKS loss keeps in the state_dict."""

    def __init__(self, sigmas: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("sigmas", torch.tensor(sigmas, dtype=torch.float32))


def grid_priors(sizes: list[tuple[int, int]], device: torch.device) -> tuple[Tensor, Tensor]:
    """Prior points (N, 2) at (j*s + (s-1)/2, i*s + (s-1)/2), x fastest, and their strides (N,)."""
    priors, strides = [], []
    for (h, w), s in zip(sizes, STRIDES, strict=True):
        ys = torch.arange(h, device=device, dtype=torch.float32) * s + (s - 1) / 2
        xs = torch.arange(w, device=device, dtype=torch.float32) * s + (s - 1) / 2
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(-1, 2)
        priors.append(grid)
        strides.append(torch.full((h * w,), float(s), device=device))
    return torch.cat(priors), torch.cat(strides)


def _flatten(maps: list[Tensor]) -> Tensor:
    """Per-level (B, C, h, w) -> (B, sum h*w, C)."""
    return torch.cat([m.flatten(2).transpose(1, 2) for m in maps], dim=1)


class RTMOHead(nn.Module):
    def __init__(self, cfg: RTMOConfig) -> None:
        super().__init__()
        self.loss_oks = KeypointSigmas(cfg.sigmas)
        self.head_module = RTMOHeadModule(cfg)
        self.dcc = DCC(
            cfg.pose_vec_channels,
            cfg.num_keypoints,
            cfg.num_bins,
            cfg.bbox_padding,
            cfg.dcc_temperature,
        )

    def forward(self, feats: list[Tensor]) -> DenseOutputs:
        levels = [self.head_module.forward_level(i, f) for i, f in enumerate(feats)]
        cls, bbox, vis, pose = (_flatten(list(maps)) for maps in zip(*levels, strict=True))
        priors, strides = grid_priors([tuple(f.shape[-2:]) for f in feats], feats[0].device)
        return DenseOutputs(cls[..., 0], bbox, vis, pose, priors, strides)

    def forward_train(self, feats: list[Tensor]) -> TrainOutputs:
        """The outputs training needs, whatever the module mode (BatchNorm follows the mode)."""
        levels = [self.head_module.forward_level_train(i, f) for i, f in enumerate(feats)]
        cls, bbox, offsets, vis, pose = (_flatten(list(maps)) for maps in zip(*levels, strict=True))
        priors, strides = grid_priors([tuple(f.shape[-2:]) for f in feats], feats[0].device)
        offsets = offsets.unflatten(-1, (-1, 2))
        return TrainOutputs(cls[..., 0], bbox, offsets, vis, pose, priors, strides)


def decode_boxes(bbox_preds: Tensor, priors: Tensor, strides: Tensor) -> Tensor:
    """(B, N, 4) raw (dx, dy, log w, log h) -> xyxy pixels: centre prior + d*s, size exp(.)*s."""
    centre = bbox_preds[..., :2] * strides[:, None] + priors
    half = bbox_preds[..., 2:].exp() * strides[:, None] / 2
    return torch.cat([centre - half, centre + half], dim=-1)


def decode_keypoint_offsets(offsets: Tensor, priors: Tensor, strides: Tensor) -> Tensor:
    """(B, N, K, 2) proxy offsets in stride units -> keypoints in pixels: offset * s + prior."""
    return offsets * strides[:, None, None] + priors[:, None, :]
