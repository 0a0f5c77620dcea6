"""HybridEncoder (RT-DETR's AIFI + CCFF as used by RTMO): a transformer layer on stride 32, a
top-down FPN and bottom-up PAN of CSPRep blocks, and a 1x1 projector for the head.

Every BatchNorm here uses PyTorch's defaults (eps 1e-5), unlike the backbone and the head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rtmo.model.layers import TORCH_BN, ConvModule, fuse_conv_bn


class SinePositionalEncoding2d(nn.Module):
    """Fixed 2-D sin/cos encoding: per cell `[cos(y/t), sin(y/t), cos(x/t), sin(x/t)]`.

    `t_j = temperature^(j/F)` for j < F = axis_channels/2; y, x are integer row/column indices,
    so a cell gets 2 * axis_channels values. This is mmpose's order (not RT-DETR's
    `[sin w, cos w, sin h, cos h]`); the weights depend on it.
    """

    def __init__(self, axis_channels: int, temperature: float) -> None:
        super().__init__()
        freqs = axis_channels // 2
        self.register_buffer("dim_t", temperature ** (torch.arange(freqs) / freqs))

    def forward(self, h: int, w: int) -> Tensor:
        """Encoding of an h x w grid, row-major: (h*w, channels)."""
        ys = torch.arange(h, dtype=torch.float32, device=self.dim_t.device)
        xs = torch.arange(w, dtype=torch.float32, device=self.dim_t.device)
        fy = ys[:, None] / self.dim_t
        fx = xs[:, None] / self.dim_t
        ey = torch.cat([fy.cos(), fy.sin()], dim=-1)[:, None, :].expand(h, w, -1)
        ex = torch.cat([fx.cos(), fx.sin()], dim=-1)[None, :, :].expand(h, w, -1)
        return torch.cat([ey, ex], dim=-1).reshape(h * w, -1)


class SelfAttention(nn.Module):
    """Multi-head self-attention with the position added to queries and keys, not values, plus
    the residual (mmcv's MultiheadAttention)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        qk = x + pos
        return x + self.attn(qk, qk, x, need_weights=False)[0]


class FeedForward(nn.Module):
    """Linear -> GELU -> Linear plus the residual (mmcv's FFN; the key names follow it)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Sequential(nn.Linear(dim, hidden), nn.GELU()), nn.Linear(hidden, dim)
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.layers(x)


class EncoderLayer(nn.Module):
    """Post-norm transformer encoder layer (DETR)."""

    def __init__(self, dim: int = 256, num_heads: int = 8, hidden: int = 1024) -> None:
        super().__init__()
        self.self_attn = SelfAttention(dim, num_heads)
        self.ffn = FeedForward(dim, hidden)
        self.norms = nn.ModuleList([nn.LayerNorm(dim), nn.LayerNorm(dim)])

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        x = self.norms[0](self.self_attn(x, pos))
        return self.norms[1](self.ffn(x))


class Encoder(nn.Module):
    """A stack of encoder layers (RTMO uses one)."""

    def __init__(self, num_layers: int = 1) -> None:
        super().__init__()
        self.layers = nn.ModuleList([EncoderLayer() for _ in range(num_layers)])

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x, pos)
        return x


class RepVGGBlock(nn.Module):
    """SiLU(BN(conv3x3(x)) + BN(conv1x1(x))); `reparameterize()` fuses both into one 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.branch_3x3 = ConvModule(channels, channels, 3, act=False, bn=TORCH_BN)
        self.branch_1x1 = ConvModule(channels, channels, 1, act=False, bn=TORCH_BN)
        self.act = nn.SiLU()
        self.conv_reparam: nn.Conv2d | None = None

    def forward(self, x: Tensor) -> Tensor:
        if self.conv_reparam is not None:
            return self.act(self.conv_reparam(x))
        return self.act(self.branch_3x3(x) + self.branch_1x1(x))

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Replaces both branches with one 3x3 conv with bias (inference only; idempotent)."""
        if self.conv_reparam is not None:
            return
        conv = fuse_conv_bn(self.branch_3x3.conv, self.branch_3x3.bn)
        conv_1x1 = fuse_conv_bn(self.branch_1x1.conv, self.branch_1x1.bn)
        conv.weight += F.pad(conv_1x1.weight, [1, 1, 1, 1])
        conv.bias += conv_1x1.bias
        self.conv_reparam = conv
        del self.branch_3x3, self.branch_1x1


class CSPRepLayer(nn.Module):
    """conv3(RepVGG blocks(conv1(x)) + conv2(x)); conv3 is the identity when hidden == out."""

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, widen: float) -> None:
        super().__init__()
        hidden = int(out_channels * widen)
        self.conv1 = ConvModule(in_channels, hidden, 1, bn=TORCH_BN)
        self.conv2 = ConvModule(in_channels, hidden, 1, bn=TORCH_BN)
        self.bottlenecks = nn.Sequential(*(RepVGGBlock(hidden) for _ in range(num_blocks)))
        self.conv3 = (
            ConvModule(hidden, out_channels, 1, bn=TORCH_BN)
            if hidden != out_channels
            else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.conv3(self.bottlenecks(self.conv1(x)) + self.conv2(x))


class ChannelMapper(nn.Module):
    """Per level 1x1 conv + BN without activation."""

    def __init__(self, in_channels: int, out_channels: int, num_levels: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            ConvModule(in_channels, out_channels, 1, act=False, bn=TORCH_BN)
            for _ in range(num_levels)
        )

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        return [conv(f) for conv, f in zip(self.convs, feats, strict=True)]


class HybridEncoder(nn.Module):
    """Neck: (C3, C4, C5) at strides 8/16/32 -> two maps at strides 16/32 for the head."""

    def __init__(
        self, in_channels: tuple[int, int, int], out_channels: int, deepen: float, widen: float
    ) -> None:
        super().__init__()
        dim, blocks = 256, round(3 * deepen)
        self.input_proj = nn.ModuleList(
            ConvModule(c, dim, 1, act=False, bn=TORCH_BN) for c in in_channels
        )
        self.encoder = nn.ModuleList([Encoder(num_layers=1)])
        self.sincos_pos_enc = SinePositionalEncoding2d(dim // 2, temperature=10000.0)
        self.lateral_convs = nn.ModuleList(ConvModule(dim, dim, 1, bn=TORCH_BN) for _ in range(2))
        self.fpn_blocks = nn.ModuleList(CSPRepLayer(2 * dim, dim, blocks, widen) for _ in range(2))
        self.downsample_convs = nn.ModuleList(
            ConvModule(dim, dim, 3, stride=2, bn=TORCH_BN) for _ in range(2)
        )
        self.pan_blocks = nn.ModuleList(CSPRepLayer(2 * dim, dim, blocks, widen) for _ in range(2))
        self.projector = ChannelMapper(dim, out_channels, num_levels=2)

    def encode(self, x: Tensor) -> Tensor:
        """The transformer layer over the stride-32 map (B, C, h, w)."""
        b, c, h, w = x.shape
        pos = self.sincos_pos_enc(h, w).to(x.dtype)
        tokens = self.encoder[0](x.flatten(2).transpose(1, 2), pos)
        return tokens.transpose(1, 2).reshape(b, c, h, w)

    def forward(self, feats: tuple[Tensor, Tensor, Tensor]) -> list[Tensor]:
        p3, p4, p5 = (proj(f) for proj, f in zip(self.input_proj, feats, strict=True))
        p5 = self.lateral_convs[0](self.encode(p5))  # the PAN reuses the lateral output
        f4 = self.fpn_blocks[0](torch.cat([F.interpolate(p5, scale_factor=2.0), p4], dim=1))
        f4_lat = self.lateral_convs[1](f4)
        f3 = self.fpn_blocks[1](torch.cat([F.interpolate(f4_lat, scale_factor=2.0), p3], dim=1))
        n4 = self.pan_blocks[0](torch.cat([self.downsample_convs[0](f3), f4_lat], dim=1))
        n5 = self.pan_blocks[1](torch.cat([self.downsample_convs[1](n4), p5], dim=1))
        return self.projector([n4, n5])
