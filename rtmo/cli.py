"""The `rtmo` command: `rtmo predict SOURCE ...`, `rtmo info`, `rtmo export`, `rtmo eval`.

Subcommands live in COMMANDS; a new one is a `Command` (name, help, a function adding its
arguments, a function running it and returning the exit status) appended there.

Exit status: 0 success, 1 an input failed or an error, 2 a usage error (bad argument, missing or
unsupported source), 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from rtmo.commands import data as data_command
from rtmo.commands import eval as eval_command
from rtmo.commands import models as models_command

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
DEFAULT_OUT = "rtmo-output"


class UsageError(Exception):
    """The command line asks for something that cannot be done; the message says what to do."""


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# ----------------------------------------------------------------------------------------- predict


def _add_predict_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source",
        nargs="+",
        help="images, folders of images, video files, webcam indices (e.g. 0) or glob patterns "
        '(quoted: "clips/*.mp4")',
    )
    parser.add_argument(
        "--model",
        default=None,
        help="variant, e.g. rtmo-t, rtmo-s, rtmo-m, rtmo-l (default: found from the checkpoint; "
        "rtmo-s with --random-weights)",
    )
    parser.add_argument("--checkpoint", type=Path, help="official mmpose RTMO checkpoint (.pth)")
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="run without a checkpoint (meaningless poses; for benchmarking and testing)",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if any)")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--backend", default="auto", help="kernel backend (see `rtmo info`)")
    parser.add_argument(
        "--no-kernels",
        action="store_true",
        help="post-process in plain PyTorch as mmpose does, without the fused kernels",
    )
    parser.add_argument("--batch-size", type=_positive_int, default=8, help="images per forward")
    parser.add_argument("--score-thr", type=float, default=0.1, help="person score threshold")
    parser.add_argument("--nms-thr", type=float, default=0.65, help="box IoU for NMS")
    parser.add_argument("--max-det", type=_positive_int, default=100, help="people per image")
    parser.add_argument(
        "--kpt-thr", type=float, default=0.3, help="keypoint score threshold for drawing"
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
        type=_non_negative_int,
        default=None,
        help="frames a person may be unseen and keep their id (default 30)",
    )
    tracking.add_argument(
        "--smooth", choices=["one-euro"], default=None, help="smooth tracked keypoints over time"
    )
    tracking.add_argument(
        "--smooth-min-cutoff",
        type=_positive_float,
        default=None,
        help="One-Euro cutoff of a still keypoint in Hz (default 1.0; lower: smoother)",
    )
    tracking.add_argument(
        "--smooth-beta",
        type=_non_negative_float,
        default=None,
        help="One-Euro speed coefficient (default 3.0; higher: less lag on fast motion)",
    )


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def _checkpoint_help(variant: str | None) -> str:
    """Where the official checkpoints are, for the message of a predict without --checkpoint."""
    from rtmo.config import VARIANTS, from_name

    if variant is not None:
        try:
            configs = [from_name(variant)]
        except ValueError as err:
            raise UsageError(str(err)) from err
    else:
        configs = list(VARIANTS.values())
    listing = "\n".join(f"  {cfg.name:<22} {cfg.checkpoint_url}" for cfg in configs)
    return (
        "no --checkpoint given. The official RTMO checkpoints are published by OpenMMLab:\n"
        f"{listing}\n"
        "Download one (or call rtmo.config.download_checkpoint(NAME) in Python) and pass it with "
        "--checkpoint FILE.pth, or give --random-weights to run with random weights (meaningless "
        "poses, for benchmarking)."
    )


@dataclass
class _Run:
    """Counts, timings and failures of one predict run, and the current source's outputs."""

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


def _run_predict(args: argparse.Namespace) -> int:
    import time

    from rtmo.sources import resolve_sources

    _check_predict_options(args)
    sources = resolve_sources(args.source)
    if args.checkpoint is None and not args.random_weights:
        raise UsageError(_checkpoint_help(args.model))
    if args.checkpoint is not None and args.random_weights:
        raise UsageError("give either --checkpoint or --random-weights, not both")
    for source in sources:
        if source.kind == "folder" and args.out.resolve() == source.path.resolve():
            raise UsageError(f"--out {args.out} is the source folder; choose another output folder")
        if source.kind == "images" and args.out.resolve() in {
            p.parent.resolve() for p in source.images
        }:
            raise UsageError(f"--out {args.out} holds source images; choose another output folder")
    predictor = _build_predictor(args)
    window = _open_window(args.show)
    run = _Run()
    start = time.perf_counter()
    try:
        for source in sources:
            _predict_source(predictor, source, args, run, window)
            if run.stopped:
                break
    finally:
        if window is not None:
            window.close()
    return _summarize(run, args, time.perf_counter() - start)


def _check_predict_options(args: argparse.Namespace) -> None:
    """Options that only mean something with another one."""
    if not args.track:
        for option in ("track_buffer", "smooth"):
            if getattr(args, option) is not None:
                raise UsageError(f"--{option.replace('_', '-')} needs --track")
    if args.smooth is None:
        for option in ("smooth_min_cutoff", "smooth_beta"):
            if getattr(args, option) is not None:
                raise UsageError(f"--{option.replace('_', '-')} needs --smooth one-euro")


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


def _build_predictor(args: argparse.Namespace) -> Any:
    from rtmo.predictor import RTMO

    options = {"device": args.device, "dtype": args.dtype, "backend": args.backend}
    options["use_kernels"] = not args.no_kernels
    options.update(score_thr=args.score_thr, nms_thr=args.nms_thr, max_det=args.max_det)
    if args.checkpoint is not None:
        return RTMO.from_checkpoint(args.checkpoint, args.model, **options)
    print(
        f"rtmo: note: {args.model or 'rtmo-s'} with random weights; poses are meaningless",
        file=sys.stderr,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return RTMO(args.model or "rtmo-s", **options)


@contextlib.contextmanager
def _text_output(path: Path | None) -> Iterator[IO[str] | None]:
    """A text file written under a temporary name, renamed into place when complete."""
    if path is None:
        yield None
        return
    from rtmo.sources import atomic_output

    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as handle:
        yield handle


def _frames(predictor: Any, source: Any, args: argparse.Namespace) -> Iterator:
    """(frame, people) of one source: tracked (each source with its own ids) or not."""
    options = {"batch_size": args.batch_size, "on_error": "yield"}
    if not args.track:
        return predictor.stream(source, **options)
    smoothing = {"smooth_min_cutoff": args.smooth_min_cutoff, "smooth_beta": args.smooth_beta}
    return predictor.track(
        source, persist=False, track_buffer=30 if args.track_buffer is None else args.track_buffer,
        smooth=args.smooth, **smoothing, **options,
    )  # fmt: skip


def _csv_columns(predictor: Any, key: str, tracked: bool) -> list[str]:
    from rtmo.predictor import layout_of
    from rtmo.results import Poses

    empty = Poses.empty(predictor.config.num_keypoints, (1, 1), **layout_of(predictor.config))
    empty.track_ids = [] if tracked else None
    return [key, *empty.csv_columns()]


def _predict_source(
    predictor: Any, source: Any, args: argparse.Namespace, run: _Run, window: Any
) -> None:
    """Every frame of one source: JSON lines, CSV rows, annotated images or video, crops."""
    import csv

    from tqdm import tqdm

    video = source.kind in ("video", "webcam")
    key = "frame" if video else "file"
    out = args.out
    with contextlib.ExitStack() as stack:
        run.jsonl = stack.enter_context(
            _text_output(out / f"{source.name}.jsonl" if args.json else None)
        )
        table = stack.enter_context(_text_output(out / f"{source.name}.csv" if args.csv else None))
        run.csv = None if table is None else csv.writer(table)
        if run.csv is not None:
            run.csv.writerow(_csv_columns(predictor, key, args.track))
        frames = stack.enter_context(contextlib.closing(_frames(predictor, source, args)))
        progress = stack.enter_context(
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
                run.record(where, poses)
                drawn = (
                    None
                    if args.no_save and window is None
                    else poses.plot(frame.image, kpt_thr=args.kpt_thr)
                )
                if not args.no_save and video:
                    if writer is None:
                        writer = stack.enter_context(
                            _video_output(out / f"{source.name}.mp4", frame.fps)
                        )
                    writer.write(drawn)
                elif not args.no_save:
                    _write_image(out / frame.path.name, drawn)
                if args.save_crops:
                    stem = f"{frame.index:06d}" if video else frame.path.stem
                    _save_crops(out / "crops" / source.name, stem, frame.image, poses)
                if window is not None and not window.show(drawn):
                    run.stopped = True
                    break
        except KeyboardInterrupt:
            if source.kind != "webcam":
                raise
            # Ctrl+C is how a webcam stream ends: keep what was recorded.
        finally:
            run.jsonl = run.csv = None


@contextlib.contextmanager
def _video_output(path: Path, fps: float) -> Iterator[Any]:
    from tqdm import tqdm

    from rtmo.video import describe_codec, video_writer

    with video_writer(path, fps) as writer:
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


def _summarize(run: _Run, args: argparse.Namespace, seconds: float) -> int:
    stages = ", ".join(
        f"{stage} {total / max(run.processed, 1):.1f} ms" for stage, total in run.stage_ms.items()
    )
    rate = run.processed / seconds if seconds > 0 else 0.0
    outputs = args.json or args.csv or args.save_crops or not args.no_save
    print(
        f"rtmo: {run.processed} processed in {seconds:.1f} s ({rate:.1f} images/s"
        + (f"; per image: {stages}" if stages else "")
        + f"), {run.people} people found"
        + (f"; results in {args.out}" if outputs else ""),
        file=sys.stderr,
    )
    if not run.failures:
        return EXIT_OK
    print(f"rtmo: {len(run.failures)} failed:", file=sys.stderr)
    for message in run.failures:
        print(f"  {message}", file=sys.stderr)
    return EXIT_FAILED


# -------------------------------------------------------------------------------------------- info


def _run_info(args: argparse.Namespace) -> int:
    for line in info_lines():
        print(line)
    return EXIT_OK


def info_lines() -> list[str]:
    """Versions, kernel backends, build flags and devices, one item per line."""
    import os

    import cv2
    import numpy as np
    import torch

    import rtmo
    import rtmo_kernels
    from rtmo_kernels import _backend

    lines = [
        f"rtmo {rtmo.__version__}",
        f"python {platform.python_version()} ({platform.platform()})",
        f"torch {torch.__version__} (CUDA {torch.version.cuda or 'none'})",
        f"numpy {np.__version__}, opencv {cv2.__version__}, triton {_version_of('triton')}",
        "kernel backends:",
    ]
    for name, status in rtmo_kernels.backends().items():
        lines.append(f"  {name:<10} {'yes' if status.available else 'no ':<4} {status.reason}")
    ext = _backend.extension()
    lines += [
        "build:",
        f"  rtmo_kernels._C built: {f'yes ({ext.__file__})' if ext else 'no'}",
        f"  CUDA kernels compiled: {'yes' if ext and ext.cuda_kernels_compiled() else 'no'}",
        f"  TORCH_CUDA_ARCH_LIST: {os.environ.get('TORCH_CUDA_ARCH_LIST', '(unset)')}",
        f"  RTMO_KERNELS_BACKEND: {os.environ.get('RTMO_KERNELS_BACKEND', '(unset)')}",
        f"  torch CPU capability: {torch.backends.cpu.get_cpu_capability()}",
        f"  torch CUDA archs: {' '.join(torch.cuda.get_arch_list()) or 'none'}",
        "devices:",
        f"  cpu: {os.cpu_count()} cores, torch threads {torch.get_num_threads()}",
    ]
    for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        props = torch.cuda.get_device_properties(i)
        lines.append(
            f"  cuda:{i}: {props.name}, compute capability {props.major}.{props.minor}, "
            f"{props.total_memory / 2**30:.1f} GiB"
        )
    if not torch.cuda.is_available():
        lines.append("  cuda: no GPU visible")
    return lines


def _version_of(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


# -------------------------------------------------------------------------------------------- main

COMMANDS: list[Command] = [
    Command(
        "predict",
        "poses (and ids with --track) in images, folders, videos, webcams or glob patterns",
        _add_predict_arguments,
        _run_predict,
    ),
    Command(
        "info", "versions, kernel backends, build flags and devices", lambda p: None, _run_info
    ),
    Command(
        "export",
        "the whole model (NMS and DCC inside) as an ONNX file for onnxruntime/TensorRT",
        lambda parser: _export().add_cli_arguments(parser),
        lambda args: _export().run_cli(args),
    ),
    Command(
        "eval",
        "COCO keypoint AP (pycocotools) of a model on an annotated image set, or of a results file",
        eval_command.add_arguments,
        eval_command.run,
    ),
    Command(
        "data",
        "datasets: `rtmo data synth` writes procedural people (COCO keypoints, videos)",
        data_command.add_arguments,
        data_command.run,
    ),
    Command(
        "models",
        "the RTMO variants: sizes, inputs, keypoints and checkpoint URLs",
        models_command.add_arguments,
        models_command.run,
    ),
]


def _export() -> Any:
    import rtmo.export

    return rtmo.export


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rtmo", description="RTMO multi-person pose estimation.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        sub = subparsers.add_parser(command.name, help=command.help, description=command.help)
        sub.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )
        command.add_arguments(sub)
        sub.set_defaults(run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `rtmo` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("rtmo: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:
        if args.debug:
            raise
        from rtmo.sources import SourceError

        usage = isinstance(err, (UsageError, SourceError, FileNotFoundError))
        print(f"rtmo: error: {_describe(err)}", file=sys.stderr)
        if not usage:
            print("rtmo: run with --debug to see the traceback", file=sys.stderr)
        return EXIT_USAGE if usage else EXIT_FAILED


def _describe(err: Exception) -> str:
    """The message of an error, with its type where the message alone could be cryptic."""
    from rtmo.sources import SourceError

    if isinstance(err, (UsageError, SourceError, OSError, ValueError)) and str(err):
        return str(err)
    return f"{type(err).__name__}: {err}"


if __name__ == "__main__":
    sys.exit(main())
