"""The training curve: a run's log.jsonl drawn as a PNG (losses per step, validation AP per
epoch), written beside the log at the end of `rtmo train`."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

CURVE_FILE = "curve.png"
# Steps averaged per point of the loss lines: single steps swing with the batch's crowd.
_SMOOTHING = 25


def plot_training_curve(log: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Draws the log's losses (moving mean over 25 steps) and validation AP; returns `out`."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no window
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in Path(log).read_text().splitlines() if line.strip()]
    steps = [r for r in records if "step" in r]
    epochs = [r for r in records if "step" not in r and "epoch" in r]
    figure, (losses, ap) = plt.subplots(1, 2, figsize=(11, 4))
    names = [k for k in steps[0] if k.startswith("loss")] if steps else []
    for name in names:
        values = [r.get(name, float("nan")) for r in steps]
        losses.plot([r["step"] for r in steps], _moving_mean(values), label=name, lw=1.2)
    losses.set(xlabel="step", ylabel="loss", title="training losses")
    losses.legend(fontsize=8)
    scored = [r for r in epochs if r.get("val_AP") is not None]
    if scored:
        ap.plot([r["epoch"] for r in scored], [r["val_AP"] for r in scored], "o-", label="AP")
        ap.plot([r["epoch"] for r in scored], [r["val_AP50"] for r in scored], "s--", label="AP50")
        ap.legend(fontsize=8)
    for before, after in itertools.pairwise(epochs):
        if before.get("stage") != after.get("stage"):  # the schedule's switches
            ap.axvline(before["epoch"] + 0.5, color="0.8", lw=0.8)
    ap.set(xlabel="epoch", ylabel="COCO keypoint AP", title="validation", ylim=(0, 1))
    figure.tight_layout()
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return Path(out)


def _moving_mean(values: list[float]) -> list[float]:
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= _SMOOTHING:
            total -= values[i - _SMOOTHING]
        out.append(total / min(i + 1, _SMOOTHING))
    return out
