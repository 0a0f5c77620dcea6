"""`rtmo predict --ray`: the predict command's sources and options run as a `predict_dataset` job.

Options that need one process with frames in order, or pictures, do not go with --ray and are
refused by name: --track (and its options), --csv, --save-crops, --show. --device is refused
too: a worker's device follows --gpus-per-worker. Annotated images are not written (--no-save
is implied); --json writes JSON lines in place of Parquet.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rtmo.distributed.job import DatasetSummary

# Options of `rtmo predict` that a Ray job cannot honour, by their argparse names.
SINGLE_PROCESS_OPTIONS = (
    "track",
    "track_buffer",
    "smooth",
    "smooth_min_cutoff",
    "smooth_beta",
    "csv",
    "save_crops",
    "show",
    "device",
)


def run_on_ray(args: argparse.Namespace) -> int:
    """Runs the job; exit status 0, or 1 when an image or frame could not be read."""
    from rtmo.cli import EXIT_FAILED, EXIT_OK, UsageError
    from rtmo.commands.predict import check_weights
    from rtmo.distributed.job import (
        DEFAULT_BLOCK_SIZE,
        OtherJobError,
        RayMissingError,
        ResourcesError,
        import_ray,
        predict_dataset,
    )

    _refuse_single_process_options(args)
    check_weights(args)
    gpus = args.gpus_per_worker or 0.0
    _check_precision(args, gpus)
    try:
        import_ray()
    except RayMissingError as err:
        raise UsageError(f"--ray: {err}") from None
    if args.random_weights:
        print(
            f"rtmo: note: {args.model or 'rtmo-s'} with random weights; poses are meaningless",
            file=sys.stderr,
        )
    try:
        summary = predict_dataset(
            args.source,
            args.checkpoint,
            args.out,
            model=args.model,
            num_workers=args.num_workers or 1,
            gpus_per_worker=gpus,
            batch_size=args.batch_size,
            block_size=args.block_size or DEFAULT_BLOCK_SIZE,
            output_format="jsonl" if args.json else "parquet",
            score_thr=args.score_thr,
            nms_thr=args.nms_thr,
            max_det=args.max_det,
            dtype=args.dtype,
            backend=args.backend,
            use_kernels=not args.no_kernels,
            trust_checkpoint=args.trust_checkpoint,
            ray_address=args.ray_address,
        )
    except (OtherJobError, NotADirectoryError) as err:
        raise UsageError(f"--out {err}") from None
    except ResourcesError as err:
        raise UsageError(f"--num-workers {args.num_workers or 1}: {err}") from None
    except ConnectionError as err:
        raise UsageError(f"--ray-address {args.ray_address}: {err}") from None
    _print_summary(summary)
    return EXIT_FAILED if summary.errors else EXIT_OK


def _refuse_single_process_options(args: argparse.Namespace) -> None:
    from rtmo.cli import UsageError

    for option in SINGLE_PROCESS_OPTIONS:
        if getattr(args, option) not in (None, False):
            raise UsageError(
                f"--{option.replace('_', '-')} does not go with --ray"
                + (
                    " (a worker's device follows --gpus-per-worker)"
                    if option == "device"
                    else " (run without --ray for it)"
                )
            )


def _check_precision(args: argparse.Namespace, gpus: float) -> None:
    """--dtype needs GPU workers; --backend must run on the workers' device (checked here for CPU
    workers: the driver may have no GPU to check a GPU backend on)."""
    from rtmo import options
    from rtmo.cli import UsageError

    if args.dtype != "fp32" and gpus == 0:
        raise UsageError(f"--dtype {args.dtype} needs GPU workers (--gpus-per-worker > 0)")
    if gpus == 0:
        try:
            options.check_backend("--backend", args.backend, "cpu")
        except ValueError as err:
            raise UsageError(str(err)) from None


def _print_summary(summary: DatasetSummary) -> None:
    print(
        f"rtmo: {summary.rows} images/frames in {summary.written} blocks, "
        f"{summary.seconds:.1f} s ({summary.rows_per_s:.1f}/s; one worker "
        f"{summary.rows_per_worker_s:.1f}/s), "
        f"{summary.people} people; results in {summary.out}",
        file=sys.stderr,
    )
    if summary.skipped:
        print(
            f"rtmo: {summary.skipped} of {summary.blocks} blocks were already written (skipped)",
            file=sys.stderr,
        )
    if summary.failures:
        print(f"rtmo: {summary.errors} failed:", file=sys.stderr)
        for message in summary.failures:
            print(f"  {message}", file=sys.stderr)
