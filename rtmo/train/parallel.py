"""Data parallelism: the process group, and BatchNorm with statistics over all processes' batches.

torch's SyncBatchNorm only runs inside DistributedDataParallel on GPU modules, so CPU training
with the gloo backend gets `CrossProcessBatchNorm`: the per-channel sums are all-reduced through
torch.distributed.nn (differentiable), so the forward, the backward and the running statistics
are those of one process holding the global batch.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import Tensor, nn


def world() -> tuple[int, int]:
    """(number of processes, this process's rank); (1, 0) outside torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def start_processes() -> None:
    """Joins the process group when launched by torchrun (WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


class CrossProcessBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm1d/2d whose training statistics cover the batches of every process. A process
    with an empty batch still takes part (its sums are zero), so none waits for it. The sums go
    through a process group of their own, so that they never interleave with the gradient
    all-reduces that DistributedDataParallel issues during the same backward pass."""

    group: dist.ProcessGroup | None = None

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() not in (2, 3, 4):
            raise ValueError(f"expected a 2D, 3D or 4D input, got {x.dim()}D")

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return super().forward(x)
        channels = x.shape[1]
        dims = [0, *range(2, x.dim())]
        count = x.new_tensor([x.numel() / max(channels, 1)])
        stats = torch.cat([x.sum(dims), (x * x).sum(dims), count])
        stats = dist_fn.all_reduce(stats, group=self.group)
        n = stats[-1].clamp(min=1)
        mean = stats[:channels] / n
        var = (stats[channels : 2 * channels] / n - mean * mean).clamp(min=0)
        with torch.no_grad():
            unbiased = var * n / (n - 1).clamp(min=1)
            self.running_mean.lerp_(mean.detach(), self.momentum)
            self.running_var.lerp_(unbiased.detach(), self.momentum)
            self.num_batches_tracked.add_(1)
        shape = (1, channels) + (1,) * (x.dim() - 2)
        scale = self.weight / torch.sqrt(var + self.eps)
        return (x - mean.reshape(shape)) * scale.reshape(shape) + self.bias.reshape(shape)


def synchronise_batch_norms(module: nn.Module) -> nn.Module:
    """`module` with every BatchNorm computing its statistics over all processes: torch's
    SyncBatchNorm on GPUs, CrossProcessBatchNorm elsewhere. Parameters and buffers are kept."""
    if torch.cuda.is_available() and next(module.parameters()).is_cuda:
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if CrossProcessBatchNorm.group is None:
        CrossProcessBatchNorm.group = dist.new_group()
    return _replace_batch_norms(module)


def _replace_batch_norms(module: nn.Module) -> nn.Module:
    for name, child in module.named_children():
        if isinstance(child, (nn.BatchNorm1d, nn.BatchNorm2d)):
            synced = CrossProcessBatchNorm(child.num_features, child.eps, child.momentum)
            synced.load_state_dict(child.state_dict())
            setattr(module, name, synced)
        else:
            _replace_batch_norms(child)
    return module
