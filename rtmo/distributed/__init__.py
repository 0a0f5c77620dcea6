"""Pose extraction over large image and video sets, on a Ray cluster or on the cores of one machine,
through Ray Data: `predict_dataset` and `rtmo predict --ray`.

    from rtmo.distributed import predict_dataset
    summary = predict_dataset("s3://bucket/photos/", "rtmo-s.pth", "poses/", num_workers=8,
                              gpus_per_worker=1)
    summary.rows, summary.errors, summary.rows_per_s

One row per image or video frame, in Parquet (or JSON lines) files, one per block of the job
(rtmo.distributed.rows). Ray is an optional extra (`pip install 'rtmo[ray]'`): this package
imports it only when a job runs, and `import rtmo` never does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "DatasetSummary",
    "OtherJobError",
    "RayMissingError",
    "ResourcesError",
    "predict_dataset",
]

if TYPE_CHECKING:
    from rtmo.distributed.job import (
        DatasetSummary,
        OtherJobError,
        RayMissingError,
        ResourcesError,
        predict_dataset,
    )


def __getattr__(name: str) -> Any:
    if name in __all__:
        from rtmo.distributed import job

        value = getattr(job, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rtmo.distributed' has no attribute {name!r}")
