"""`rtmo train`: train or fine-tune RTMO on a COCO-format keypoint dataset.

    rtmo train --data train.json --images train/ --val val.json --val-images val/ \\
        --model rtmo-t --epochs 30 --batch-size 16 --input-size 320 --out runs/t
    rtmo train ... --checkpoint rtmo-t.pth     # fine-tune (a head for another K is rebuilt)
    rtmo train ... --out runs/t --resume       # continue from runs/t/last.pth
    torchrun --nproc-per-node 2 -m rtmo train ...   # data parallel (gloo on CPU, nccl on GPU)

The keypoint set (K, names, flip pairs, skeleton, OKS sigmas) comes from the annotation file's
category (`--sigmas` where it has none). Only argparse is imported at module level.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from rtmo.commands import (
    add_checkpoint_arguments,
    in_interval,
    int_at_least,
    positive_int,
    variant_name,
)
from rtmo.options import Interval

POSITIVE = Interval(0.0, math.inf, low_closed=False, high_closed=False)  # finite and > 0
_positive_number = in_interval(POSITIVE)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True, help="COCO keypoint annotation file")
    parser.add_argument("--images", type=Path, required=True, help="folder of the training images")
    parser.add_argument("--val", type=Path, help="validation annotation file (AP after epochs)")
    parser.add_argument("--val-images", type=Path, help="folder of the validation images")
    parser.add_argument(
        "--val-every", type=positive_int, default=1, help="validate every N epochs (default 1)"
    )
    parser.add_argument(
        "--model", type=variant_name, default="rtmo-t", help="variant to build (default rtmo-t)"
    )
    add_checkpoint_arguments(parser)
    parser.add_argument("--epochs", type=positive_int, required=True, help="epochs to train")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="global batch (16)")
    parser.add_argument(
        "--input-size",
        type=_input_size,
        help="side (or WxH) of the training input, multiples of 32 (default: the variant's)",
    )
    parser.add_argument("--lr", type=_positive_number, help="peak learning rate (default: recipe)")
    parser.add_argument(
        "--sigmas",
        type=_sigmas,
        help="comma-separated OKS sigma per keypoint, for a category that has none",
    )
    parser.add_argument("--workers", type=int_at_least(0), default=2, help="loader processes")
    parser.add_argument("--seed", type=int_at_least(0), default=0, help="random seed (0)")
    parser.add_argument("--out", type=Path, required=True, help="run folder (checkpoints, log)")
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last.pth"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from rtmo.cli import EXIT_OK, UsageError

    if (args.val is None) != (args.val_images is None):
        raise UsageError("--val and --val-images go together")
    last = args.out / "last.pth"
    if args.resume and not last.is_file():
        raise UsageError(f"--resume: {last} does not exist")
    if not args.resume and last.exists():
        raise UsageError(
            f"--out: {args.out} already holds a run; add --resume or pick a new folder"
        )
    from rtmo.train.run import train

    try:
        summary = train(
            args.data,
            args.images,
            args.out,
            epochs=args.epochs,
            model=args.model,
            checkpoint=args.checkpoint,
            trust_checkpoint=args.trust_checkpoint,
            val=args.val,
            val_images=args.val_images,
            val_every=args.val_every,
            batch_size=args.batch_size,
            input_size=args.input_size,
            lr=args.lr,
            sigmas=args.sigmas,
            workers=args.workers,
            seed=args.seed,
            resume=args.resume,
            progress=not args.quiet,
        )
    except ValueError as err:  # DatasetError, a checkpoint of another layout, bad settings
        raise UsageError(str(err)) from err
    ap = summary["val_AP"]
    scored = "" if ap is None else f", validation AP {ap:.3f}"
    print(
        f"rtmo: trained {summary['epochs']} epochs{scored}; weights in {summary['weights']}",
        file=sys.stderr,
    )
    return EXIT_OK


def _input_size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(
            f"expected a side or WxH such as 320 or 416x320, got {text!r}"
        )
    size = (int(parts[0]), int(parts[1]))
    if any(s < 32 or s % 32 for s in size):
        raise argparse.ArgumentTypeError(
            f"sides must be multiples of 32, at least 32, got {text!r}"
        )
    return size


def _sigmas(text: str) -> tuple[float, ...]:
    try:
        return tuple(_positive_number(part) for part in text.split(","))
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers > 0 such as 0.05,0.05,0.08, got {text!r}"
        ) from None
