"""`make bench`: every benchmark of the project in one run, one combined JSON, a markdown report and
plots.

    python -m benchmarks.run            # full run (~10-15 min on 2 CPU cores)
    python -m benchmarks.run --quick    # smoke run: RTMO-t, batch 1, few rounds (~2-3 min)
    python -m benchmarks.run --val-data ann.json --val-images DIR --val-checkpoint rtmo-t.pth
                                        # + each end-to-end row's AP on an annotated set
    python -m benchmarks.run --track-checkpoint rtmo-t.pth   # + the model through RTMO.track

Steps: machine description and its measured sgemm / memory-copy rates (benchmarks/machine.py); the
kernel suites (benchmarks/test_bench_*.py, through pytest-benchmark); the GPU-readiness checks
(tests/test_gpu_readiness.py); the end-to-end benchmark (benchmarks/end_to_end.py); the
post-process scaling sweep; the roofline; tracking quality (benchmarks/tracking.py: IDF1, MOTA,
id switches, keypoint jitter); Ray Data with 2 local workers against one process
(benchmarks/distributed.py). Writes <date>-<host>.json, the markdown report beside it
(.md, also printed) and PNG plots into benchmarks/results/local/, which git ignores, so that a run
leaves `git status` clean; `--commit` writes them into benchmarks/results/ (the tracked results
the README quotes) and `--out DIR` anywhere. On a CUDA machine the same command
times on the GPU (CUDA events, triton's do_bench, CUDA graphs).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks import accuracy, end_to_end, postprocess_scaling, report, roofline, tracking

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"  # tracked: the results to commit (--commit)
LOCAL_RESULTS = RESULTS / "local"  # ignored by git: every other run
READINESS_TESTS = "tests/test_gpu_readiness.py"


def _version(module: str) -> str:
    try:
        return __import__(module).__version__
    except ImportError:
        return "not installed"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def describe_machine() -> dict[str, Any]:
    """Host, CPU, GPU, thread count and library versions."""
    return {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": _version("triton"),
        "onnxruntime": _version("onnxruntime"),
        "numpy": _version("numpy"),
        "commit": _commit(),
    }


class _Outcomes:
    """pytest plugin that counts test outcomes."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.failed: list[str] = []

    def pytest_runtest_logreport(self, report) -> None:
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            self.counts[report.outcome] = self.counts.get(report.outcome, 0) + 1
            if report.outcome == "failed":
                self.failed.append(report.nodeid)


def run_kernel_suites(quick: bool) -> dict[str, Any]:
    """The pytest-benchmark suites of benchmarks/, folded into one list of medians."""
    import pytest

    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "benchmarks").glob("test_bench_*.py"))
    if not files:
        return {"files": [], "benchmarks": []}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "suites.json"
        args = [*files, "-q", "-p", "no:cacheprovider", f"--benchmark-json={out}"]
        if quick:
            args += [
                "--benchmark-min-rounds=1",
                "--benchmark-max-time=0.02",
                "--benchmark-warmup=off",
            ]
        outcomes = _Outcomes()
        code = pytest.main(args, plugins=[outcomes])
        raw = json.loads(out.read_text()) if out.exists() else {"benchmarks": []}
    benches = [
        {
            "name": b["name"],
            "group": b.get("group"),
            "params": b.get("params") or {},
            "extra_info": b.get("extra_info", {}),
            "median_ms": b["stats"]["median"] * 1e3,
            "iqr_ms": b["stats"]["iqr"] * 1e3,
            "rounds": b["stats"]["rounds"],
        }
        for b in raw["benchmarks"]
    ]
    return {
        "files": files,
        "exit_code": int(code),
        "outcomes": outcomes.counts,
        "benchmarks": benches,
    }


def run_readiness() -> dict[str, Any]:
    """tests/test_gpu_readiness.py (PERFORMANCE.md target 4) as a pass/fail line."""
    import pytest

    outcomes = _Outcomes()
    code = pytest.main([READINESS_TESTS, "-q", "-p", "no:cacheprovider"], plugins=[outcomes])
    counts = ", ".join(f"{v} {k}" for k, v in sorted(outcomes.counts.items()))
    return {
        "passed": int(code) == 0 and not outcomes.failed,
        "summary": f"{READINESS_TESTS}: {counts or 'nothing ran'}",
        "failed": outcomes.failed,
    }


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: RTMO-t, batch 1, few rounds"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results folder (default benchmarks/results/local, ignored by git)",
    )
    parser.add_argument(
        "--commit",
        action="store_true",
        help="write into benchmarks/results, the tracked folder (results meant to be committed)",
    )
    parser.add_argument("--variants", default=None, help="comma list (default rtmo-t,rtmo-s)")
    parser.add_argument("--batches", default=None, help="comma list (default 1,4)")
    parser.add_argument("--rows", default=",".join(end_to_end.ROWS), help="end-to-end rows")
    parser.add_argument("--rounds", type=int, default=None, help="end-to-end rounds (default 15)")
    parser.add_argument("--people", type=int, default=20)
    parser.add_argument("--candidates", type=int, default=400)
    parser.add_argument(
        "--freezing", action="store_true", help="compile row with inductor freezing"
    )
    parser.add_argument("--max-det", type=int, default=100, help="detection slots per image")
    parser.add_argument("--input-size", type=int, default=None, help="square input override")
    parser.add_argument(
        "--kernel-variant", default="rtmo-s", help="shapes of the roofline and scaling sweeps"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--val-data", type=Path, default=None, help="COCO keypoint annotations for the AP column"
    )
    parser.add_argument("--val-images", type=Path, default=None, help="their images' folder")
    parser.add_argument(
        "--val-checkpoint", type=Path, default=None, help="the weights the AP is measured with"
    )
    parser.add_argument(
        "--track-sequences",
        type=Path,
        default=None,
        help="procedural dataset sequences for the tracking step (default: the canonical set)",
    )
    parser.add_argument(
        "--track-checkpoint",
        type=Path,
        default=None,
        help="weights to run through RTMO.track on those sequences' videos",
    )
    steps = ("suites", "readiness", "scaling", "roofline", "end-to-end", "tracking", "distributed")
    for step in steps:
        parser.add_argument(f"--skip-{step}", action="store_true", help=f"leave out the {step}")
    args = parser.parse_args(argv)
    validation = (args.val_data, args.val_images, args.val_checkpoint)
    if any(v is not None for v in validation) and None in validation:
        parser.error(
            "--val-data, --val-images and --val-checkpoint go together (an AP needs annotations, "
            "their images and trained weights)"
        )
    return args


def _validation_set(args: argparse.Namespace) -> accuracy.ValidationSet | None:
    if args.val_data is None:
        return None
    return accuracy.ValidationSet(args.val_data, args.val_images, args.val_checkpoint)


def results_folder(args: argparse.Namespace) -> Path:
    """--out if given, else the tracked folder with --commit, else the ignored one."""
    if args.out is not None:
        return args.out
    return RESULTS if args.commit else LOCAL_RESULTS


def _timed(label: str, fn, *args, **kwargs):
    print(f"[bench] {label} ...", flush=True)
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    print(f"[bench] {label} done in {time.perf_counter() - start:.0f} s", flush=True)
    return out


def run(args: argparse.Namespace) -> tuple[dict[str, Any], Path]:
    """Every step; returns the combined result and the JSON path it was written to."""
    variants = (args.variants or ("rtmo-t" if args.quick else "rtmo-t,rtmo-s")).split(",")
    batches = [int(b) for b in (args.batches or ("1" if args.quick else "1,4")).split(",")]
    rounds = args.rounds or (2 if args.quick else 15)
    size = (args.input_size, args.input_size) if args.input_size else None
    started = time.perf_counter()
    machine = describe_machine()
    result: dict[str, Any] = {
        "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "quick": args.quick,
        "command": " ".join(["python -m benchmarks.run", *sys.argv[1:]]),
        "machine": machine,
        "notes": [],
    }
    machine["rates"] = _timed("machine rates", roofline.machine_rates)
    threads = torch.get_num_threads()
    if not args.skip_suites:
        result["kernel_suites"] = _timed("kernel suites", run_kernel_suites, args.quick)
        torch.set_num_threads(threads)  # whatever a suite left behind
    if not args.skip_readiness:
        result["gpu_readiness"] = _timed("GPU-readiness checks", run_readiness)
    if not args.skip_roofline:
        result["roofline"] = _timed(
            "roofline", roofline.run, args.kernel_variant, args.device, args.quick, machine["rates"]
        )
    if not args.skip_scaling:
        result["postprocess_scaling"] = _timed(
            "post-process scaling", postprocess_scaling.run, args.kernel_variant, quick=args.quick,
            device=args.device,
        )  # fmt: skip
    if not args.skip_end_to_end:
        cases = []
        for variant in variants:
            for batch in batches:
                case = end_to_end.CaseSettings(
                    variant, batch, args.people, args.candidates, size, rounds,
                    tuple(args.rows.split(",")), args.device, max_det=args.max_det,
                    freezing=args.freezing, validation=_validation_set(args),
                )  # fmt: skip
                cases.append(
                    _timed(f"end to end {variant} batch {batch}", end_to_end.run_case, case)
                )
        result["end_to_end"] = {"cases": cases}
    if not args.skip_tracking:
        result["tracking"] = _timed(
            "tracking", tracking.run, args.quick, sequences_dir=args.track_sequences,
            checkpoint=args.track_checkpoint, device=args.device,
        )  # fmt: skip
    if not args.skip_distributed:
        from benchmarks import distributed

        result["distributed"] = _timed(
            "Ray Data, 2 workers", distributed.run, args.quick, args.device
        )
    result["runtime_s"] = time.perf_counter() - started
    result["targets"] = report.evaluate_targets(result)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    out = results_folder(args)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{stamp}-{machine['host']}{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    return result, path


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    result, path = run(args)
    md, pngs = report.write_report(result, path)
    print(md.read_text())
    print(f"[bench] {path}, {md}, " + ", ".join(str(p) for p in pngs))
    print(f"[bench] total {result['runtime_s']:.0f} s")


if __name__ == "__main__":
    main()
