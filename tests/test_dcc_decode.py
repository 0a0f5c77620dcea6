"""rtmo_kernels.dcc_decode: every backend against the float64 reference, edge cases, errors,
torch.library integration."""

from __future__ import annotations

import pytest
import torch
from dcc_cases import DccInputs, assert_matches_oracle, make_inputs
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import rtmo_kernels
from rtmo_kernels import _backend
from rtmo_kernels.reference import dcc as reference

# The Triton backend runs through its interpreter on CPU machines (~0.3 s per instance at RTMO
# shapes): its cases are capped at a few instances.
KERNEL_BACKENDS = ["cpu", "triton"]
TRITON_MAX_N = 3
RTMO_BINS = (192, 256)
# (N, K, D, num_bins): RTMO-s, then odd sizes (K = 14, D = 64, bins not a multiple of any tile).
SHAPES = [(20, 17, 128, RTMO_BINS), (1, 14, 64, (7, 33)), (37, 14, 64, (7, 33))]


def _cap(backend: str, n: int) -> int:
    return min(n, TRITON_MAX_N) if backend == "triton" else n


def _run(inputs: DccInputs, backend: str, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    return rtmo_kernels.dcc_decode(*inputs.args(), backend=backend, **kwargs)


@pytest.mark.parametrize("mode", ["expectation", "argmax"])
@pytest.mark.parametrize(("n", "k", "d", "num_bins"), SHAPES)
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_matches_float64_reference(backend, n, k, d, num_bins, mode):
    inputs = make_inputs(_cap(backend, n), k, d, seed=n + k)
    result = _run(inputs, backend, num_bins=num_bins, mode=mode)
    assert_matches_oracle(result, inputs, num_bins=num_bins, mode=mode)


@pytest.mark.parametrize("mode", ["expectation", "argmax"])
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_many_keypoints_and_tiny_dimension(backend, mode):
    # K = 40: two Triton keypoint blocks, CPU blocks of 6 plus a remainder of 4. D = 2: a single
    # frequency, padded to the 16 rows tl.dot needs.
    for k, d in ((40, 16), (5, 2)):
        inputs = make_inputs(2, k, d, seed=k, query_scale=3.0)
        result = _run(inputs, backend, num_bins=(5, 17), mode=mode)
        assert_matches_oracle(result, inputs, num_bins=(5, 17), mode=mode)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_half_precision_inputs_accumulate_in_float32(backend, dtype):
    inputs = make_inputs(_cap(backend, 5), 17, 128, seed=3, dtype=dtype)
    assert_matches_oracle(_run(inputs, backend), inputs)


@pytest.mark.parametrize("origin", [1e4, -1e4])
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_coordinates_of_ten_thousand_pixels(backend, origin):
    # Angles of hundreds of radians and float32 bin positions good to only ~1e-3 px.
    inputs = make_inputs(_cap(backend, 6), 17, 128, seed=4, origin=origin, extent=200.0)
    assert_matches_oracle(_run(inputs, backend), inputs)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_non_contiguous_inputs(backend):
    n, k, d = _cap(backend, 4), 17, 64
    base = make_inputs(n, k, d, seed=5)
    inputs = DccInputs(
        base.query_x.transpose(1, 2).contiguous().transpose(1, 2),  # D-major
        torch.cat([base.query_y, base.query_y], 2)[:, :, ::2],  # stride 2 along D
        torch.stack([base.boxes, -base.boxes], 2)[:, :, 0],  # stride 2 along the coordinates
        base.priors.t().contiguous().t(),
    )
    assert not any(t.is_contiguous() for t in inputs.args())
    assert_matches_oracle(_run(inputs, backend), inputs)


@pytest.mark.parametrize("backend", [*KERNEL_BACKENDS, "reference"])
def test_zero_instances(backend):
    inputs = make_inputs(0, 17, 128)
    keypoints, confidence = _run(inputs, backend)
    assert keypoints.shape == confidence.shape == (0, 17, 2)
    assert keypoints.dtype == confidence.dtype == torch.float32


def test_zero_keypoints():
    keypoints, confidence = _run(make_inputs(3, 0, 8), "cpu")
    assert keypoints.shape == confidence.shape == (3, 0, 2)


@pytest.mark.parametrize("mode", ["expectation", "argmax"])
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_zero_width_boxes(backend, mode):
    # Every bin sits at the center: equal logits, the center as coordinate, probability 1 / B.
    inputs = make_inputs(_cap(backend, 3), 17, 128, seed=6)
    center = inputs.boxes[:, :2] + 7.0
    inputs.boxes = torch.cat([center, center], 1)
    keypoints, confidence = _run(inputs, backend, mode=mode)
    torch.testing.assert_close(keypoints, center[:, None, :].expand_as(keypoints), rtol=0, atol=0)
    bins = torch.tensor(RTMO_BINS, dtype=torch.float32)
    torch.testing.assert_close(confidence, (1 / bins).expand_as(confidence))


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_argmax_takes_the_first_of_tied_bins(backend):
    # Zero queries tie every bin (across all tiles): the first bin, at the padded box's low edge.
    inputs = make_inputs(_cap(backend, 3), 17, 128, seed=7)
    inputs.query_x.zero_()
    inputs.query_y.zero_()
    keypoints, confidence = _run(inputs, backend, mode="argmax")
    lo, hi = inputs.boxes[:, :2].double(), inputs.boxes[:, 2:].double()
    first_bin = (lo + hi) / 2 - 1.25 * (hi - lo) / 2
    torch.testing.assert_close(keypoints.double(), first_bin[:, None, :].expand_as(keypoints))
    assert_matches_oracle((keypoints, confidence), inputs, mode="argmax")


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(0, 4),
    k=st.integers(1, 20),
    half_d=st.integers(1, 40),
    bins_x=st.integers(2, 70),
    bins_y=st.integers(2, 70),
    origin=st.floats(-1e4, 1e4),
    query_scale=st.floats(0.05, 4.0),
    mode=st.sampled_from(["expectation", "argmax"]),
    seed=st.integers(0, 2**16),
)
def test_cpu_kernel_property(n, k, half_d, bins_x, bins_y, origin, query_scale, mode, seed):
    inputs = make_inputs(
        n, k, 2 * half_d, seed=seed, origin=origin, box_size=(0.0, 500.0), query_scale=query_scale
    )
    num_bins = (bins_x, bins_y)
    result = _run(inputs, "cpu", num_bins=num_bins, mode=mode)
    if mode == "argmax":
        # The argmax may flip where two logits are within rounding of each other; the chosen bin's
        # probability must then still be the peak one to float32 accuracy.
        oracle = reference.dcc_decode(*inputs.to(torch.float64).args(), num_bins, mode=mode)
        torch.testing.assert_close(result[1].double(), oracle[1], rtol=1e-4, atol=2e-6)
    else:
        assert_matches_oracle(result, inputs, num_bins=num_bins, mode=mode)


def test_unfolded_decode_equals_folded_op():
    # mmpose's way (encodings through the Linear, clamped softmax with eps) in float64 against
    # the folded queries: the bias and the fold change nothing beyond rounding.
    n, k, c, d = 6, 17, 32, 64
    torch.manual_seed(0)
    feats = torch.randn(n, k, c, dtype=torch.float64)
    x_fc = nn.Linear(d, c).double()
    y_fc = nn.Linear(d, c).double()
    inputs = make_inputs(n, k, d, seed=8).to(torch.float64)
    unfolded = reference.dcc_decode_unfolded(feats, x_fc, y_fc, inputs.boxes, inputs.priors)
    queries = DccInputs(
        reference.fold_queries(feats, x_fc),
        reference.fold_queries(feats, y_fc),
        inputs.boxes,
        inputs.priors,
    )
    folded = reference.dcc_decode(*queries.args())
    # The 1e-8 in mmpose's softmax denominator (sum >= 1) scales every probability, hence the
    # coordinates and confidences, by at most 1e-8 relative; float64 rounding is far below.
    torch.testing.assert_close(unfolded[0], folded[0], rtol=2e-8, atol=0)
    torch.testing.assert_close(unfolded[1], folded[1], rtol=2e-8, atol=1e-15)
    kernel = _run(queries.to(torch.float32), "cpu")
    assert_matches_oracle(kernel, queries.to(torch.float32))


def test_auto_backend_is_the_cpu_kernel_on_cpu_tensors(monkeypatch):
    monkeypatch.delenv("RTMO_KERNELS_BACKEND", raising=False)
    inputs = make_inputs(4, 17, 128, seed=9)
    auto = rtmo_kernels.dcc_decode(*inputs.args())
    cpu = torch.ops.rtmo.dcc_decode(*inputs.args(), *RTMO_BINS, 1.25, 300.0, "expectation")
    for got, want in zip(auto, cpu, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_reference_backend_returns_float32_of_the_reference():
    inputs = make_inputs(3, 17, 128, seed=10, dtype=torch.float16)
    keypoints, confidence = _run(inputs, "reference")
    want = reference.dcc_decode(*inputs.to(torch.float32).args())
    torch.testing.assert_close(keypoints, want[0], rtol=0, atol=0)
    torch.testing.assert_close(confidence, want[1], rtol=0, atol=0)


# ---- errors name the argument and what was expected ------------------------------------------


def _valid() -> DccInputs:
    return make_inputs(2, 3, 8)


@pytest.mark.parametrize(
    ("mutate", "error", "message"),
    [
        (lambda i: setattr(i, "query_x", i.query_x[0]), ValueError, "query_x must have 3 dim"),
        (lambda i: setattr(i, "boxes", i.boxes[:, :3]), ValueError, "boxes must have last dim"),
        (
            lambda i: setattr(i, "priors", torch.zeros(3, 2)),
            ValueError,
            "priors has 3 rows but N=2",
        ),
        (lambda i: setattr(i, "query_y", i.query_y[:, :2]), ValueError, "query_y must have the sh"),
        (lambda i: setattr(i, "query_x", i.query_x.int()), TypeError, "query_x must have dtype"),
        (lambda i: setattr(i, "boxes", i.boxes.double()), TypeError, "boxes must have dtype in"),
    ],
)
def test_bad_tensors_are_named(mutate, error, message):
    inputs = _valid()
    mutate(inputs)
    with pytest.raises(error, match=message):
        rtmo_kernels.dcc_decode(*inputs.args())


def test_odd_dimension_is_rejected():
    inputs = make_inputs(2, 3, 7)
    with pytest.raises(ValueError, match="D must be even"):
        rtmo_kernels.dcc_decode(*inputs.args())


@pytest.mark.parametrize("num_bins", [(1, 256), (192, 0), (192,), (192.0, 256)])
def test_bad_num_bins(num_bins):
    with pytest.raises(ValueError, match="num_bins must be two integers >= 2"):
        rtmo_kernels.dcc_decode(*_valid().args(), num_bins=num_bins)


def test_unknown_mode():
    with pytest.raises(ValueError, match=r"mode must be one of .* got 'softargmax'"):
        rtmo_kernels.dcc_decode(*_valid().args(), mode="softargmax")


def test_cuda_backend_forced_on_cpu_tensors():
    with pytest.raises(rtmo_kernels.BackendUnavailableError, match="'cuda' needs CUDA tensors"):
        rtmo_kernels.dcc_decode(*_valid().args(), backend="cuda")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((*make_inputs(2, 3, 7).args(), 4, 4, 1.25, 300.0, "argmax"), "D must be even"),
        ((*make_inputs(2, 3, 8).args(), 1, 4, 1.25, 300.0, "argmax"), "num_bins must be >= 2"),
        ((*make_inputs(2, 3, 8).args(), 4, 4, 1.25, 300.0, "max"), "mode must be"),
        ((*_valid().args()[:3], torch.zeros(3, 2), 4, 4, 1.25, 300.0, "argmax"), "priors must be"),
    ],
)
def test_compiled_kernel_checks_its_arguments(args, message):
    # A direct call skips the Python validation; the kernel must still refuse, not read garbage.
    with pytest.raises(RuntimeError, match=message):
        torch.ops.rtmo.dcc_decode(*args)


# ---- torch.library ---------------------------------------------------------------------------


def _op_args(inputs: DccInputs, mode: str = "expectation") -> tuple:
    return (*inputs.args(), 9, 12, 1.25, 300.0, mode)


@pytest.mark.parametrize("mode", ["expectation", "argmax"])
def test_opcheck_cpu_kernel(mode):
    torch.library.opcheck(torch.ops.rtmo.dcc_decode.default, _op_args(make_inputs(3, 5, 16), mode))


def test_opcheck_triton_op():
    import rtmo_kernels.triton.dcc_decode  # noqa: F401  (defines rtmo::dcc_decode_triton)

    torch.library.opcheck(torch.ops.rtmo.dcc_decode_triton.default, _op_args(make_inputs(2, 5, 16)))


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_torch_compile_fullgraph(backend):
    inputs = make_inputs(2, 17, 32, seed=11)

    def decode(qx, qy, boxes, priors):
        keypoints, confidence = rtmo_kernels.dcc_decode(
            qx, qy, boxes, priors, num_bins=(24, 40), backend=backend
        )
        return keypoints * confidence.amin(-1, keepdim=True)

    compiled = torch.compile(decode, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(*inputs.args()), decode(*inputs.args()), rtol=0, atol=0)


def test_cuda_kernel_registered_whenever_compiled():
    compiled = _backend.extension().cuda_kernels_compiled()
    registered = torch._C._dispatch_has_kernel_for_dispatch_key("rtmo::dcc_decode", "CUDA")
    assert registered == compiled
    assert torch._C._dispatch_has_kernel_for_dispatch_key("rtmo::dcc_decode", "CPU")
