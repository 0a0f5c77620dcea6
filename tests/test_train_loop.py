"""The training loop: the loss goes down, a resumed run equals an uninterrupted one bit for bit,
the schedule, EMA and parameter groups are the recipe's, and two gloo processes follow the loss
curve of one process with the same global batch."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from rtmo.config import TrainRecipe, from_name
from rtmo.model import RTMOModel
from rtmo.train import loop
from rtmo.train.data import KeypointDataset
from rtmo.train.loop import Trainer, TrainSettings, lr_factor, param_groups
from rtmo.train.synthetic import synthesize_dataset

INPUT = (96, 96)


@pytest.fixture(scope="module")
def tiny_people(tmp_path_factory) -> KeypointDataset:
    """8 small procedural images with a few people each."""
    folder = tmp_path_factory.mktemp("tiny") / "data"
    annotations = synthesize_dataset(folder, 8, 5, size=(256, 192), max_people=4)
    return KeypointDataset(annotations, folder / "images")


def _trainer(data, out, epochs=2, batch_size=4, seed=0, init_seed=0, **options) -> Trainer:
    torch.manual_seed(init_seed)
    model = RTMOModel(from_name("rtmo-t"))
    settings = TrainSettings(epochs=epochs, batch_size=batch_size, input_size=INPUT, seed=seed)
    return Trainer(model, data, settings, out, progress=False, **options)


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / loop.LOG_FILE).read_text().splitlines()]


def test_a_few_steps_on_eight_tiny_images_lower_the_loss(tiny_people, tmp_path):
    trainer = _trainer(tiny_people, tmp_path, epochs=12, batch_size=8)
    trainer.out.mkdir(parents=True, exist_ok=True)
    trainer.images.jitter = False  # the same eight inputs at every step
    images, targets, _ = loop.collate([trainer.images[i] for i in range(8)])
    losses = [trainer.train_step(images, targets, stage=1)["loss"] for _ in range(10)]
    # Deterministic: without an optimizer step (or with its sign flipped) the loss would not
    # fall; 10 steps of the short-run schedule lower it by 8% here.
    assert sum(losses[-3:]) / 3 < 0.95 * sum(losses[:3]) / 3, losses


def test_resume_continues_bit_for_bit(tiny_people, tmp_path, monkeypatch):
    straight = _trainer(tiny_people, tmp_path / "straight")
    straight.fit()

    interrupted = _trainer(tiny_people, tmp_path / "resumed")
    saves = []
    real_save = loop.save_checkpoint

    def save_then_stop(path, state):
        real_save(path, state)
        saves.append(path)
        raise KeyboardInterrupt  # Ctrl+C right after the first epoch's checkpoint

    monkeypatch.setattr(loop, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit()
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    last = tmp_path / "resumed" / loop.LAST_CHECKPOINT
    assert saves == [last]
    # Other initial weights: resuming must set everything.
    resumed = _trainer(tiny_people, tmp_path / "resumed", init_seed=123)
    resumed.resume(torch.load(last, weights_only=True))
    resumed.fit()
    for name, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    for name, value in straight.ema.model.state_dict().items():
        assert torch.equal(value, resumed.ema.model.state_dict()[name]), name
    assert resumed.step == straight.step == 4


def test_resume_refuses_other_settings(tiny_people, tmp_path):
    trainer = _trainer(tiny_people, tmp_path, epochs=1)
    trainer.fit()
    state = torch.load(tmp_path / loop.LAST_CHECKPOINT, weights_only=True)
    other = _trainer(tiny_people, tmp_path, epochs=3)
    with pytest.raises(ValueError, match=r"other settings.*epochs"):
        other.resume(state)


def test_the_checkpoint_is_the_official_layout_with_ema_weights(tiny_people, tmp_path):
    trainer = _trainer(tiny_people, tmp_path, epochs=1)
    trainer.fit()
    state = torch.load(tmp_path / loop.LAST_CHECKPOINT, weights_only=True)
    assert set(state["state_dict"]) == set(RTMOModel(from_name("rtmo-t")).state_dict())
    for name, value in trainer.ema.model.state_dict().items():
        assert torch.equal(state["state_dict"][name], value)
    assert state["meta"]["epoch"] == 1


def test_learning_rate_warms_up_quadratically_then_follows_one_cosine():
    recipe = TrainRecipe()
    total = 10_000  # warm-up: max(5/600 of the run, 200 steps) = 200
    assert lr_factor(0, total, recipe) == pytest.approx((1 / 200) ** 2)
    assert lr_factor(99, total, recipe) == pytest.approx(0.25)
    assert lr_factor(200, total, recipe) == pytest.approx(1.0)
    middle = 200 + (total - 200) // 2
    assert lr_factor(middle, total, recipe) == pytest.approx((1 + recipe.min_lr_ratio) / 2, 1e-3)
    assert lr_factor(total, total, recipe) == pytest.approx(recipe.min_lr_ratio)
    assert lr_factor(0, 50, recipe) == pytest.approx(1 / 25)  # short runs: a tenth of the run


def test_weight_average_follows_the_exp_momentum_rule():
    model = torch.nn.Linear(2, 1)
    average = loop.WeightAverage(model, TrainRecipe(), total_steps=100)
    assert average.momentum == pytest.approx(0.1)
    assert average.gamma == pytest.approx(10)
    with torch.no_grad():
        model.weight.add_(1.0)
    before = average.model.weight.clone()
    average.update(model)
    rate = (1 - 0.1) * math.exp(-1 / 10) + 0.1
    torch.testing.assert_close(average.model.weight, before + rate * (model.weight - before))


def test_param_groups_spare_norms_and_biases_and_slow_the_encoder():
    model = RTMOModel(from_name("rtmo-t"))
    groups = param_groups(model, 1e-3, TrainRecipe())
    by_id = {id(p): g for g in groups for p in g["params"]}
    params = dict(model.named_parameters())
    assert by_id[id(params["backbone.stem.conv.conv.weight"])]["weight_decay"] == 0.05
    assert by_id[id(params["backbone.stem.conv.bn.weight"])]["weight_decay"] == 0.0
    assert by_id[id(params["head.head_module.out_cls.0.bias"])]["weight_decay"] == 0.0
    encoder = by_id[id(params["neck.encoder.0.layers.0.self_attn.attn.in_proj_weight"])]
    assert encoder["lr"] == pytest.approx(5e-5)
    assert sum(len(g["params"]) for g in groups) == len(params)


def test_stages_keep_the_official_proportions():
    config = from_name("rtmo-t")
    assert [config.stage_of_epoch(e, 6) for e in range(6)] == [1, 1, 1, 2, 2, 3]
    stages = [config.stage_of_epoch(e, 600) for e in range(600)]
    assert stages.index(2) == 280
    assert stages.index(3) == 580
    assert [config.stage_of_epoch(e, 3) for e in range(3)] == [1, 2, 3]


def _first_step_gradients(data, out: Path) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """The losses and the (process-averaged) gradients of one step on the first four images."""
    trainer = _trainer(data, out, epochs=1, batch_size=4)
    trainer.images.jitter = False
    share = list(range(4))[trainer.rank :: trainer.world]
    images, targets, _ = loop.collate([trainer.images[i] for i in share])
    losses = trainer.objective(images, targets, 1)
    sum(losses.values()).backward()
    values = {name: float(value) for name, value in losses.items()}
    if trainer.world > 1:  # the logged losses: the mean over processes
        reduced = torch.tensor(list(values.values()), dtype=torch.float64)
        torch.distributed.all_reduce(reduced.div_(trainer.world))
        values = dict(zip(values, reduced.tolist(), strict=True))
    grads = {
        name: p.grad.clone() for name, p in trainer.model.named_parameters() if p.grad is not None
    }
    return values, grads


def _ddp_worker(rank: int, world: int, data: KeypointDataset, out: str) -> None:
    init = f"file://{out}/rendezvous"
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        result = _first_step_gradients(data, Path(out))
        if rank == 0:
            torch.save(result, Path(out) / "step.pt")
    finally:
        torch.distributed.destroy_process_group()


def _relative_l2(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    difference = sum((a[name] - b[name]).pow(2).sum() for name in a)
    return float((difference / sum(value.pow(2).sum() for value in a.values())).sqrt())


def test_two_gloo_processes_compute_the_single_process_step(tiny_people, tmp_path):
    """Same losses and gradients as one process holding the global batch (BatchNorm statistics
    over both processes). The gradients may differ by float32 rounding only: at most twice what
    changing the thread count (the reduction order) of one process changes (about 1e-3 here).
    Later steps are not compared: Adam's first update is about lr * sign(g) for every weight, so
    gradients that rounding leaves near zero get full-size updates of either sign."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        _, other_order = _first_step_gradients(tiny_people, tmp_path / "threads")
        torch.set_num_threads(1)
        single_losses, single = _first_step_gradients(tiny_people, tmp_path / "one")
    finally:
        torch.set_num_threads(threads)
    (tmp_path / "two").mkdir()
    mp.spawn(_ddp_worker, args=(2, tiny_people, str(tmp_path / "two")), nprocs=2)
    losses, grads = torch.load(tmp_path / "two" / "step.pt", weights_only=True)
    assert losses == pytest.approx(single_losses, rel=1e-4)
    assert set(grads) == set(single)
    rounding = _relative_l2(single, other_order)
    assert 0 < rounding < 1e-2
    assert _relative_l2(single, grads) <= 2 * rounding + 1e-4
