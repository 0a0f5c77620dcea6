"""Soak: 5000 frames through the predictor (RTMO-t with random weights at its smallest input,
32x32, small frames, batches of 25) hold resident memory within 30 MB of its level after warm-up
and leak no file descriptor; opening and closing videos for reading and writing leaks none
either."""

from __future__ import annotations

import dataclasses
import gc
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from test_predictor import content_image
from test_video import write_avi

from rtmo.config import from_name
from rtmo.model import RTMOModel
from rtmo.predictor import RTMO
from rtmo.video import VideoReader, video_writer

FRAMES = 5000
# 2.0 ms of CPU per frame at 32x32 in batches of 25 (2.9 ms in batches of 10, 3.4 ms at 64x64):
# ~10 s for the 5000 frames on one core.
INPUT_SIDE = 32
BATCH = 25
WARMUP_FRAMES = 250  # allocator pools and oneDNN's primitive caches fill up first
RSS_GROWTH_LIMIT = 30 * 2**20


@pytest.fixture(autouse=True)
def one_intra_op_thread():
    """One torch thread per call: on a shared, oversubscribed machine every OpenMP barrier of a
    2-thread region waits for a descheduled thread (measured: 8 s instead of 0.2 s per RTMO-t call
    at load 20 on 2 cores). What is tested does not depend on it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


pytestmark = pytest.mark.skipif(
    not Path("/proc/self/statm").exists(), reason="reads RSS and descriptors from /proc"
)


def resident_bytes() -> int:
    gc.collect()
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_5000_frames_hold_memory_and_descriptors():
    torch.manual_seed(0)
    config = dataclasses.replace(from_name("rtmo-t"), input_size=(INPUT_SIDE, INPUT_SIDE))
    model = RTMO(RTMOModel(config), device="cpu", score_thr=0.0, max_det=3)
    pool = [content_image(48 + 8 * (i % 3), 32 + 8 * (i % 2), seed=i) for i in range(BATCH * 2)]
    people = 0
    for start in range(0, FRAMES, BATCH):
        if start == WARMUP_FRAMES:
            rss, descriptors = resident_bytes(), open_descriptors()
        batch = pool[start % len(pool) :][:BATCH]
        people += sum(len(poses) for poses in model(batch))
    growth = resident_bytes() - rss
    assert people > 0
    assert growth < RSS_GROWTH_LIMIT, f"RSS grew by {growth / 2**20:.1f} MB over {FRAMES} frames"
    assert open_descriptors() == descriptors


def test_videos_opened_and_closed_leak_no_descriptor(tmp_path):
    video = write_avi(tmp_path / "clip.avi", 4)
    frame = np.zeros((48, 64, 3), np.uint8)
    before = open_descriptors()
    for i in range(30):
        reader = VideoReader(video)
        assert len(list(reader)) == 4
        reader.close()
        with video_writer(tmp_path / f"out{i % 2}.mp4", reader.fps) as writer:
            writer.write(frame)
    assert open_descriptors() == before
