"""Variant names, aliases, keypoint sets and checkpoint URLs of rtmo.config."""

import pytest

from rtmo.config import VARIANTS, from_name


def test_every_published_checkpoint_has_a_variant():
    assert len(VARIANTS) == 11
    for name, cfg in VARIANTS.items():
        assert cfg.name == name
        assert cfg.checkpoint_url.startswith("https://download.openmmlab.com/mmpose/v1/projects/")
        assert cfg.checkpoint_url.endswith(".pth")
        assert cfg.checkpoint_filename in cfg.checkpoint_url
        assert f"-{cfg.input_size[0]}x{cfg.input_size[1]}-" in cfg.checkpoint_filename


@pytest.mark.parametrize(
    ("alias", "name", "size", "k", "side"),
    [
        ("rtmo-t", "rtmo-t-body7", "t", 17, 416),
        ("rtmo-s", "rtmo-s-body7", "s", 17, 640),
        ("RTMO-M-coco", "rtmo-m-coco", "m", 17, 640),
        ("rtmo", "rtmo-l-body7", "l", 17, 640),
        ("rtmo-s-crowd", "rtmo-s-crowdpose", "s", 14, 640),
        ("rtmo-l-body7-crowdpose", "rtmo-l-body7-crowdpose", "l", 14, 640),
    ],
)
def test_from_name_resolves_aliases(alias, name, size, k, side):
    cfg = from_name(alias)
    assert (cfg.name, cfg.size, cfg.num_keypoints, cfg.input_size) == (name, size, k, (side, side))
    assert len(cfg.keypoint_names) == len(cfg.sigmas) == len(cfg.keypoint_colors) == k


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown RTMO variant 'rtmo-x'.*rtmo-s-coco"):
        from_name("rtmo-x")


@pytest.mark.parametrize("name", ["rtmo-s", "rtmo-s-crowdpose"])
def test_skeleton_indexes_keypoints_and_has_a_colour_per_limb(name):
    cfg = from_name(name)
    assert len(cfg.skeleton) == len(cfg.limb_colors) == (15 if cfg.crowdpose else 19)
    assert all(0 <= a < cfg.num_keypoints and 0 <= b < cfg.num_keypoints for a, b in cfg.skeleton)
    assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in cfg.limb_colors)


def test_the_crowdpose_m_url_keeps_its_published_typo():
    assert from_name("rtmo-m-crowdpose").checkpoint_filename.startswith("rrtmo-m_")


@pytest.mark.parametrize(
    ("name", "channels", "pose"),
    [("rtmo-t", (96, 192, 384), 104), ("rtmo-s", (128, 256, 512), 144),
     ("rtmo-m", (192, 384, 768), 216), ("rtmo-l", (256, 512, 1024), 288)],
)  # fmt: skip
def test_channel_counts_follow_the_spec_table(name, channels, pose):
    cfg = from_name(name)
    assert cfg.backbone_channels == channels
    assert cfg.pose_channels == pose
    assert cfg.pose_vec_channels == 2 * cfg.head_channels == 2 * channels[0]


# From the official configs and their mode-switch hooks (RTMO.md §1.4, §5): the first stage's
# MLE weight, and whether the switch also sets overlaps_power 1.0 and loss_cls 2.0.
_TRAINING = {
    "rtmo-t-body7": (1.0, False, True, 280, 600),
    "rtmo-s-body7": (1.0, False, True, 280, 600),
    "rtmo-s-coco": (1.0, False, True, 280, 600),
    "rtmo-m-body7": (1e-2, True, False, 280, 600),
    "rtmo-m-coco": (1e-2, True, False, 280, 600),
    "rtmo-l-body7": (1e-2, True, False, 280, 600),
    "rtmo-l-coco": (1e-2, True, False, 280, 600),
    "rtmo-s-crowdpose": (1e-3, True, False, 350, 700),
    "rtmo-m-crowdpose": (1e-3, True, False, 350, 700),
    "rtmo-l-crowdpose": (1e-3, True, False, 350, 700),
    "rtmo-l-body7-crowdpose": (1e-3, True, False, 350, 700),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_training_stages_follow_the_official_configs(name):
    mle, switches_cls, keypoint_centres, switch_epoch, epochs = _TRAINING[name]
    cfg = from_name(name)
    first, second, third = (cfg.train_stage(s) for s in (1, 2, 3))
    assert (first.loss_cls, first.loss_bbox, first.loss_oks, first.loss_vis) == (1, 5, 30, 1)
    assert (first.loss_mle, first.overlaps_power) == (mle, 0.5)
    assert not first.proxy_target_cc
    assert not first.use_aux_loss
    assert (second.loss_mle, second.loss_oks, second.proxy_target_cc) == (5.0, 10.0, True)
    assert (second.overlaps_power, second.loss_cls) == ((1.0, 2.0) if switches_cls else (0.5, 1))
    assert not second.use_aux_loss
    assert third.use_aux_loss
    assert third.loss_bbox_aux == 1.0
    assert third == type(third)(**{**vars(second), "use_aux_loss": True})
    assert cfg.use_keypoints_for_center == keypoint_centres
    assert cfg.max_epochs == epochs
    assert cfg.stage_start_epochs == (0, switch_epoch, epochs - (30 if cfg.crowdpose else 20))
    with pytest.raises(ValueError, match="stage must be 1, 2 or 3"):
        cfg.train_stage(0)
