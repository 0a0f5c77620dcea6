"""Every official state_dict layout (key names, shapes, dtypes) equals the one of our modules."""

import re

import pytest
from checkpoints import shared_dir

from rtmo.config import from_name
from rtmo.model import RTMOModel

_LINE = re.compile(r"(\S+) \(([\d, ]*)\) (\w+)")


def _published_layout(name: str) -> dict[str, tuple[tuple[int, ...], str]]:
    layout = {}
    path = shared_dir() / "spec" / "state_dicts" / f"{name}.txt"
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, dtype = _LINE.fullmatch(line.strip()).groups()
        layout[key] = (tuple(int(s) for s in shape.replace(" ", "").split(",") if s), dtype)
    return layout


@pytest.mark.parametrize(
    ("dump", "variant", "num_keys", "params_m"),
    [
        ("rtmo-t", "rtmo-t", 514, 6.83),
        ("rtmo-s", "rtmo-s-coco", 514, 9.87),
        ("rtmo-m", "rtmo-m-body7", 658, 22.53),
        ("rtmo-l", "rtmo-l", 778, 44.69),
        ("rtmo-s-crowd", "rtmo-s-crowdpose", 514, 9.77),
    ],
)
def test_state_dict_equals_the_published_layout(dump, variant, num_keys, params_m):
    model = RTMOModel(from_name(variant))
    ours = {
        k: (tuple(v.shape), str(v.dtype).removeprefix("torch."))
        for k, v in model.state_dict().items()
    }
    published = _published_layout(dump)
    assert len(published) == num_keys
    assert sorted(set(ours) - set(published)) == []
    assert sorted(set(published) - set(ours)) == []
    assert {k: v for k, v in ours.items() if published[k] != v} == {}
    params = sum(p.numel() for p in model.parameters()) / 1e6
    assert params == pytest.approx(params_m, abs=0.005)


def test_batchnorm_eps_per_part():
    model = RTMOModel(from_name("rtmo-t"))
    assert model.backbone.stem.conv.bn.eps == 1e-3
    assert model.head.head_module.conv_pose[0][1].bn.eps == 1e-3
    assert model.neck.fpn_blocks[0].bottlenecks[0].branch_3x3.bn.eps == 1e-5
    assert model.neck.projector.convs[0].bn.eps == 1e-5
    assert model.head.dcc.pose_to_kpts[1].eps == 1e-5
