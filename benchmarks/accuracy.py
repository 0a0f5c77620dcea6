"""The accuracy column of the end-to-end benchmark: each row's COCO keypoint AP on an annotated set.

Speed is timed on planted random weights (benchmarks/synthetic.py), which have no accuracy to
measure; the AP of a row is measured with the weights of a checkpoint, run the row's own way (the
same network form, post-process, runtime, input size, batch and max_det, built by
`end_to_end.build_rows`), through `rtmo.evaluate` with mmpose's evaluation settings. A short last
batch is padded to the row's batch: compiled networks and CUDA graphs have a fixed one.

max_det: the rows keep `max_det` people per image (100 by default) while mmpose keeps every NMS
survivor. With score_mode "bbox" this cannot change the AP: COCOeval scores the 20 best-scored
people of an image, and the rows' people are the first survivors in that same score order.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rtmo.config import MMPOSE_EVAL_SETTINGS, RTMOConfig, from_name
from rtmo.model import RTMOModel
from rtmo.preprocess import PAD_VALUE


@dataclasses.dataclass(frozen=True)
class ValidationSet:
    """An annotated image set and the checkpoint whose weights the AP is measured with."""

    data: Path  # COCO keypoint annotations
    images: Path  # folder of the annotated images
    checkpoint: Path

    def describe(self) -> dict[str, str]:
        return {
            "data": str(self.data),
            "images": str(self.images),
            "checkpoint": str(self.checkpoint),
        }


class RowModel(torch.nn.Module):
    """A benchmark row in the predictor's place for a model: `predict` runs the row's network and
    post-process on a letterboxed batch, padded to the row's batch size."""

    def __init__(self, row: Any, config: RTMOConfig, batch: int, max_det: int) -> None:
        super().__init__()
        self.row, self.config, self.batch, self.max_det = row, config, batch, max_det

    def predict(
        self,
        images: Tensor,
        score_thr: float = 0.1,
        nms_thr: float = 0.65,
        max_det: int = 100,
        backend: str = "auto",
    ) -> list[dict[str, Tensor]]:
        built = (MMPOSE_EVAL_SETTINGS["score_thr"], MMPOSE_EVAL_SETTINGS["nms_thr"], self.max_det)
        if (score_thr, nms_thr, max_det) != built:
            raise ValueError(
                f"row {self.row.key} runs score_thr, nms_thr, max_det = {built}, "
                f"asked for {(score_thr, nms_thr, max_det)}"
            )
        count = len(images)
        if count < self.batch:
            pad = images.new_full((self.batch - count, *images.shape[1:]), float(PAD_VALUE))
            images = torch.cat([images, pad])
        with torch.inference_mode():
            return self.row.post(self.row.network(images), images)[:count]


def checkpoint_model(
    validation: ValidationSet, variant: str, use_kernels: bool, device: str
) -> RTMOModel:
    """The checkpoint's model in the rows' form (fused, channels_last), or ValueError when it is
    not an architecture of `variant`."""
    from rtmo.checkpoint import load_model

    model = load_model(validation.checkpoint, use_kernels=use_kernels, device=device)
    if model.config.architecture != from_name(variant).architecture:
        raise ValueError(
            f"{validation.checkpoint.name} holds {model.config.name}, not a {variant} model"
        )
    return model.reparameterize().to(memory_format=torch.channels_last)


def rows_ap(case: Any, validation: ValidationSet, workdir: Path) -> tuple[dict[str, dict], str]:
    """{row key: metrics} for every row of `case` that runs, and a note on what was measured."""
    from benchmarks.end_to_end import build_rows
    from rtmo import evaluate
    from rtmo.predictor import RTMO

    configs = []

    def model_for(use_kernels: bool) -> RTMOModel:
        model = checkpoint_model(validation, case.variant, use_kernels, case.device)
        configs.append(model.config)
        return model

    try:
        rows, _ = build_rows(case, workdir, model_for)  # the timing reports the rows left out
    except ValueError as err:  # a checkpoint of another architecture
        return {}, f"AP not measured: {err}"
    size = tuple(case.input_size or from_name(case.variant).input_size)
    accuracy = {}
    for row in rows:
        config = dataclasses.replace(configs[0], input_size=size)
        predictor = RTMO(RowModel(row, config, case.batch, case.max_det), device=case.device)
        start = time.perf_counter()
        metrics = evaluate(
            predictor,
            data=validation.data,
            images=validation.images,
            max_det=case.max_det,
            batch_size=case.batch,
        )
        accuracy[row.key] = {
            **{k: v for k, v in metrics.items() if k.startswith(("AP", "AR"))},
            **metrics["dataset"],
            "seconds": time.perf_counter() - start,
        }
    first = next(iter(accuracy.values()), None)
    size_text = "" if first is None else f" ({first['images']} images, {first['people']} people)"
    note = (
        f"AP: COCO keypoint AP (pycocotools) of each row run with the weights of "
        f"{validation.checkpoint.name} on {validation.data.name}{size_text}; mmpose's settings "
        f"(score_mode bbox, score_thr 0.1, nms_thr 0.65), max_det {case.max_det}"
    )
    return accuracy, note
