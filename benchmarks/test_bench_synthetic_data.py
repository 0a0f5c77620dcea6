"""Procedural dataset speed: `synthesize_dataset` writing the first 50 validation images (scenes,
drawing, labels, camera effects, JPEG files, the json) with OpenCV on one thread. Target: >= 20
images/s on one core. Run:
    PYTHONPATH=. python -m pytest benchmarks/test_bench_synthetic_data.py --benchmark-json=s.json
"""

from __future__ import annotations

import itertools

import cv2

from rtmo.train import synthetic

IMAGES = 50  # a mix of group, street and crowd scenes (1 to 30 people)


def test_synthesize_dataset(benchmark, tmp_path):
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    folders = (tmp_path / f"run{i}" for i in itertools.count())
    synthetic.render_image(synthetic.VAL_SEED, 0)  # reads the background photos once
    try:
        benchmark.pedantic(
            synthetic.synthesize_dataset,
            setup=lambda: ((next(folders), IMAGES, synthetic.VAL_SEED), {}),
            rounds=3,
        )
    finally:
        cv2.setNumThreads(threads)
    benchmark.extra_info["images"] = IMAGES
    benchmark.extra_info["images_per_s"] = IMAGES / benchmark.stats.stats.median
