"""Official mmpose RTMO checkpoints -> `RTMOModel`, loaded strictly and unpickled safely.

Published files are `torch.save`d dicts `{"meta": {...}, "state_dict": {...}}` whose `meta` holds
numpy arrays (keypoint colours, sigmas). They are read with `torch.load(weights_only=True)` and an
allowlist of exactly the numpy globals those arrays need; anything else in the pickle is refused
unless the caller passes `trust_checkpoint=True` (which runs the full, unsafe unpickler).
"""

from __future__ import annotations

import _compat_pickle
import io
import os
import pickle
import pickletools
import re
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import IO

import numpy as np
import torch
from torch import Tensor

from rtmo.config import VARIANTS, KeypointSet, RTMOConfig, from_name
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
# Legacy (pre-1.6 or _use_new_zipfile_serialization=False) torch.save files are a sequence of
# pickles, starting with a protocol header: PROTO (0x80) and the protocol, 2 by default.
_PICKLE_PROTO = 0x80
_LEGACY_PROTOCOLS = range(2, 6)


class CheckpointError(ValueError):
    """A file that cannot be loaded as the requested RTMO checkpoint; the message says why."""


def read_state_dict(path: str | os.PathLike, trust_checkpoint: bool = False) -> dict[str, Tensor]:
    """The model state_dict of an mmpose checkpoint file (or of a bare saved state_dict).

    Takes `state_dict` (mmengine's EMA weights), else `ema_state_dict`, else the dict itself, and
    strips a `module.` prefix. Raises CheckpointError for a file that is truncated or corrupt,
    is not a PyTorch checkpoint, holds no state_dict, or needs `trust_checkpoint=True`.
    """
    return _read_checkpoint(path, trust_checkpoint)[0]


def _read_checkpoint(
    path: str | os.PathLike, trust_checkpoint: bool
) -> tuple[dict[str, Tensor], dict | None]:
    """(state_dict, meta["rtmo"] or None): the record `rtmo train` adds (variant, input size,
    keypoint set)."""
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
    meta = obj.get("meta") if isinstance(obj, Mapping) else None
    record = meta.get("rtmo") if isinstance(meta, Mapping) else None
    return dict(state), record if isinstance(record, Mapping) else None


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
        raise CheckpointError(
            f"no published RTMO-{size} variant has {k} keypoints, and the file does not record "
            "its keypoint set (checkpoints written by `rtmo train` do)"
        )
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

    variant: a name for `rtmo.config.from_name` (e.g. "rtmo-s-coco"); when None, the one a
    checkpoint of `rtmo train` records (with its keypoint set and training input size), else
    inferred from the shapes. A checkpoint that does not fit the variant raises CheckpointError
    listing the missing, unexpected and mismatched keys and naming the variant it fits.
    """
    state, record = _read_checkpoint(path, trust_checkpoint)
    if variant is None and record is not None:
        config = _recorded_config(path, record)
    else:
        config = from_name(variant) if variant is not None else from_name(infer_variant(state))
    model = RTMOModel(config, use_kernels=use_kernels)
    _check_fits(model, config, state, path)
    model.load_state_dict(state, strict=True)
    return model.eval().to(device)


def _recorded_config(path: str | os.PathLike, record: Mapping) -> RTMOConfig:
    """The config that meta["rtmo"] describes."""
    try:
        config = from_name(str(record["variant"])).with_keypoints(
            KeypointSet.from_dict(record["keypoints"])
        )
        return replace(config, input_size=tuple(int(v) for v in record["input_size"]))
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: its meta['rtmo'] record is unreadable ({err})") from None


def _load(path: Path, trust: bool) -> object:
    if trust:
        return _torch_load(path, weights_only=False)
    with torch.serialization.safe_globals(_SAFE_NUMPY_GLOBALS):
        try:
            return _torch_load(path, weights_only=True)
        except pickle.UnpicklingError as err:
            refused = _refused_globals(path, err)
            if not refused:
                raise CheckpointError(
                    f"{path} is not a PyTorch checkpoint or is corrupt ({_first_line(err)})"
                ) from None
    raise CheckpointError(
        f"{path} contains pickled objects other than tensors and numpy arrays "
        f"(refused: {', '.join(refused)}), which could run arbitrary code when loaded; nothing "
        "from the file was run. Pass trust_checkpoint=True (--trust-checkpoint on the command "
        "line) only if you trust the source of this file."
    )


def _torch_load(path: Path, weights_only: bool) -> object:
    """torch.load with the format errors turned into CheckpointError."""
    with path.open("rb") as f:
        head = f.read(4)
    if head == _ZIP_MAGIC and not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path} is truncated or corrupt: it starts like a torch.save zip archive but its "
            "central directory is missing or unreadable"
        )
    legacy = len(head) >= 2 and head[0] == _PICKLE_PROTO and head[1] in _LEGACY_PROTOCOLS
    if head != _ZIP_MAGIC and not legacy:
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint (neither a torch.save zip archive nor a legacy "
            "pickle file)"
        )
    try:
        with warnings.catch_warnings():
            # torch's warnings about odd pickle protocols precede an error reported here anyway.
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=weights_only)
    except pickle.UnpicklingError:
        raise
    except Exception as err:  # whatever breaks while decoding the bytes is a damaged file
        raise CheckpointError(
            f"{path} is truncated or corrupt and cannot be read ({_first_line(err)})"
        ) from None


# Pickle opcodes that import a global (a class or function): GLOBAL and INST name it in their
# argument, STACK_GLOBAL takes module and name from the two strings pushed before it.
_NAMED_GLOBAL_OPS = ("GLOBAL", "INST")
_STRING_OPS = ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING",
               "BINSTRING", "SHORT_BINSTRING")  # fmt: skip


def _refused_globals(path: Path, err: Exception) -> list[str]:
    """The globals of the checkpoint's pickle that torch's weights-only unpickler does not allow,
    found by reading the pickle's opcodes (nothing is executed); empty for a damaged file. The
    unpickler itself refuses some globals only by an opaque "Unsupported operand" (protocols 0
    and 4), so its message alone does not say which ones."""
    from torch import _weights_only_unpickler as unpickler

    allowed = set(unpickler._get_allowed_globals()) | set(unpickler._get_user_allowed_globals())
    try:
        found = _pickled_globals(path)
    except Exception:  # a damaged pickle: what its opcodes named before the damage is not trusted
        found = []
    refused = [name for name in found if name not in allowed]
    if not refused:  # named by the unpickler only (e.g. a class it may not build)
        match = re.search(r"GLOBAL (\S+?)[ .]*$|but got <class '([^']+)'>", str(err), re.M)
        refused = [match.group(1) or match.group(2)] if match else []
    return refused


def _pickled_globals(path: Path) -> list[str]:
    """Every global ("module.name") the checkpoint's object pickle refers to, in order."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            name = next(n for n in archive.namelist() if n.rpartition("/")[2] == "data.pkl")
            return _globals_in_pickles(io.BytesIO(archive.read(name)), count=1)
    with path.open("rb") as f:  # legacy format: magic, protocol, sys info, then the object
        return _globals_in_pickles(f, count=4)


_GET_OPS = ("GET", "BINGET", "LONG_BINGET")
_PUT_OPS = ("PUT", "BINPUT", "LONG_BINPUT")


def _globals_in_pickles(stream: IO[bytes], count: int) -> list[str]:
    """The globals named by the next `count` pickles of `stream`, read as opcodes (strings are
    followed through the memo, for STACK_GLOBAL)."""
    found: list[str] = []
    for _ in range(count):
        strings: list[str] = []  # every string pushed, in order
        memo: dict[int, str | None] = {}
        top: str | None = None  # the string on top of the stack, if the top is one
        for opcode, arg, _pos in pickletools.genops(stream):
            name = opcode.name
            if name in _STRING_OPS:
                top = str(arg)
                strings.append(top)
            elif name in _GET_OPS:
                top = memo.get(int(arg))
                if top is not None:
                    strings.append(top)
            elif name in _PUT_OPS:
                memo[int(arg)] = top
            elif name == "MEMOIZE":
                memo[len(memo)] = top
            else:
                if name in _NAMED_GLOBAL_OPS:
                    found.append(_python3_name(*str(arg).split(" ", 1)))
                elif name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.append(_python3_name(strings[-2], strings[-1]))
                top = None
    return list(dict.fromkeys(found))


def _python3_name(module: str, name: str) -> str:
    """ "module.name" as Python 3 imports it: pickles of protocols 0-2 may use Python 2 names
    (__builtin__.print, copy_reg._reconstructor), which unpickling maps the same way."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    else:
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    return f"{module}.{name}"


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
