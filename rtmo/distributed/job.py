"""`predict_dataset`: a pose-extraction job over many images and videos on Ray Data.

The driver lists the sources and cuts them into blocks (rtmo.distributed.blocks); the blocks
whose files are not yet in the output folder go through `Dataset.map_batches` on a pool of
`BlockWorker` actors (the model loaded once per actor; Ray's streaming executor hands each actor
a few blocks at a time, which is the backpressure: a worker holds at most a few batches of
decoded frames). A block that raises is retried in its worker (`max_retries` times), one whose
worker dies is retried on a new worker by Ray; either way its file is written whole, once.

The output folder holds `_rtmo_job.json`, the job's fingerprint (its blocks, weights and
settings): running the same job again skips the blocks already written, and another job is
refused the folder rather than mixed into it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rtmo.options import NMS_THR, SCORE_THR, check_interval, check_positive_int

if TYPE_CHECKING:
    from rtmo.distributed.blocks import Block, SourcesInput

INSTALL_HINT = "pip install 'rtmo[ray]' (or pip install 'ray[data]')"
MANIFEST = "_rtmo_job.json"
DEFAULT_BLOCK_SIZE = 256
DEFAULT_MAX_RETRIES = 3
DTYPES = ("fp32", "fp16", "bf16")


class RayMissingError(ImportError):
    """Ray Data is not installed; the message says how to install it."""


class OtherJobError(ValueError):
    """The output folder holds the output of a different job."""


class ResourcesError(ValueError):
    """The workers asked for do not fit on the local Ray."""


@dataclass
class DatasetSummary:
    """What a `predict_dataset` run did.

    blocks: the job's blocks; written: those this run wrote; skipped: those already in the output
    folder (an earlier run of the same job). rows, errors, people: of the blocks written by this
    run (errors: images or frames that could not be read, whose messages are in `failures`).
    seconds: the run's wall time from the start of the dataset; worker_seconds: the time workers
    spent on blocks, summed (rows / worker_seconds is one worker's throughput).
    """

    out: str
    blocks: int
    written: int = 0
    skipped: int = 0
    rows: int = 0
    errors: int = 0
    people: int = 0
    seconds: float = 0.0
    worker_seconds: float = 0.0
    failures: list[str] = field(default_factory=list)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    @property
    def rows_per_worker_s(self) -> float:
        return self.rows / self.worker_seconds if self.worker_seconds > 0 else 0.0


def import_ray() -> Any:
    """The `ray` module with Ray Data, or RayMissingError saying how to install it."""
    try:
        import pyarrow  # noqa: F401
        import ray
        import ray.data
    except ImportError as err:
        raise RayMissingError(f"Ray Data is not installed: {INSTALL_HINT}") from err
    return ray


def predict_dataset(
    sources: SourcesInput,
    checkpoint: str | os.PathLike | None,
    out: str | os.PathLike,
    *,
    model: str | None = None,
    num_workers: int = 1,
    gpus_per_worker: float = 0.0,
    cpus_per_worker: float = 1.0,
    batch_size: int = 8,
    block_size: int = DEFAULT_BLOCK_SIZE,
    output_format: str = "parquet",
    score_thr: float = 0.1,
    nms_thr: float = 0.65,
    max_det: int = 100,
    dtype: str = "fp32",
    backend: str = "auto",
    use_kernels: bool = True,
    trust_checkpoint: bool = False,
    ray_address: str | None = None,
    max_retries: int = DEFAULT_MAX_RETRIES,
) -> DatasetSummary:
    """Poses in every image and video frame of `sources`, on `num_workers` Ray actors, written to
    the folder (or URI) `out` as one file per block, one row per image or frame
    (rtmo.distributed.rows: source, frame, width, height, people, error).

    sources: image files, folders, glob patterns and video files (local paths: on a cluster, a
    filesystem every node mounts), image URIs and URI prefixes (s3://, gs://, ... through
    pyarrow), or a list of these. Videos are cut into ranges of `block_size` frames, each a task.
    checkpoint: an official mmpose RTMO checkpoint, read here and shipped to the workers; None
    runs random weights of `model` (the same in every worker; for benchmarking).
    gpus_per_worker: GPUs per actor (0: CPU workers; 0.5: two actors share a GPU).
    block_size: images or frames per block, the unit of work, retry, output file and resume; a
    multiple of batch_size keeps the batches those of a single-process `rtmo predict`.
    output_format: "parquet" or "jsonl". ray_address: a running cluster to connect to ("auto",
    "ray://HOST:PORT"), None to start a local Ray; either way, a Ray this process has already
    started or joined is used as it is.
    max_retries: times a block that raised is tried again before the job fails.

    Running the same job again (same sources, weights and settings) writes only the blocks not
    yet written. Raises RayMissingError without Ray Data, SourceError for an unusable source,
    OtherJobError when `out` holds another job's output, ResourcesError when a local Ray cannot
    hold the workers, ValueError for a bad option value.
    """
    ray = import_ray()
    settings = _checked_settings(locals())
    # Imported once Ray is known to be there: they need pyarrow, which comes with it.
    from rtmo.distributed import storage
    from rtmo.distributed.blocks import plan_blocks
    from rtmo.distributed.rows import block_file_name

    blocks = plan_blocks(sources, block_size)
    weights = None if checkpoint is None else Path(checkpoint).read_bytes()
    fs, folder = storage.output_folder(os.fspath(out))
    written = storage.file_names(fs, folder)
    fingerprint = _fingerprint(blocks, weights, settings)
    _claim_folder(fs, folder, written, fingerprint, os.fspath(out))
    pending = [b for b in blocks if block_file_name(b.seq, output_format) not in written]
    summary = DatasetSummary(os.fspath(out), len(blocks), skipped=len(blocks) - len(pending))
    if pending:
        with _ray_session(ray, ray_address) as started_here, _retries(ray, max_retries):
            if started_here:
                _check_fits(ray, num_workers, gpus_per_worker, cpus_per_worker)
            _run_blocks(ray, pending, settings, weights, summary, num_workers,
                        gpus_per_worker, cpus_per_worker)  # fmt: skip
    storage.remove_partials(fs, folder)
    return summary


def _checked_settings(given: dict[str, Any]) -> Any:
    """The workers' settings, every value checked (ValueError/TypeError naming the argument)."""
    from rtmo.distributed.rows import FORMATS
    from rtmo.distributed.storage import is_uri
    from rtmo.distributed.worker import FAULT_ENV, WorkerSettings

    out = os.fspath(given["out"])
    for name in ("num_workers", "batch_size", "block_size", "max_det"):
        check_positive_int(name, given[name])
    if given["max_retries"] < 0:
        raise ValueError(f"max_retries must be at least 0, got {given['max_retries']}")
    for name in ("gpus_per_worker", "cpus_per_worker"):
        if not given[name] >= 0:
            raise ValueError(f"{name} must be at least 0, got {given[name]}")
    if given["output_format"] not in FORMATS:
        raise ValueError(
            f"output_format must be one of {', '.join(FORMATS)}, got {given['output_format']!r}"
        )
    if given["dtype"] not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {given['dtype']!r}")
    gpus = given["gpus_per_worker"] > 0
    if given["dtype"] != "fp32" and not gpus:
        raise ValueError(f"dtype {given['dtype']} needs GPU workers (gpus_per_worker > 0)")
    if given["checkpoint"] is not None and not Path(given["checkpoint"]).is_file():
        raise FileNotFoundError(f"{given['checkpoint']}: no such checkpoint file")
    return WorkerSettings(
        model=given["model"],
        device="cuda" if gpus else "cpu",
        dtype=given["dtype"],
        backend=given["backend"],
        use_kernels=given["use_kernels"],
        trust_checkpoint=given["trust_checkpoint"],
        score_thr=check_interval("score_thr", given["score_thr"], SCORE_THR),
        nms_thr=check_interval("nms_thr", given["nms_thr"], NMS_THR),
        max_det=given["max_det"],
        batch_size=given["batch_size"],
        output_format=given["output_format"],
        out=out if is_uri(out) else os.path.abspath(out),  # workers have other working folders
        fault_marker=os.environ.get(FAULT_ENV),
    )


def _fingerprint(blocks: list[Block], weights: bytes | None, settings: Any) -> str:
    """What makes two runs the same job: the blocks, the weights and what changes the rows."""
    digest = hashlib.sha256()
    digest.update(hashlib.sha256(weights).digest() if weights is not None else b"random")
    kept = ("model", "dtype", "backend", "use_kernels", "score_thr", "nms_thr", "max_det",
            "batch_size", "output_format")  # fmt: skip
    digest.update(json.dumps({k: getattr(settings, k) for k in kept}).encode())
    for block in blocks:
        digest.update(block.to_json().encode())
    return digest.hexdigest()


def _claim_folder(fs: Any, folder: str, names: set[str], fingerprint: str, out: str) -> None:
    """Writes the job's manifest into the output folder (whose files are `names`); OtherJobError
    when the folder holds blocks of another job (a manifest alone, of a job that wrote nothing,
    is replaced)."""
    from rtmo.distributed import storage

    path = f"{folder}/{MANIFEST}"
    if MANIFEST in names:
        with fs.open_input_stream(path) as stream:
            found = json.loads(stream.read()).get("fingerprint")
        if found == fingerprint:
            return
        if any(name.startswith("part-") for name in names):
            raise OtherJobError(
                f"{out} holds the output of another job (other sources, weights or settings); "
                "give another output folder, or empty this one to start again"
            )
    manifest = {"fingerprint": fingerprint, "created": time.strftime("%Y-%m-%d %H:%M:%S")}
    storage.write_whole(fs, path, (json.dumps(manifest) + "\n").encode())


@contextlib.contextmanager
def _ray_session(ray: Any, address: str | None) -> Iterator[bool]:
    """Ray as this process has it, or connected to `address` (started locally when None) for the
    job and shut down after it. Yields whether this started a local Ray."""
    if ray.is_initialized():
        yield False
        return
    ray.init(address=address)
    try:
        yield address is None
    finally:
        ray.shutdown()


def _check_fits(ray: Any, num_workers: int, gpus_per_worker: float, cpus_per_worker: float) -> None:
    """ResourcesError when a local Ray cannot hold the workers (Ray would wait for them forever;
    a cluster with an autoscaler is not checked: it grows to fit)."""
    have = ray.cluster_resources()
    need = {"CPU": num_workers * cpus_per_worker, "GPU": num_workers * gpus_per_worker}
    for resource, amount in need.items():
        if amount > have.get(resource, 0):
            raise ResourcesError(
                f"{num_workers} workers need {amount:g} {resource}s, this machine's Ray has "
                f"{have.get(resource, 0):g}"
            )


@contextlib.contextmanager
def _retries(ray: Any, max_retries: int) -> Iterator[None]:
    """Ray Data retries a block that raised, in the same worker, `max_retries` times (it retries a
    block whose worker died on a new worker by itself). Restores the context afterwards."""
    context = ray.data.DataContext.get_current()
    saved = (context.retried_map_errors, context.max_map_retries)
    context.retried_map_errors, context.max_map_retries = max_retries > 0, max_retries
    try:
        yield
    finally:
        context.retried_map_errors, context.max_map_retries = saved


def _run_blocks(
    ray: Any,
    blocks: list[Block],
    settings: Any,
    weights: bytes | None,
    summary: DatasetSummary,
    num_workers: int,
    gpus_per_worker: float,
    cpus_per_worker: float,
) -> None:
    from rtmo.distributed.worker import BlockWorker

    started = time.perf_counter()
    weights_ref = None if weights is None else ray.put(weights)
    dataset = ray.data.from_items(
        [{"block": block.to_json()} for block in blocks], override_num_blocks=len(blocks)
    ).map_batches(
        BlockWorker,
        fn_constructor_args=(settings, weights_ref),
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=num_workers),
        num_cpus=cpus_per_worker,
        num_gpus=gpus_per_worker,
    )
    for stats in dataset.iter_rows():
        summary.written += 1
        summary.rows += int(stats["rows"])
        summary.errors += int(stats["errors"])
        summary.people += int(stats["people"])
        summary.worker_seconds += float(stats["seconds"])
        if stats["messages"]:
            summary.failures += str(stats["messages"]).split("\n")
    summary.seconds = time.perf_counter() - started
