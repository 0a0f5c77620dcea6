"""COCO keypoint AP through pycocotools' COCOeval, with the settings of mmpose 1.3.2 for RTMO.

    import rtmo
    model = rtmo.RTMO.from_checkpoint("rtmo-s_8xb32-600e_coco-640x640-8db55a59_20231211.pth")
    metrics = rtmo.evaluate(model, data="person_keypoints_val2017.json", images="val2017/")
    metrics = rtmo.evaluate(predictions="results.json", data="person_keypoints_val2017.json")

What mmpose does, and so what this does by default (its RTMO configs' `test_cfg` and
`val_evaluator = CocoMetric(score_mode='bbox', nms_mode='none')`):

* every image of the annotation file is run; people with a score above 0.1 survive, then box NMS
  at IoU 0.65, and every survivor is kept (no cap on the people per image);
* a person's result score is its box score (`score_mode="bbox"`); `"keypoint"` is the mean of its
  keypoint scores, `"bbox_keypoint"` the box score times the mean of the keypoint scores above
  `keypoint_score_thr` (0 when none is), as in mmpose's CocoMetric;
* no OKS NMS on the results (`nms_mode='none'`);
* COCOeval(iouType="keypoints") scores the 20 best-scored people of each image (its `maxDets`)
  with the OKS sigmas of the keypoint set: a `sigmas` list in the annotations' category, else the
  model's set (COCO 17 or CrowdPose 14).

Annotations without an `area` (CrowdPose) get 0.53 x box area as the OKS scale, which is what
mmpose's `use_area=False` and the CrowdPose toolkit use.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rtmo.config import COCO_SIGMAS, CROWDPOSE_SIGMAS, MMPOSE_EVAL_SETTINGS, SCORE_MODES
from rtmo.results import COORD_DECIMALS, SCORE_DECIMALS

if TYPE_CHECKING:
    from rtmo.predictor import RTMO
    from rtmo.results import Poses

# COCOeval's keypoint summary, in the order of its `stats`.
METRIC_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
COCOEVAL_MAX_DETS = 20  # pycocotools' keypoint Params.maxDets: people scored per image
# OKS scale of annotations without an area (CrowdPose): 0.53 x box area, as the CrowdPose toolkit
# and mmpose's CocoMetric(use_area=False) compute it.
BOX_AREA_FACTOR = 0.53
# Person slots of the first pass over an image (the DCC decodes every slot): a trained model
# rarely keeps more; an image that fills them is run again with one slot per prior, so no NMS
# survivor is lost.
FIRST_SLOTS = 100
# CrowdPose's crowdIndex bounds of its easy / medium / hard split (xtcocotools' get_type_result as
# mmpose's CocoMetric(iou_type='keypoints_crowd') calls it).
CROWD_EASY, CROWD_HARD = 0.2, 0.8
METRICS_FILE, RESULTS_FILE = "metrics.json", "results.json"


class EvalInputError(ValueError):
    """An annotation file, a results file or an image does not fit the evaluation; the message
    names the file and what differs."""


@dataclass
class KeypointAnnotations:
    """A COCO keypoint annotation file, checked and ready for pycocotools.

    coco: the file's images, its person category and that category's annotations, with the
        fields pycocotools needs filled in (`iscrowd` 0, `num_keypoints` from the labels, `area`
        0.53 x box when no annotation has one); the input file is never modified.
    """

    source: str
    coco: dict[str, Any]
    category_id: int
    category_name: str
    num_keypoints: int
    sigmas: tuple[float, ...] | None  # the category's `sigmas`, when it has them
    area_rule: str

    @property
    def images(self) -> list[dict[str, Any]]:
        return self.coco["images"]

    @property
    def people(self) -> int:
        """Annotations COCOeval scores: not crowd, with at least one labelled keypoint."""
        return sum(
            1 for a in self.coco["annotations"] if not a["iscrowd"] and a["num_keypoints"] > 0
        )


def load_annotations(data: str | os.PathLike | dict[str, Any]) -> KeypointAnnotations:
    """Reads and checks a COCO keypoint annotation file (or its already-loaded dict).

    Raises EvalInputError naming the file and the image, annotation or category at fault.
    """
    source = "<annotations>" if isinstance(data, dict) else str(data)
    raw = data if isinstance(data, dict) else _read_json(Path(data), "annotation file")
    if not isinstance(raw, dict):
        raise EvalInputError(f"{source}: expected a COCO annotation object, got {_kind(raw)}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(raw.get(key), list):
            raise EvalInputError(f"{source}: no {key!r} list (not a COCO annotation file?)")
    category = _person_category(raw["categories"], source)
    cat_id = category["id"]
    images = _checked_images(raw["images"], source)
    for i, ann in enumerate(raw["annotations"]):
        if not isinstance(ann, dict):
            raise EvalInputError(f"{source}: annotations[{i}] is a {_kind(ann)}, not an object")
    anns = [copy.deepcopy(a) for a in raw["annotations"] if a.get("category_id") == cat_id]
    num_keypoints = _num_keypoints(category, anns, source)
    area_rule = _fill_annotations(anns, {img["id"] for img in images}, num_keypoints, source)
    sigmas = category.get("sigmas")
    if sigmas is not None:
        sigmas = _checked_sigmas(sigmas, num_keypoints, f"{source}: category {cat_id} 'sigmas'")
    return KeypointAnnotations(
        source,
        {"images": images, "annotations": anns, "categories": [copy.deepcopy(category)]},
        cat_id,
        str(category.get("name", cat_id)),
        num_keypoints,
        sigmas,
        area_rule,
    )


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise EvalInputError(f"{path}: no such {what}")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        raise EvalInputError(f"{path}: not valid JSON ({err})") from err


def _kind(value: Any) -> str:
    return type(value).__name__


def _person_category(categories: list[Any], source: str) -> dict[str, Any]:
    """The one category with a `keypoints` list."""
    with_keypoints = [c for c in categories if isinstance(c, dict) and "keypoints" in c]
    if len(with_keypoints) != 1:
        found = [c.get("id") for c in with_keypoints]
        raise EvalInputError(
            f"{source}: expected exactly one category with a 'keypoints' list (the person "
            f"category), found {len(with_keypoints)}{f' (ids {found})' if found else ''}"
        )
    if "id" not in with_keypoints[0]:
        raise EvalInputError(f"{source}: the category with 'keypoints' has no 'id'")
    return with_keypoints[0]


def _checked_images(images: list[Any], source: str) -> list[dict[str, Any]]:
    seen: set[Any] = set()
    out = []
    for i, image in enumerate(images):
        if not isinstance(image, dict) or "id" not in image:
            raise EvalInputError(f"{source}: images[{i}] has no 'id'")
        if image["id"] in seen:
            raise EvalInputError(f"{source}: image id {image['id']} appears twice")
        seen.add(image["id"])
        out.append(copy.deepcopy(image))
    if not out:
        raise EvalInputError(f"{source}: the 'images' list is empty")
    return out


def _num_keypoints(category: dict[str, Any], anns: list[dict[str, Any]], source: str) -> int:
    names = category["keypoints"]
    k = len(names) if isinstance(names, list) and names else None
    if k is None:
        if not anns:
            raise EvalInputError(
                f"{source}: category {category['id']} lists no keypoint names and has no "
                "annotations to count them from"
            )
        k = len(anns[0].get("keypoints", [])) // 3
    return k


def _fill_annotations(anns: list[dict[str, Any]], image_ids: set[Any], k: int, source: str) -> str:
    """Checks each annotation and fills what pycocotools needs; returns how areas are taken."""
    ids: set[Any] = set()
    for ann in anns:
        where = f"{source}: annotation {ann.get('id', '(no id)')}"
        if "id" not in ann or ann["id"] in ids:
            raise EvalInputError(f"{where}: {'no id' if 'id' not in ann else 'id appears twice'}")
        ids.add(ann["id"])
        if ann.get("image_id") not in image_ids:
            raise EvalInputError(f"{where}: image_id {ann.get('image_id')} is not in 'images'")
        keypoints = ann.get("keypoints")
        if not isinstance(keypoints, list) or len(keypoints) != 3 * k:
            count = len(keypoints) if isinstance(keypoints, list) else 0
            raise EvalInputError(
                f"{where}: {count} keypoint values, expected {3 * k} ({k} keypoints x 3)"
            )
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise EvalInputError(f"{where}: no 'bbox' [x, y, w, h]")
        ann["iscrowd"] = int(ann.get("iscrowd", 0))
        ann.setdefault("num_keypoints", int(np.count_nonzero(np.asarray(keypoints[2::3]) > 0)))
    with_area = [a for a in anns if "area" in a]
    if with_area and len(with_area) != len(anns):
        missing = next(a["id"] for a in anns if "area" not in a)
        raise EvalInputError(
            f"{source}: annotation {missing} has no 'area' but {len(with_area)} others do; give "
            "every annotation an area, or none (then 0.53 x box area is used, as for CrowdPose)"
        )
    if with_area or not anns:
        return "the annotations' area"
    for ann in anns:
        ann["area"] = BOX_AREA_FACTOR * ann["bbox"][2] * ann["bbox"][3]
    return f"{BOX_AREA_FACTOR} x box area (no 'area' in the annotations, as in CrowdPose)"


def _checked_sigmas(values: Any, k: int, what: str) -> tuple[float, ...]:
    try:
        sigmas = tuple(float(v) for v in values)
    except (TypeError, ValueError) as err:
        raise EvalInputError(f"{what}: expected {k} numbers, got {values!r}") from err
    if len(sigmas) != k or not all(math.isfinite(s) and s > 0 for s in sigmas):
        raise EvalInputError(f"{what}: expected {k} positive numbers, got {list(sigmas)}")
    return sigmas


def resolve_sigmas(
    annotations: KeypointAnnotations,
    model_sigmas: Sequence[float] | None = None,
    sigmas: Sequence[float] | None = None,
) -> tuple[tuple[float, ...], str]:
    """The OKS sigmas and where they come from: `sigmas` when given, else the annotation
    category's, else the model's keypoint set, else the COCO (17) or CrowdPose (14) set."""
    k = annotations.num_keypoints
    if sigmas is not None:
        return _checked_sigmas(sigmas, k, "sigmas"), "given"
    if annotations.sigmas is not None:
        return annotations.sigmas, f"{annotations.source}, category {annotations.category_id}"
    known = {"COCO": COCO_SIGMAS, "CrowdPose": CROWDPOSE_SIGMAS}
    if model_sigmas is not None and len(model_sigmas) == k:
        name = next((n for n, v in known.items() if tuple(model_sigmas) == v), None)
        return tuple(model_sigmas), f"the model's keypoint set, {name or 'its own'} ({k} keypoints)"
    for name, values in known.items():
        if len(values) == k:
            return values, f"{name} ({k} keypoints)"
    raise EvalInputError(
        f"{annotations.source}: {k} keypoints and no 'sigmas' in category "
        f"{annotations.category_id}; OKS sigmas are known for 17 (COCO) and 14 (CrowdPose) "
        "keypoints: add a 'sigmas' list to the category or pass sigmas="
    )


# ---------------------------------------------------------------------------- results


def person_scores(
    poses: Poses, score_mode: str = "bbox", keypoint_score_thr: float = 0.2
) -> np.ndarray:
    """The result score of each person (float64[n]) under mmpose CocoMetric's `score_mode`:
    "bbox" the box score, "keypoint" the mean keypoint score, "bbox_keypoint" the box score times
    the mean of the keypoint scores above `keypoint_score_thr` (0 when none is above)."""
    box = poses.scores.astype(np.float64)
    kpt = poses.keypoint_scores.astype(np.float64)
    if score_mode == "bbox":
        return box
    if score_mode == "keypoint":
        return kpt.mean(axis=1) if kpt.size else np.zeros_like(box)
    if score_mode == "bbox_keypoint":
        above = kpt > keypoint_score_thr
        count = above.sum(axis=1)
        mean = np.where(above, kpt, 0.0).sum(axis=1) / np.maximum(count, 1)
        return box * np.where(count > 0, mean, 0.0)
    raise ValueError(f"score_mode must be one of {SCORE_MODES}, got {score_mode!r}")


def poses_to_results(
    poses: Poses,
    image_id: Any,
    category_id: Any,
    score_mode: str = "bbox",
    keypoint_score_thr: float = 0.2,
) -> list[dict[str, Any]]:
    """One image's people as COCO keypoint results: image_id, category_id, keypoints [x, y, score]
    * K, score (per `score_mode`) and bbox [x, y, w, h], as mmpose's CocoMetric writes them.

    Rounded as `Poses.to_dict` rounds (1/1000 pixel, 1e-5 score), so a results file written from
    these scores exactly as the list itself does."""
    scores = person_scores(poses, score_mode, keypoint_score_thr)
    triplets = np.concatenate([poses.keypoints, poses.keypoint_scores[..., None]], axis=-1)
    triplets = triplets.astype(np.float64)
    triplets[..., :2] = np.round(triplets[..., :2], COORD_DECIMALS)
    triplets[..., 2] = np.round(triplets[..., 2], SCORE_DECIMALS)
    boxes = poses.boxes.astype(np.float64)
    boxes[:, 2:] -= boxes[:, :2]
    boxes = np.round(boxes, COORD_DECIMALS)
    return [
        {
            "image_id": image_id,
            "category_id": category_id,
            "keypoints": triplets[i].reshape(-1).tolist(),
            "score": round(float(scores[i]), SCORE_DECIMALS),
            "bbox": boxes[i].tolist(),
        }
        for i in range(len(poses))
    ]


def load_predictions(
    predictions: str | os.PathLike | list[dict[str, Any]], annotations: KeypointAnnotations
) -> list[dict[str, Any]]:
    """Reads a COCO keypoint results file (or list) and checks it against the annotations: known
    image ids, the person category, K keypoints, a finite score, a box on all or none."""
    source = "<predictions>" if isinstance(predictions, list) else str(predictions)
    raw = (
        predictions
        if isinstance(predictions, list)
        else _read_json(Path(predictions), "results file")
    )
    if not isinstance(raw, list):
        raise EvalInputError(
            f"{source}: expected a COCO results list [{{image_id, category_id, keypoints, "
            f"score}}, ...], got {_kind(raw)}"
        )
    results = [_checked_result(r, i, annotations, source) for i, r in enumerate(raw)]
    _check_ids(results, annotations, source)
    with_box = ["bbox" in r for r in results]
    if any(with_box) and not all(with_box):
        first = with_box.index(not with_box[0])
        raise EvalInputError(
            f"{source}: results[0] {'has' if with_box[0] else 'has no'} 'bbox' but "
            f"results[{first}] {'has' if with_box[first] else 'has none'}: all or none"
        )
    return results


def _checked_result(
    result: Any, index: int, annotations: KeypointAnnotations, source: str
) -> dict[str, Any]:
    where = f"{source}: results[{index}]"
    if not isinstance(result, dict):
        raise EvalInputError(f"{where} is a {_kind(result)}, expected an object")
    missing = [
        key for key in ("image_id", "category_id", "keypoints", "score") if key not in result
    ]
    if missing:
        raise EvalInputError(f"{where} has no {', '.join(map(repr, missing))}")
    k = annotations.num_keypoints
    keypoints = result["keypoints"]
    if not isinstance(keypoints, list) or len(keypoints) != 3 * k:
        count = len(keypoints) if isinstance(keypoints, list) else 0
        raise EvalInputError(
            f"{where} (image {result['image_id']}) has {count} keypoint values "
            f"({count // 3} keypoints); {annotations.source} has {k} keypoints ({3 * k} values)"
        )
    if "bbox" in result and not (isinstance(result["bbox"], list) and len(result["bbox"]) == 4):
        raise EvalInputError(f"{where}: 'bbox' must be [x, y, w, h]")
    values = [*keypoints, result["score"], *result.get("bbox", [])]
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
        raise EvalInputError(f"{where}: keypoints, score and bbox must be finite numbers")
    return dict(result)


def _check_ids(
    results: list[dict[str, Any]], annotations: KeypointAnnotations, source: str
) -> None:
    image_ids = {image["id"] for image in annotations.images}
    unknown = Counter(r["image_id"] for r in results if r["image_id"] not in image_ids)
    if unknown:
        shown = ", ".join(map(repr, list(unknown)[:5]))
        raise EvalInputError(
            f"{source}: {sum(unknown.values())} results have image ids that are not in "
            f"{annotations.source} ({len(unknown)} ids, e.g. {shown}); it holds "
            f"{len(image_ids)} images"
        )
    categories = Counter(
        r["category_id"] for r in results if r["category_id"] != annotations.category_id
    )
    if categories:
        found = ", ".join(f"{cid!r} ({n} results)" for cid, n in categories.most_common(5))
        raise EvalInputError(
            f"{source}: category_id {found}; the keypoint category of {annotations.source} is "
            f"{annotations.category_id!r} ({annotations.category_name!r})"
        )


# ---------------------------------------------------------------------------- scoring


def score_results(
    annotations: KeypointAnnotations,
    results: list[dict[str, Any]],
    sigmas: Sequence[float],
) -> dict[str, float | None]:
    """pycocotools' COCOeval(iouType="keypoints") of `results`: AP, AP50, AP75, APm, APl, AR,
    AR50, AR75, ARm, ARl as fractions; None where COCOeval has nothing to score (it says -1).

    When every image has a `crowdIndex` (CrowdPose), also AP_easy, AP_medium and AP_hard: the AP
    of the images with crowdIndex < 0.2, < 0.8 and the rest, the split mmpose reports.
    """
    try:
        from pycocotools.coco import COCO
    except ImportError as err:
        raise ImportError(
            "COCO evaluation needs pycocotools: pip install pycocotools (see requirements.txt)"
        ) from err
    # pycocotools reports progress with print(); the metrics are returned instead.
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        truth.dataset = copy.deepcopy(annotations.coco)
        truth.createIndex()
        if results:
            # loadRes adds ids, areas and box polygons to the entries it is given: give it copies.
            found = truth.loadRes([dict(r) for r in results])
        else:  # loadRes cannot take an empty list; no result scores AP 0
            found = COCO()
            found.dataset = {
                "images": annotations.images,
                "categories": annotations.coco["categories"],
                "annotations": [],
            }
            found.createIndex()
        stats = _cocoeval_stats(truth, found, sigmas, annotations.category_id)
        metrics = dict(zip(METRIC_NAMES, stats, strict=True))
        splits = _crowd_splits(annotations.images)
        for name, image_ids in splits.items():
            # COCOeval takes an empty imgIds for "every image": an empty split has nothing to score.
            metrics[name] = (
                _cocoeval_stats(truth, found, sigmas, annotations.category_id, image_ids)[0]
                if image_ids
                else -1.0
            )
    return {name: None if value < 0 else float(value) for name, value in metrics.items()}


def _cocoeval_stats(
    truth: Any, found: Any, sigmas: Sequence[float], category_id: Any, image_ids: list | None = None
) -> np.ndarray:
    from pycocotools.cocoeval import COCOeval

    evaluation = COCOeval(truth, found, iouType="keypoints")
    evaluation.params.kpt_oks_sigmas = np.asarray(sigmas, dtype=np.float64)
    evaluation.params.catIds = [category_id]
    if image_ids is not None:
        evaluation.params.imgIds = image_ids
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    return evaluation.stats


def _crowd_splits(images: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """CrowdPose's easy / medium / hard image ids by crowdIndex (bounds as xtcocotools, which
    mmpose uses); empty when an image has no crowdIndex."""
    if not all("crowdIndex" in image for image in images):
        return {}
    splits: dict[str, list[Any]] = {"AP_easy": [], "AP_medium": [], "AP_hard": []}
    for image in images:
        index = image["crowdIndex"]
        name = "AP_easy" if index < CROWD_EASY else "AP_medium" if index < CROWD_HARD else "AP_hard"
        splits[name].append(image["id"])
    return splits


# ---------------------------------------------------------------------------- running a model


@dataclass
class _RunStats:
    """Wall time, time spent waiting for decoded images and the predictor's stage times."""

    images: int = 0
    seconds: float = 0.0
    load_s: float = 0.0
    stage_ms: dict[str, float] | None = None
    reruns: int = 0  # images run again with more slots
    capped: int = 0  # images that filled every slot of a cap (max_det, an ONNX file's slots)
    slot_limit: int | None = None  # the cap; None: one slot per prior, nobody is left out

    def add(self, poses: Poses) -> None:
        """Counts one image's share of a predictor call (`Poses.speed` is ms per image)."""
        self.stage_ms = self.stage_ms or {}
        for stage, ms in poses.speed.items():
            self.stage_ms[stage] = self.stage_ms.get(stage, 0.0) + ms

    def to_dict(self, batch_size: int) -> dict[str, Any]:
        per_image = {"load": 1e3 * self.load_s / max(self.images, 1)}
        per_image |= {k: v / max(self.images, 1) for k, v in (self.stage_ms or {}).items()}
        return {
            "images": self.images,
            "seconds": self.seconds,
            "images_per_s": self.images / self.seconds if self.seconds > 0 else None,
            "ms_per_image": per_image,
            "batch_size": batch_size,
            "rerun_images": self.reruns,
            "images_at_max_det": self.capped,
            "max_det_slots": self.slot_limit,
            "note": "wall time of the whole run, first (warm-up) batch included; 'load' is the "
            "time spent waiting for decoded images (decoding overlaps inference)",
        }


def predict_results(
    model: RTMO,
    annotations: KeypointAnnotations,
    images: str | os.PathLike,
    *,
    score_mode: str = "bbox",
    keypoint_score_thr: float = 0.2,
    score_thr: float = 0.1,
    nms_thr: float = 0.65,
    max_det: int | None = None,
    batch_size: int = 8,
    progress: bool = False,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Runs `model` over every image of `annotations` (files under `images`); the COCO results
    and the speed of the run (images/s, ms per image of each stage)."""
    from tqdm import tqdm

    from rtmo.video import batched, prefetch

    folder = Path(images)
    if not folder.is_dir():
        raise EvalInputError(f"{folder}: no such image folder")
    slots, limit, capped = _slots(model, max_det)
    options = {"score_thr": score_thr, "nms_thr": nms_thr}
    stats = _RunStats(slot_limit=limit if capped else None)
    results: list[dict[str, Any]] = []
    bar = tqdm(total=len(annotations.images), unit="img", disable=not progress, leave=False)
    start = time.perf_counter()
    decoded = contextlib.closing(prefetch(_decode(annotations, folder), depth=2 * batch_size))
    with decoded as records, bar:
        waited_from = time.perf_counter()
        for batch in batched(records, batch_size):
            stats.load_s += time.perf_counter() - waited_from
            found = model.predict([image for _, image in batch], max_det=slots, **options)
            for (record, image), poses in zip(batch, found, strict=True):
                stats.add(poses)
                poses = _all_people(model, image, poses, slots, limit, options, stats)
                results += poses_to_results(
                    poses, record["id"], annotations.category_id, score_mode, keypoint_score_thr
                )
            stats.images += len(batch)
            bar.update(len(batch))
            waited_from = time.perf_counter()
    stats.seconds = time.perf_counter() - start
    return results, stats.to_dict(batch_size)


def _decode(annotations: KeypointAnnotations, folder: Path):
    """(image record, BGR image) for every image of the annotations, in order."""
    from rtmo.sources import read_image

    for record in annotations.images:
        name = record.get("file_name")
        if not name:
            raise EvalInputError(f"{annotations.source}: image {record['id']} has no 'file_name'")
        image = read_image(folder / name)
        expected = (record.get("width"), record.get("height"))
        if None not in expected and expected != (image.shape[1], image.shape[0]):
            raise EvalInputError(
                f"{folder / name}: the image is {image.shape[1]}x{image.shape[0]} but "
                f"{annotations.source} says {expected[0]}x{expected[1]} for image {record['id']}"
            )
        yield record, image


def _slots(model: RTMO, max_det: int | None) -> tuple[int, int, bool]:
    """(person slots of the first pass, most slots an image may be given, whether that most is a
    cap that can leave people out)."""
    from rtmo.model.head import STRIDES
    from rtmo.onnx_runtime import OnnxRuntimeModel

    if isinstance(model.model, OnnxRuntimeModel):
        # The slots are fixed in the graph; a full image is counted, not rerun.
        slots = model.model.max_det if max_det is None else max_det
        return slots, slots, True
    if max_det is not None:
        return max_det, max_det, True
    w, h = model.input_size
    priors = sum((w // s) * (h // s) for s in STRIDES)  # no image has more candidates
    return min(FIRST_SLOTS, priors), priors, False


def _all_people(
    model: RTMO,
    image: np.ndarray,
    poses: Poses,
    slots: int,
    limit: int,
    options: dict[str, float],
    stats: _RunStats,
) -> Poses:
    """`poses`, or when they fill every slot, the image run again with `limit` slots (one slot
    per prior: room for every survivor). One rerun at the limit rather than doubling: a rerun
    costs a network forward, a slot only its DCC decode. Greedy NMS keeps people in score order,
    so the first survivors do not depend on the slot count and the result equals an uncapped run.
    """
    if len(poses) == slots < limit:
        poses = model.predict([image], max_det=limit, **options)[0]
        stats.add(poses)
        stats.reruns += 1
    if len(poses) == stats.slot_limit:
        stats.capped += 1
    return poses


# ---------------------------------------------------------------------------- evaluate


def evaluate(
    model: RTMO | None = None,
    *,
    data: str | os.PathLike | dict[str, Any],
    images: str | os.PathLike | None = None,
    predictions: str | os.PathLike | list[dict[str, Any]] | None = None,
    score_mode: str = MMPOSE_EVAL_SETTINGS["score_mode"],
    keypoint_score_thr: float = MMPOSE_EVAL_SETTINGS["keypoint_score_thr"],
    score_thr: float = MMPOSE_EVAL_SETTINGS["score_thr"],
    nms_thr: float = MMPOSE_EVAL_SETTINGS["nms_thr"],
    max_det: int | None = MMPOSE_EVAL_SETTINGS["max_det"],
    batch_size: int = 8,
    sigmas: Sequence[float] | None = None,
    out: str | os.PathLike | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """COCO keypoint AP/AR of `model` (an `RTMO`) run over the images of the annotation file
    `data` (files under the folder `images`), or of a COCO `predictions` results file.

    Returns {"AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl": fractions
    0..1 (None where there is nothing to score, e.g. APm without medium-sized people),
    "settings": every setting of the run, "dataset": counts, "speed": images/s and ms per image
    of each stage (None for a results file)}. The defaults are mmpose's evaluation of RTMO (see
    the module docstring). `out`: a folder that receives metrics.json (this dict) and, when a
    model ran, results.json (COCO results), each written whole or not at all.
    """
    if (model is None) == (predictions is None):
        raise ValueError("give either a model (with images) or predictions, not both or neither")
    _check_options(score_mode, keypoint_score_thr, score_thr, nms_thr, max_det, batch_size)
    annotations = load_annotations(data)
    out_dir = None if out is None else Path(out)
    _check_outputs(out_dir, data, predictions)
    model_sigmas = None
    if model is not None:
        if images is None:
            raise ValueError("images: the folder of the annotated images is needed to run a model")
        model_sigmas = _check_model(model, annotations)
    oks_sigmas, sigma_source = resolve_sigmas(annotations, model_sigmas, sigmas)
    speed = None
    if model is not None:
        results, speed = predict_results(
            model,
            annotations,
            images,
            score_mode=score_mode,
            keypoint_score_thr=keypoint_score_thr,
            score_thr=score_thr,
            nms_thr=nms_thr,
            max_det=max_det,
            batch_size=batch_size,
            progress=progress,
        )
    else:
        results = load_predictions(predictions, annotations)
    started = time.perf_counter()
    metrics: dict[str, Any] = dict(score_results(annotations, results, oks_sigmas))
    settings = {
        "annotations": annotations.source,
        "images": None if images is None else str(images),
        "predictions": _describe_predictions(predictions),
        "model": None if model is None else _model_settings(model, batch_size),
        "oks_sigmas": list(oks_sigmas),
        "oks_sigmas_from": sigma_source,
        "oks_area": annotations.area_rule,
        "cocoeval": f"pycocotools {_pycocotools_version()} COCOeval(iouType='keypoints'), "
        f"{COCOEVAL_MAX_DETS} best-scored people per image",
        "nms_mode": MMPOSE_EVAL_SETTINGS["nms_mode"],
        "mmpose": dict(MMPOSE_EVAL_SETTINGS),
    }
    if model is not None:
        settings |= {
            "score_mode": score_mode,
            "keypoint_score_thr": keypoint_score_thr,
            "score_thr": score_thr,
            "nms_thr": nms_thr,
            "max_det": max_det,
        }
    else:
        settings["score_mode"] = "the results file's scores"
    metrics["settings"] = settings
    metrics["dataset"] = {
        "images": len(annotations.images),
        "people": annotations.people,
        "keypoints": annotations.num_keypoints,
        "category": annotations.category_name,
        "results": len(results),
    }
    metrics["speed"] = speed
    metrics["scoring_seconds"] = time.perf_counter() - started
    if out_dir is not None:
        write_outputs(out_dir, metrics, results if model is not None else None)
    return metrics


def _check_options(
    score_mode: str,
    keypoint_score_thr: float,
    score_thr: float,
    nms_thr: float,
    max_det: int | None,
    batch_size: int,
) -> None:
    if score_mode not in SCORE_MODES:
        raise ValueError(f"score_mode must be one of {SCORE_MODES}, got {score_mode!r}")
    if not 0.0 <= keypoint_score_thr < 1.0:
        raise ValueError(f"keypoint_score_thr must be in [0, 1), got {keypoint_score_thr}")
    if not 0.0 <= score_thr < 1.0:
        raise ValueError(f"score_thr must be in [0, 1), got {score_thr}")
    if not 0.0 < nms_thr <= 1.0:
        raise ValueError(f"nms_thr must be in (0, 1], got {nms_thr}")
    if max_det is not None and max_det < 1:
        raise ValueError(f"max_det must be at least 1 (or None: every survivor), got {max_det}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")


def _check_outputs(out: Path | None, data: Any, predictions: Any) -> None:
    """The output files must not be one of the inputs."""
    if out is None:
        return
    inputs = [p for p in (data, predictions) if isinstance(p, (str, os.PathLike))]
    for name in (METRICS_FILE, RESULTS_FILE):
        target = (out / name).resolve()
        for path in inputs:
            if Path(path).resolve() == target:
                raise ValueError(f"out: {out / name} would overwrite the input {path}")


def _check_model(model: RTMO, annotations: KeypointAnnotations) -> Sequence[float] | None:
    """The model's sigmas (None when its config has none); its K must be the annotations'."""
    config = model.config
    k = config.num_keypoints
    if k != annotations.num_keypoints:
        raise EvalInputError(
            f"the model {config.name} predicts {k} keypoints but {annotations.source} has "
            f"{annotations.num_keypoints} (category {annotations.category_id})"
        )
    return getattr(config, "sigmas", None)


def _model_settings(model: RTMO, batch_size: int) -> dict[str, Any]:
    from rtmo.onnx_runtime import OnnxRuntimeModel

    net = model.model
    onnx = isinstance(net, OnnxRuntimeModel)
    settings = {
        "name": model.config.name,
        "checkpoint": getattr(model, "checkpoint", None),
        "runtime": "onnxruntime" if onnx else "torch",
        "device": str(model.device),
        "input_size": list(model.input_size),
        "batch_size": batch_size,
    }
    if onnx:
        settings |= {
            "onnx_file": str(net.path),
            "providers": net.session.get_providers(),
            "dtype": "float16" if net.fp16 else "float32",
        }
    else:
        settings |= {
            "dtype": str(model.dtype).removeprefix("torch."),
            "backend": model.backend,
            "use_kernels": getattr(net, "use_kernels", None),
        }
    return settings


def _describe_predictions(predictions: Any) -> str | None:
    if predictions is None:
        return None
    return "<list>" if isinstance(predictions, list) else str(predictions)


def _pycocotools_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pycocotools")
    except PackageNotFoundError:
        return "(version unknown)"


def write_outputs(out: Path, metrics: dict[str, Any], results: list[dict[str, Any]] | None) -> None:
    """`out`/results.json (when given) then `out`/metrics.json, each through a temporary file."""
    from rtmo.sources import atomic_output

    if results is not None:
        with atomic_output(out / RESULTS_FILE) as tmp:
            tmp.write_text(json.dumps(results) + "\n", encoding="utf-8")
    with atomic_output(out / METRICS_FILE) as tmp:
        tmp.write_text(json.dumps(metrics, indent=1) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------- report


def report_lines(metrics: dict[str, Any]) -> list[str]:
    """The metrics table, the settings (each marked where it differs from mmpose's) and the
    speed, as printed by `rtmo eval`."""
    settings, data = metrics["settings"], metrics["dataset"]
    what = settings["predictions"] or _model_line(settings["model"])
    lines = [
        f"{what} on {settings['annotations']}: {data['images']} images, {data['people']} people "
        f"({data['keypoints']} keypoints), {data['results']} results",
        "  " + " ".join(f"{name:>6}" for name in METRIC_NAMES),
        "  " + " ".join(f"{_fraction(metrics[name]):>6}" for name in METRIC_NAMES),
    ]
    if "AP_easy" in metrics:
        split = ", ".join(
            f"{name.removeprefix('AP_')} {_fraction(metrics[name])}"
            for name in ("AP_easy", "AP_medium", "AP_hard")
        )
        lines.append(
            f"  AP by crowdIndex (< {CROWD_EASY} easy, < {CROWD_HARD} medium, else hard): {split}"
        )
    lines.append("settings:")
    mmpose = settings["mmpose"]
    if settings["model"] is not None:
        for key in ("score_thr", "nms_thr", "max_det", "score_mode", "keypoint_score_thr"):
            lines.append(f"  {key} {_setting(key, settings[key], mmpose[key])}")
    else:
        lines.append(f"  score: {settings['score_mode']}")
    lines += [
        f"  nms_mode {settings['nms_mode']} (mmpose's RTMO evaluation)",
        f"  OKS sigmas: {settings['oks_sigmas_from']}; OKS area: {settings['oks_area']}",
        f"  {settings['cocoeval']}",
    ]
    speed = metrics["speed"]
    if speed is not None:
        stages = ", ".join(f"{k} {v:.1f}" for k, v in speed["ms_per_image"].items())
        rate = speed["images_per_s"]
        lines.append(
            f"speed: {speed['images']} images in {speed['seconds']:.1f} s, "
            f"{rate:.2f} images/s (first batch included); ms per image: {stages}"
        )
        if speed["rerun_images"]:
            lines.append(
                f"  {speed['rerun_images']} images filled their person slots and were run again "
                "with more, so every NMS survivor is kept"
            )
        if speed["images_at_max_det"]:
            lines.append(
                f"  {speed['images_at_max_det']} images filled all {speed['max_det_slots']} person "
                "slots: people beyond them, if any, were not scored"
            )
    return lines


def _model_line(model: dict[str, Any]) -> str:
    how = f"{model['runtime']}, {model['device']}, {model['dtype']}"
    if model["runtime"] == "torch":
        kernels = "fused kernels" if model.get("use_kernels", True) else "no kernels"
        how += f", {kernels} (backend {model['backend']})"
    return f"{model['name']} ({how}, batch {model['batch_size']})"


def _fraction(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _setting(key: str, value: Any, mmpose: Any) -> str:
    shown = "none: every NMS survivor kept" if key == "max_det" and value is None else str(value)
    if key == "keypoint_score_thr":
        shown += " (score_mode bbox_keypoint only)"
    if value == mmpose:
        return f"{shown} (mmpose)"
    return f"{shown} (mmpose: {'none' if mmpose is None else mmpose})"
