"""`rtmo models`: every published RTMO variant with its size, input, keypoints and checkpoint URL.

rtmo models
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`rtmo models` takes no argument."""


def run(args: argparse.Namespace) -> int:
    for line in model_lines():
        print(line)
    return 0


def model_lines() -> list[str]:
    """A table of the variants: name (and short names), parameters, input, keypoints, URL."""
    from rtmo.config import VARIANTS, aliases_of

    rows = [("variant", "also", "params", "input", "keypoints", "checkpoint")]
    for name, config in VARIANTS.items():
        rows.append(
            (
                name,
                ", ".join(aliases_of(name)) or "-",
                f"{parameter_count(name) / 1e6:.1f} M",
                "x".join(str(v) for v in config.input_size),
                f"{config.num_keypoints} ({'CrowdPose' if config.crowdpose else 'COCO'})",
                config.checkpoint_url,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True))
        + "  "
        + row[-1]
        for row in rows
    ]
    return [*lines, "", "Download one with rtmo.config.download_checkpoint(NAME), or from its URL."]


def parameter_count(name: str) -> int:
    """Parameters of the model this package builds for a variant (on PyTorch's meta device: no
    memory, no weights)."""
    import torch

    from rtmo.config import from_name
    from rtmo.model import RTMOModel

    with torch.device("meta"):
        model = RTMOModel(from_name(name))
    return sum(p.numel() for p in model.parameters())
