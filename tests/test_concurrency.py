"""One `RTMO` called from 4 threads at once gives each call the result of a serial call (inference
only reads the weights), and several models in one process do not disturb each other."""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from test_predictor import content_image

from rtmo.config import from_name
from rtmo.model import RTMOModel
from rtmo.predictor import RTMO

THREADS = 4


@pytest.fixture(autouse=True)
def one_intra_op_thread():
    """One torch thread per call: on a shared, oversubscribed machine every OpenMP barrier of a
    2-thread region waits for a descheduled thread (measured: 8 s instead of 0.2 s per RTMO-t call
    at load 20 on 2 cores). What is tested does not depend on it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_model(variant: str, side: int, seed: int) -> RTMO:
    """Random weights at a small input size (the network takes any multiple of 32). Score
    threshold 0: random weights score low, and every call should find people to compare."""
    torch.manual_seed(seed)
    config = dataclasses.replace(from_name(variant), input_size=(side, side))
    return RTMO(RTMOModel(config), device="cpu", score_thr=0.0, max_det=5)


def frames(count: int) -> list[np.ndarray]:
    return [content_image(40 + 8 * (i % 4), 30 + 6 * (i % 3), seed=i) for i in range(count)]


def assert_same_poses(got, expected) -> None:
    assert len(got) == len(expected) > 0
    for a, b in zip(got, expected, strict=True):
        for field in ("boxes", "scores", "keypoints", "keypoint_scores"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
        assert a.image_size == b.image_size


def test_one_model_from_four_threads_equals_serial_calls():
    model = small_model("rtmo-t", 96, seed=0)
    images = frames(12)
    serial = [model(image) for image in images]
    with ThreadPoolExecutor(THREADS) as pool:
        # Every image three times, interleaved, so that calls overlap in every order.
        threaded = list(pool.map(model, images * 3))
    for round_ in range(3):
        assert_same_poses(threaded[round_ * 12 : (round_ + 1) * 12], serial)


def test_batched_calls_from_threads_equal_serial_batches():
    model = small_model("rtmo-t", 64, seed=1)
    batches = [frames(3)[i:] for i in range(3)]
    serial = [model(batch) for batch in batches]
    with ThreadPoolExecutor(THREADS) as pool:
        threaded = list(pool.map(model, batches * 2))
    for got, expected in zip(threaded, serial * 2, strict=True):
        assert_same_poses(got, expected)


def test_many_models_in_one_process_keep_their_own_results():
    models = [small_model("rtmo-t", 64, seed=2), small_model("rtmo-t", 96, seed=3)]
    images = frames(6)
    serial = [[model(image) for image in images] for model in models]
    assert not np.array_equal(serial[0][0].boxes, serial[1][0].boxes)
    jobs = [(m, i) for i in range(len(images)) for m in range(len(models))] * 2
    with ThreadPoolExecutor(THREADS) as pool:
        threaded = list(pool.map(lambda job: models[job[0]](images[job[1]]), jobs))
    for (m, i), poses in zip(jobs, threaded, strict=True):
        assert_same_poses([poses], [serial[m][i]])
