"""`rtmo export`: a checkpoint in, the whole model (NMS and DCC inside) as an ONNX file out."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rtmo.commands import add_checkpoint_arguments, in_interval, positive_int, variant_name
from rtmo.options import NMS_THR, SCORE_THR


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_checkpoint_arguments(parser, required=True)
    parser.add_argument(
        "--model",
        type=variant_name,
        default=None,
        help="variant, e.g. rtmo-s (default: found from the checkpoint)",
    )
    parser.add_argument("--out", type=Path, required=True, help="the .onnx file to write")
    parser.add_argument(
        "--input-size",
        type=parse_input_size,
        default=None,
        help="WxH of the graph input, multiples of 32, e.g. 640x640 or 640 (default: the "
        "variant's, 416 for rtmo-t, else 640); fixed in the file",
    )
    parser.add_argument("--max-det", type=positive_int, default=50, help="people slots per image")
    parser.add_argument(
        "--dynamic-batch",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="dynamic batch axis (default); --no-dynamic-batch fixes it to 1",
    )
    parser.add_argument("--fp16", action="store_true", help="float16 network weights")
    parser.add_argument(
        "--opset", type=int, default=None, help="ONNX opset, at least 14 (default 17)"
    )
    parser.add_argument(
        "--score-thr",
        type=in_interval(SCORE_THR),
        default=None,
        help=f"person score threshold baked into the file, in {SCORE_THR} (default 0.1)",
    )
    parser.add_argument(
        "--nms-thr",
        type=in_interval(NMS_THR),
        default=None,
        help=f"box IoU for NMS baked into the file, in {NMS_THR} (default 0.65)",
    )


def parse_input_size(text: str) -> tuple[int, int]:
    """ "640x480" -> (640, 480); "640" -> (640, 640); sides positive multiples of 32."""
    parts = text.lower().replace(",", "x").split("x")
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        sizes = []
    if len(sizes) not in (1, 2):
        raise argparse.ArgumentTypeError(f"expected WxH or a single side, got {text!r}")
    if any(side <= 0 or side % 32 for side in sizes):
        raise argparse.ArgumentTypeError(f"sides must be positive multiples of 32, got {text!r}")
    return (sizes[0], sizes[-1])


def run(args: argparse.Namespace) -> int:
    """Checkpoint -> ONNX file; prints where it went. Returns the exit status."""
    import time

    from rtmo.checkpoint import load_model
    from rtmo.cli import UsageError
    from rtmo.export import DEFAULT_OPSET, MIN_OPSET, export_onnx

    args.opset = DEFAULT_OPSET if args.opset is None else args.opset
    if args.opset < MIN_OPSET:
        raise UsageError(f"--opset must be at least {MIN_OPSET}, got {args.opset}")
    if not args.checkpoint.is_file():
        raise UsageError(f"--checkpoint {args.checkpoint}: no such checkpoint file")
    model = load_model(args.checkpoint, args.model, trust_checkpoint=args.trust_checkpoint)
    start = time.perf_counter()
    path = export_onnx(
        model,
        args.out,
        args.input_size,
        args.max_det,
        args.dynamic_batch,
        args.fp16,
        args.opset,
        args.score_thr,
        args.nms_thr,
    )
    print(
        f"rtmo: {model.config.name} exported to {path} in {time.perf_counter() - start:.1f} s",
        file=sys.stderr,
    )
    return 0
