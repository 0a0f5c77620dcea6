"""The post-process for dense predictions from any runtime: NMS + DCC decode on rtmo's kernels.

A raw-head export (`rtmo export --head raw`, `export_onnx(..., head="raw")`) stops at the dense
predictions of every prior, which any engine runs (TensorRT, onnxruntime, OpenVINO, NPUs):

    scores (B, P)              person score (sigmoid)
    boxes (B, P, 4)            xyxy, model-input pixels
    keypoint_scores (B, P, K)  keypoint visibility (sigmoid)
    pose_vecs (B, P, C)        pose vectors the DCC decodes into keypoints

`Postprocessor` turns them into people: score threshold and NMS into `max_det` slots, then the
DCC on the kept pose vectors (`rtmo.model.postprocess.postprocess_decoded`, the torch model's own
post-process), thresholds chosen per call; `Poses` come back in each image's pixels.

The DCC weights travel in a sidecar `.npz` written next to the ONNX file (`sidecar_path`), not in
the ONNX metadata: an engine built from the ONNX file (trtexec, RKNN, OpenVINO IR) drops the
metadata but the sidecar stays usable beside it; NumPy reads it everywhere (no onnx package on the
device), without pickle (`allow_pickle=False`). The ONNX metadata names the sidecar and records its
SHA-256, so a sidecar of another export is refused.
"""

from __future__ import annotations

import copy
import hashlib
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from rtmo.config import RTMOConfig, from_name
from rtmo.model.dcc import DCC
from rtmo.model.head import STRIDES, grid_priors
from rtmo.model.postprocess import (
    DecodedDense,
    PaddedPredictions,
    postprocess_decoded,
    split_predictions,
)
from rtmo.model.rtmo import RTMOModel, _check_thresholds
from rtmo.preprocess import Letterbox, letterbox_params
from rtmo.results import Poses
from rtmo.sources import atomic_output

# Names of the raw-head graph's outputs, in order: the post-process's inputs.
RAW_OUTPUT_NAMES = DecodedDense._fields
SIDECAR_FORMAT = "rtmo-dcc/1"
SIDECAR_SUFFIX = ".dcc.npz"
# Keys of a raw-head ONNX file's metadata_props that point to its sidecar.
SIDECAR_META_KEY = "rtmo_sidecar"
SIDECAR_SHA_META_KEY = "rtmo_sidecar_sha256"
_DCC_PREFIX = "dcc."


def sidecar_path(onnx_path: str | os.PathLike) -> Path:
    """Where the sidecar of an ONNX file goes: "rtmo-s.onnx" -> "rtmo-s.dcc.npz"."""
    return Path(onnx_path).with_suffix(SIDECAR_SUFFIX)


def num_priors(input_size: tuple[int, int]) -> int:
    """Priors of both levels (strides 16 and 32) for an input of (w, h)."""
    w, h = input_size
    return sum((w // s) * (h // s) for s in STRIDES)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Postprocessor:
    """NMS + DCC decode of a raw-head export's dense predictions, from any runtime.

        post = Postprocessor.from_sidecar("rtmo-s.dcc.npz")     # or .from_checkpoint(pth)
        batch, boxes = letterbox_batch(images, post.input_size)  # (B, 3, h, w) float32
        outputs = run_my_engine(batch)       # the 4 dense outputs: a dict by name, or in order
        poses = post(outputs, boxes)         # one Poses per image, in image pixels

    Outputs may be NumPy arrays or torch tensors (any float dtype, any device); they are
    post-processed on `device` ("cpu", or "cuda" for the CUDA/Triton kernels). `backend` picks
    the kernel backend ("auto", "cpu", "cuda", "triton", "reference"); score_thr, nms_thr and
    max_det are defaults for each call.

    Attributes: config (the variant's RTMOConfig), input_size (w, h) of the model input,
    num_priors (P), dcc (the reparameterised DCC module), device.
    """

    def __init__(
        self,
        dcc: DCC,
        config: RTMOConfig,
        input_size: tuple[int, int] | None = None,
        *,
        device: str | torch.device = "cpu",
        backend: str = "auto",
        score_thr: float = 0.1,
        nms_thr: float = 0.65,
        max_det: int = 100,
    ) -> None:
        _check_thresholds(score_thr, nms_thr, max_det)
        size = tuple(config.input_size if input_size is None else input_size)
        if len(size) != 2 or any(not isinstance(s, int) or s <= 0 or s % 32 for s in size):
            raise ValueError(f"input_size must be (w, h), positive multiples of 32, got {size}")
        channels = dcc.pose_to_kpts[0].in_features
        if (dcc.num_keypoints, channels) != (config.num_keypoints, config.pose_vec_channels):
            raise ValueError(
                f"the DCC decodes {dcc.num_keypoints} keypoints from {channels}-channel pose "
                f"vectors, variant {config.name} has {config.num_keypoints} keypoints and "
                f"{config.pose_vec_channels} channels"
            )
        self.config, self.input_size = config, size
        self.device = torch.device(device)
        self.dcc = dcc.float().eval().to(self.device)
        self.dcc.reparameterize()
        w, h = size
        priors, _ = grid_priors([(h // s, w // s) for s in STRIDES], self.device)
        self.priors = priors
        self.num_priors = priors.shape[0]
        self.backend = backend
        self.score_thr, self.nms_thr, self.max_det = score_thr, nms_thr, max_det

    # ------------------------------------------------------------------------------ building

    @classmethod
    def from_model(
        cls, model: RTMOModel, input_size: tuple[int, int] | None = None, **options: Any
    ) -> Postprocessor:
        """The post-process of a torch `RTMOModel` (its DCC is copied, the model untouched)."""
        if not isinstance(model, RTMOModel):
            raise TypeError(f"model must be an RTMOModel, got {type(model).__name__}")
        dcc = copy.deepcopy(model.head.dcc).float().cpu().eval()
        return cls(dcc, model.config, input_size, **options)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        variant: str | None = None,
        *,
        input_size: tuple[int, int] | None = None,
        trust_checkpoint: bool = False,
        **options: Any,
    ) -> Postprocessor:
        """The post-process of an official mmpose checkpoint (.pth), for dense predictions at
        `input_size` (default the variant's; a raw-head file's is in its sidecar)."""
        from rtmo.checkpoint import load_model

        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no such checkpoint file")
        model = load_model(path, variant, trust_checkpoint=trust_checkpoint)
        return cls.from_model(model, input_size, **options)

    @classmethod
    def from_sidecar(cls, path: str | os.PathLike, **options: Any) -> Postprocessor:
        """The post-process stored by a raw-head export in its sidecar `.npz`, or found next to
        a raw-head `.onnx` file (whose recorded checksum it must match)."""
        path = Path(path)
        if path.suffix == ".onnx":
            return cls.for_onnx(path, _onnx_metadata(path), **options)
        state = read_sidecar(path)
        return cls(state.dcc, state.config, state.input_size, **options)

    @classmethod
    def for_onnx(
        cls,
        onnx_path: str | os.PathLike,
        metadata: Mapping[str, str],
        variant: str | None = None,
        **options: Any,
    ) -> Postprocessor:
        """The post-process of a raw-head ONNX file with `metadata` (its metadata_props): the
        sidecar it names, checked to be the one written with it (variant, input size,
        checksum). Raises FileNotFoundError / ValueError saying what differs."""
        onnx_path = Path(onnx_path)
        name = metadata.get(SIDECAR_META_KEY)
        if name is None:
            raise ValueError(
                f"{onnx_path}: a raw-head graph without our metadata (no {SIDECAR_META_KEY!r}): "
                "build the post-process with Postprocessor.from_checkpoint(...) instead"
            )
        path = onnx_path.parent / name
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: the DCC sidecar of {onnx_path.name} is missing; `rtmo export --head raw` "
                f"writes it next to the .onnx file: keep the two together"
            )
        state = read_sidecar(path)
        named = {"the ONNX file": metadata.get("rtmo_variant"), "variant=": variant}
        for source, name in named.items():
            if name is not None and from_name(name).name != state.config.name:
                raise ValueError(
                    f"{path} belongs to {state.config.name}, but {source} names "
                    f"{from_name(name).name}: use the sidecar exported with {onnx_path.name}"
                )
        size = metadata.get("input_size")
        if size is not None and size != "{}x{}".format(*state.input_size):
            raise ValueError(
                f"{path} is for a {state.input_size[0]}x{state.input_size[1]} input, "
                f"{onnx_path.name} for {size}: use the sidecar exported with it"
            )
        expected_sha = metadata.get(SIDECAR_SHA_META_KEY)
        if expected_sha is not None and file_sha256(path) != expected_sha:
            raise ValueError(
                f"{path} is not the sidecar exported with {onnx_path.name} (its SHA-256 differs "
                f"from the one recorded in the ONNX file): same variant, other weights? "
                "export the two again together"
            )
        return cls(state.dcc, state.config, state.input_size, **options)

    def save(self, path: str | os.PathLike) -> Path:
        """Writes the sidecar `.npz` (DCC weights, variant, input size, bins), atomically."""
        return write_sidecar(path, self.dcc, self.config, self.input_size)

    def __repr__(self) -> str:
        w, h = self.input_size
        return f"Postprocessor({self.config.name!r}, input {w}x{h}, device={self.device})"

    # ------------------------------------------------------------------------------ running

    def padded(
        self,
        outputs: Any,
        *,
        score_thr: float | None = None,
        nms_thr: float | None = None,
        max_det: int | None = None,
        backend: str | None = None,
    ) -> PaddedPredictions:
        """Dense outputs -> detections in max_det slots per image (model-input pixels, static
        shapes, no host sync). `outputs`: a mapping by name (`RAW_OUTPUT_NAMES`) or the four
        arrays in that order. None options take the constructor's."""
        score_thr = self.score_thr if score_thr is None else score_thr
        nms_thr = self.nms_thr if nms_thr is None else nms_thr
        max_det = self.max_det if max_det is None else max_det
        _check_thresholds(score_thr, nms_thr, max_det)
        decoded = self.check_outputs(outputs)
        with torch.inference_mode():
            return postprocess_decoded(
                decoded,
                self.priors,
                self.dcc,
                self.input_size,
                score_thr,
                nms_thr,
                max_det,
                True,
                self.backend if backend is None else backend,
            )

    def predict(self, outputs: Any, **options: Any) -> list[dict[str, Tensor]]:
        """Per image, as `RTMOModel.predict`: "boxes" (n, 4), "scores" (n,), "keypoints"
        (n, K, 2), "keypoint_scores" (n, K) in model-input pixels, by descending score."""
        return split_predictions(self.padded(outputs, **options))

    def __call__(
        self,
        outputs: Any,
        letterboxes: Letterbox | Sequence[Letterbox] | None = None,
        **options: Any,
    ) -> list[Poses]:
        """One `Poses` per image of the batch, mapped back through each image's `Letterbox`
        (from `rtmo.preprocess.letterbox_batch`/`letterbox_image`; one for the whole batch, or
        None for model-input pixels). Options: score_thr, nms_thr, max_det, backend."""
        predictions = self.predict(outputs, **options)
        if letterboxes is None:
            letterboxes = letterbox_params(self.input_size, self.input_size)
        if isinstance(letterboxes, Letterbox):
            letterboxes = [letterboxes] * len(predictions)
        if len(letterboxes) != len(predictions):
            raise ValueError(
                f"letterboxes: {len(letterboxes)} given for a batch of {len(predictions)} images"
            )
        for i, box in enumerate(letterboxes):
            if not isinstance(box, Letterbox):
                raise TypeError(
                    f"letterboxes[{i}] must be an rtmo.preprocess.Letterbox, got "
                    f"{type(box).__name__}"
                )
            if tuple(box.input_size) != self.input_size:
                raise ValueError(
                    f"letterboxes[{i}] places the image in a {box.input_size} input, the model "
                    f"input is {self.input_size}"
                )
        return [
            to_poses(p, box, self.config) for p, box in zip(predictions, letterboxes, strict=True)
        ]

    def check_outputs(self, outputs: Any) -> DecodedDense:
        """The dense outputs as float32 tensors on `device`, shapes checked; a ValueError names
        the output, its expected shape and the one given."""
        tensors = [
            _as_tensor(name, value)
            for name, value in zip(RAW_OUTPUT_NAMES, _as_sequence(outputs), strict=True)
        ]
        k, c, p = self.config.num_keypoints, self.config.pose_vec_channels, self.num_priors
        batch = tensors[0].shape[0] if tensors[0].dim() else 0
        trailing = {"scores": (p,), "boxes": (p, 4), "keypoint_scores": (p, k), "pose_vecs": (p, c)}
        for name, tensor in zip(RAW_OUTPUT_NAMES, tensors, strict=True):
            if tuple(tensor.shape) != (batch, *trailing[name]) or batch == 0:
                w, h = self.input_size
                shape = ", ".join(map(str, ("B", *trailing[name])))
                raise ValueError(
                    f"{name} must have shape ({shape}) for {self.config.name} at {w}x{h} "
                    f"(P={p} priors, K={k}, C={c}; B >= 1, the same for the four outputs), "
                    f"got {tuple(tensor.shape)}"
                )
        return DecodedDense(*(t.to(self.device, torch.float32) for t in tensors))


def _as_sequence(outputs: Any) -> list[Any]:
    if isinstance(outputs, Mapping):
        missing = [name for name in RAW_OUTPUT_NAMES if name not in outputs]
        if missing:
            raise ValueError(
                f"outputs: missing {missing}; expected the raw-head outputs "
                f"{list(RAW_OUTPUT_NAMES)}, got {sorted(outputs)}"
            )
        return [outputs[name] for name in RAW_OUTPUT_NAMES]
    if isinstance(outputs, (list, tuple)) and len(outputs) == len(RAW_OUTPUT_NAMES):
        return list(outputs)
    raise TypeError(
        f"outputs must be a mapping with keys {list(RAW_OUTPUT_NAMES)} or a sequence of those "
        f"four arrays in order, got {type(outputs).__name__}"
        + (f" of length {len(outputs)}" if isinstance(outputs, (list, tuple)) else "")
    )


def _as_tensor(name: str, value: Any) -> Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, Tensor):
        raise TypeError(
            f"{name} must be a NumPy array or a torch tensor, got {type(value).__name__}"
        )
    if not value.is_floating_point():
        raise TypeError(f"{name} must be floating point, got {value.dtype}")
    return value


def to_poses(prediction: Mapping[str, Tensor], letterbox: Letterbox, config: Any) -> Poses:
    """One image's prediction in model-input pixels -> `Poses` in the image's pixels."""
    host = {k: v.detach().float().cpu().numpy() for k, v in prediction.items()}
    keypoints = host["keypoints"]
    if keypoints.size:
        keypoints = letterbox.to_original(keypoints)
    return Poses(
        boxes=letterbox.boxes_to_original(host["boxes"]),
        scores=host["scores"],
        keypoints=keypoints.reshape(-1, config.num_keypoints, 2),
        keypoint_scores=host["keypoint_scores"].reshape(-1, config.num_keypoints),
        image_size=letterbox.image_size,
        **layout_of(config),
    )


def layout_of(config: Any) -> dict[str, Any]:
    """The keypoint names, skeleton and (RGB) colours of a model config, for `Poses`."""
    return {
        "keypoint_names": tuple(config.keypoint_names),
        "skeleton": tuple(tuple(limb) for limb in config.skeleton),
        "limb_colors": tuple(tuple(color) for color in config.limb_colors),
        "keypoint_colors": tuple(tuple(color) for color in config.keypoint_colors),
    }


# ---------------------------------------------------------------------------------- the sidecar


class SidecarState(NamedTuple):
    """What a sidecar holds: the DCC module, the variant's config and the model input size."""

    dcc: DCC
    config: RTMOConfig
    input_size: tuple[int, int]


def write_sidecar(
    path: str | os.PathLike, dcc: DCC, config: RTMOConfig, input_size: tuple[int, int]
) -> Path:
    """Writes the DCC weights (`DCC.inference_state`, float32) with the variant, the input size
    and the bin settings to `path` (.npz, no pickled object), through a temporary file."""
    dcc = copy.deepcopy(dcc).float().cpu().eval()
    dcc.reparameterize()
    arrays: dict[str, np.ndarray] = {
        "format": np.array(SIDECAR_FORMAT),
        "variant": np.array(config.name),
        "input_size": np.array(input_size, dtype=np.int64),
        "num_bins": np.array(dcc.num_bins, dtype=np.int64),
        "padding": np.array(dcc.padding, dtype=np.float64),
        "temperature": np.array(dcc.temperature, dtype=np.float64),
    }
    for key, value in dcc.inference_state().items():
        arrays[_DCC_PREFIX + key] = value.numpy()
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path = Path(path)
    with atomic_output(path) as temporary:
        temporary.write_bytes(buffer.getvalue())
    return path


def read_sidecar(path: str | os.PathLike) -> SidecarState:
    """Reads a sidecar written by `write_sidecar` (NumPy, allow_pickle=False). Raises
    FileNotFoundError, or ValueError naming the file and what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such sidecar file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except Exception as err:  # zipfile.BadZipFile, pickled objects, truncated members
        raise ValueError(f"{path}: not a readable rtmo DCC sidecar (.npz): {err}") from err
    if str(arrays.get("format", "")) != SIDECAR_FORMAT:
        raise ValueError(
            f"{path}: not an rtmo DCC sidecar (format {SIDECAR_FORMAT!r} expected, got "
            f"{str(arrays['format']) if 'format' in arrays else 'none'!r})"
        )
    try:
        config = from_name(str(arrays["variant"]))
        input_size = tuple(int(v) for v in arrays["input_size"])
        num_bins = tuple(int(v) for v in arrays["num_bins"])
        padding, temperature = float(arrays["padding"]), float(arrays["temperature"])
    except (KeyError, ValueError, TypeError) as err:
        raise ValueError(f"{path}: sidecar header unreadable: {err}") from err
    state = {
        key[len(_DCC_PREFIX) :]: torch.from_numpy(value.astype(np.float32, copy=False))
        for key, value in arrays.items()
        if key.startswith(_DCC_PREFIX)
    }
    try:
        dcc = DCC.from_inference_state(state, num_bins, padding, temperature)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err
    return SidecarState(dcc, config, (input_size[0], input_size[1]))


def _onnx_metadata(path: Path) -> dict[str, str]:
    import onnx

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such ONNX file")
    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}
