"""Random and mutated images, videos and checkpoints never crash or hang the process: the
hypothesis tests of tests/fuzz_inputs.py run in a child process with a time limit, so a segfault
in a decoder or an endless loop fails this test instead of killing the session."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# ~15 s on 2 busy CPU cores (most of it importing torch); a hang is anything far past that.
TIME_LIMIT_S = 300


def test_fuzzed_images_videos_and_checkpoints_give_results_or_named_errors():
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, "-X", "faulthandler", "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    done = subprocess.run(
        [*command, str(ROOT / "tests" / "fuzz_inputs.py")],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=TIME_LIMIT_S,
    )
    if done.returncode < 0:
        raise AssertionError(
            f"the fuzzing process died of {signal.Signals(-done.returncode).name}:\n"
            f"{done.stderr[-4000:]}"
        )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "3 passed" in done.stdout
