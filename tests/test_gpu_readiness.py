"""GPU readiness of the prediction path, checked on any machine (PERFORMANCE.md target 4):

* `predict_padded` compiles with `torch.compile(fullgraph=True)`: Dynamo refuses `.item()`,
  `.tolist()`, `nonzero` and data-dependent shapes unless told otherwise (`capture_scalar_outputs`
  and `capture_dynamic_output_shape_ops` stay False here), so a full graph has none of them.
* No host sync before the final per-image split: the path runs on fake tensors (shapes without
  data: any read of a value on the host raises), and every aten op the eager path dispatches is
  recorded and none may read a device value or produce a data-dependent shape.
* The post-process dispatches the same ops whatever the number of people or candidates, so on a
  GPU it launches a bounded number of kernels (and replays from one CUDA graph).

The model is RTMO-t with random weights and a planted crowd (benchmarks/synthetic.py) at small
input sizes, so this file runs in about a minute on 2 cores.
"""

from __future__ import annotations

import pytest
import torch
from torch._subclasses.fake_tensor import DataDependentOutputException, FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

from benchmarks.synthetic import build_model, crowd_dense_outputs, plant_crowd
from rtmo.config import from_name
from rtmo.model import postprocess
from rtmo.model.postprocess import postprocess_padded, split_predictions

SIZE = (128, 96)  # (w, h): 48 + 12 priors, enough for the planted people and candidates
PEOPLE, CANDIDATES = 3, 24
MAX_DET = 8

# aten ops that copy a device value to the host (a sync on a GPU) or whose output shape depends
# on the data (which needs one).
_SYNC_OPS = {
    "aten::_local_scalar_dense",  # .item(), .tolist(), bool(tensor), int(tensor)
    "aten::item",
    "aten::is_nonzero",
    "aten::equal",
    "aten::allclose",
    "aten::nonzero",
    "aten::masked_select",
    "aten::_unique",
    "aten::_unique2",
    "aten::unique_dim",
    "aten::unique_consecutive",
    "aten::repeat_interleave",
    "aten::argwhere",
}
# Ops that sync when one of their index arguments is a boolean mask.
_MASK_INDEX_OPS = {"aten::index", "aten::index_put", "aten::index_put_"}


def _flat(args) -> list:
    out = []
    for a in args:
        if isinstance(a, (list, tuple)):
            out += _flat(a)
        else:
            out.append(a)
    return out


class SyncRecorder(TorchDispatchMode):
    """Records every dispatched op and the ones that would sync a GPU with the host."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []
        self.syncs: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._schema.name
        self.ops.append(name)
        tensors = [a for a in _flat([*args, *kwargs.values()]) if isinstance(a, torch.Tensor)]
        if name in _SYNC_OPS:
            self.syncs.append(name)
        elif name in _MASK_INDEX_OPS and any(t.dtype == torch.bool for t in tensors[1:]):
            self.syncs.append(f"{name} with a boolean mask")
        elif len({t.device for t in tensors}) > 1 or (
            "device" in kwargs and tensors and torch.device(kwargs["device"]) != tensors[0].device
        ):
            self.syncs.append(f"{name} across devices")
        return func(*args, **kwargs)


@pytest.fixture(scope="module")
def model():
    net = build_model("rtmo-t").reparameterize()
    return plant_crowd(net, PEOPLE, CANDIDATES, SIZE)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.rand(2, 3, SIZE[1], SIZE[0], generator=gen) * 255


def test_sync_recorder_sees_host_reads_and_data_dependent_shapes():
    # The detector itself: each of these must be caught, or the tests below prove nothing.
    # (.tolist() of a CPU tensor reads memory without dispatching an op; the fake-tensor test
    # catches it.)
    x = torch.arange(6.0)
    cases = {
        "item": lambda: x.sum().item(),
        "bool": lambda: bool(x[0] > 1),
        "nonzero": lambda: x.nonzero(),
        "mask index": lambda: x[x > 2],
    }
    for label, fn in cases.items():
        with SyncRecorder() as rec:
            fn()
        assert rec.syncs, f"{label} was not detected"
    with SyncRecorder() as rec:
        torch.where(x > 2, x, 0.0).topk(3)
    assert rec.syncs == []


@torch.inference_mode()
def test_predict_padded_compiles_with_fullgraph(model, images):
    torch._dynamo.reset()
    eager = model.predict_padded(images, max_det=MAX_DET)
    # aot_eager: Dynamo's full graph plus AOTAutograd's trace with the ops' fake kernels; the
    # inductor code generation of the whole network takes minutes on 2 cores (the post-process
    # alone is compiled with inductor below).
    compiled = torch.compile(model.predict_padded, fullgraph=True, backend="aot_eager")
    with torch._dynamo.config.patch(
        capture_scalar_outputs=False, capture_dynamic_output_shape_ops=False
    ):
        out = compiled(images, max_det=MAX_DET)
    assert out.num_detections.tolist() == [PEOPLE, PEOPLE]
    for name, a, b in zip(out._fields, out, eager, strict=True):
        torch.testing.assert_close(a, b, msg=name)


@torch.inference_mode()
def test_postprocess_compiles_with_inductor_fullgraph(model):
    torch._dynamo.reset()
    config = from_name("rtmo-t")
    dense = crowd_dense_outputs(config, 5, 40, batch=2, input_size=SIZE)
    args = (dense, model.head.dcc, SIZE, 0.1, 0.65, MAX_DET, True, "auto")
    compiled = torch.compile(postprocess_padded, fullgraph=True)
    out, eager = compiled(*args), postprocess_padded(*args)
    assert out.num_detections.tolist() == [5, 5]
    torch.testing.assert_close(out.keypoint_scores, eager.keypoint_scores)
    torch.testing.assert_close(out.boxes, eager.boxes)
    # Inductor reorders the DCC's float32 sums: keypoints (pixels, up to ~100) agree to 1e-2 px.
    torch.testing.assert_close(out.keypoints, eager.keypoints, rtol=0, atol=1e-2)


@torch.inference_mode()
def test_predict_padded_runs_on_fake_tensors_and_only_the_split_reads_values(model, images):
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        fake = mode.from_tensor(images)
        padded = model.predict_padded(fake, max_det=MAX_DET)
        assert padded.keypoints.shape == (2, MAX_DET, 17, 2)
        # The per-image split is the one place that reads a value: it must raise here.
        with pytest.raises(DataDependentOutputException):
            split_predictions(padded)


@torch.inference_mode()
def test_no_sync_op_dispatched_before_the_per_image_split(model, images):
    with SyncRecorder() as rec:
        padded = model.predict_padded(images, max_det=MAX_DET)
    assert len(rec.ops) > 100  # the whole network and post-process went through the recorder
    assert rec.syncs == []
    people = split_predictions(padded)
    assert [len(p["scores"]) for p in people] == [PEOPLE, PEOPLE]


def _postprocess_ops(people: int, candidates: int, use_kernels: bool, dcc) -> list[str]:
    config = from_name("rtmo-t")
    dense = crowd_dense_outputs(config, people, candidates)
    size = config.input_size
    with torch.inference_mode(), SyncRecorder() as rec:
        out = postprocess_padded(dense, dcc, size, 0.1, 0.65, 64, use_kernels, "auto")
    assert int(out.num_detections[0]) == people
    return rec.ops


def _profiled_events(people: int, candidates: int, dcc) -> list[str]:
    config = from_name("rtmo-t")
    dense = crowd_dense_outputs(config, people, candidates)
    with (
        torch.inference_mode(),
        torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof,
    ):
        postprocess_padded(dense, dcc, config.input_size, 0.1, 0.65, 64, True, "auto")
    return sorted(e.name for e in prof.events())


def test_postprocess_ops_do_not_grow_with_people_or_candidates(model, monkeypatch):
    # The static-shape path of CUDA and of compiled code (eager CPU decodes the kept people).
    monkeypatch.setattr(postprocess, "_sync_is_free", lambda keep: False)
    dcc = model.head.dcc
    points = [(1, 100), (10, 100), (40, 400), (40, 800)]
    op_lists = [_postprocess_ops(p, c, True, dcc) for p, c in points]
    assert all(ops == op_lists[0] for ops in op_lists), [len(ops) for ops in op_lists]
    assert "rtmo::nms_padded" in op_lists[0]
    assert "rtmo::dcc_decode" in op_lists[0]
    events = [_profiled_events(p, c, dcc) for p, c in points]
    assert all(e == events[0] for e in events), [len(e) for e in events]
    # The counter sees data dependence: the reference NMS loops once per kept person.
    reference = [len(_postprocess_ops(p, 100, False, dcc)) for p in (1, 10)]
    assert reference[1] > reference[0]


@pytest.mark.needs_cuda
@torch.inference_mode()
def test_no_sync_on_cuda_and_graph_capture(model, images):
    from benchmarks.harness import graph_callable

    net, x = model.cuda(), images.cuda()
    net.predict_padded(x, max_det=MAX_DET)  # lazy initialisation outside the sync check
    torch.cuda.set_sync_debug_mode("error")
    try:
        padded = net.predict_padded(x, max_det=MAX_DET)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    replay = graph_callable(lambda b: net.predict_padded(b, max_det=MAX_DET), x)
    graphed = replay(x)
    assert graphed.num_detections.tolist() == padded.num_detections.tolist() == [PEOPLE, PEOPLE]
    torch.testing.assert_close(graphed.keypoints, padded.keypoints)
