"""Ray Data throughput: the same folder of camera-sized JPEGs through one process and through
`rtmo.distributed.predict_dataset` with 2 workers on a local Ray, and what that measures says
about a cluster.

Rows (same deterministic random weights, same images, same batch size):
  one-process    `rtmo predict DIR --json --no-save` in this process (torch on every core).
  ray-2-workers  `predict_dataset(DIR, num_workers=2)` on a local Ray: one CPU each on a CPU
                 machine (torch on one thread each), half the GPU each on a CUDA machine. The
                 job's wall time includes starting the workers and loading the model in each;
                 Ray's own start-up (`ray.init`) is reported apart.

Cluster projection: the workers' steady rate (images over the seconds workers spent on blocks)
times N workers, which holds while the storage serves N x rate x mean file size bytes/s; a
worker's own ceiling is its decode thread (the images/s one thread reads and decodes, measured
here): past it, a GPU waits on JPEG decoding, and more workers per GPU
(--gpus-per-worker 0.5) or a smaller model will not help.

    python -m benchmarks.distributed [--quick] [--device cuda]   # JSON to stdout
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from benchmarks.synthetic import build_model, crowd_frame

VARIANT = "rtmo-t"
BATCH = 4
WORKERS = 2
PROJECTED_WORKERS = (1, 2, 4, 8, 16, 32)


def write_images(folder: Path, count: int) -> list[Path]:
    """`count` 1280x720 camera frames of a crowd as JPEGs (quality 90)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"frame{i:05d}.jpg"
        cv2.imwrite(str(path), crowd_frame(12, seed=i), [cv2.IMWRITE_JPEG_QUALITY, 90])
        paths.append(path)
    return paths


def decode_rate(paths: list[Path]) -> float:
    """Images/s one thread reads and decodes (what a worker's prefetch thread does per image)."""
    from rtmo.distributed.storage import read_bytes
    from rtmo.sources import decode_image

    started = time.perf_counter()
    for path in paths:
        decode_image(read_bytes(str(path)), path)
    return len(paths) / (time.perf_counter() - started)


def one_process(folder: Path, checkpoint: Path, device: str) -> dict[str, float]:
    from rtmo import cli

    with tempfile.TemporaryDirectory() as out, contextlib.redirect_stderr(io.StringIO()):
        argv = ["predict", str(folder), "--checkpoint", str(checkpoint), "--out", out]
        argv += ["--json", "--no-save", "--batch-size", str(BATCH), "--device", device]
        started = time.perf_counter()
        status = cli.main(argv)
        seconds = time.perf_counter() - started
    if status != 0:
        raise RuntimeError(f"rtmo predict exited with status {status}")
    return {"seconds": seconds}


def ray_workers(folder: Path, checkpoint: Path, device: str, block_size: int) -> dict[str, float]:
    import ray

    from rtmo.distributed import predict_dataset

    started = time.perf_counter()
    ray.init(num_cpus=WORKERS, include_dashboard=False, logging_level="warning")
    startup = time.perf_counter() - started
    try:
        with tempfile.TemporaryDirectory() as out:
            summary = predict_dataset(
                folder, checkpoint, Path(out) / "poses", num_workers=WORKERS,
                gpus_per_worker=1 / WORKERS if device == "cuda" else 0.0,
                batch_size=BATCH, block_size=block_size,
            )  # fmt: skip
    finally:
        ray.shutdown()
    if summary.errors or summary.rows == 0:
        raise RuntimeError(f"the Ray job read {summary.rows} rows with {summary.errors} errors")
    return {
        "ray_init_s": startup,
        "seconds": summary.seconds,
        "per_worker_images_per_s": summary.rows_per_worker_s,
    }


def run(quick: bool = False, device: str = "cpu") -> dict[str, Any]:
    images = 16 if quick else 64
    block_size = 2 * BATCH  # 2 blocks or more per worker: the pool balances on blocks
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "frames"
        paths = write_images(folder, images)
        checkpoint = Path(tmp) / f"{VARIANT}.pth"
        torch.save({"state_dict": build_model(VARIANT).state_dict()}, checkpoint)
        mean_bytes = float(np.mean([p.stat().st_size for p in paths]))
        decode = decode_rate(paths)
        single = one_process(folder, checkpoint, device)
        distributed = ray_workers(folder, checkpoint, device, block_size)
    single["images_per_s"] = images / single["seconds"]
    distributed["images_per_s"] = images / distributed["seconds"]
    per_worker = distributed["per_worker_images_per_s"]
    return {
        "variant": VARIANT,
        "device": device,
        "images": images,
        "image_size": [1280, 720],
        "mean_file_bytes": mean_bytes,
        "batch": BATCH,
        "block_size": block_size,
        "workers": WORKERS,
        "one_process": single,
        "ray": distributed,
        "decode_images_per_s_one_thread": decode,
        "projection": [
            {
                "workers": n,
                "images_per_s": n * min(per_worker, decode),
                "storage_mb_per_s": n * min(per_worker, decode) * mean_bytes / 1e6,
            }
            for n in PROJECTED_WORKERS
        ],
    }


def markdown_lines(result: dict[str, Any]) -> list[str]:
    """The result as a table and the projection."""
    single, ray = result["one_process"], result["ray"]
    lines = [
        f"{result['images']} JPEGs of {result['image_size'][0]}x{result['image_size'][1]} "
        f"({result['mean_file_bytes'] / 1e3:.0f} kB each), {result['variant']} random weights, "
        f"batch {result['batch']}, blocks of {result['block_size']}, on {result['device']}.",
        "",
        "| row | wall s | images/s | per worker, steady (images/s) |",
        "|---|---|---|---|",
        f"| one-process | {single['seconds']:.1f} | {single['images_per_s']:.2f} | - |",
        f"| ray-{result['workers']}-workers | {ray['seconds']:.1f} | {ray['images_per_s']:.2f} "
        f"| {ray['per_worker_images_per_s']:.2f} |",
        "",
        f"Ray start-up (ray.init) {ray['ray_init_s']:.1f} s, not in the wall time; the wall time "
        "includes starting the workers and loading the model in each. One thread reads and "
        f"decodes {result['decode_images_per_s_one_thread']:.0f} images/s: a worker's ceiling.",
        "",
        "Projection (per-worker steady rate, capped by the decode ceiling, x workers; holds while "
        "the storage serves the bytes):",
        "",
        "| workers | images/s | storage MB/s |",
        "|---|---|---|",
    ]
    for row in result["projection"]:
        lines.append(
            f"| {row['workers']} | {row['images_per_s']:.1f} | {row['storage_mb_per_s']:.1f} |"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 images instead of 64")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    result = run(args.quick, args.device)
    print("\n".join(markdown_lines(result)), file=sys.stderr)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
