"""`rtmo export`: a checkpoint in, an ONNX file out: the whole model (NMS and DCC inside, --head
full) or the dense network for any engine (--head raw, DCC weights in a .dcc.npz beside it)."""

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
    parser.add_argument(
        "--head",
        choices=("full", "raw"),  # rtmo.export.HEADS, not imported: the parser stays torch-free
        default="full",
        help="full: network + NMS + DCC in the graph (default); raw: the dense predictions only, "
        "for any engine, with the DCC weights in a .dcc.npz next to the file",
    )
    parser.add_argument(
        "--max-det",
        type=positive_int,
        default=None,
        help="people slots per image (full head; default 50)",
    )
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


def _refuse_overwriting_checkpoint(args: argparse.Namespace) -> None:
    """--out (or, with --head raw, the DCC sidecar beside it) must not be the checkpoint itself:
    the export is written under a temporary name and renamed over its target at the end."""
    from rtmo.cli import UsageError
    from rtmo.postprocessor import sidecar_path

    targets = [args.out] + ([sidecar_path(args.out)] if args.head == "raw" else [])
    for target in targets:
        if target.exists() and target.samefile(args.checkpoint):
            raise UsageError(
                f"--out {args.out}: writing {target} would overwrite the checkpoint "
                f"{args.checkpoint}; give another file name"
            )


def run(args: argparse.Namespace) -> int:
    """Checkpoint -> ONNX file; prints where it went. Returns the exit status."""
    import time

    from rtmo.checkpoint import load_model
    from rtmo.cli import UsageError
    from rtmo.export import DEFAULT_OPSET, MIN_OPSET, export_onnx
    from rtmo.postprocessor import sidecar_path

    args.opset = DEFAULT_OPSET if args.opset is None else args.opset
    if args.opset < MIN_OPSET:
        raise UsageError(f"--opset must be at least {MIN_OPSET}, got {args.opset}")
    if not args.checkpoint.is_file():
        raise UsageError(f"--checkpoint {args.checkpoint}: no such checkpoint file")
    _refuse_overwriting_checkpoint(args)
    if args.head == "raw":
        post = {"--max-det": args.max_det, "--score-thr": args.score_thr, "--nms-thr": args.nms_thr}
        given = [name for name, value in post.items() if value is not None]
        if given:
            raise UsageError(
                f"{', '.join(given)}: --head raw has no NMS in the graph; thresholds and max_det "
                "are chosen when post-processing"
            )
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
        args.head,
    )
    extra = f" (DCC weights: {sidecar_path(path)})" if args.head == "raw" else ""
    print(
        f"rtmo: {model.config.name} exported to {path}{extra} in "
        f"{time.perf_counter() - start:.1f} s",
        file=sys.stderr,
    )
    return 0
