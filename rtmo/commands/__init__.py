"""The subcommands of `rtmo`, one module each, and the argument types they share.

A command module defines `add_arguments(parser)` and `run(args) -> int` and is registered by one
`rtmo.cli.Command` in `rtmo.cli.COMMANDS`. Nothing here imports torch or cv2 at module level:
argument types check values while the command line is parsed (a bad value exits with status 2 and
argparse's "argument --score-thr: must be in [0, 1), got -1"), and `run` imports what it needs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from rtmo.options import DEVICE_PATTERN, Interval, interval_violation, positive_int_violation


def in_interval(interval: Interval) -> Callable[[str], float]:
    """An argparse `type` accepting a float in `interval`."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be a number in {interval}, got {text!r}"
            ) from None
        problem = interval_violation(value, interval)
        if problem is not None:
            raise argparse.ArgumentTypeError(problem)
        return value

    parse.__name__ = "number"  # argparse names the type in its "invalid <type> value" messages
    return parse


def positive_int(text: str) -> int:
    """An argparse `type` accepting an int >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an int >= 1, got {text!r}") from None
    problem = positive_int_violation(value)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return value


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse `type` accepting an int >= `minimum`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def variant_name(text: str) -> str:
    """An argparse `type` accepting a known RTMO variant name or alias ("rtmo-s", "rtmo-l-coco")."""
    from rtmo.config import from_name

    try:
        from_name(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def device_name(text: str) -> str:
    """An argparse `type` accepting "cpu", "cuda" or "cuda:N" (whether it exists is checked before
    the model loads, by `rtmo.options.check_device`)."""
    if not DEVICE_PATTERN.fullmatch(text):
        raise argparse.ArgumentTypeError(f"must be cpu, cuda or cuda:N, got {text!r}")
    return text


def add_checkpoint_arguments(parser: argparse.ArgumentParser, required: bool = False) -> None:
    """--checkpoint and --trust-checkpoint, for every command that loads a checkpoint."""
    parser.add_argument(
        "--checkpoint",
        type=Path,
        required=required,
        help="official mmpose RTMO checkpoint (.pth)",
    )
    parser.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="load a checkpoint that holds pickled objects besides tensors and numpy arrays; this "
        "can run code from the file, so only for files you trust",
    )


def check_dtype_option(dtype: str, device: str) -> None:
    """ValueError naming --dtype when `dtype` has no fast path on `device` ("cpu", "cuda:1")."""
    if device != "cpu":
        return
    from rtmo.precision import check_cpu_dtype
    from rtmo.predictor import DTYPES

    check_cpu_dtype("--dtype", DTYPES[dtype])
