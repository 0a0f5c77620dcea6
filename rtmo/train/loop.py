"""The training loop: batches, optimizer and schedule, the stage switches, EMA, checkpoints,
validation and data-parallel training.

Determinism: the epoch's order comes from (seed, epoch) and each sample's augmentation from
(seed, epoch, index), whatever the number of workers or processes, so a run resumed from an epoch
checkpoint continues bit for bit, and `torchrun` with P processes sees the same global batches as
one process (each process takes every P-th image of a batch; SyncBatchNorm and the objective's
process-averaged normalisers make the losses and gradients those of the global batch; see
`rtmo.train.parallel`).

Checkpoints (`last.pth` after every epoch, written whole or not at all) hold mmpose's layout,
`state_dict` (the EMA weights, what `rtmo predict` and mmpose load) and `meta`, plus what resuming
needs: `model` (the raw weights), `optimizer`, `ema_steps` and the torch RNG state.
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from rtmo.config import TrainRecipe
from rtmo.model import RTMOModel
from rtmo.train.augment import augment
from rtmo.train.data import KeypointDataset
from rtmo.train.parallel import synchronise_batch_norms, world

LAST_CHECKPOINT = "last.pth"
LOG_FILE = "log.jsonl"
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.SyncBatchNorm, nn.LayerNorm, nn.GroupNorm)


@dataclass(frozen=True)
class TrainSettings:
    """What a run is: it must be the same to resume one."""

    epochs: int
    batch_size: int = 16
    input_size: tuple[int, int] = (416, 416)
    seed: int = 0
    lr: float | None = None  # None: the recipe's for this batch size

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if any(s < 32 or s % 32 for s in self.input_size):
            raise ValueError(f"input_size must be multiples of 32, got {self.input_size}")


class AugmentedImages(torch.utils.data.Dataset):
    """The training inputs of one epoch: item i is image i augmented with the generator seeded
    by (seed, epoch, i); None when its image file cannot be decoded."""

    def __init__(
        self, data: KeypointDataset, size: tuple[int, int], recipe: TrainRecipe, seed: int
    ):
        self.data, self.size, self.recipe, self.seed = data, size, recipe, seed
        self.epoch, self.jitter = 0, True

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]] | None:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        picks = [index, *rng.integers(len(self.data), size=3)] if self.jitter else [index]
        samples = [self.data.load(int(i)) for i in picks]
        if samples[0] is None:
            return None
        usable = [s for s in samples if s is not None]
        sample = augment(
            usable if len(usable) == 4 else usable[:1],
            rng,
            self.size,
            self.recipe.augment,
            self.data.keypoints.flip_indices,
            self.jitter,
        )
        image = torch.from_numpy(np.ascontiguousarray(sample.image.transpose(2, 0, 1))).float()
        targets = {
            "boxes": torch.from_numpy(sample.boxes),
            "keypoints": torch.from_numpy(sample.keypoints),
            "keypoints_visible": torch.from_numpy(sample.visible),
            "areas": torch.from_numpy(sample.areas),
        }
        return image, targets


def collate(items: list) -> tuple[Tensor | None, list[dict[str, Tensor]], int]:
    """(images, targets, number of undecodable images left out)."""
    kept = [item for item in items if item is not None]
    images = torch.stack([image for image, _ in kept]) if kept else None
    return images, [targets for _, targets in kept], len(items) - len(kept)


def param_groups(model: nn.Module, lr: float, recipe: TrainRecipe) -> list[dict[str, Any]]:
    """AdamW groups as mmpose's paramwise_cfg makes them: no weight decay on norm layers and
    biases, the neck's transformer encoder at `encoder_lr_mult` x lr."""
    norm_params = {id(p) for m in model.modules() if isinstance(m, _NORMS) for p in m.parameters()}
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        no_decay = name.endswith("bias") or id(param) in norm_params
        scale = recipe.encoder_lr_mult if name.startswith("neck.encoder.") else 1.0
        key = (lr * scale, 0.0 if no_decay else recipe.weight_decay)
        groups.setdefault(key, []).append(param)
    return [
        {"params": params, "lr": group_lr, "initial_lr": group_lr, "weight_decay": decay}
        for (group_lr, decay), params in groups.items()
    ]


def lr_factor(step: int, total: int, recipe: TrainRecipe) -> float:
    """The learning rate at `step` of `total` as a fraction of the peak: quadratic warm-up, then
    one cosine down to `min_lr_ratio` (see TrainRecipe)."""
    warmup = min(max(recipe.warmup_fraction * total, 200), total / 10)
    if step < warmup:
        return ((step + 1) / warmup) ** 2
    progress = (step - warmup) / max(total - warmup, 1)
    floor = recipe.min_lr_ratio
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


class WeightAverage:
    """mmdet's ExpMomentumEMA of every float parameter and buffer: at update s the average moves
    towards the weights by (1 - m) exp(-(1 + s) / gamma) + m. For short runs m is at least
    10 / total steps and gamma at most total / 10 (see TrainRecipe)."""

    def __init__(self, model: nn.Module, recipe: TrainRecipe, total_steps: int) -> None:
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.momentum = max(recipe.ema_momentum, 10 / total_steps)
        self.gamma = min(recipe.ema_gamma, max(total_steps / 10, 1.0))
        self.steps = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        rate = (1 - self.momentum) * math.exp(-(1 + self.steps) / self.gamma) + self.momentum
        source = model.state_dict()
        for name, average in self.model.state_dict().items():
            if average.is_floating_point():
                average.lerp_(source[name].detach(), rate)
            else:
                average.copy_(source[name])
        self.steps += 1


class _Objective(nn.Module):
    """The model's loss as a module's forward, what DistributedDataParallel wraps."""

    def __init__(self, model: RTMOModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor, targets: list[dict[str, Tensor]], stage: int) -> dict:
        return self.model.loss(images, targets, stage)


class Trainer:
    """Trains `model` on `data`; `fit()` runs the epochs, writing `out`/last.pth and log.jsonl.

    Under torch.distributed (e.g. `torchrun`), each process holds a replica; rank 0 writes.
    """

    def __init__(
        self,
        model: RTMOModel,
        data: KeypointDataset,
        settings: TrainSettings,
        out: str | os.PathLike,
        *,
        val: KeypointDataset | None = None,
        val_every: int = 1,
        workers: int = 0,
        progress: bool = True,
        meta: dict[str, Any] | None = None,
    ) -> None:
        self.settings, self.out, self.val, self.val_every = settings, Path(out), val, val_every
        self.recipe = model.config.train_recipe
        self.world, self.rank = world()
        if settings.batch_size % self.world:
            raise ValueError(
                f"batch_size {settings.batch_size} must be a multiple of the {self.world} processes"
            )
        self.steps_per_epoch = len(data) // settings.batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"the dataset has {len(data)} images, fewer than one batch of "
                f"{settings.batch_size}: lower the batch size"
            )
        self.total_steps = self.steps_per_epoch * settings.epochs
        if self.world > 1:
            synchronise_batch_norms(model)  # before the optimizer takes the parameters
        self.model = model.train()
        lr = settings.lr or self.recipe.learning_rate(settings.batch_size)
        self.optimizer = torch.optim.AdamW(param_groups(model, lr, self.recipe), lr=lr)
        self.ema = WeightAverage(model, self.recipe, self.total_steps)
        self.images = AugmentedImages(data, settings.input_size, self.recipe, settings.seed)
        self.workers, self.progress = workers, progress and self.rank == 0
        self.meta = meta or {}
        self.epoch, self.step = 0, 0
        objective = _Objective(model)
        if self.world > 1:
            objective = nn.parallel.DistributedDataParallel(objective, find_unused_parameters=True)
        self.objective = objective

    def fit(self) -> Path:
        """Runs the remaining epochs; returns the path of the last checkpoint."""
        self.out.mkdir(parents=True, exist_ok=True)
        while self.epoch < self.settings.epochs:
            record = self._train_epoch()
            self.epoch += 1
            if self.val is not None and (
                self.epoch % self.val_every == 0 or self.epoch == self.settings.epochs
            ):
                record.update(self.validate())
            if self.rank == 0:
                self._log({"epoch": self.epoch, **record})
                save_checkpoint(self.out / LAST_CHECKPOINT, self.checkpoint())
        return self.out / LAST_CHECKPOINT

    def stage(self) -> int:
        return self.model.config.stage_of_epoch(self.epoch, self.settings.epochs)

    def _train_epoch(self) -> dict[str, Any]:
        stage = self.stage()
        self.images.epoch, self.images.jitter = self.epoch, stage < 3
        totals: dict[str, float] = {}
        skipped, started = 0, time.perf_counter()
        bar = _progress_bar(self.steps_per_epoch, f"epoch {self.epoch + 1}", self.progress)
        for images, targets, missed in self._batches():
            skipped += missed
            losses = self.train_step(images, targets, stage)
            for name, value in losses.items():
                totals[name] = totals.get(name, 0.0) + value
            if bar is not None:
                bar.set_postfix(loss=f"{losses['loss']:.3f}", stage=stage, refresh=False)
                bar.update()
        if bar is not None:
            bar.close()
        seconds = time.perf_counter() - started
        record = {name: total / self.steps_per_epoch for name, total in totals.items()}
        return {
            "stage": stage,
            "lr": self.optimizer.param_groups[0]["lr"],
            **record,
            "it_per_s": self.steps_per_epoch / seconds,
            "skipped_images": skipped,
        }

    def _batches(self) -> Iterator[tuple[Tensor, list[dict[str, Tensor]], int]]:
        """This process's share of each global batch of the epoch."""
        order = np.random.default_rng([self.settings.seed, self.epoch]).permutation(
            len(self.images)
        )
        size = self.settings.batch_size
        batches = [
            order[s * size : (s + 1) * size][self.rank :: self.world].tolist()
            for s in range(self.steps_per_epoch)
        ]
        loader = torch.utils.data.DataLoader(
            self.images, batch_sampler=batches, num_workers=self.workers, collate_fn=collate
        )
        for images, targets, missed in loader:
            if images is None:
                images = torch.zeros(0, 3, *self.settings.input_size[::-1])
            yield images, targets, missed

    def train_step(self, images: Tensor, targets: list[dict[str, Tensor]], stage: int) -> dict:
        factor = lr_factor(self.step, self.total_steps, self.recipe)
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor
        losses = self.objective(images, targets, stage)
        total = sum(losses.values())
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), self.recipe.clip_grad_norm)
        self.optimizer.step()
        self.ema.update(self.model)
        self.step += 1
        values = {name: float(value.detach()) for name, value in losses.items()}
        values["loss"] = float(total.detach())
        if self.world > 1:
            reduced = torch.tensor(list(values.values()), dtype=torch.float64)
            dist.all_reduce(reduced.div_(self.world))
            values = dict(zip(values, reduced.tolist(), strict=True))
        if self.rank == 0:
            lr = self.optimizer.param_groups[0]["lr"]
            self._log({"step": self.step, "epoch": self.epoch + 1, "lr": lr, **values})
        return values

    def validate(self) -> dict[str, Any]:
        """COCO keypoint AP of the EMA weights on the validation set (rank 0; others get {})."""
        if self.rank != 0 or self.val is None:
            return {}
        from rtmo.eval import evaluate
        from rtmo.predictor import RTMO

        net = copy.deepcopy(self.ema.model)
        net.config = replace(net.config, input_size=self.settings.input_size)
        metrics = evaluate(
            RTMO(net), data=self.val.annotations, images=self.val.images, progress=False
        )
        return {"val_AP": metrics["AP"], "val_AP50": metrics["AP50"], "val_AR": metrics["AR"]}

    def checkpoint(self) -> dict[str, Any]:
        meta = {
            **self.meta,
            "epoch": self.epoch,
            "step": self.step,
            "settings": {**asdict(self.settings), "input_size": list(self.settings.input_size)},
        }
        return {
            "meta": meta,
            "state_dict": self.ema.model.state_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "ema_steps": self.ema.steps,
            "rng": torch.get_rng_state(),
        }

    def resume(self, state: dict[str, Any]) -> None:
        """Continues from a `checkpoint()` of a run with the same settings."""
        saved = state["meta"]["settings"]
        mine = {**asdict(self.settings), "input_size": list(self.settings.input_size)}
        if saved != mine:
            differ = {k: (saved.get(k), v) for k, v in mine.items() if saved.get(k) != v}
            raise ValueError(
                f"the checkpoint's run had other settings (checkpoint, now): {differ}; resume "
                "with the same ones"
            )
        self.model.load_state_dict(state["model"])
        self.ema.model.load_state_dict(state["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.ema.steps = state["ema_steps"]
        torch.set_rng_state(state["rng"])
        self.epoch, self.step = state["meta"]["epoch"], state["meta"]["step"]

    def _log(self, record: dict[str, Any]) -> None:
        with open(self.out / LOG_FILE, "a") as log:
            log.write(json.dumps(record) + "\n")


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """torch.save to a temporary file beside `path`, then renamed over it: an interrupted save
    leaves the previous checkpoint whole."""
    partial = path.with_name(path.name + ".partial")
    try:
        torch.save(state, partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _progress_bar(total: int, label: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=label, unit="it", file=sys.stderr, leave=False)
