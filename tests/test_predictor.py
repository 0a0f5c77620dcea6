"""The RTMO predictor: inputs it accepts, batching, mapping back to image pixels, options, errors.

`ContentModel` stands in for the network where the test is about the predictor itself: it "finds"
one person whose box is the letterboxed image content (every pixel that is not padding), so the
predictor's result must be the whole original image.
"""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rtmo.predictor import RTMO
from rtmo.preprocess import PAD_VALUE
from rtmo.results import Poses
from rtmo.sources import ImageReadError, SourceError

K = 3


class ContentModel(torch.nn.Module):
    """predict(): one person per image, boxed around the non-padding pixels, with the box corners
    and centre as keypoints; no person when `score_thr` is above 0.9."""

    def __init__(self, input_size=(416, 416)):
        super().__init__()
        self.config = SimpleNamespace(
            name="content",
            input_size=input_size,
            num_keypoints=K,
            keypoint_names=("top_left", "bottom_right", "centre"),
            skeleton=((0, 2), (2, 1)),
            limb_colors=((0, 0, 255), (255, 0, 0)),
            keypoint_colors=((0, 255, 0),) * K,
        )
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.calls = []

    def predict(self, images, score_thr=0.1, nms_thr=0.65, max_det=100, backend="auto"):
        self.calls.append({"shape": tuple(images.shape), "dtype": images.dtype, "max_det": max_det})
        out = []
        for image in images:
            ys, xs = torch.nonzero((image != PAD_VALUE).any(0), as_tuple=True)
            if score_thr > 0.9 or ys.numel() == 0:
                out.append(_empty())
                continue
            # Pixel centres of the first/last content pixel, widened by half a pixel: the extent.
            x1, y1 = xs.min() - 0.5, ys.min() - 0.5
            x2, y2 = xs.max() + 0.5, ys.max() + 0.5
            box = torch.stack([x1, y1, x2, y2]).float()
            kpts = torch.stack([box[:2], box[2:], (box[:2] + box[2:]) / 2])
            out.append(
                {
                    "boxes": box[None],
                    "scores": torch.tensor([0.95]),
                    "keypoints": kpts[None],
                    "keypoint_scores": torch.ones(1, K),
                }
            )
        return out


def _empty():
    return {
        "boxes": torch.zeros(0, 4),
        "scores": torch.zeros(0),
        "keypoints": torch.zeros(0, K, 2),
        "keypoint_scores": torch.zeros(0, K),
    }


def content_image(width, height, seed=0):
    """Random BGR content that never equals the padding value."""
    return np.random.default_rng(seed).integers(0, 100, (height, width, 3), dtype=np.uint8)


@pytest.fixture
def predictor():
    return RTMO(ContentModel(), device="cpu")


def _assert_whole_image(poses: Poses, width: int, height: int):
    # Bilinear warping blends the edge pixels with the padding, so the content found may reach one
    # image pixel further out; and it is found to the nearest input pixel.
    tol = 1 + max(width, height) / 416 + 1e-3
    assert len(poses) == 1
    np.testing.assert_allclose(poses.boxes[0], [0, 0, width, height], atol=tol)
    np.testing.assert_allclose(poses.keypoints[0, 2], [width / 2, height / 2], atol=tol)


@pytest.mark.parametrize("size", [(640, 480), (480, 640), (17, 9), (3000, 200)])
def test_people_are_mapped_back_to_image_pixels(predictor, size):
    poses = predictor(content_image(*size))
    assert isinstance(poses, Poses)
    assert poses.image_size == size
    _assert_whole_image(poses, *size)
    assert poses.keypoint_names == ("top_left", "bottom_right", "centre")
    assert set(poses.speed) == {"preprocess", "inference", "postprocess"}
    assert all(v >= 0 for v in poses.speed.values())


def test_a_list_is_one_batched_forward_in_order(predictor):
    sizes = [(640, 480), (100, 300), (50, 50)]
    results = predictor([content_image(*s, seed=i) for i, s in enumerate(sizes)])
    assert isinstance(results, list)
    assert len(predictor.model.calls) == 1
    assert predictor.model.calls[0]["shape"] == (3, 3, 416, 416)
    for poses, size in zip(results, sizes, strict=True):
        assert poses.image_size == size
        _assert_whole_image(poses, *size)


def test_paths_arrays_and_tensors_give_the_same_people(predictor, tmp_path):
    image = content_image(200, 120)
    path = tmp_path / "img.png"
    import cv2

    cv2.imwrite(str(path), image)
    tensor = torch.from_numpy(image).permute(2, 0, 1)
    from_path, from_array, from_tensor = predictor([str(path), image, tensor])
    np.testing.assert_array_equal(from_path.boxes, from_array.boxes)
    np.testing.assert_allclose(from_tensor.boxes, from_array.boxes, atol=1e-4)
    batch = predictor(torch.stack([tensor, tensor]).float())
    assert isinstance(batch, list)
    assert len(batch) == 2
    np.testing.assert_allclose(batch[1].keypoints, from_array.keypoints, atol=1e-4)


def test_grayscale_rgba_and_16_bit_images_are_converted(predictor):
    gray = content_image(60, 40)[:, :, 0]
    rgba = np.dstack([content_image(60, 40), np.full((40, 60), 255, np.uint8)])
    deep = gray.astype(np.uint16) * 257
    for image in (gray, rgba, deep):
        _assert_whole_image(predictor(image), 60, 40)


def test_empty_result_has_the_documented_shapes(predictor):
    poses = predictor(content_image(64, 48), score_thr=0.95)
    assert len(poses) == 0
    assert poses.boxes.shape == (0, 4)
    assert poses.scores.shape == (0,)
    assert poses.keypoints.shape == (0, K, 2)
    assert poses.keypoint_scores.shape == (0, K)
    assert predictor([]) == []


def test_options_reach_the_model():
    predictor = RTMO(ContentModel(), device="cpu", max_det=7)
    predictor(content_image(32, 32))
    predictor(content_image(32, 32), max_det=3)
    assert [c["max_det"] for c in predictor.model.calls] == [7, 3]
    assert predictor.model.calls[0]["dtype"] == torch.float32


def test_bad_inputs_are_named(predictor, tmp_path):
    with pytest.raises(SourceError, match=r"missing\.jpg: no such file"):
        predictor(str(tmp_path / "missing.jpg"))
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8 definitely not a jpeg")
    with pytest.raises(ImageReadError, match=r"corrupt\.jpg: cannot decode image"):
        predictor(corrupt)
    expected = r"images\[0\]: expected a path, a numpy image, a PIL image or a tensor"
    with pytest.raises(TypeError, match=expected):
        predictor(42)
    with pytest.raises(TypeError, match="uint8 or uint16, got float64"):
        predictor(np.zeros((8, 8, 3)))
    with pytest.raises(ValueError, match=r"images\[1\]: a tensor in a list must be \(3, H, W\)"):
        predictor([content_image(8, 8), torch.zeros(1, 3, 8, 8)])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without GPU")
def test_cuda_device_without_gpu_is_named():
    with pytest.raises(ValueError, match="no CUDA GPU is visible"):
        RTMO(ContentModel(), device="cuda")


def test_unknown_dtype_is_named():
    with pytest.raises(ValueError, match="dtype must be one of"):
        RTMO(ContentModel(), device="cpu", dtype="int8")


def test_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothing\.pth: no such checkpoint file"):
        RTMO.from_checkpoint(tmp_path / "nothing.pth")


def test_import_rtmo_is_cheap():
    import subprocess
    import sys

    code = (
        "import sys, rtmo; heavy = {'torch', 'cv2'} & set(sys.modules); "
        "print(sorted(heavy)); assert not heavy; assert rtmo.Poses.__name__ == 'Poses'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------------------------------
# End to end with the real network: RTMO-t with random weights, saved in the published .pth layout.

MAX_DET = 5  # random weights score every prior alike; a few people keep the CPU decode short


@pytest.fixture(scope="module")
def rtmo_t_checkpoint(tmp_path_factory):
    from checkpoints import write_published_checkpoint

    from rtmo.config import from_name
    from rtmo.model import RTMOModel

    torch.manual_seed(0)
    model = RTMOModel(from_name("rtmo-t")).eval()
    return write_published_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "rtmo-t.pth")


@pytest.fixture(scope="module")
def rtmo_t(rtmo_t_checkpoint):
    return RTMO.from_checkpoint(rtmo_t_checkpoint, device="cpu", max_det=MAX_DET)


@pytest.fixture(scope="module")
def photo():
    import cv2
    from matplotlib import cbook

    return cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))


def test_end_to_end_from_a_published_checkpoint(rtmo_t, photo):
    poses = rtmo_t(photo)
    height, width = photo.shape[:2]
    assert rtmo_t.config.name == "rtmo-t-body7"
    assert poses.image_size == (width, height)
    assert 1 <= len(poses) <= MAX_DET
    assert poses.keypoints.shape == (len(poses), 17, 2)
    assert poses.keypoint_names[0] == "nose"
    assert len(poses.skeleton) == len(poses.limb_colors) > 0
    assert np.isfinite(poses.keypoints).all()
    assert (np.diff(poses.scores) <= 0).all()
    # As in mmpose, boxes are clamped to the model input, padding included, then mapped back: they
    # stay inside the letterbox canvas in image pixels (x in [-44, 556] for this portrait photo).
    half = height / 2  # portrait photo, square input: the canvas spans `height` both ways
    assert (poses.boxes[:, [0, 2]] >= width / 2 - half - 1e-3).all()
    assert (poses.boxes[:, [0, 2]] <= width / 2 + half + 1e-3).all()
    assert (poses.boxes[:, [1, 3]] >= -1e-3).all()
    assert (poses.boxes[:, [1, 3]] <= height + 1e-3).all()
    canvas = poses.plot(photo)
    assert canvas.shape == photo.shape
    assert (canvas != photo).any()


def test_predictor_equals_letterbox_network_and_inverse_by_hand(rtmo_t, photo):
    """The predictor is the composition: cv2 letterbox, the network, the inverse mapping."""
    from rtmo.preprocess import letterbox_image

    image = photo[:300, :200]  # portrait crop: padding left and right
    warped, _ = letterbox_image(image, (416, 416))
    batch = torch.from_numpy(warped).permute(2, 0, 1)[None].float()
    raw = rtmo_t.model.predict(batch, max_det=MAX_DET)[0]
    s = 416 / 300  # the height fits; the content is centred horizontally
    offset = np.array([(416 - s * 200) / 2, 0.0])
    expected = (raw["keypoints"].numpy() - offset) / s
    poses = rtmo_t(image)
    np.testing.assert_allclose(poses.keypoints, expected, rtol=0, atol=1e-3)
    np.testing.assert_allclose(poses.scores, raw["scores"].numpy(), rtol=0, atol=0)


def test_batched_forward_gives_each_image_its_own_people(rtmo_t, photo):
    small = photo[100:260, 50:400]
    single = [rtmo_t(photo), rtmo_t(small)]
    batch = rtmo_t([photo, small])
    for one, many in zip(single, batch, strict=True):
        assert many.image_size == one.image_size
        # Batched convolutions may sum in another order: float32 noise, amplified by the DCC's
        # softmax; 1e-2 px is far below any real difference.
        np.testing.assert_allclose(many.keypoints, one.keypoints, rtol=0, atol=1e-2)
        np.testing.assert_allclose(many.scores, one.scores, rtol=0, atol=1e-4)


def test_kernels_and_plain_pytorch_post_process_agree(rtmo_t, rtmo_t_checkpoint, photo):
    plain = RTMO.from_checkpoint(
        rtmo_t_checkpoint, device="cpu", max_det=MAX_DET, use_kernels=False
    )
    fused, reference = rtmo_t(photo), plain(photo)
    np.testing.assert_allclose(fused.scores, reference.scores, rtol=0, atol=1e-5)
    np.testing.assert_allclose(fused.boxes, reference.boxes, rtol=0, atol=1e-3)
    # The fused DCC folds the Linear into the query and sums bins in another order: float32
    # rounding, amplified by the soft-argmax over a 1.25x box; 2e-2 image px is far below 1 px.
    np.testing.assert_allclose(fused.keypoints, reference.keypoints, rtol=0, atol=2e-2)


def test_random_weights_warn():
    with pytest.warns(UserWarning, match="random weights"):
        predictor = RTMO("rtmo-t", device="cpu", max_det=2)
    assert predictor.input_size == (416, 416)
    assert predictor(np.zeros((32, 48), np.uint8)).keypoints.shape[1:] == (17, 2)


@pytest.mark.needs_cuda
@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16"])
def test_gpu_tensors_are_letterboxed_on_the_gpu(dtype):
    predictor = RTMO(ContentModel(), device="cuda", dtype=dtype)
    image = content_image(200, 120)
    on_gpu = torch.from_numpy(image).permute(2, 0, 1).cuda()
    poses = predictor(on_gpu)
    _assert_whole_image(poses, 200, 120)
    assert predictor.model.calls[0]["dtype"] == predictor.dtype
