"""`rtmo data synth`: the procedural people dataset (images + COCO keypoints) or, with --motion,
videos of moving people with per-frame COCO annotations and track ids.

    rtmo data synth --out synth-val --images 200 --seed 1
    rtmo data synth --out synth-tracks --motion --sequences 4 --frames 150 --seed 2

Only argparse and the standard library are imported here; the generator (numpy, OpenCV) is
imported when the command runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rtmo.commands import int_at_least


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="data_action", metavar="ACTION", required=True)
    synth = actions.add_parser(
        "synth",
        help="procedural people: images + COCO keypoints, or videos with track ids (--motion)",
        description="Write a procedural people dataset (COCO keypoint format) to a new folder.",
    )
    synth.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    synth.add_argument("--out", type=Path, required=True, help="new (or empty) output folder")
    synth.add_argument(
        "--images", type=int_at_least(1), help="number of images (not with --motion)"
    )
    synth.add_argument("--seed", type=int_at_least(0), default=0, help="random seed (default 0)")
    synth.add_argument(
        "--size",
        type=_size,
        default=None,
        help="WxH of every image, e.g. 640x480 (default: varied around 640x480; 640x480 with "
        "--motion)",
    )
    synth.add_argument(
        "--max-people", type=int_at_least(1), help="people per image at most (default 30)"
    )
    synth.add_argument(
        "--motion", action="store_true", help="write videos of moving people instead of images"
    )
    synth.add_argument("--sequences", type=int_at_least(1), help="videos to write (default 4)")
    synth.add_argument("--frames", type=int_at_least(1), help="frames per video (default 150)")
    synth.add_argument("--fps", type=_fps, help="frame rate of the videos (default 25)")
    synth.set_defaults(data_run=_run_synth)


def run(args: argparse.Namespace) -> int:
    return args.data_run(args)


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 640x480, got {text!r}")
    width, height = int(parts[0]), int(parts[1])
    if not (32 <= width <= 4096 and 32 <= height <= 4096):
        raise argparse.ArgumentTypeError(f"width and height must be in 32..4096, got {text!r}")
    return width, height


def _fps(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 1 <= value <= 240:
        raise argparse.ArgumentTypeError(f"must be in 1..240, got {text}")
    return value


def _run_synth(args: argparse.Namespace) -> int:
    from rtmo.cli import EXIT_OK, UsageError

    if args.motion:
        for option in ("images", "max_people"):
            if getattr(args, option) is not None:
                raise UsageError(f"--{option.replace('_', '-')} is for still images, not --motion")
    else:
        for option in ("sequences", "frames", "fps"):
            if getattr(args, option) is not None:
                raise UsageError(f"--{option} needs --motion")
        if args.images is None:
            raise UsageError("give --images N (or --motion for videos)")
    try:
        message = _synthesize(args)
    except FileExistsError as err:
        raise UsageError(f"--out: {err}; give a new folder (nothing is overwritten)") from err
    print(f"rtmo: {message}", file=sys.stderr)
    return EXIT_OK


def _synthesize(args: argparse.Namespace) -> str:
    from rtmo.train import synthetic

    if args.motion:
        paths = synthetic.synthesize_sequences(
            args.out,
            args.sequences or 4,
            args.frames or 150,
            args.seed,
            size=args.size or (640, 480),
            fps=args.fps or 25.0,
            progress=True,
        )
        return f"{len(paths)} videos with their annotations in {args.out}"
    path = synthetic.synthesize_dataset(
        args.out,
        args.images,
        args.seed,
        size=args.size,
        max_people=args.max_people or 30,
        progress=True,
    )
    return f"{args.images} images in {args.out / 'images'}, annotations in {path}"
