"""The Ray actor of a dataset job: loads the model once, then takes blocks (see blocks.py),
predicts each one's images or frames `batch_size` at a time and writes its rows as one file.

A block's file is written whole under its final name only at the end (`storage.write_whole`):
a worker that fails or dies mid-block leaves nothing of it, and a retried block rewrites the same
file with the same rows, so no row is ever written twice.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rtmo.distributed import storage
from rtmo.distributed.blocks import Block
from rtmo.distributed.rows import block_file_name, encode, error_row, prediction_row
from rtmo.sources import Source, SourceError, decode_image
from rtmo.stream import FrameInfo, predict_frames, video_frames

# Fault injection, for checking that a job survives a failing worker: when this environment
# variable names a file on the driver, the first worker to reach the second batch of a block
# deletes the file and raises InjectedFaultError (once: the file is gone). Local clusters only,
# where the workers see the driver's files.
FAULT_ENV = "RTMO_INJECT_FAULT"
# Random weights are drawn from this seed in every worker, so that all workers hold the same model.
RANDOM_WEIGHTS_SEED = 0
STAT_KEYS = ("seq", "rows", "errors", "people", "seconds", "messages")


class InjectedFaultError(RuntimeError):
    """The failure `FAULT_ENV` asks for."""


@dataclass(frozen=True)
class WorkerSettings:
    """What every worker of a job is built with. model: the variant (None: found from the
    checkpoint); device: "cpu" or "cuda" (the GPU Ray gave the worker); out: the output folder,
    a path or URI."""

    model: str | None
    device: str
    dtype: str
    backend: str
    use_kernels: bool
    trust_checkpoint: bool
    score_thr: float
    nms_thr: float
    max_det: int
    batch_size: int
    output_format: str
    out: str
    fault_marker: str | None = None


class BlockWorker:
    """The callable class of `Dataset.map_batches`: one instance per Ray actor. Each input row is a
    block (its JSON); each output row the block's counts: rows, errors, people, seconds and the
    error messages (one per line)."""

    def __init__(self, settings: WorkerSettings, weights: Any) -> None:
        self.settings = settings
        self.predictor = _load_predictor(settings, weights)
        self.fs, self.folder = storage.filesystem(settings.out)
        self._batches_in_block = 0

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        stats = [self.run_block(Block.from_json(str(text))) for text in batch["block"]]
        return {key: [block[key] for block in stats] for key in STAT_KEYS}

    def run_block(self, block: Block) -> dict[str, Any]:
        """Predicts the block and writes its file; returns its counts."""
        started = time.perf_counter()
        self._batches_in_block = 0
        output_format = self.settings.output_format
        rows, messages, people = [], [], 0
        frames = predict_frames(
            list, self._predict, _block_frames(block), self.settings.batch_size, on_error="yield"
        )
        for frame, poses in frames:
            index = frame.index if frame.kind == "video" else None
            if poses is None:
                messages.append(str(frame.error))
                rows.append(error_row(frame.source, index, messages[-1]))
            else:
                rows.append(prediction_row(frame.source, index, poses, output_format))
                people += len(poses)
        path = f"{self.folder}/{block_file_name(block.seq, output_format)}"
        storage.write_whole(self.fs, path, encode(rows, output_format))
        return {
            "seq": block.seq,
            "rows": len(rows),
            "errors": len(messages),
            "people": people,
            "seconds": time.perf_counter() - started,
            "messages": "\n".join(messages),
        }

    def _predict(self, images: list[np.ndarray]) -> list:
        self._batches_in_block += 1
        if self._batches_in_block == 2:
            _inject_fault(self.settings.fault_marker)
        return self.predictor.predict(images)


def _block_frames(block: Block) -> Iterator[FrameInfo]:
    if block.kind == "video":
        assert block.video is not None
        source = Source("video", Path(block.video).stem, path=Path(block.video))
        return video_frames(0, block.video, source, block.start, block.stop)
    return _image_frames(block)


def _image_frames(block: Block) -> Iterator[FrameInfo]:
    """The block's images, decoded as `rtmo.sources.read_image` decodes a file; one that cannot be
    read comes with its error."""
    for i, item in enumerate(block.items):
        try:
            image, error = decode_image(storage.read_bytes(item, block.root), item), None
        except SourceError as err:
            image, error = None, str(err)
        yield FrameInfo(item, 0, "image", i, None, image, None, error, len(block.items))


def _load_predictor(settings: WorkerSettings, weights: Any) -> Any:
    """The worker's RTMO: from the checkpoint's bytes (shipped by the driver through Ray's object
    store, so that workers need no copy of the file), or random weights when there are none."""
    import torch

    from rtmo.predictor import RTMO

    options = {
        "device": settings.device,
        "dtype": settings.dtype,
        "backend": settings.backend,
        "use_kernels": settings.use_kernels,
        "score_thr": settings.score_thr,
        "nms_thr": settings.nms_thr,
        "max_det": settings.max_det,
    }
    if weights is None:
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            torch.manual_seed(RANDOM_WEIGHTS_SEED)
            warnings.simplefilter("ignore", UserWarning)
            return RTMO(settings.model or "rtmo-s", **options)
    if not isinstance(weights, bytes):  # an ObjectRef
        import ray

        weights = ray.get(weights)
    with tempfile.TemporaryDirectory(prefix="rtmo-worker-") as folder:
        path = Path(folder) / "checkpoint.pth"
        path.write_bytes(weights)
        return RTMO.from_checkpoint(
            path, settings.model, trust_checkpoint=settings.trust_checkpoint, **options
        )


def _inject_fault(marker: str | None) -> None:
    if marker is None:
        return
    try:
        os.remove(marker)
    except FileNotFoundError:
        return
    raise InjectedFaultError(f"fault injected ({FAULT_ENV}={marker})")
