"""`RTMO` checks every option when it is built (not at the first call), and the errors of a user
without weights say how to get them: an unknown model name before any warning, a model name
given as a checkpoint path, a download that fails offline."""

from __future__ import annotations

import urllib.error
import urllib.request
import warnings

import pytest
import torch
from test_predictor import ContentModel, content_image

from rtmo import config
from rtmo.predictor import RTMO


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"score_thr": -0.5}, ValueError, r"score_thr must be in \[0, 1\), got -0.5"),
        ({"score_thr": 1.0}, ValueError, r"score_thr must be in \[0, 1\), got 1"),
        ({"score_thr": float("nan")}, ValueError, r"score_thr must be in \[0, 1\), got nan"),
        ({"score_thr": "0.3"}, TypeError, r"score_thr must be a number in \[0, 1\), got '0.3'"),
        ({"nms_thr": 0.0}, ValueError, r"nms_thr must be in \(0, 1\], got 0"),
        ({"nms_thr": 1.5}, ValueError, r"nms_thr must be in \(0, 1\], got 1.5"),
        ({"max_det": 0}, ValueError, "max_det must be at least 1, got 0"),
        ({"max_det": 2.5}, TypeError, "max_det must be an int >= 1, got 2.5"),
        ({"device": "gpu"}, ValueError, "device must be cpu, cuda or cuda:N, got 'gpu'"),
        ({"backend": "bogus"}, ValueError, "backend must be one of auto, reference, cpu, cuda"),
        ({"runtime": "tensorrt"}, ValueError, "runtime must be one of"),
    ],
)
def test_bad_options_fail_when_the_predictor_is_built(options, error, message):
    with pytest.raises(error, match=message):
        RTMO(ContentModel(), **{"device": "cpu", **options})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the errors without a GPU")
def test_gpu_options_without_a_gpu():
    with pytest.raises(ValueError, match="device cuda:1: no CUDA GPU is visible"):
        RTMO(ContentModel(), device="cuda:1")
    with pytest.raises(ValueError, match="backend cuda is not available here"):
        RTMO(ContentModel(), device="cpu", backend="cuda")


def test_per_call_options_are_checked_too():
    predictor = RTMO(ContentModel(), device="cpu")
    with pytest.raises(ValueError, match=r"score_thr must be in \[0, 1\), got -1"):
        predictor(content_image(16, 16), score_thr=-1)
    with pytest.raises(ValueError, match="max_det must be at least 1, got 0"):
        predictor([content_image(16, 16)], max_det=0)
    assert predictor.model.calls == []


def test_from_checkpoint_checks_options_before_loading(tmp_path):
    path = tmp_path / "model.pth"
    path.write_bytes(b"never read: the options fail first")
    with pytest.raises(ValueError, match=r"score_thr must be in \[0, 1\), got -0.5"):
        RTMO.from_checkpoint(path, score_thr=-0.5)


def test_unknown_model_name_fails_before_the_random_weights_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning would turn into an error here
        with pytest.raises(ValueError, match="unknown RTMO variant 'rtmo-x'"):
            RTMO("rtmo-x", device="cpu")


def test_a_model_name_is_not_a_checkpoint_file():
    with pytest.raises(FileNotFoundError) as missing:
        RTMO.from_checkpoint("rtmo-s")
    message = str(missing.value)
    assert "'rtmo-s' is a model name, not a checkpoint file" in message
    assert "rtmo.config.download_checkpoint('rtmo-s')" in message
    assert config.from_name("rtmo-s").checkpoint_url in message
    assert "RTMO('rtmo-s') for random weights" in message


def test_failed_download_names_the_url_and_leaves_nothing(tmp_path, monkeypatch):
    def offline(url, filename):
        with open(filename, "wb") as partial:
            partial.write(b"half a file")
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlretrieve", offline)
    with pytest.raises(OSError, match="cannot download the rtmo-t-body7 checkpoint from") as failed:
        config.download_checkpoint("rtmo-t", tmp_path)
    message = str(failed.value)
    assert config.from_name("rtmo-t").checkpoint_url in message
    assert "Temporary failure in name resolution" in message
    assert list(tmp_path.iterdir()) == []
