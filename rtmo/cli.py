"""The `rtmo` command: the entry point, exit statuses and error reporting.

Each subcommand lives in its own module of `rtmo.commands` with `add_arguments(parser)` and
`run(args) -> int`, and is registered by one `Command` in COMMANDS. Building the parser imports no
torch or cv2 (`rtmo --help` starts in a fraction of a second): command modules import heavy
modules inside `run`, and import UsageError and the exit statuses from here lazily.

Exit status: 0 success, 1 an input failed or an error, 2 a usage error (a bad option value, a
missing or unsupported source, a checkpoint that cannot be used), 128 + N when stopped by signal
N: 130 for Ctrl+C (SIGINT), 143 for SIGTERM, 129 for SIGHUP. An interrupted run keeps what it
completed (see `rtmo.commands.predict`).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from rtmo import __version__
from rtmo.commands import data as data_command
from rtmo.commands import eval as eval_command
from rtmo.commands import export, info, models, predict, train

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
# Stopping signals that end a run the way Ctrl+C does, keeping what is complete.
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class UsageError(Exception):
    """The command line asks for something that cannot be done; the message says what to do."""


class Interrupted(KeyboardInterrupt):
    """A stopping signal (SIGINT, SIGTERM, SIGHUP) arrived; `signum` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: list[Command] = [
    Command(
        "predict",
        "poses (and ids with --track) in images, folders, videos, webcams or glob patterns",
        predict.add_arguments,
        predict.run,
    ),
    Command(
        "info",
        "versions, kernel backends, build flags and devices",
        info.add_arguments,
        info.run,
    ),
    Command(
        "export",
        "the model as an ONNX file: the whole prediction (--head full) or the dense network for "
        "any engine (--head raw)",
        export.add_arguments,
        export.run,
    ),
    Command(
        "eval",
        "COCO keypoint AP (pycocotools) of a model on an annotated image set, or of a results file",
        eval_command.add_arguments,
        eval_command.run,
    ),
    Command(
        "train",
        "train or fine-tune RTMO on COCO-format keypoints (torchrun for several processes)",
        train.add_arguments,
        train.run,
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
        models.add_arguments,
        models.run,
    ),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rtmo", description="RTMO multi-person pose estimation.")
    parser.add_argument("--version", action="version", version=f"rtmo {__version__}")
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
        with _stop_signals_raise_interrupted():
            return args.run(args)
    except KeyboardInterrupt as stop:
        signum = stop.signum if isinstance(stop, Interrupted) else signal.SIGINT
        print(f"rtmo: interrupted ({signal.Signals(signum).name})", file=sys.stderr)
        return 128 + signum
    except Exception as err:
        if args.debug:
            raise
        usage = is_usage_error(err)
        print(f"rtmo: error: {_describe(err)}", file=sys.stderr)
        if not usage:
            print("rtmo: run with --debug to see the traceback", file=sys.stderr)
        return EXIT_USAGE if usage else EXIT_FAILED


def is_usage_error(err: BaseException) -> bool:
    """Whether `err` means the user asked for something unusable (exit status 2): a usage error,
    an unusable source or a checkpoint that cannot be loaded as asked."""
    kinds: list[type[BaseException]] = [UsageError, FileNotFoundError]
    # An error class whose module was never imported cannot have been raised: importing it here
    # would load torch or cv2 just to print a message.
    for module, name in (("rtmo.sources", "SourceError"), ("rtmo.checkpoint", "CheckpointError")):
        if module in sys.modules:
            kinds.append(getattr(sys.modules[module], name))
    return isinstance(err, tuple(kinds))


@contextlib.contextmanager
def _stop_signals_raise_interrupted() -> Iterator[None]:
    """While the command runs, SIGINT, SIGTERM and SIGHUP raise `Interrupted` in the main thread,
    once: the cleanup that follows (renaming what is complete into place) is not interrupted by a
    repeated signal. The previous handlers come back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may install handlers; the caller keeps its own
        return
    raised = False

    def handler(signum: int, frame: object) -> None:
        nonlocal raised
        if not raised:
            raised = True
            raise Interrupted(signum)

    previous = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def _describe(err: Exception) -> str:
    """The message of an error, with its type where the message alone could be cryptic."""
    if (is_usage_error(err) or isinstance(err, (OSError, ValueError))) and str(err):
        return str(err)
    return f"{type(err).__name__}: {err}"


if __name__ == "__main__":
    sys.exit(main())
