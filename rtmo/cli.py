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
        "source", help="an image, a folder of images, a video file or a webcam index (e.g. 0)"
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


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
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


def _run_predict(args: argparse.Namespace) -> int:
    from rtmo.sources import resolve_source

    source = resolve_source(args.source)
    if args.checkpoint is None and not args.random_weights:
        raise UsageError(_checkpoint_help(args.model))
    if args.checkpoint is not None and args.random_weights:
        raise UsageError("give either --checkpoint or --random-weights, not both")
    if source.kind == "folder" and args.out.resolve() == source.path.resolve():
        raise UsageError(f"--out {args.out} is the source folder; choose another output folder")
    predictor = _build_predictor(args)
    run = _Run()
    with _jsonl_output(args.out / f"{source.name}.jsonl" if args.json else None) as jsonl:
        run.jsonl = jsonl
        if source.kind in ("image", "folder"):
            _predict_images(predictor, source.images, args, run)
        else:
            _predict_video(predictor, source, args, run)
    return _summarize(run, args)


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
def _jsonl_output(path: Path | None) -> Iterator[IO[str] | None]:
    if path is None:
        yield None
        return
    from rtmo.sources import atomic_output

    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        yield handle


def _predict_images(predictor: Any, paths: Sequence[Path], args: argparse.Namespace, run: _Run):
    from tqdm import tqdm

    from rtmo.sources import SourceError, read_image, write_image
    from rtmo.video import batched

    progress = tqdm(total=len(paths), unit="img", disable=len(paths) < 2, file=sys.stderr)
    for batch_paths in batched(paths, args.batch_size):
        loaded = []
        for path in batch_paths:
            try:
                loaded.append((path, read_image(path)))
            except SourceError as err:
                run.fail({"file": str(path)}, str(err))
        results = predictor([image for _, image in loaded]) if loaded else []
        for (path, image), poses in zip(loaded, results, strict=True):
            run.record({"file": str(path)}, poses)
            if not args.no_save:
                write_image(args.out / path.name, poses.plot(image, kpt_thr=args.kpt_thr))
        progress.update(len(batch_paths))
    progress.close()


def _predict_video(predictor: Any, source: Any, args: argparse.Namespace, run: _Run) -> None:
    from tqdm import tqdm

    from rtmo.video import VideoReader, batched, prefetch, video_writer

    reader = VideoReader(source.camera if source.kind == "webcam" else source.path)
    out_path = args.out / f"{source.name}.mp4"
    writer_context = (
        contextlib.nullcontext() if args.no_save else video_writer(out_path, reader.fps)
    )
    progress = tqdm(total=reader.frame_count, unit="frame", file=sys.stderr)
    frames = contextlib.closing(prefetch(reader, depth=2 * args.batch_size))
    try:
        with writer_context as writer, frames as ordered_frames:
            try:
                for batch in batched(ordered_frames, args.batch_size):
                    results = predictor([frame for _, frame in batch])
                    for (index, frame), poses in zip(batch, results, strict=True):
                        run.record({"frame": index}, poses)
                        if writer is not None:
                            writer.write(poses.plot(frame, kpt_thr=args.kpt_thr))
                    progress.update(len(batch))
            except KeyboardInterrupt:
                if source.kind != "webcam":
                    raise
                # Ctrl+C is how a webcam stream ends: keep what was recorded.
    finally:
        progress.close()
        reader.close()
    for index in reader.unreadable:
        run.fail({"frame": index}, f"{source.path}: frame {index} cannot be decoded")


def _summarize(run: _Run, args: argparse.Namespace) -> int:
    print(
        f"rtmo: {run.processed} processed, {run.people} people found"
        + ("" if args.no_save and not args.json else f"; results in {args.out}"),
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
        "poses in images, folders, videos or a webcam",
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
