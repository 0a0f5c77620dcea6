"""Building blocks shared by the backbone, neck and head: conv-BN-activation and its BN fold."""

from __future__ import annotations

import torch
from torch import Tensor, nn

# BatchNorm settings of the parts of the network (RTMO.md §2.2): the backbone and the head module
# use YOLOX's eps 1e-3 / momentum 0.03, the neck and the DCC PyTorch's defaults.
YOLOX_BN = {"eps": 1e-3, "momentum": 0.03}
TORCH_BN = {"eps": 1e-5, "momentum": 0.1}


class ConvModule(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d -> SiLU (or no activation), named like mmcv's ConvModule.

    `fuse()` folds the BatchNorm into the convolution for inference.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        act: bool = True,
        bn: dict[str, float] = YOLOX_BN,
    ) -> None:
        super().__init__()
        pad = (kernel_size - 1) // 2
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, pad, groups=groups, bias=False
        )
        self.bn: nn.Module = nn.BatchNorm2d(out_channels, **bn)
        self.act = nn.SiLU() if act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))

    @torch.no_grad()
    def fuse(self) -> None:
        """Folds the BatchNorm into the convolution (inference only; idempotent)."""
        if isinstance(self.bn, nn.BatchNorm2d):
            self.conv = fuse_conv_bn(self.conv, self.bn)
            self.bn = nn.Identity()


@torch.no_grad()
def fold_bn(weight: Tensor, bias: Tensor | None, bn: nn.BatchNorm1d | nn.BatchNorm2d) -> tuple:
    """(weight, bias) of a linear map followed by an eval-mode BatchNorm, as one linear map.

    `weight` has the output channel first (Conv2d or Linear weight).
    """
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    bias = torch.zeros_like(bn.running_mean) if bias is None else bias
    fused_w = weight * scale.reshape(-1, *([1] * (weight.dim() - 1)))
    fused_b = (bias - bn.running_mean) * scale + bn.bias
    return fused_w, fused_b


@torch.no_grad()
def fuse_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new Conv2d with bias computing bn(conv(x)) in eval mode."""
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        groups=conv.groups,
        bias=True,
    ).to(conv.weight)
    w, b = fold_bn(conv.weight, conv.bias, bn)
    fused.weight.copy_(w)
    fused.bias.copy_(b)
    return fused


def fuse_conv_bn_modules(module: nn.Module) -> None:
    """Folds every ConvModule's BatchNorm inside `module`."""
    for m in module.modules():
        if isinstance(m, ConvModule):
            m.fuse()
