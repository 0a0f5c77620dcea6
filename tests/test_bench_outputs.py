"""`make bench` leaves `git status` clean: results go to benchmarks/results/local/, which git
ignores, unless `--commit` (the tracked benchmarks/results/) or an explicit `--out` says where."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from benchmarks import run

ROOT = Path(__file__).resolve().parents[1]
# benchmarks/distributed.py starts a local Ray and its workers (a minute): left to `make bench`.
SKIP_ALL = ["--skip-suites", "--skip-readiness", "--skip-scaling", "--skip-roofline",
            "--skip-end-to-end", "--skip-distributed"]  # fmt: skip


def git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)


pytestmark = pytest.mark.skipif(
    git("rev-parse", "--is-inside-work-tree").returncode != 0, reason="not a git checkout"
)


def test_results_folder_is_ignored_unless_asked_otherwise(tmp_path):
    default = run.results_folder(run._parse_args([]))
    assert default == run.LOCAL_RESULTS
    assert git("check-ignore", "-q", str(default / "2026-01-01-host.json")).returncode == 0
    committed = run.results_folder(run._parse_args(["--commit"]))
    assert committed == run.RESULTS
    assert git("check-ignore", "-q", str(committed / "2026-01-01-host.json")).returncode == 1
    assert run.results_folder(run._parse_args(["--out", str(tmp_path)])) == tmp_path


def test_a_run_leaves_git_status_clean(monkeypatch, capsys):
    # The machine's measured rates are the only step that cannot be skipped: stubbed here.
    monkeypatch.setattr(run.roofline, "machine_rates", lambda: {"sgemm_gflops": 1.0})
    status = ["status", "--porcelain", "--untracked-files=all"]
    before = git(*status).stdout
    existing = set(run.LOCAL_RESULTS.glob("*")) if run.LOCAL_RESULTS.exists() else set()
    try:
        run.main(["--quick", *SKIP_ALL])
        written = set(run.LOCAL_RESULTS.glob("*")) - existing
        assert {p.suffix for p in written} >= {".json", ".md"}
        assert git(*status).stdout == before
    finally:
        for path in set(run.LOCAL_RESULTS.glob("*")) - existing:
            path.unlink()
