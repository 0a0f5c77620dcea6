"""Fused kernels for RTMO as PyTorch ops: the Dynamic Coordinate Classifier decode, its training
loss (MLE, with backward) and batched NMS.

Each op has a readable reference (`rtmo_kernels.reference`), a C++ CPU kernel, a CUDA kernel and a
Triton kernel; `backend="auto"` picks the best one for the tensors' device. `backends()` says which
of them can run here.
"""

from rtmo_kernels._backend import BackendStatus, BackendUnavailableError, backends
from rtmo_kernels.ops.batched_nms import batched_nms
from rtmo_kernels.ops.dcc_decode import dcc_decode
from rtmo_kernels.ops.dcc_mle_loss import dcc_mle_loss
from rtmo_kernels.ops.nms_padded import nms_padded

__all__ = [
    "BackendStatus",
    "BackendUnavailableError",
    "backends",
    "batched_nms",
    "dcc_decode",
    "dcc_mle_loss",
    "nms_padded",
]
