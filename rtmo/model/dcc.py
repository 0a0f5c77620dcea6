"""Dynamic Coordinate Classifier (RTMO.md §3): pose vector -> K keypoint features (Linear + BN1d,
then a gated attention unit across the K tokens), classified against sin/cos encodings of bins
spread over the 1.25x padded box, decoded by soft-argmax.

The decode itself runs in `rtmo_kernels.dcc_decode` with the per-axis Linear folded into the
queries, or through the reference op (`use_kernels=False`), which transforms every bin encoding
like mmpose does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import rtmo_kernels
from rtmo.model.layers import TORCH_BN, fold_bn
from rtmo_kernels.reference.dcc import dcc_decode_unfolded, fold_queries


class ScaleNorm(nn.Module):
    """x / max(||x|| * dim^-0.5, eps) * g, with one learnable scalar g."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.scale = dim**-0.5
        self.eps = eps
        self.g = nn.Parameter(torch.ones(1))

    def forward(self, x: Tensor) -> Tensor:
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True) * self.scale
        return x / norm.clamp(min=self.eps) * self.g


class ChannelWiseScale(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


class Scale(nn.Module):
    """Multiplication by one learnable scalar (mmcv's Scale)."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(value))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


class GAU(nn.Module):
    """Gated attention unit over the K keypoint tokens of each instance, relu^2 attention.

    [u|v|z] = SiLU(uv(ScaleNorm(x))), q = z*gamma0 + beta0 + P, k = z*gamma1 + beta1 + P (P the
    per-keypoint position), out = o(u * (relu(q k^T / sqrt(s))^2 @ v)) + res_scale * x.
    """

    def __init__(self, dim: int = 128, expansion: int = 2, s: int = 128) -> None:
        super().__init__()
        self.e, self.s = dim * expansion, s
        self.o = nn.Linear(self.e, dim, bias=False)
        self.uv = nn.Linear(dim, 2 * self.e + s, bias=False)
        self.gamma = nn.Parameter(torch.rand(2, s))
        self.beta = nn.Parameter(torch.rand(2, s))
        self.ln = ScaleNorm(dim)
        self.res_scale = ChannelWiseScale(dim)
        self.act = nn.SiLU()
        nn.init.xavier_uniform_(self.uv.weight)

    def forward(self, x: Tensor, pos_enc: Tensor) -> Tensor:
        """x (..., K, dim), pos_enc (K, s) -> (..., K, dim)."""
        u, v, z = self.act(self.uv(self.ln(x))).split([self.e, self.e, self.s], dim=-1)
        q = z * self.gamma[0] + self.beta[0] + pos_enc
        k = z * self.gamma[1] + self.beta[1] + pos_enc
        attn = torch.relu(q @ k.transpose(-1, -2) / math.sqrt(self.s)).square()
        return self.o(u * (attn @ v)) + self.res_scale(x)


class SinePositionalEncoding1d(nn.Module):
    """Holds `dim_t = temperature^(j/F)`, j < F = channels/2, of the bin encoding (the math is
    in the decode ops)."""

    def __init__(self, channels: int, temperature: float) -> None:
        super().__init__()
        half = channels // 2
        self.register_buffer("dim_t", temperature ** (torch.arange(half) / half))


class DCC(nn.Module):
    """Dynamic Coordinate Classifier; parameter names follow mmpose's checkpoints."""

    def __init__(
        self,
        in_channels: int,
        num_keypoints: int,
        num_bins: tuple[int, int] = (192, 256),
        padding: float = 1.25,
        temperature: float = 300.0,
        feat_channels: int = 128,
    ) -> None:
        super().__init__()
        self.num_keypoints, self.feat_channels = num_keypoints, feat_channels
        self.num_bins, self.padding, self.temperature = num_bins, padding, temperature
        self.spe = SinePositionalEncoding1d(feat_channels, temperature)
        self.gau = GAU(feat_channels)
        self.pos_enc = nn.Parameter(torch.randn(num_keypoints, feat_channels))
        self.pose_to_kpts = nn.Sequential(
            nn.Linear(in_channels, feat_channels * num_keypoints),
            nn.BatchNorm1d(feat_channels * num_keypoints, **TORCH_BN),
        )
        self.x_fc = nn.Linear(feat_channels, feat_channels)
        self.y_fc = nn.Linear(feat_channels, feat_channels)
        # Predicts the Laplace scale of the training targets; kept so checkpoints load strictly.
        self.sigma_fc = nn.Sequential(
            nn.Linear(in_channels, num_keypoints), nn.Sigmoid(), Scale(0.1)
        )
        self.register_buffer("y_bins", torch.linspace(-0.5, 0.5, num_bins[1]))
        self.register_buffer("x_bins", torch.linspace(-0.5, 0.5, num_bins[0]))
        # [x_fc.weight | y_fc.weight] (D, 2D), precomputed by reparameterize(); not in checkpoints.
        self.register_buffer("query_weight", None, persistent=False)

    def keypoint_features(self, pose_vecs: Tensor) -> Tensor:
        """pose_vecs (N, C) -> keypoint features (N, K, feat_channels)."""
        feats = self._project_pose(pose_vecs).reshape(-1, self.num_keypoints, self.feat_channels)
        return self.gau(feats, self.pos_enc)

    def _project_pose(self, pose_vecs: Tensor) -> Tensor:
        """`pose_to_kpts`; in training, a single row is normalised with the BatchNorm's running
        statistics (as in eval mode) and leaves them unchanged.

        The loss runs the DCC on the positives only, so a batch with exactly one positive gives
        one row, which has no batch variance: PyTorch's BatchNorm refuses it in training, and
        mmpose 1.3.2's RTMOHead.loss fails there. Two rows or more take the batch statistics.
        """
        bn = self.pose_to_kpts[-1]
        if not (isinstance(bn, nn.BatchNorm1d) and bn.training and pose_vecs.shape[0] == 1):
            return self.pose_to_kpts(pose_vecs)
        projected = self.pose_to_kpts[0](pose_vecs)
        return F.batch_norm(
            projected,
            bn.running_mean,
            bn.running_var,
            bn.weight,
            bn.bias,
            training=False,
            eps=bn.eps,
        )

    def queries(self, feats: Tensor) -> tuple[Tensor, Tensor]:
        """Folds x_fc/y_fc into the keypoint features: <f, W phi + b> = <W^T f, phi> + const.

        feats (N, K, D) -> query_x, query_y (N, K, D). The bias term is the same for every bin of
        a keypoint, so the softmax over bins removes it. Reparameterised, one matmul does both.
        """
        if self.query_weight is None:
            return fold_queries(feats, self.x_fc), fold_queries(feats, self.y_fc)
        return (feats @ self.query_weight).split(self.feat_channels, dim=-1)

    def forward(
        self,
        pose_vecs: Tensor,
        boxes: Tensor,
        priors: Tensor,
        use_kernels: bool = True,
        backend: str = "auto",
    ) -> Tensor:
        """pose_vecs (N, C), boxes (N, 4) xyxy, priors (N, 2) -> keypoints (N, K, 2) fp32.

        The pose vectors are cast to the DCC's own dtype: a bf16 network on the CPU keeps its
        DCC in float32 (`rtmo.precision.to_precision`)."""
        feats = self.keypoint_features(pose_vecs.to(self.pos_enc.dtype))
        args = {
            "boxes": boxes,
            "priors": priors,
            "num_bins": self.num_bins,
            "padding": self.padding,
            "temperature": self.temperature,
            "mode": "expectation",
        }
        if not use_kernels:
            return dcc_decode_unfolded(feats, self.x_fc, self.y_fc, **args)[0]
        query_x, query_y = self.queries(feats)
        return rtmo_kernels.dcc_decode(query_x, query_y, **args, backend=backend)[0]

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Folds the BatchNorm1d into the Linear before it and precomputes the query weights."""
        if self.query_weight is not None:
            return
        linear, bn = self.pose_to_kpts
        weight, bias = fold_bn(linear.weight, linear.bias, bn)
        linear.weight.copy_(weight)
        linear.bias.copy_(bias)
        self.pose_to_kpts = nn.Sequential(linear)
        self._set_query_weight()

    def _set_query_weight(self) -> None:
        self.query_weight = torch.cat([self.x_fc.weight, self.y_fc.weight], dim=1).detach()

    def inference_state(self) -> dict[str, Tensor]:
        """The weights the prediction uses, in the reparameterised form (BatchNorm folded into
        `pose_to_kpts.0`): pose_to_kpts, the GAU, pos_enc, x_fc/y_fc. Not the training-only
        `sigma_fc`, nor the bin buffers, which the constructor rebuilds."""
        if self.query_weight is None:
            raise RuntimeError("inference_state() needs a reparameterised DCC: reparameterize()")
        return {k: v.detach() for k, v in self.state_dict().items() if _is_inference_key(k)}

    @classmethod
    def from_inference_state(
        cls,
        state: Mapping[str, Tensor],
        num_bins: tuple[int, int] = (192, 256),
        padding: float = 1.25,
        temperature: float = 300.0,
    ) -> DCC:
        """A reparameterised eval-mode DCC holding `state` (an `inference_state()`), sized from
        its shapes: pose_to_kpts.0.weight (K*D, C), pos_enc (K, D). `sigma_fc` keeps its
        initialisation (training only).

        Raises ValueError naming the missing, unexpected and mis-shaped weights.
        """
        if not {"pos_enc", "pose_to_kpts.0.weight"} <= state.keys():
            raise ValueError("DCC weights: 'pos_enc' and 'pose_to_kpts.0.weight' are required")
        num_keypoints, feat_channels = state["pos_enc"].shape
        in_channels = state["pose_to_kpts.0.weight"].shape[-1]
        dcc = cls(in_channels, num_keypoints, num_bins, padding, temperature, feat_channels)
        # The BatchNorm1d is already folded into the Linear.
        dcc.pose_to_kpts = nn.Sequential(nn.Linear(in_channels, num_keypoints * feat_channels))
        expected = {k: tuple(v.shape) for k, v in dcc.state_dict().items() if _is_inference_key(k)}
        problems = []
        if expected.keys() - state.keys():
            problems.append(f"missing {sorted(expected.keys() - state.keys())}")
        if state.keys() - expected.keys():
            problems.append(f"unexpected {sorted(state.keys() - expected.keys())}")
        for key in sorted(expected.keys() & state.keys()):
            if tuple(state[key].shape) != expected[key]:
                problems.append(f"{key} {tuple(state[key].shape)}, expected {expected[key]}")
        if problems:
            raise ValueError("DCC weights: " + "; ".join(problems))
        dcc.load_state_dict(dict(state), strict=False)
        dcc.eval()._set_query_weight()
        return dcc


def _is_inference_key(key: str) -> bool:
    return not key.startswith(("sigma_fc.", "spe.", "x_bins", "y_bins"))
