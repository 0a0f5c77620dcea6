"""RTMO: one-stage real-time multi-person pose estimation, on fused kernels.

    from rtmo import RTMO, evaluate
    model = RTMO.from_checkpoint("rtmo-s_8xb32-600e_coco-640x640-8db55a59_20231211.pth")
    poses = model("people.jpg")
    metrics = evaluate(model, data="person_keypoints_val2017.json", images="val2017/")

`RTMO`, `Poses`, `evaluate` and `export_onnx` are imported on first use, so `import rtmo` stays
cheap (no torch, no cv2).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["RTMO", "Poses", "__version__", "evaluate", "export_onnx"]

if TYPE_CHECKING:
    from rtmo.eval import evaluate
    from rtmo.export import export_onnx
    from rtmo.predictor import RTMO
    from rtmo.results import Poses

_LAZY = {
    "RTMO": "rtmo.predictor",
    "Poses": "rtmo.results",
    "evaluate": "rtmo.eval",
    "export_onnx": "rtmo.export",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rtmo' has no attribute {name!r}")
