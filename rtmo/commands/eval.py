"""`rtmo eval`: COCO keypoint AP (pycocotools) of a model on an annotated image set, or of a COCO
results file.

    rtmo eval --checkpoint rtmo-s.pth --data person_keypoints_val2017.json --images val2017/
    rtmo eval --onnx rtmo-s.onnx --data person_keypoints_val2017.json --images val2017/ --out ev/
    rtmo eval --predictions ev/results.json --data person_keypoints_val2017.json

The defaults are mmpose's evaluation of RTMO (`rtmo.config.MMPOSE_EVAL_SETTINGS`); the output says
which settings differ from it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rtmo.commands import (
    add_checkpoint_arguments,
    check_dtype_option,
    device_name,
    in_interval,
    positive_int,
    variant_name,
)
from rtmo.config import MMPOSE_EVAL_SETTINGS, SCORE_MODES
from rtmo.options import KPT_THR, NMS_THR, SCORE_THR

DEFAULT_BATCH = 8
# Options that only mean something when a model runs (their defaults are None: "not given").
_MODEL_ONLY = (
    "images", "dtype", "device", "backend", "batch_size", "score_mode", "keypoint_score_thr",
    "score_thr", "nms_thr", "max_det",
)  # fmt: skip
_TORCH_ONLY = ("dtype", "backend")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `rtmo eval`."""
    mmpose = MMPOSE_EVAL_SETTINGS
    what = parser.add_argument_group("what to evaluate (one of)")
    add_checkpoint_arguments(what)
    what.add_argument("--onnx", type=Path, help="an exported .onnx file, run by onnxruntime")
    what.add_argument(
        "--random-weights",
        action="store_true",
        help="a model with random weights (AP near 0; for testing the pipeline)",
    )
    what.add_argument(
        "--predictions", type=Path, help="a COCO keypoint results file to score (no model runs)"
    )
    what.add_argument(
        "--model",
        type=variant_name,
        default=None,
        help="variant, e.g. rtmo-s, rtmo-l-crowdpose (default: found from the checkpoint or the "
        "ONNX file; rtmo-s with --random-weights)",
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "--data", type=Path, required=True, help="COCO keypoint annotation file (.json)"
    )
    data.add_argument("--images", type=Path, help="folder of the annotated images")
    run = parser.add_argument_group("running the model")
    run.add_argument(
        "--device", type=device_name, default=None, help="cpu, cuda, cuda:1 (default: cuda if any)"
    )
    run.add_argument(
        "--dtype",
        default=None,
        choices=["fp32", "fp16", "bf16"],
        help="precision of the network: bf16 on a GPU or a CPU with native bfloat16 (see `rtmo "
        "info`), fp16 on a GPU (default fp32)",
    )
    run.add_argument("--backend", default=None, help="kernel backend (see `rtmo info`; auto)")
    run.add_argument(
        "--no-kernels",
        action="store_true",
        help="post-process in plain PyTorch as mmpose does, without the fused kernels",
    )
    run.add_argument(
        "--batch-size", type=positive_int, default=None, help=f"default {DEFAULT_BATCH}"
    )
    settings = parser.add_argument_group("settings (defaults: mmpose's evaluation of RTMO)")
    settings.add_argument(
        "--score-mode",
        choices=SCORE_MODES,
        default=None,
        help=f"result score: box score, mean keypoint score, or box x mean keypoint score above "
        f"--keypoint-score-thr (mmpose's CocoMetric; default {mmpose['score_mode']})",
    )
    settings.add_argument(
        "--keypoint-score-thr",
        type=in_interval(KPT_THR),
        default=None,
        help=f"for --score-mode bbox_keypoint (default {mmpose['keypoint_score_thr']})",
    )
    settings.add_argument(
        "--score-thr",
        type=in_interval(SCORE_THR),
        default=None,
        help=f"person score threshold (default {mmpose['score_thr']})",
    )
    settings.add_argument(
        "--nms-thr",
        type=in_interval(NMS_THR),
        default=None,
        help=f"box IoU above which NMS drops a person (default {mmpose['nms_thr']})",
    )
    settings.add_argument(
        "--max-det",
        type=positive_int,
        default=None,
        help="people kept per image (default: every NMS survivor, as mmpose)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="folder for metrics.json and results.json"
    )


def run(args: argparse.Namespace) -> int:
    """Evaluates, prints the table, the settings and the speed; returns the exit status."""
    from rtmo.cli import EXIT_OK, UsageError
    from rtmo.eval import EvalInputError, evaluate, report_lines

    _check_arguments(args)
    model = None if args.predictions is not None else _build_predictor(args)
    options = _settings(args) if model is not None else {}
    try:
        metrics = evaluate(
            model,
            data=args.data,
            images=args.images,
            predictions=args.predictions,
            out=args.out,
            progress=True,
            **options,
        )
    except EvalInputError as err:
        raise UsageError(str(err)) from err
    for line in report_lines(metrics):
        print(line)
    if args.out is not None:
        written = "metrics.json" + (" and results.json" if model is not None else "")
        print(f"rtmo: {written} in {args.out}", file=sys.stderr)
    return EXIT_OK


def _check_arguments(args: argparse.Namespace) -> None:
    from rtmo.cli import UsageError

    sources = [
        name
        for name, given in (
            ("--checkpoint", args.checkpoint is not None),
            ("--onnx", args.onnx is not None),
            ("--random-weights", args.random_weights),
            ("--predictions", args.predictions is not None),
        )
        if given
    ]
    if len(sources) != 1:
        raise UsageError(
            "give one of --checkpoint, --onnx, --random-weights or --predictions"
            + (f", not {' and '.join(sources)}" if sources else "")
        )
    if not args.data.is_file():
        raise UsageError(f"--data {args.data}: no such file")
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {args.out}: exists and is not a folder")
    if args.predictions is not None:
        _check_predictions_mode(args)
        return
    if args.images is None:
        raise UsageError(
            "--images DIR is needed to run a model: the folder of the annotated images"
        )
    if not args.images.is_dir():
        raise UsageError(f"--images {args.images}: no such folder")
    if args.onnx is not None:
        given = [_flag(name) for name in _TORCH_ONLY if getattr(args, name) is not None]
        given += ["--no-kernels"] if args.no_kernels else []
        if given:
            raise UsageError(
                f"{', '.join(given)}: not with --onnx (the graph fixes its precision and holds "
                "its own post-process)"
            )


def _check_predictions_mode(args: argparse.Namespace) -> None:
    from rtmo.cli import UsageError

    given = [_flag(name) for name in _MODEL_ONLY if getattr(args, name) is not None]
    given += [
        flag for flag, on in (("--model", args.model), ("--no-kernels", args.no_kernels)) if on
    ]
    if given:
        raise UsageError(
            f"{', '.join(given)}: only when a model runs; --predictions scores the file's results "
            "as they are"
        )
    if not args.predictions.is_file():
        raise UsageError(f"--predictions {args.predictions}: no such file")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """evaluate() keyword arguments: the options given, else mmpose's values."""
    mmpose = MMPOSE_EVAL_SETTINGS
    chosen = {
        key: mmpose[key] if getattr(args, key) is None else getattr(args, key)
        for key in ("score_mode", "keypoint_score_thr", "score_thr", "nms_thr", "max_det")
    }
    chosen["batch_size"] = args.batch_size or DEFAULT_BATCH
    return chosen


def _build_predictor(args: argparse.Namespace) -> Any:
    from rtmo.cli import UsageError

    device = _checked_device(args)
    if args.onnx is not None:
        return _onnx_predictor(args, device)
    import warnings

    from rtmo.predictor import RTMO

    dtype = args.dtype or "fp32"
    try:
        check_dtype_option(dtype, device.type)
    except ValueError as err:
        raise UsageError(str(err)) from None
    backend = args.backend or "auto"
    _check_backend(backend, device)
    options = {"device": str(device), "dtype": dtype, "backend": backend}
    options["use_kernels"] = not args.no_kernels
    if args.checkpoint is not None:
        return RTMO.from_checkpoint(
            args.checkpoint, args.model, trust_checkpoint=args.trust_checkpoint, **options
        )
    variant = args.model or "rtmo-s"
    print(f"rtmo: note: {variant} with random weights; its AP is meaningless", file=sys.stderr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        try:
            return RTMO(variant, **options)
        except ValueError as err:  # an unknown variant
            raise UsageError(f"--model {variant}: {err}") from err


def _checked_device(args: argparse.Namespace) -> Any:
    import torch

    from rtmo.cli import UsageError
    from rtmo.predictor import default_device

    text = args.device or ("cpu" if args.onnx is not None else default_device())
    try:
        device = torch.device(text)
    except RuntimeError as err:
        raise UsageError(f"--device {text}: not a device (cpu, cuda, cuda:1)") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {text}: no CUDA GPU is visible; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"--device {text}: expected cpu or cuda")
    return device


def _check_backend(backend: str, device: Any) -> None:
    from rtmo.cli import UsageError
    from rtmo_kernels import BackendUnavailableError
    from rtmo_kernels._backend import resolve_backend

    try:
        resolve_backend(backend, device, "--backend")
    except (ValueError, BackendUnavailableError) as err:
        raise UsageError(str(err)) from err


def _onnx_predictor(args: argparse.Namespace, device: Any) -> Any:
    """RTMO.from_onnx on the providers of --device, with the thresholds checked against the
    ones exported into the file."""
    from rtmo.cli import UsageError
    from rtmo.predictor import RTMO

    providers = ["CPUExecutionProvider"]
    if device.type == "cuda":
        providers.insert(0, "CUDAExecutionProvider")
    try:
        predictor = RTMO.from_onnx(args.onnx, args.model, providers=providers)
    except FileNotFoundError as err:
        raise UsageError(f"--onnx {args.onnx}: no such file") from err
    runner, settings = predictor.model, _settings(args)
    name = args.onnx.name
    if runner.score_thr is not None and settings["score_thr"] < runner.score_thr - 1e-6:
        raise UsageError(
            f"--score-thr {settings['score_thr']} is below the {runner.score_thr} exported into "
            f"{name}: export again with --score-thr {settings['score_thr']}"
        )
    if runner.nms_thr is not None and abs(settings["nms_thr"] - runner.nms_thr) > 1e-6:
        raise UsageError(
            f"--nms-thr {settings['nms_thr']} differs from the {runner.nms_thr} exported into "
            f"{name}: export again with --nms-thr {settings['nms_thr']}"
        )
    if runner.max_det is not None and (settings["max_det"] or 0) > runner.max_det:
        raise UsageError(
            f"--max-det {settings['max_det']}: {name} has {runner.max_det} person slots per "
            "image; export again with a larger --max-det"
        )
    return predictor
