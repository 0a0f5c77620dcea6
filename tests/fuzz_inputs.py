"""Fuzzing of the files a user hands over: random bytes and mutated real images, videos and
checkpoints always give a result or a named error (SourceError, CheckpointError), never another
exception, a crash or a hang.

Run by tests/test_fuzz_inputs.py in a child process (a segfault in a decoder must not take the
test session down with it, and a hang is caught by its time limit); `python -m pytest
tests/fuzz_inputs.py` runs it directly.
"""

from __future__ import annotations

import tempfile
from datetime import timedelta
from pathlib import Path

import cv2
import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtmo.checkpoint import CheckpointError, read_state_dict
from rtmo.sources import SourceError, read_image
from rtmo.video import VideoReader

# Frames read from a fuzzed video: enough to reach damaged data past the header.
MAX_FRAMES = 12
SETTINGS = settings(
    max_examples=100,
    # One decode of these tiny files takes milliseconds; seconds mean a decoder spinning.
    deadline=timedelta(seconds=5),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,  # the same examples every run: CI stays deterministic
    database=None,
)
SCRATCH = Path(tempfile.mkdtemp(prefix="rtmo-fuzz-"))


def _image(width: int = 24, height: int = 16) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def _encoded(suffix: str) -> bytes:
    ok, data = cv2.imencode(suffix, _image())
    assert ok
    return data.tobytes()


def _video(suffix: str, fourcc: str) -> bytes:
    path = SCRATCH / f"original{suffix}"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10, (24, 16))
    for level in range(6):
        writer.write(np.full((16, 24, 3), 40 * level, np.uint8))
    writer.release()
    return path.read_bytes()


def _checkpoint(legacy: bool) -> bytes:
    path = SCRATCH / f"original-{legacy}.pth"
    meta = {"dataset_meta": {"sigmas": np.linspace(0, 1, 5, dtype=np.float32)}, "epoch": 3}
    state = {"backbone.stem.conv.conv.weight": torch.randn(4, 3, 3, 3), "head.b": torch.ones(2)}
    torch.save({"meta": meta, "state_dict": state}, path, _use_new_zipfile_serialization=not legacy)
    return path.read_bytes()


IMAGES = {suffix: _encoded(suffix) for suffix in (".png", ".jpg", ".bmp", ".webp", ".tiff")}
VIDEOS = {".avi": _video(".avi", "MJPG"), ".mp4": _video(".mp4", "mp4v")}
CHECKPOINTS = [_checkpoint(legacy=False), _checkpoint(legacy=True)]


@st.composite
def mutated(draw, originals: list[bytes]) -> bytes:
    """One of `originals` with a few byte-level edits: flips, overwrites, insertions, deletions,
    truncation; or random bytes behind its first 16 (its magic number)."""
    data = bytearray(draw(st.sampled_from(originals)))
    if draw(st.integers(0, 9)) == 0:
        return bytes(data[:16]) + draw(st.binary(max_size=2048))
    for _ in range(draw(st.integers(1, 6))):
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        edit = draw(st.sampled_from(["flip", "overwrite", "insert", "delete", "truncate"]))
        if edit == "flip" and data:
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif edit == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[position : position + len(chunk)] = chunk
        elif edit == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=64))
        elif edit == "delete":
            del data[position : position + draw(st.integers(1, 64))]
        elif edit == "truncate":
            del data[position:]
    return bytes(data)


def _write(data: bytes, suffix: str) -> Path:
    path = SCRATCH / f"input{suffix}"
    path.write_bytes(data)
    return path


@SETTINGS
@given(
    st.sampled_from(sorted(IMAGES)),
    st.one_of(mutated(list(IMAGES.values())), st.binary(max_size=1024)),
)
def test_images(suffix, data):
    try:
        image = read_image(_write(data, suffix))
    except SourceError as err:
        error = str(err)
    else:
        assert image.dtype == np.uint8
        assert image.ndim == 3
        assert image.shape[2] == 3
        return
    assert "input" in error  # the message names the file


@SETTINGS
@given(
    st.sampled_from(sorted(VIDEOS)),
    st.one_of(mutated(list(VIDEOS.values())), st.binary(max_size=2048)),
)
def test_videos(suffix, data):
    try:
        reader = VideoReader(_write(data, suffix))
    except SourceError as err:
        error = str(err)
        assert "input" in error
        return
    try:
        for count, (index, frame) in enumerate(reader):
            assert index >= count
            assert frame.dtype == np.uint8
            assert frame.ndim == 3
            if count + 1 == MAX_FRAMES:
                break
    finally:
        reader.close()


@SETTINGS
@given(st.one_of(mutated(CHECKPOINTS), st.binary(max_size=1024)))
def test_checkpoints(data):
    try:
        state = read_state_dict(_write(data, ".pth"))
    except CheckpointError as err:
        error = str(err)
    else:
        assert all(isinstance(v, torch.Tensor) for v in state.values())
        return
    assert "input.pth" in error
