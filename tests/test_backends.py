"""Backend discovery and selection: what is available, and the errors for what is not."""

import pytest
import torch

import rtmo_kernels
from rtmo_kernels import _backend


def test_backends_reports_every_backend_with_a_reason():
    status = rtmo_kernels.backends()
    assert set(status) == {"reference", "cpu", "cuda", "triton"}
    assert status["reference"].available
    for entry in status.values():
        assert entry.reason


def test_extension_is_built_in_the_test_environment():
    # `make test` builds _C; a missing extension here means the build silently failed.
    assert rtmo_kernels.backends()["cpu"].available, rtmo_kernels.backends()["cpu"].reason


def test_cuda_kernels_compiled_when_torch_and_nvcc_support_them():
    import shutil

    if torch.version.cuda is None or shutil.which("nvcc") is None:
        pytest.skip("torch without CUDA or no nvcc: the CUDA kernels are not expected")
    assert _backend.extension().cuda_kernels_compiled()


def test_auto_picks_cpu_kernel_for_cpu_tensors(monkeypatch):
    monkeypatch.delenv("RTMO_KERNELS_BACKEND", raising=False)
    assert _backend.resolve_backend("auto", torch.device("cpu"), "op") == "cpu"


def test_environment_variable_overrides_auto(monkeypatch):
    monkeypatch.setenv("RTMO_KERNELS_BACKEND", "reference")
    assert _backend.resolve_backend("auto", torch.device("cpu"), "op") == "reference"


def test_unknown_backend_is_named():
    with pytest.raises(ValueError, match="unknown backend 'fastest'"):
        _backend.resolve_backend("fastest", torch.device("cpu"), "my_op")


def test_cuda_backend_on_cpu_tensor_says_so():
    with pytest.raises(rtmo_kernels.BackendUnavailableError, match="'cuda' needs CUDA tensors"):
        _backend.resolve_backend("cuda", torch.device("cpu"), "my_op")


def test_cpu_backend_on_cuda_tensor_says_so():
    with pytest.raises(rtmo_kernels.BackendUnavailableError, match="'cpu' needs CPU tensors"):
        _backend.resolve_backend("cpu", torch.device("cuda"), "my_op")


def test_triton_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(rtmo_kernels.BackendUnavailableError, match="TRITON_INTERPRET=1"):
        _backend.resolve_backend("triton", torch.device("cpu"), "my_op")


def test_missing_extension_is_reported(monkeypatch):
    monkeypatch.setattr(_backend, "_C", None)
    monkeypatch.setattr(_backend, "_C_ERROR", "rtmo_kernels._C is not built (test)")
    status = rtmo_kernels.backends()
    assert not status["cpu"].available
    assert "not built" in status["cuda"].reason
    with pytest.raises(rtmo_kernels.BackendUnavailableError, match="not built"):
        _backend.resolve_backend("cpu", torch.device("cpu"), "my_op")
    assert _backend.resolve_backend("auto", torch.device("cpu"), "my_op") == "reference"
