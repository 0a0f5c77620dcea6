"""CSPDarknet (YOLOX P5): Focus stem, four stages of strided conv + CSPLayer, SPP in the last."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rtmo.model.layers import ConvModule

# [in, out, blocks, add_identity, use_spp] of the P5 arch, before widen/deepen (RTMO.md §2.3).
_P5_STAGES = (
    (64, 128, 3, True, False),
    (128, 256, 9, True, False),
    (256, 512, 9, True, False),
    (512, 1024, 3, False, True),
)


class Focus(nn.Module):
    """Space-to-depth (4 pixel phases -> 12 channels) followed by a 3x3 ConvModule."""

    def __init__(self, out_channels: int) -> None:
        super().__init__()
        self.conv = ConvModule(12, out_channels, 3)

    def forward(self, x: Tensor) -> Tensor:
        # Phase order (even-row/even-col, odd-row/even-col, even-row/odd-col, odd-row/odd-col)
        # is fixed by the pretrained weights.
        phases = (x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2])
        return self.conv(torch.cat(phases, dim=1))


class SPPBottleneck(nn.Module):
    """1x1 conv to C/2, parallel max-pools (5, 9, 13), concat with the input, 1x1 conv back to C."""

    def __init__(self, channels: int, kernel_sizes: tuple[int, ...] = (5, 9, 13)) -> None:
        super().__init__()
        mid = channels // 2
        self.kernel_sizes = kernel_sizes
        self.conv1 = ConvModule(channels, mid, 1)
        self.conv2 = ConvModule(mid * (len(kernel_sizes) + 1), channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        pools = [F.max_pool2d(x, k, stride=1, padding=k // 2) for k in self.kernel_sizes]
        return self.conv2(torch.cat([x, *pools], dim=1))


class DarknetBottleneck(nn.Module):
    """1x1 conv -> 3x3 conv, plus the input when `add_identity`."""

    def __init__(self, channels: int, add_identity: bool) -> None:
        super().__init__()
        self.conv1 = ConvModule(channels, channels, 1)
        self.conv2 = ConvModule(channels, channels, 3)
        self.add_identity = add_identity

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2(self.conv1(x))
        return out + x if self.add_identity else out


class CSPLayer(nn.Module):
    """Cross-stage partial layer: bottlenecks on half the channels, concat with a 1x1 shortcut."""

    def __init__(self, channels: int, num_blocks: int, add_identity: bool) -> None:
        super().__init__()
        mid = channels // 2
        self.main_conv = ConvModule(channels, mid, 1)
        self.short_conv = ConvModule(channels, mid, 1)
        self.final_conv = ConvModule(2 * mid, channels, 1)
        self.blocks = nn.Sequential(
            *(DarknetBottleneck(mid, add_identity) for _ in range(num_blocks))
        )

    def forward(self, x: Tensor) -> Tensor:
        main = self.blocks(self.main_conv(x))
        return self.final_conv(torch.cat([main, self.short_conv(x)], dim=1))


class CSPDarknet(nn.Module):
    """YOLOX backbone; returns the stage 2/3/4 outputs at strides 8/16/32."""

    def __init__(self, deepen: float, widen: float) -> None:
        super().__init__()
        self.stem = Focus(int(64 * widen))
        for i, (c_in, c_out, blocks, add_identity, use_spp) in enumerate(_P5_STAGES, start=1):
            c_in, c_out = int(c_in * widen), int(c_out * widen)
            layers: list[nn.Module] = [ConvModule(c_in, c_out, 3, stride=2)]
            if use_spp:
                layers.append(SPPBottleneck(c_out))
            layers.append(CSPLayer(c_out, max(round(blocks * deepen), 1), add_identity))
            self.add_module(f"stage{i}", nn.Sequential(*layers))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = self.stage1(self.stem(x))
        c3 = self.stage2(x)
        c4 = self.stage3(c3)
        c5 = self.stage4(c4)
        return c3, c4, c5
