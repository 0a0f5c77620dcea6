"""Official mmpose RTMO checkpoints -> `RTMOModel`, loaded strictly and unpickled safely.

Published files are `torch.save`d dicts `{"meta": {...}, "state_dict": {...}}` whose `meta` holds
numpy arrays (keypoint colours, sigmas). They are read with `torch.load(weights_only=True)` and an
allowlist of exactly the numpy globals those arrays need; anything else in the pickle is refused
unless the caller passes `trust_checkpoint=True` (which runs the full, unsafe unpickler).
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from rtmo.config import VARIANTS, RTMOConfig, from_name
from rtmo.model import RTMOModel

# numpy arrays pickle as `_reconstruct(ndarray, shape, dtype)` + state. numpy 2 names the module
# `numpy._core.multiarray`, numpy 1 (which wrote the published files) `numpy.core.multiarray`.
try:
    from numpy._core.multiarray import _reconstruct as _NUMPY_RECONSTRUCT
except ImportError:  # numpy 1
    from numpy.core.multiarray import _reconstruct as _NUMPY_RECONSTRUCT

# The dtype classes of the plain numeric dtypes (numpy 2 builds dtypes through them); no object
# dtype.
_NUMERIC_DTYPES = [type(np.dtype(c)) for c in "?bhilqBHILQefd"]
_SAFE_NUMPY_GLOBALS = [
    (_NUMPY_RECONSTRUCT, "numpy.core.multiarray._reconstruct"),
    (_NUMPY_RECONSTRUCT, "numpy._core.multiarray._reconstruct"),
    np.ndarray,
    np.dtype,
    *_NUMERIC_DTYPES,
]

# Stem width and keypoint count identify a published architecture (RTMO.md §2.7).
_STEM_KEY = "backbone.stem.conv.conv.weight"
_POS_ENC_KEY = "head.dcc.pos_enc"
_SIZE_BY_STEM_WIDTH = {24: "t", 32: "s", 48: "m", 64: "l"}
_MAX_LISTED_KEYS = 8
_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_MAGIC = b"\x80\x02"  # pre-1.6 torch.save files start with a pickle protocol 2 header


class CheckpointError(ValueError):
    """A file that cannot be loaded as the requested RTMO checkpoint; the message says why."""


def read_state_dict(path: str | os.PathLike, trust_checkpoint: bool = False) -> dict[str, Tensor]:
    """The model state_dict of an mmpose checkpoint file (or of a bare saved state_dict).

    Takes `state_dict` (mmengine's EMA weights), else `ema_state_dict`, else the dict itself, and
    strips a `module.` prefix. Raises CheckpointError for a file that is truncated or corrupt,
    is not a PyTorch checkpoint, holds no state_dict, or needs `trust_checkpoint=True`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist or is not a file")
    obj = _load(path, trust_checkpoint)
    state = _find_state_dict(obj)
    if state is None:
        raise CheckpointError(
            f"{path} is a PyTorch file but not a model checkpoint: expected a dict of tensors or "
            f"a dict with 'state_dict', got {_describe(obj)}"
        )
    prefix = "module."
    if state and all(k.startswith(prefix) for k in state):
        state = {k.removeprefix(prefix): v for k, v in state.items()}
    return dict(state)


def infer_variant(state_dict: Mapping[str, Tensor]) -> str:
    """The architecture name ("rtmo-s", "rtmo-l-crowdpose", ...) that the tensor shapes fit.

    Looks at the stem width (t/s/m/l) and the keypoint count (17: COCO/body7, 14: CrowdPose); the
    checkpoint's other keys are checked when the model is loaded. COCO and body7 models (and
    CrowdPose and body7-CrowdPose) share a layout; the short name picks the body7 one.
    """
    for key in (_STEM_KEY, _POS_ENC_KEY):
        if key not in state_dict:
            raise CheckpointError(f"not an RTMO state_dict: it has no {key!r}")
    width = state_dict[_STEM_KEY].shape[0]
    size = _SIZE_BY_STEM_WIDTH.get(width)
    if size is None:
        raise CheckpointError(
            f"no RTMO variant has a stem of {width} channels "
            f"(t/s/m/l have {sorted(_SIZE_BY_STEM_WIDTH)})"
        )
    k = state_dict[_POS_ENC_KEY].shape[0]
    matches = {c.architecture for c in VARIANTS.values() if c.size == size and c.num_keypoints == k}
    if not matches:
        raise CheckpointError(f"no published RTMO-{size} variant has {k} keypoints")
    return matches.pop()


def load_model(
    path: str | os.PathLike,
    variant: str | None = None,
    *,
    trust_checkpoint: bool = False,
    use_kernels: bool = True,
    device: str | torch.device = "cpu",
) -> RTMOModel:
    """An `RTMOModel` in eval mode with the weights of an official checkpoint.

    variant: a name for `rtmo.config.from_name` (e.g. "rtmo-s-coco"); inferred from the shapes
    when None. A checkpoint that does not fit the variant raises CheckpointError listing the
    missing, unexpected and mismatched keys and naming the variant it fits.
    """
    state = read_state_dict(path, trust_checkpoint)
    config = from_name(variant) if variant is not None else from_name(infer_variant(state))
    model = RTMOModel(config, use_kernels=use_kernels)
    _check_fits(model, config, state, path)
    model.load_state_dict(state, strict=True)
    return model.eval().to(device)


def _load(path: Path, trust: bool) -> object:
    if trust:
        return _torch_load(path, weights_only=False)
    try:
        with torch.serialization.safe_globals(_SAFE_NUMPY_GLOBALS):
            return _torch_load(path, weights_only=True)
    except pickle.UnpicklingError as err:
        if not _is_disallowed_global(err):
            raise CheckpointError(
                f"{path} is not a PyTorch checkpoint or is corrupt ({_first_line(err)})"
            ) from None
        raise CheckpointError(
            f"{path} contains pickled objects other than tensors and numpy arrays, which could "
            f"run arbitrary code when loaded ({_first_line(err)}). Pass trust_checkpoint=True "
            "only if you trust the source of this file."
        ) from None


def _torch_load(path: Path, weights_only: bool) -> object:
    """torch.load with the format errors turned into CheckpointError."""
    with path.open("rb") as f:
        head = f.read(4)
    if head == _ZIP_MAGIC and not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path} is truncated or corrupt: it starts like a torch.save zip archive but its "
            "central directory is missing or unreadable"
        )
    if head != _ZIP_MAGIC and head[:2] != _LEGACY_MAGIC:
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint (neither a torch.save zip archive nor a legacy "
            "pickle file)"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except pickle.UnpicklingError:
        raise
    except Exception as err:  # whatever breaks while decoding the bytes is a damaged file
        raise CheckpointError(
            f"{path} is truncated or corrupt and cannot be read ({_first_line(err)})"
        ) from None


# Phrases of torch's weights-only unpickler when it meets a global outside the allowlist.
_DISALLOWED_MARKERS = ("Unsupported global", "Can only build", "allowlisted")


def _is_disallowed_global(err: Exception) -> bool:
    return any(marker in str(err) for marker in _DISALLOWED_MARKERS)


def _first_line(err: Exception) -> str:
    """The line of a torch.load error that names the refused global or type."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for line in lines:
        found = re.search(r"GLOBAL (\S+)|but got (.+)$", line)
        if found:
            return f"refused: {found.group(1) or found.group(2)}"
    return lines[0] if lines else type(err).__name__


def _is_tensor_dict(obj: object) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())
    )


def _find_state_dict(obj: object) -> Mapping[str, Tensor] | None:
    if isinstance(obj, Mapping):
        for key in ("state_dict", "ema_state_dict"):
            if _is_tensor_dict(obj.get(key)):
                return obj[key]
    return obj if _is_tensor_dict(obj) else None


def _describe(obj: object) -> str:
    if isinstance(obj, Mapping):
        keys = list(obj)[:_MAX_LISTED_KEYS]
        return f"a dict with keys {keys}"
    return f"a {type(obj).__name__}"


def _listing(title: str, keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED_KEYS])
    more = f", ... ({len(keys) - _MAX_LISTED_KEYS} more)" if len(keys) > _MAX_LISTED_KEYS else ""
    return f"\n  {len(keys)} {title}: {shown}{more}"


def _check_fits(
    model: RTMOModel, config: RTMOConfig, state: Mapping[str, Tensor], path: str | os.PathLike
) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    )
    if not (missing or unexpected or mismatched):
        return
    try:
        fits = f"it fits {infer_variant(state)!r}"
    except CheckpointError as err:
        fits = f"it fits no published variant ({err})"
    listings = [
        _listing(title, keys)
        for title, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("keys with other shapes (checkpoint vs model)", mismatched),
        )
        if keys
    ]
    raise CheckpointError(f"{path} does not fit {config.name!r}; {fits}." + "".join(listings))
