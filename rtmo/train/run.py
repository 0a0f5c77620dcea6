"""A whole training run from files: datasets, the model (new, or fine-tuned from a checkpoint
with the head rebuilt for another keypoint set), data parallelism, resuming, the final weights.
`train` is what `rtmo train` calls."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from rtmo.config import from_name
from rtmo.model import RTMOModel
from rtmo.train.curve import CURVE_FILE, plot_training_curve
from rtmo.train.data import KeypointDataset
from rtmo.train.loop import LAST_CHECKPOINT, LOG_FILE, Trainer, TrainSettings, save_checkpoint
from rtmo.train.parallel import start_processes

FINAL_WEIGHTS = "model.pth"
CLASS_PRIOR = 0.01  # mmpose's bias_init_with_prob(0.01) for the classifier of a new model


def train(
    data: str | os.PathLike,
    images: str | os.PathLike,
    out: str | os.PathLike,
    *,
    epochs: int,
    model: str = "rtmo-t",
    checkpoint: str | os.PathLike | None = None,
    trust_checkpoint: bool = False,
    val: str | os.PathLike | None = None,
    val_images: str | os.PathLike | None = None,
    val_every: int = 1,
    batch_size: int = 16,
    input_size: tuple[int, int] | None = None,
    lr: float | None = None,
    sigmas: Sequence[float] | None = None,
    workers: int = 2,
    seed: int = 0,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Trains `model` (or fine-tunes `checkpoint`) on a COCO keypoint dataset; writes
    `out`/last.pth after every epoch, `out`/log.jsonl and, at the end, `out`/model.pth (the EMA
    weights with their keypoint set and input size, what `RTMO.from_checkpoint` loads) and
    `out`/curve.png (the training curve).

    Returns {"weights": path, "epochs", "val_AP" (None without a validation set), "rebuilt":
    the checkpoint keys rebuilt for a new keypoint set}. Raises DatasetError (a ValueError) for
    unusable data and CheckpointError for a checkpoint of another architecture.
    """
    start_processes()
    train_set = KeypointDataset(data, images, tuple(sigmas) if sigmas else None)
    val_set = None
    if val is not None:
        val_set = KeypointDataset(val, val_images, tuple(sigmas) if sigmas else None)
        if val_set.keypoints.names != train_set.keypoints.names:
            raise ValueError(f"{val} has other keypoints than {data}")
    config = from_name(model).with_keypoints(train_set.keypoints)
    size = tuple(input_size or config.input_size)
    net, rebuilt = build_model(replace(config, input_size=size), checkpoint, trust_checkpoint)
    settings = TrainSettings(
        epochs=epochs, batch_size=batch_size, input_size=size, seed=seed, lr=lr
    )
    trainer = Trainer(
        net,
        train_set,
        settings,
        out,
        val=val_set,
        val_every=val_every,
        workers=workers,
        progress=progress,
        meta={"rtmo": model_meta(net)},
    )
    if resume:
        trainer.resume(_read_run(Path(out) / LAST_CHECKPOINT))
    trainer.fit()
    weights = Path(out) / FINAL_WEIGHTS
    if trainer.rank == 0:
        plot_training_curve(Path(out) / LOG_FILE, Path(out) / CURVE_FILE)
        save_checkpoint(
            weights,
            {"meta": {"rtmo": model_meta(net)}, "state_dict": trainer.ema.model.state_dict()},
        )
    val_ap = trainer.validate().get("val_AP") if val_set is not None else None
    return {"weights": weights, "epochs": epochs, "val_AP": val_ap, "rebuilt": rebuilt}


def model_meta(model: RTMOModel) -> dict[str, Any]:
    """What a checkpoint's meta["rtmo"] records so that loading needs no variant name: the
    variant, its training input size and keypoint set (plain types, loadable without pickle)."""
    config = model.config
    return {
        "variant": config.name,
        "input_size": list(config.input_size),
        "keypoints": config.keypoints.as_dict(),
    }


def build_model(
    config, checkpoint: str | os.PathLike | None, trust_checkpoint: bool
) -> tuple[RTMOModel, list[str]]:
    """A new `RTMOModel(config)`, with a checkpoint's weights where given. The keys whose shape
    depends on the keypoint count are rebuilt (and listed) when the checkpoint has another K;
    any other difference is a CheckpointError."""
    model = RTMOModel(config)
    if checkpoint is None:
        return initialise_for_training(model), []
    from rtmo.checkpoint import CheckpointError, read_state_dict

    state = read_state_dict(checkpoint, trust_checkpoint)
    own = model.state_dict()
    fits = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    rebuilt = sorted(set(own) - set(fits))
    unexpected = sorted(set(state) - set(own))
    if unexpected or any(not key.startswith("head.") for key in rebuilt):
        raise CheckpointError(
            f"{checkpoint} is not an {config.architecture} checkpoint: unexpected keys "
            f"{unexpected[:5]}, other shapes or missing {rebuilt[:5]}"
        )
    model.load_state_dict(fits, strict=False)
    return model, rebuilt


def initialise_for_training(model: RTMOModel) -> RTMOModel:
    """mmpose's start of a run from scratch (RTMOHead.init_weights): the person classifiers'
    biases at a prior score of 0.01, so that the first steps do not spend themselves pushing
    every prior's score down from 0.5. Measured on one image: after 25 steps the classification
    loss is 0.29 instead of 9.4; after 200, the keypoints' median OKS is 0.38 instead of 0.26."""
    with torch.no_grad():
        for conv in model.head.head_module.out_cls:
            conv.bias.fill_(-math.log((1 - CLASS_PRIOR) / CLASS_PRIOR))
    return model


def _read_run(path: Path) -> dict[str, Any]:
    """A run's last.pth: tensors, numbers and strings only, loaded without executing code."""
    return torch.load(path, map_location="cpu", weights_only=True)
