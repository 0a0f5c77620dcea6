"""Loading official-layout checkpoints: safe unpickling, variant inference and every error path."""

import zipfile

import pytest
import torch
from checkpoints import write_published_checkpoint

from rtmo.checkpoint import CheckpointError, infer_variant, load_model, read_state_dict
from rtmo.config import from_name
from rtmo.model import RTMOModel


@pytest.fixture(scope="module")
def tiny_model():
    return RTMOModel(from_name("rtmo-t")).eval()


@pytest.fixture(scope="module")
def published(tiny_model, tmp_path_factory):
    return write_published_checkpoint(tiny_model, tmp_path_factory.mktemp("ckpt") / "rtmo-t.pth")


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sb = b.state_dict()
    return all(torch.equal(v, sb[k]) for k, v in a.state_dict().items())


def test_published_layout_needs_numpy_globals_and_loads_without_trust(tiny_model, published):
    with pytest.raises(Exception, match="numpy"):
        torch.load(published, weights_only=True)  # plain weights-only loading refuses it
    model = load_model(published)
    assert model.config.name == "rtmo-t-body7"
    assert not model.training
    assert _same_weights(model, tiny_model)


def test_named_variant_with_the_same_layout_loads(published):
    assert load_model(published, "rtmo-t-body7", use_kernels=False).use_kernels is False


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
        lambda sd: {"meta": {}, "ema_state_dict": sd},
    ],
    ids=["bare", "module-prefix", "ema-only"],
)
def test_other_layouts(tiny_model, tmp_path, wrap):
    path = tmp_path / "ckpt.pth"
    torch.save(wrap(tiny_model.state_dict()), path)
    assert _same_weights(load_model(path), tiny_model)


@pytest.mark.parametrize(
    ("variant", "expected"),
    [
        ("rtmo-t", "rtmo-t"),
        ("rtmo-s-coco", "rtmo-s"),
        ("rtmo-m", "rtmo-m"),
        ("rtmo-s-crowdpose", "rtmo-s-crowdpose"),
        ("rtmo-l-body7-crowdpose", "rtmo-l-crowdpose"),
    ],
)
def test_infer_variant_from_shapes(variant, expected):
    cfg = from_name(variant)
    width = int(64 * cfg.widen)
    shapes = {
        "backbone.stem.conv.conv.weight": torch.empty(width, 12, 3, 3),
        "head.dcc.pos_enc": torch.empty(cfg.num_keypoints, 128),
    }
    assert infer_variant(shapes) == expected


def test_infer_variant_errors():
    with pytest.raises(CheckpointError, match=r"not an RTMO state_dict.*stem"):
        infer_variant({"fc.weight": torch.empty(3)})
    stem = {"head.dcc.pos_enc": torch.empty(17, 128)}
    with pytest.raises(CheckpointError, match="stem of 40 channels"):
        infer_variant({**stem, "backbone.stem.conv.conv.weight": torch.empty(40, 12, 3, 3)})
    with pytest.raises(CheckpointError, match="no published RTMO-t variant has 14 keypoints"):
        infer_variant(
            {
                "backbone.stem.conv.conv.weight": torch.empty(24, 12, 3, 3),
                "head.dcc.pos_enc": torch.empty(14, 128),
            }
        )


def test_checkpoint_of_another_variant_lists_the_differences(published):
    with pytest.raises(CheckpointError) as info:
        load_model(published, "rtmo-s")
    message = str(info.value)
    assert "does not fit 'rtmo-s-body7'; it fits 'rtmo-t'" in message
    assert "keys with other shapes (checkpoint vs model)" in message
    assert "backbone.stage1.0.conv.weight (48, 24, 3, 3) vs (64, 32, 3, 3)" in message
    assert "346 keys with other shapes" in message
    assert "(338 more)" in message


def test_missing_and_unexpected_keys_are_listed(tiny_model, tmp_path):
    state = dict(tiny_model.state_dict())
    del state["head.dcc.x_fc.weight"]
    state["head.extra.weight"] = torch.zeros(1)
    path = tmp_path / "edited.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    message = str(info.value)
    assert "1 missing keys: head.dcc.x_fc.weight" in message
    assert "1 unexpected keys: head.extra.weight" in message


def test_truncated_file(published, tmp_path):
    path = tmp_path / "truncated.pth"
    path.write_bytes(published.read_bytes()[: published.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_state_dict(path)


def test_corrupt_member_inside_the_archive(published, tmp_path):
    path = tmp_path / "corrupt.pth"
    with zipfile.ZipFile(published) as src, zipfile.ZipFile(path, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith("data.pkl"):
                data = data[: len(data) // 2]  # the pickle stops in the middle
            dst.writestr(item, data)
    with pytest.raises(CheckpointError, match="corrupt"):
        read_state_dict(path)


def test_file_that_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "image.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0 not a checkpoint")
    with pytest.raises(CheckpointError, match="is not a PyTorch checkpoint"):
        read_state_dict(path)


def test_torch_file_without_a_state_dict(tmp_path):
    path = tmp_path / "list.pth"
    torch.save({"meta": {"epoch": 1}, "optimizer": [1, 2]}, path)
    with pytest.raises(CheckpointError, match=r"not a model checkpoint.*'meta', 'optimizer'"):
        read_state_dict(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_state_dict(tmp_path / "nope.pth")


class _RunsCodeWhenUnpickled:
    ran = False

    def __reduce__(self):
        return (_mark_ran, ())


def _mark_ran():
    _RunsCodeWhenUnpickled.ran = True
    return "ran"


def test_pickled_code_needs_trust(tiny_model, tmp_path):
    path = tmp_path / "code.pth"
    torch.save(
        {"meta": {"hook": _RunsCodeWhenUnpickled()}, "state_dict": tiny_model.state_dict()}, path
    )
    _RunsCodeWhenUnpickled.ran = False
    with pytest.raises(CheckpointError, match=r"trust_checkpoint=True.*") as info:
        load_model(path)
    assert "_mark_ran" in str(info.value)
    assert not _RunsCodeWhenUnpickled.ran
    model = load_model(path, trust_checkpoint=True)
    assert _RunsCodeWhenUnpickled.ran
    assert _same_weights(model, tiny_model)


def test_fixture_checkpoint_loads_safely():
    from checkpoints import shared_dir

    path = shared_dir() / "fixtures" / "mmpose-rtmo-t-calibrated" / "rtmo-t_calibrated.pth"
    state = read_state_dict(path)
    assert len(state) == 514
    assert infer_variant(state) == "rtmo-t"
