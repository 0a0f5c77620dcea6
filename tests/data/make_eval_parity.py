"""Makes eval_mmpose_parity.json: mmpose 1.3.2's CocoMetric on hand-made annotations and model
outputs, the reference of tests/test_eval.py::test_metrics_equal_mmpose_coco_metric.

Run with the Python of an mmpose 1.3.2 environment (../shared/tools/mmpose-env.sh makes one):
    python tests/data/make_eval_parity.py
Two sets: COCO-style (17 keypoints, annotations with an area; CocoMetric(score_mode=...,
nms_mode='none') for each score mode) and CrowdPose-style (14 keypoints, no area, crowdIndex;
CocoMetric(iou_type='keypoints_crowd', use_area=False) as mmpose's RTMO CrowdPose configs).
"""

import json
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch.nn as nn

stub = types.ModuleType("mmcv.ops")  # edpose imports it unguarded; CocoMetric never uses it
stub.MultiScaleDeformableAttention = type("MultiScaleDeformableAttention", (nn.Module,), {})
sys.modules["mmcv.ops"] = stub

from mmpose.evaluation.metrics import CocoMetric  # noqa: E402

OUT = Path(__file__).with_name("eval_mmpose_parity.json")
COCO_SIGMAS = [.026, .025, .025, .035, .035, .079, .079, .072, .072, .062, .062, .107, .107, .087,
               .087, .089, .089]  # fmt: skip
CROWDPOSE_SIGMAS = [.079, .079, .072, .072, .062, .062, .107, .107, .087, .087, .089, .089, .079,
                    .079]  # fmt: skip


def make_set(rng, k, with_area, crowd_index):
    """Annotations (COCO dict) and per-image model outputs: noisy copies of the people, jittered
    boxes, random scores, random false positives, and one crowded image with 30 outputs."""
    images, anns, outputs = [], [], {}
    for i in range(12):
        image_id = 100 + i
        image = {"id": image_id, "file_name": f"{i}.jpg", "width": 640, "height": 480}
        if crowd_index:
            image["crowdIndex"] = round(float(rng.uniform()), 2)
        images.append(image)
        boxes, scores, keypoints, kpt_scores = [], [], [], []
        for _ in range(int(rng.integers(0, 5)) if i != 5 else 12):
            w, h = rng.uniform(30, 300), rng.uniform(50, 400)
            x0, y0 = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
            kp = np.stack(
                [rng.uniform(x0, x0 + w, k), rng.uniform(y0, y0 + h, k),
                 rng.choice([0, 1, 2], k, p=[0.2, 0.2, 0.6])], 1
            )  # fmt: skip
            kp[kp[:, 2] == 0, :2] = 0
            ann = {
                "id": len(anns) + 1, "image_id": image_id, "category_id": 1,
                "keypoints": np.round(kp, 2).reshape(-1).tolist(),
                "num_keypoints": int((kp[:, 2] > 0).sum()),
                "bbox": np.round([x0, y0, w, h], 2).tolist(),
                "iscrowd": int(rng.uniform() < 0.05),
            }  # fmt: skip
            if with_area:
                ann["area"] = round(float(w * h * rng.uniform(0.4, 0.9)), 2)
            anns.append(ann)
            for _ in range(int(rng.integers(0, 3))):
                noisy = kp[:, :2] + rng.normal(0, rng.uniform(1, 15), (k, 2))
                jitter = rng.normal(0, 3, 4)
                boxes.append(
                    [x0 + jitter[0], y0 + jitter[1], x0 + w + jitter[2], y0 + h + jitter[3]]
                )
                keypoints.append(noisy)
                scores.append(rng.uniform(0.1, 1))
                kpt_scores.append(rng.uniform(0, 1, k))
        for _ in range(int(rng.integers(0, 3)) if i != 5 else 18):
            x0, y0 = rng.uniform(0, 500), rng.uniform(0, 300)
            boxes.append([x0, y0, x0 + 100, y0 + 150])
            keypoints.append(
                np.stack([rng.uniform(x0, x0 + 100, k), rng.uniform(y0, y0 + 150, k)], 1)
            )
            scores.append(rng.uniform(0.1, 1))
            kpt_scores.append(rng.uniform(0, 1, k))
        outputs[image_id] = {
            "boxes": np.round(np.reshape(boxes, (-1, 4)), 2).tolist(),
            "scores": np.round(scores, 4).tolist(),
            "keypoints": np.round(np.reshape(keypoints, (-1, k, 2)), 2).tolist(),
            "keypoint_scores": np.round(np.reshape(kpt_scores, (-1, k)), 4).tolist(),
        }
    categories = [{"id": 1, "name": "person", "keypoints": [f"k{j}" for j in range(k)]}]
    return {"images": images, "annotations": anns, "categories": categories}, outputs


def coco_metric(annotations, outputs, sigmas, **options):
    """mmpose's CocoMetric on the outputs, fed as its bottom-up evaluation feeds them."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ann.json"
        path.write_text(json.dumps(annotations))
        metric = CocoMetric(ann_file=str(path), nms_mode="none", **options)
        metric.dataset_meta = {
            "dataset_name": "parity",
            "num_keypoints": len(sigmas),
            "sigmas": np.array(sigmas),
            "CLASSES": annotations["categories"],
        }
        samples = []
        for image_id, out in outputs.items():
            ann_ids = [a["id"] for a in annotations["annotations"] if a["image_id"] == image_id]
            scores = np.array(out["scores"], dtype=np.float32)
            samples.append(
                {
                    "id": ann_ids,  # a list, as in bottom-up mode: no per-id de-duplication
                    "img_id": image_id,
                    "category_id": 1,
                    "gt_instances": {},
                    "pred_instances": {
                        "bboxes": np.array(out["boxes"], dtype=np.float32).reshape(-1, 4),
                        "bbox_scores": scores,
                        "keypoints": np.array(out["keypoints"], dtype=np.float32).reshape(
                            len(scores), len(sigmas), 2
                        ),
                        "keypoint_scores": np.array(
                            out["keypoint_scores"], dtype=np.float32
                        ).reshape(len(scores), len(sigmas)),
                    },
                }
            )
        metric.process([], samples)
        return {
            name: float(value) for name, value in metric.compute_metrics(metric.results).items()
        }


def main():
    rng = np.random.default_rng(2024)
    coco, coco_out = make_set(rng, 17, with_area=True, crowd_index=False)
    crowd, crowd_out = make_set(rng, 14, with_area=False, crowd_index=True)
    fixture = {
        "coco": {
            "annotations": coco,
            "outputs": {str(k): v for k, v in coco_out.items()},
            "mmpose": {
                mode: coco_metric(coco, coco_out, COCO_SIGMAS, score_mode=mode)
                for mode in ("bbox", "keypoint", "bbox_keypoint")
            },
        },
        "crowdpose": {
            "annotations": crowd,
            "outputs": {str(k): v for k, v in crowd_out.items()},
            "mmpose": {
                "bbox": coco_metric(
                    crowd,
                    crowd_out,
                    CROWDPOSE_SIGMAS,
                    score_mode="bbox",
                    iou_type="keypoints_crowd",
                    use_area=False,
                )
            },
        },
    }
    OUT.write_text(json.dumps(fixture, separators=(",", ":")) + "\n")
    print(json.dumps({k: v["mmpose"] for k, v in fixture.items()}, indent=1))


if __name__ == "__main__":
    main()
