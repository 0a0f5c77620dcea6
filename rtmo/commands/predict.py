"""`rtmo predict SOURCE [SOURCE ...]`: poses (and, with --track, ids across frames) in images,
folders of images, videos, webcams and glob patterns.

Outputs go to --out, per source (NAME: the file stem, the folder's name, the folder of a
pattern's images, or webcamN): the annotated images or video under the source's names; with
--json one JSON line per image or frame in NAME.jsonl, with --csv one row per person in NAME.csv,
both in input order (an unreadable video frame in its place, by its position in the file); with
--save-crops each person's box in crops/NAME/. Every output file is written under a temporary
name and renamed when complete. Before anything loads, the option values, the sources (a video or
camera is opened) and the output folder are checked (it can be created and written, and no output
would overwrite an input). The run ends with a summary: images/s and the mean ms per image of each
stage.

A stop signal (Ctrl+C / SIGINT, SIGTERM, SIGHUP) keeps what is complete: the annotated images
written so far, the video up to the last whole frame, and the JSON lines of the images or frames
done, renamed into place with a last line `{"incomplete": true, "reason": "interrupted by
SIGTERM"}` (the CSV keeps its whole rows); the exit status is 128 + the signal. A webcam stream
has no end of its own: a stop signal ends it normally (exit status 0, nothing marked incomplete).

With --ray the sources run as a Ray Data job instead (rtmo.distributed.command).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from rtmo.commands import (
    add_checkpoint_arguments,
    check_dtype_option,
    device_name,
    in_interval,
    positive_int,
    variant_name,
)
from rtmo.options import KPT_THR, NMS_THR, SCORE_THR, Interval

DEFAULT_OUT = "rtmo-output"
DEFAULT_TRACK_BUFFER = 30
POSITIVE = Interval(0.0, math.inf, low_closed=False, high_closed=False)
NON_NEGATIVE = Interval(0.0, math.inf, high_closed=False)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source",
        nargs="+",
        help="images, folders of images, video files, webcam indices (e.g. 0) or glob patterns "
        '(quoted: "clips/*.mp4")',
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
        "--dtype",
        default="fp32",
        choices=["fp32", "fp16", "bf16"],
        help="precision of the network: bf16 on a GPU or a CPU with native bfloat16 (see `rtmo "
        "info`), fp16 on a GPU (default fp32)",
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
    parser.add_argument(
        "--max-det",
        type=positive_int,
        default=100,
        help="people per image (at most one per prior: a larger value takes the priors' count)",
    )
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
    parser.add_argument(
        "--csv", action="store_true", help="write one row per person to OUT/NAME.csv"
    )
    parser.add_argument(
        "--save-crops", action="store_true", help="write each person's box to OUT/crops/NAME/"
    )
    parser.add_argument(
        "--show", action="store_true", help="show the results in a window (q or Esc stops)"
    )
    tracking = parser.add_argument_group("tracking (videos, webcams, image sequences)")
    tracking.add_argument(
        "--track", action="store_true", help="give people ids that persist across frames"
    )
    tracking.add_argument(
        "--track-buffer",
        type=_frame_count,
        default=None,
        help=f"frames a person may be unseen and keep their id (default {DEFAULT_TRACK_BUFFER})",
    )
    tracking.add_argument(
        "--smooth", choices=["one-euro"], default=None, help="smooth tracked keypoints over time"
    )
    tracking.add_argument(
        "--smooth-min-cutoff",
        type=in_interval(POSITIVE),
        default=None,
        help="One-Euro cutoff of a still keypoint in Hz (default 1.0; lower: smoother)",
    )
    tracking.add_argument(
        "--smooth-beta",
        type=in_interval(NON_NEGATIVE),
        default=None,
        help="One-Euro speed coefficient (default 3.0; higher: less lag on fast motion)",
    )
    _add_ray_arguments(parser)


def _add_ray_arguments(parser: argparse.ArgumentParser) -> None:
    """--ray and its options (rtmo.distributed.command runs them)."""
    ray = parser.add_argument_group(
        "many workers on Ray Data",
        "image and video files; one row per image or frame in Parquet files in --out (JSON lines "
        "with --json), nothing annotated",
    )
    ray.add_argument(
        "--ray", action="store_true", help="run on Ray workers (needs pip install 'rtmo[ray]')"
    )
    ray.add_argument(
        "--ray-address",
        default=None,
        help="a running Ray cluster: auto (the one this machine belongs to) or ray://HOST:PORT "
        "(default: a local Ray on this machine)",
    )
    ray.add_argument(
        "--num-workers",
        type=positive_int,
        default=None,
        help="workers, each with a model (default 1)",
    )
    ray.add_argument(
        "--gpus-per-worker",
        type=in_interval(NON_NEGATIVE),
        default=None,
        help="GPUs each worker holds, 0.5 to share one between two (default 0: CPU workers)",
    )
    ray.add_argument(
        "--block-size",
        type=positive_int,
        default=None,
        help="images or video frames per task and output file; a re-run skips the files written "
        "(default 256)",
    )


def _frame_count(text: str) -> int:
    """An argparse `type` accepting an int >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an int >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def run(args: argparse.Namespace) -> int:
    from rtmo.sources import resolve_sources

    if args.ray:
        from rtmo.distributed.command import run_on_ray

        return run_on_ray(args)
    _check_options(args)
    sources = resolve_sources(args.source)
    for source in sources:
        _refuse_overwriting_inputs(source, args)
    with contextlib.ExitStack() as cleanup:
        if args.json or args.csv or args.save_crops or not args.no_save:
            _enter_output_folder(cleanup, args.out)
        for source in sources:  # opened before the model: a bad file or camera fails fast
            if source.kind in ("video", "webcam"):
                _open_video(source).close()
        predictor = build_predictor(args)
        window = _open_window(args.show)
        if window is not None:
            cleanup.callback(window.close)
        tally = _Run(started=time.perf_counter())
        try:
            for source in sources:
                _predict_source(predictor, source, args, tally, window)
                if tally.stopped:
                    break
        except KeyboardInterrupt:
            _summarize(tally, args, stopped=True)
            raise
    return _summarize(tally, args)


def _check_options(args: argparse.Namespace) -> None:
    """The checks argparse cannot make alone (they need torch or the file system), before any
    model loads; sets args.device to the resolved device."""
    from rtmo import options
    from rtmo.cli import UsageError

    check_weights(args)
    try:
        args.device = options.check_device("--device", args.device or options.default_device())
        options.check_backend("--backend", args.backend, args.device.partition(":")[0])
        check_dtype_option(args.dtype, args.device)
    except ValueError as err:
        raise UsageError(str(err)) from None
    needs = {  # option: (the option it needs, whether that is given)
        "track_buffer": ("--track", args.track),
        "smooth": ("--track", args.track),
        "smooth_min_cutoff": ("--smooth one-euro", args.smooth is not None),
        "smooth_beta": ("--smooth one-euro", args.smooth is not None),
        **dict.fromkeys(
            ("ray_address", "num_workers", "gpus_per_worker", "block_size"), ("--ray", False)
        ),
    }
    for option, (needed, given) in needs.items():
        if getattr(args, option) is not None and not given:
            raise UsageError(f"--{option.replace('_', '-')} needs {needed}")


def check_weights(args: argparse.Namespace) -> None:
    """UsageError unless exactly one of --checkpoint (a file) and --random-weights is given."""
    from rtmo.cli import UsageError

    if args.checkpoint is None and not args.random_weights:
        raise UsageError(_checkpoint_help(args.model))
    if args.checkpoint is not None and args.random_weights:
        raise UsageError("give either --checkpoint or --random-weights, not both")
    if args.checkpoint is not None:
        _check_checkpoint_path(args.checkpoint)


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


def _open_window(show: bool) -> Any:
    """The --show window, or None (with a note when there can be none)."""
    if not show:
        return None
    from rtmo.visualize import PreviewWindow

    window = PreviewWindow.open("rtmo")
    if isinstance(window, str):
        print(f"rtmo: note: --show skipped: {window}", file=sys.stderr)
        return None
    return window


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
    """Counts, timings and failures of one predict run, and the current source's outputs."""

    started: float = 0.0  # time.perf_counter() at the start
    processed: int = 0
    people: int = 0
    failures: list[str] = field(default_factory=list)
    stage_ms: dict[str, float] = field(default_factory=dict)
    jsonl: IO[str] | None = None
    csv: Any = None  # a csv.writer
    stopped: bool = False  # the --show window was closed

    def record(self, key: dict[str, Any], poses: Any) -> None:
        self.processed += 1
        self.people += len(poses)
        for stage, ms in poses.speed.items():
            self.stage_ms[stage] = self.stage_ms.get(stage, 0.0) + ms
        if self.jsonl is not None:
            self.jsonl.write(json.dumps({**key, **poses.to_dict()}) + "\n")
        if self.csv is not None:
            self.csv.writerows([*key.values(), *row] for row in poses.to_rows())

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


@contextlib.contextmanager
def _csv_output(path: Path | None, columns: list[str]) -> Iterator[Any]:
    """A csv.writer whose file is complete or absent (on a stop signal, the whole rows so far)."""
    if path is None:
        yield None
        return
    import csv

    from rtmo.sources import atomic_output

    with (
        atomic_output(path, keep_on=(KeyboardInterrupt,)) as tmp,
        open(tmp, "w", encoding="utf-8", newline="") as handle,
    ):
        writer = csv.writer(handle)
        writer.writerow(columns)
        yield writer


def _stop_reason(stop: KeyboardInterrupt) -> str:
    from rtmo.cli import Interrupted

    return f"interrupted by {stop.name if isinstance(stop, Interrupted) else 'SIGINT'}"


def _frames(predictor: Any, source: Any, args: argparse.Namespace) -> Iterator:
    """(frame, people) of one source: tracked (each source with its own ids) or not."""
    options = {"batch_size": args.batch_size, "on_error": "yield"}
    if not args.track:
        return predictor.stream(source, **options)
    buffer = DEFAULT_TRACK_BUFFER if args.track_buffer is None else args.track_buffer
    smoothing = {"smooth_min_cutoff": args.smooth_min_cutoff, "smooth_beta": args.smooth_beta}
    return predictor.track(
        source, persist=False, track_buffer=buffer, smooth=args.smooth, **smoothing, **options
    )


def _csv_columns(predictor: Any, key: str, tracked: bool) -> list[str]:
    from rtmo.postprocessor import layout_of
    from rtmo.results import Poses

    empty = Poses.empty(predictor.config.num_keypoints, (1, 1), **layout_of(predictor.config))
    empty.track_ids = [] if tracked else None
    return [key, *empty.csv_columns()]


def _predict_source(
    predictor: Any, source: Any, args: argparse.Namespace, run: _Run, window: Any
) -> None:
    """Every frame of one source, in order: JSON lines, CSV rows, the annotated images or video,
    crops, the window."""
    from tqdm import tqdm

    video = source.kind in ("video", "webcam")
    key = "frame" if video else "file"
    out = args.out
    csv_path = out / f"{source.name}.csv" if args.csv else None
    with contextlib.ExitStack() as outputs:
        run.jsonl = outputs.enter_context(
            _jsonl_output(out / f"{source.name}.jsonl" if args.json else None)
        )
        columns = _csv_columns(predictor, key, args.track) if args.csv else []
        run.csv = outputs.enter_context(_csv_output(csv_path, columns))
        frames = outputs.enter_context(contextlib.closing(_frames(predictor, source, args)))
        progress = outputs.enter_context(
            tqdm(unit="frame" if video else "img", file=sys.stderr, disable=source.kind == "image")
        )
        writer = None
        try:
            for frame, poses in frames:
                progress.total = frame.total
                progress.update(1)
                where = {key: frame.index if video else str(frame.path or frame.source)}
                if poses is None:
                    run.fail(where, frame.error)
                    continue
                drawn = None
                if window is not None or not args.no_save:
                    drawn = poses.plot(frame.image, kpt_thr=args.kpt_thr)
                if not args.no_save and video:
                    if writer is None:
                        path = out / f"{source.name}.mp4"
                        writer = outputs.enter_context(_video_output(path, frame.fps))
                    writer.write(drawn)
                elif not args.no_save:
                    _write_image(out / frame.path.name, drawn)
                if args.save_crops:
                    stem = f"{frame.index:06d}" if video else frame.path.stem
                    _save_crops(out / "crops" / source.name, stem, frame.image, poses)
                run.record(where, poses)
                if window is not None and not window.show(drawn):
                    run.stopped = True
                    break
        except KeyboardInterrupt:
            if source.kind != "webcam":
                raise
            # A stop signal is how a webcam stream ends: keep what was recorded.
        finally:
            run.jsonl = run.csv = None


@contextlib.contextmanager
def _video_output(path: Path, fps: float) -> Iterator[Any]:
    """The annotated video (kept up to the last whole frame on a stop signal); says its codec."""
    from tqdm import tqdm

    from rtmo.video import describe_codec, video_writer

    with video_writer(path, fps, keep_on_interrupt=True) as writer:
        tqdm.write(f"rtmo: {path}: video codec {describe_codec(writer.codec)}", file=sys.stderr)
        yield writer


def _write_image(path: Path, image: Any) -> None:
    from rtmo.sources import write_image

    write_image(path, image)


def _save_crops(folder: Path, stem: str, image: Any, poses: Any) -> None:
    """Each person's box cut out of the (unannotated) image: FOLDER/STEM_ID.jpg, ID the track id
    when tracked, else the person's rank in the image."""
    from rtmo.sources import write_image

    for i in range(len(poses)):
        crop = poses.crop(image, i)
        if crop.size:
            label = f"id{poses.track_ids[i]}" if poses.track_ids is not None else str(i)
            write_image(folder / f"{stem}_{label}.jpg", crop)


def _summarize(run: _Run, args: argparse.Namespace, stopped: bool = False) -> int:
    from rtmo.cli import EXIT_FAILED, EXIT_OK

    seconds = time.perf_counter() - run.started
    stages = ", ".join(
        f"{stage} {total / max(run.processed, 1):.1f} ms" for stage, total in run.stage_ms.items()
    )
    rate = run.processed / seconds if seconds > 0 else 0.0
    outputs = args.json or args.csv or args.save_crops or not args.no_save
    kept = f"; results in {args.out}" if outputs else ""
    if stopped:
        kept += " (stopped early: the outputs hold what was complete)"
    print(
        f"rtmo: {run.processed} processed in {seconds:.1f} s ({rate:.1f} images/s"
        + (f"; per image: {stages}" if stages else "")
        + f"), {run.people} people found{kept}",
        file=sys.stderr,
    )
    if not run.failures:
        return EXIT_OK
    print(f"rtmo: {len(run.failures)} failed:", file=sys.stderr)
    for message in run.failures:
        print(f"  {message}", file=sys.stderr)
    return EXIT_FAILED
