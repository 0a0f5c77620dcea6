"""`rtmo predict SOURCE`: poses in an image, a folder of images, a video or a webcam.

Outputs go to --out: the annotated images or video under the source's names and, with --json, one
JSON line per image or frame in NAME.jsonl, in input order. Every output file is written under a
temporary name and renamed when complete. Before anything loads, the option values, the source
and the output folder are checked (it can be created and written, and no output would overwrite
an input).

A stop signal (Ctrl+C / SIGINT, SIGTERM, SIGHUP) keeps what is complete: the annotated images
written so far, the video up to the last whole frame, and the JSON lines of the images or frames
done, renamed into place with a last line `{"incomplete": true, "reason": "interrupted by
SIGTERM"}`; the exit status is 128 + the signal. A webcam stream has no end of its own: a stop
signal ends it normally (exit status 0, nothing marked incomplete).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from rtmo.commands import (
    add_checkpoint_arguments,
    device_name,
    in_interval,
    positive_int,
    variant_name,
)
from rtmo.options import KPT_THR, NMS_THR, SCORE_THR

DEFAULT_OUT = "rtmo-output"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source", help="an image, a folder of images, a video file or a webcam index (e.g. 0)"
    )
    parser.add_argument(
        "--model",
        type=variant_name,
        default=None,
        help="variant, e.g. rtmo-t, rtmo-s, rtmo-m, rtmo-l (default: found from the checkpoint; "
        "rtmo-s with --random-weights)",
    )
    add_checkpoint_arguments(parser)
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="run without a checkpoint (meaningless poses; for benchmarking and testing)",
    )
    parser.add_argument(
        "--device", type=device_name, default=None, help="cpu, cuda, cuda:1 (default: cuda if any)"
    )
    parser.add_argument(
        "--dtype", default="fp32", choices=["fp32", "fp16", "bf16"], help="fp16/bf16 need a GPU"
    )
    parser.add_argument("--backend", default="auto", help="kernel backend (see `rtmo info`)")
    parser.add_argument(
        "--no-kernels",
        action="store_true",
        help="post-process in plain PyTorch as mmpose does, without the fused kernels",
    )
    parser.add_argument("--batch-size", type=positive_int, default=8, help="images per forward")
    parser.add_argument(
        "--score-thr",
        type=in_interval(SCORE_THR),
        default=0.1,
        help=f"person score threshold, in {SCORE_THR} (default 0.1)",
    )
    parser.add_argument(
        "--nms-thr",
        type=in_interval(NMS_THR),
        default=0.65,
        help=f"box IoU for NMS, in {NMS_THR} (default 0.65)",
    )
    parser.add_argument("--max-det", type=positive_int, default=100, help="people per image")
    parser.add_argument(
        "--kpt-thr",
        type=in_interval(KPT_THR),
        default=0.3,
        help=f"keypoint score threshold for drawing, in {KPT_THR} (default 0.3)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path(DEFAULT_OUT), help=f"output folder (default {DEFAULT_OUT})"
    )
    parser.add_argument(
        "--json", action="store_true", help="write predictions as JSON lines to OUT/NAME.jsonl"
    )
    parser.add_argument(
        "--no-save", action="store_true", help="do not write annotated images or video"
    )


def run(args: argparse.Namespace) -> int:
    from rtmo.sources import resolve_source

    _check_options(args)
    source = resolve_source(args.source)
    _refuse_overwriting_inputs(source, args)
    with contextlib.ExitStack() as cleanup:
        if args.json or not args.no_save:
            _enter_output_folder(cleanup, args.out)
        reader = None
        if source.kind in ("video", "webcam"):  # opened before the model: a bad file fails fast
            reader = _open_video(source)
            cleanup.callback(reader.close)
        predictor = build_predictor(args)
        tally = _Run()
        try:
            with _jsonl_output(args.out / f"{source.name}.jsonl" if args.json else None) as jsonl:
                tally.jsonl = jsonl
                if reader is None:
                    _predict_images(predictor, source.images, args, tally)
                else:
                    _predict_video(predictor, source, reader, args, tally)
        except KeyboardInterrupt:
            _summarize(tally, args, stopped=True)
            raise
    return _summarize(tally, args)


def _check_options(args: argparse.Namespace) -> None:
    """The checks argparse cannot make alone (they need torch or the file system), before any
    model loads; sets args.device to the resolved device."""
    from rtmo import options
    from rtmo.cli import UsageError

    if args.checkpoint is None and not args.random_weights:
        raise UsageError(_checkpoint_help(args.model))
    if args.checkpoint is not None and args.random_weights:
        raise UsageError("give either --checkpoint or --random-weights, not both")
    if args.checkpoint is not None:
        _check_checkpoint_path(args.checkpoint)
    try:
        args.device = options.check_device("--device", args.device or options.default_device())
        options.check_backend("--backend", args.backend, args.device.partition(":")[0])
    except ValueError as err:
        raise UsageError(str(err)) from None
    if args.dtype != "fp32" and not args.device.startswith("cuda"):
        raise UsageError(
            f"--dtype {args.dtype} needs a CUDA device (--device cuda); on {args.device} use fp32"
        )


def _check_checkpoint_path(path: Path) -> None:
    """UsageError when --checkpoint names no file; a model name is told how to get its file."""
    from rtmo.cli import UsageError
    from rtmo.config import from_name

    if path.is_file():
        return
    try:
        config = from_name(str(path))
    except ValueError:
        what = "is a folder, not a checkpoint file" if path.is_dir() else "no such checkpoint file"
        raise UsageError(f"--checkpoint {path}: {what}") from None
    raise UsageError(
        f"--checkpoint {path}: that is a model name, not a file. Download its checkpoint from "
        f"{config.checkpoint_url} and pass the file, or give --model {path} --random-weights to "
        "run with random weights"
    )


def _checkpoint_help(variant: str | None) -> str:
    """Where the official checkpoints are, for the message of a predict without --checkpoint."""
    from rtmo.config import VARIANTS, from_name

    configs = [from_name(variant)] if variant is not None else list(VARIANTS.values())
    listing = "\n".join(f"  {cfg.name:<22} {cfg.checkpoint_url}" for cfg in configs)
    return (
        "no --checkpoint given. The official RTMO checkpoints are published by OpenMMLab:\n"
        f"{listing}\n"
        "Download one (or call rtmo.config.download_checkpoint(NAME) in Python) and pass it with "
        "--checkpoint FILE.pth, or give --random-weights to run with random weights (meaningless "
        "poses, for benchmarking)."
    )


def _refuse_overwriting_inputs(source: Any, args: argparse.Namespace) -> None:
    """UsageError when an annotated output would land on an input file (an image, or a video
    whose name and folder match the output's)."""
    from rtmo.cli import UsageError

    if args.no_save:
        return
    if source.kind == "video":
        planned = [(args.out / f"{source.name}.mp4", source.path)]
    else:
        planned = [(args.out / path.name, path) for path in source.images]
    for target, original in planned:
        if target.exists() and target.samefile(original):
            raise UsageError(
                f"--out {args.out}: the output {target} would overwrite the input {original}; "
                "choose another output folder (or --no-save)"
            )


def _enter_output_folder(cleanup: contextlib.ExitStack, path: Path) -> None:
    """Creates the output folder (removed at the end if left empty) or raises UsageError."""
    from rtmo.cli import UsageError
    from rtmo.sources import output_folder

    try:
        cleanup.enter_context(output_folder(path))
    except OSError as err:
        reason = err.strerror or str(err)
        raise UsageError(f"--out {path}: cannot use it as the output folder ({reason})") from None


def _open_video(source: Any) -> Any:
    from rtmo.video import VideoReader

    return VideoReader(source.camera if source.kind == "webcam" else source.path)


def build_predictor(args: argparse.Namespace) -> Any:
    from rtmo.predictor import RTMO

    options = {"device": args.device, "dtype": args.dtype, "backend": args.backend}
    options["use_kernels"] = not args.no_kernels
    options.update(score_thr=args.score_thr, nms_thr=args.nms_thr, max_det=args.max_det)
    if args.checkpoint is not None:
        return RTMO.from_checkpoint(
            args.checkpoint, args.model, trust_checkpoint=args.trust_checkpoint, **options
        )
    print(
        f"rtmo: note: {args.model or 'rtmo-s'} with random weights; poses are meaningless",
        file=sys.stderr,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return RTMO(args.model or "rtmo-s", **options)


@dataclass
class _Run:
    """Counts and failures of one predict run, and its JSON lines output."""

    processed: int = 0
    people: int = 0
    failures: list[str] = field(default_factory=list)
    jsonl: IO[str] | None = None

    def record(self, key: dict[str, Any], poses: Any) -> None:
        self.processed += 1
        self.people += len(poses)
        if self.jsonl is not None:
            self.jsonl.write(json.dumps({**key, **poses.to_dict()}) + "\n")

    def fail(self, key: dict[str, Any], message: str) -> None:
        from tqdm import tqdm

        self.failures.append(message)
        tqdm.write(f"rtmo: error: {message}", file=sys.stderr)
        if self.jsonl is not None:
            self.jsonl.write(json.dumps({**key, "error": message}) + "\n")


@contextlib.contextmanager
def _jsonl_output(path: Path | None) -> Iterator[IO[str] | None]:
    """The JSON lines file, complete or absent; on a stop signal the lines written so far are kept
    with a last line marking the file incomplete."""
    if path is None:
        yield None
        return
    from rtmo.sources import atomic_output

    with (
        atomic_output(path, keep_on=(KeyboardInterrupt,)) as tmp,
        open(tmp, "w", encoding="utf-8") as handle,
    ):
        try:
            yield handle
        except KeyboardInterrupt as stop:
            handle.write(json.dumps({"incomplete": True, "reason": _stop_reason(stop)}) + "\n")
            raise


def _stop_reason(stop: KeyboardInterrupt) -> str:
    from rtmo.cli import Interrupted

    return f"interrupted by {stop.name if isinstance(stop, Interrupted) else 'SIGINT'}"


def _predict_images(
    predictor: Any, paths: Sequence[Path], args: argparse.Namespace, run: _Run
) -> None:
    """Images in batches; each image's annotated copy is written before its JSON line, and the
    lines (results and errors) follow the input order."""
    from tqdm import tqdm

    from rtmo.sources import SourceError, read_image, write_image
    from rtmo.video import batched

    progress = tqdm(total=len(paths), unit="img", disable=len(paths) < 2, file=sys.stderr)
    try:
        for batch_paths in batched(paths, args.batch_size):
            images: list[Any] = []
            errors: list[str | None] = []
            for path in batch_paths:
                try:
                    images.append(read_image(path))
                    errors.append(None)
                except SourceError as err:
                    errors.append(str(err))
            results = iter(predictor(images) if images else [])
            loaded = iter(images)
            for path, error in zip(batch_paths, errors, strict=True):
                if error is not None:
                    run.fail({"file": str(path)}, error)
                    continue
                poses, image = next(results), next(loaded)
                if not args.no_save:
                    write_image(args.out / path.name, poses.plot(image, kpt_thr=args.kpt_thr))
                run.record({"file": str(path)}, poses)
            progress.update(len(batch_paths))
    finally:
        progress.close()


def _predict_video(
    predictor: Any, source: Any, reader: Any, args: argparse.Namespace, run: _Run
) -> None:
    from tqdm import tqdm

    from rtmo.video import batched, prefetch, video_writer

    out_path = args.out / f"{source.name}.mp4"
    writer_context = (
        contextlib.nullcontext()
        if args.no_save
        else video_writer(out_path, reader.fps, keep_on_interrupt=True)
    )
    progress = tqdm(total=reader.frame_count, unit="frame", file=sys.stderr)
    frames = contextlib.closing(prefetch(reader, depth=2 * args.batch_size))
    try:
        with writer_context as writer, frames as ordered_frames:
            try:
                for batch in batched(ordered_frames, args.batch_size):
                    results = predictor([frame for _, frame in batch])
                    for (index, frame), poses in zip(batch, results, strict=True):
                        if writer is not None:
                            writer.write(poses.plot(frame, kpt_thr=args.kpt_thr))
                        run.record({"frame": index}, poses)
                    progress.update(len(batch))
            except KeyboardInterrupt:
                if source.kind != "webcam":
                    raise
                # A stop signal is how a webcam stream ends: keep what was recorded.
    finally:
        progress.close()
    for index in reader.unreadable:
        run.fail({"frame": index}, f"{source.path}: frame {index} cannot be decoded")


def _summarize(run: _Run, args: argparse.Namespace, stopped: bool = False) -> int:
    from rtmo.cli import EXIT_FAILED, EXIT_OK

    kept = "" if args.no_save and not args.json else f"; results in {args.out}"
    if stopped:
        kept += " (stopped early: the outputs hold what was complete)"
    print(f"rtmo: {run.processed} processed, {run.people} people found{kept}", file=sys.stderr)
    if not run.failures:
        return EXIT_OK
    print(f"rtmo: {len(run.failures)} failed:", file=sys.stderr)
    for message in run.failures:
        print(f"  {message}", file=sys.stderr)
    return EXIT_FAILED
