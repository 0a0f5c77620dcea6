"""RTMO: one-stage real-time multi-person pose estimation, on fused kernels."""
