"""The output of a dataset job: one row per image or video frame, in one file per block, as Parquet
(default) or JSON lines.

Columns: source (the image path or URI, or the video path), frame (the video frame's position
in the file, null for images), width, height, people (a list of {bbox: [x1, y1, x2, y2], score,
keypoints: [[x, y], ...], keypoint_scores: [...]}, in image pixels, by decreasing score) and
error (why the image or frame could not be read; null when it was, and then width, height and
people are null). Parquet keeps the model's float32 values exactly; JSON lines round them as
`Poses.to_dict` does (the lines of `rtmo predict --json`, keyed by source and frame).
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from rtmo.results import Poses

FORMATS = {"parquet": ".parquet", "jsonl": ".jsonl"}

PERSON = pa.struct(
    [
        ("bbox", pa.list_(pa.float32())),
        ("score", pa.float32()),
        ("keypoints", pa.list_(pa.list_(pa.float32()))),
        ("keypoint_scores", pa.list_(pa.float32())),
    ]
)
SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("frame", pa.int64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("people", pa.list_(PERSON)),
        ("error", pa.string()),
    ]
)


def block_file_name(seq: int, output_format: str) -> str:
    """The output file of block `seq`; the names sort in input order."""
    return f"part-{seq:08d}{FORMATS[output_format]}"


def prediction_row(source: str, frame: int | None, poses: Poses, output_format: str) -> dict:
    key = {"source": source, "frame": frame}
    if output_format == "jsonl":
        return {**key, **poses.to_dict()}
    people = [
        {
            "bbox": poses.boxes[i].tolist(),
            "score": float(poses.scores[i]),
            "keypoints": poses.keypoints[i].tolist(),
            "keypoint_scores": poses.keypoint_scores[i].tolist(),
        }
        for i in range(len(poses))
    ]
    width, height = poses.image_size
    return {**key, "width": width, "height": height, "people": people, "error": None}


def error_row(source: str, frame: int | None, message: str) -> dict:
    return {"source": source, "frame": frame, "error": message}


def encode(rows: list[dict[str, Any]], output_format: str) -> bytes:
    """The contents of one output file."""
    if output_format == "jsonl":
        return "".join(json.dumps(row) + "\n" for row in rows).encode()
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), sink)
    return sink.getvalue().to_pybytes()
