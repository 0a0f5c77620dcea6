"""Tracking quality: IDF1, MOTA and id switches (motmetrics) against the true identities of moving
people, IoU-only against IoU+OKS association; keypoint jitter with and without smoothing.

Two sources of detections:

* Tracker benchmark (default): the true poses of `benchmarks.motion`'s sequences (or of procedural
  dataset sequences, `--sequences DIR` of COCO json files with `frame_index` and `track_id`), with
  a detector's errors added by `benchmarks.motion.detect`. This measures the tracker alone, on
  detections whose quality is known; it is not a measurement of the network.
* Model benchmark (`--checkpoint CKPT --sequences DIR`): every `NAME.mp4` in DIR that has a
  `NAME.json` beside it runs through `RTMO.track`, and the tracked people are scored against the
  json's identities.

    python -m benchmarks.tracking                      # tracker benchmark, JSON to stdout
    python -m benchmarks.tracking --quick
    python -m benchmarks.tracking --checkpoint rtmo-t.pth --sequences motion/   # the model too

`make bench` runs the tracker benchmark (and the model benchmark when RTMO_TRACK_CHECKPOINT and
RTMO_TRACK_SEQUENCES are set) as one of its steps.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import motmetrics
import numpy as np

from benchmarks import motion
from rtmo.config import COCO_KEYPOINTS, COCO_SIGMAS, COCO_SKELETON
from rtmo.results import Poses
from rtmo.track import ByteTracker, OneEuroSmoother
from rtmo.track.similarity import box_iou

ASSOCIATIONS = {"iou": 0.0, "iou+oks": 0.5}  # name -> oks_weight
METRICS = ("idf1", "mota", "num_switches", "num_false_positives", "num_misses", "num_objects")
MATCH_IOU = 0.5  # a tracked box covers a true person at IoU >= 0.5 (the MOTChallenge rule)
JITTER_KPT_THR = 0.3  # keypoints scoring below this are left out of jitter and error
SEEDS = range(100, 110)  # the tracker's settings were chosen on seeds 0-9, reported on these
QUICK_SEEDS = range(100, 102)


def to_poses(frame: motion.Frame, image_size: tuple[int, int]) -> Poses:
    """A detection frame as the `Poses` the model would return, by decreasing score."""
    order = np.argsort(-frame.scores, kind="stable")
    scores = frame.keypoint_scores if frame.keypoint_scores is not None else frame.visibility / 2
    return Poses(
        frame.boxes[order],
        frame.scores[order],
        frame.keypoints[order],
        scores[order],
        image_size,
        keypoint_names=COCO_KEYPOINTS,
        skeleton=COCO_SKELETON,
    )


def run_tracker(
    sequence: motion.Sequence,
    detections: list[motion.Frame],
    oks_weight: float,
    smoother: OneEuroSmoother | None = None,
    **options: Any,
) -> list[Poses]:
    """The tracked people of every frame."""
    tracker = ByteTracker(COCO_SIGMAS, oks_weight=oks_weight, **options)
    out = []
    for index, frame in enumerate(detections):
        tracked = tracker.update(to_poses(frame, sequence.image_size), index)
        out.append(tracked if smoother is None else smoother(tracked, index / sequence.fps))
    return out


def accumulate(sequence: motion.Sequence, tracked: list[Poses]) -> motmetrics.MOTAccumulator:
    """motmetrics' record of true people against tracked people, frame by frame."""
    acc = motmetrics.MOTAccumulator(auto_id=True)
    for t, (truth, people) in enumerate(zip(sequence.frames, tracked, strict=True)):
        people = _without_ignored(
            people, truth.boxes, sequence.ignored[t] if sequence.ignored else None
        )
        # motmetrics' own iou_matrix calls np.asfarray, which NumPy 2 removed.
        iou = box_iou(truth.boxes, people.boxes)
        distances = np.where(iou >= MATCH_IOU, 1.0 - iou, np.nan)
        acc.update(truth.ids.tolist(), people.track_ids.tolist(), distances)
    return acc


def _without_ignored(people: Poses, counted: np.ndarray, ignored: np.ndarray | None) -> Poses:
    """The tracked people less those on an ignored person (IoU >= MATCH_IOU with one, and more
    than with any counted person), as MOTChallenge drops hypotheses on its ignored regions."""
    if ignored is None or len(ignored) == 0 or len(people) == 0:
        return people
    on_ignored = box_iou(people.boxes, ignored).max(axis=1)
    on_counted = box_iou(people.boxes, counted).max(axis=1, initial=0.0)
    return people[np.flatnonzero(~((on_ignored >= MATCH_IOU) & (on_ignored > on_counted)))]


def summarize(accumulators: list, names: list[str]) -> dict[str, dict[str, float]]:
    """METRICS per sequence and over all ("overall")."""
    host = motmetrics.metrics.create()
    table = host.compute_many(
        accumulators, names=names, metrics=list(METRICS), generate_overall=True
    )
    return {
        str(name): {metric: float(row[metric]) for metric in METRICS}
        for name, row in table.iterrows()
    }


def matched_pairs(acc: motmetrics.MOTAccumulator) -> dict[int, dict[int, int]]:
    """{frame: {track id: true id}} of the matches motmetrics made."""
    events = acc.mot_events
    matches = events[events["Type"].isin(["MATCH", "SWITCH"])]
    pairs: dict[int, dict[int, int]] = {}
    for (frame, _), row in matches.iterrows():
        pairs.setdefault(int(frame), {})[int(row["HId"])] = int(row["OId"])
    return pairs


def jitter_and_error(
    sequence: motion.Sequence, tracked: list[Poses], pairs: dict[int, dict[int, int]]
) -> dict[str, float]:
    """Keypoint jitter and error, in % of the person's height.

    jitter: mean |x[t+1] - 2 x[t] + x[t-1]| (frame-to-frame acceleration) over each track's
    keypoints scoring >= JITTER_KPT_THR in three consecutive frames; truth_jitter: the same of
    the true keypoints of the people matched (the motion itself, the floor); error: mean distance
    of tracked keypoints to the true ones, for matched people's visible keypoints.
    """
    paths = _paths(tracked)
    true_paths = _true_paths(sequence)
    accel, true_accel, errors = [], [], []
    for track_id, path in paths.items():
        for t in sorted(path):
            if t - 1 not in path or t + 1 not in path:
                continue
            (prev, _, _), (now, scores, height), (after, _, _) = path[t - 1], path[t], path[t + 1]
            good = scores >= JITTER_KPT_THR
            accel.extend(np.linalg.norm(after - 2 * now + prev, axis=-1)[good] / height)
            owners = [pairs.get(f, {}).get(track_id) for f in (t - 1, t, t + 1)]
            if owners[0] is not None and owners[0] == owners[1] == owners[2]:
                truth = [true_paths[owners[0]][f] for f in (t - 1, t, t + 1)]
                true_accel.extend(
                    np.linalg.norm(truth[2] - 2 * truth[1] + truth[0], axis=-1)[good] / height
                )
    for t, frame_pairs in pairs.items():
        people = tracked[t]
        index = {int(i): n for n, i in enumerate(people.track_ids.tolist())}
        for track_id, true_id in frame_pairs.items():
            n = index[track_id]
            truth_row = int(np.flatnonzero(sequence.frames[t].ids == true_id)[0])
            visible = sequence.frames[t].visibility[truth_row] == 2
            height = _height(people.boxes[n])
            distance = np.linalg.norm(
                people.keypoints[n] - sequence.frames[t].keypoints[truth_row], axis=-1
            )
            errors.extend(distance[visible] / height)
    return {
        "jitter_pct": 100.0 * float(np.mean(accel)) if accel else float("nan"),
        "truth_jitter_pct": 100.0 * float(np.mean(true_accel)) if true_accel else float("nan"),
        "error_pct": 100.0 * float(np.mean(errors)) if errors else float("nan"),
    }


def _height(box: np.ndarray) -> float:
    return max(float(box[3] - box[1]), 1.0)


def _paths(tracked: list[Poses]) -> dict[int, dict[int, tuple[np.ndarray, np.ndarray, float]]]:
    paths: dict[int, dict[int, tuple[np.ndarray, np.ndarray, float]]] = {}
    for t, people in enumerate(tracked):
        for n, track_id in enumerate(people.track_ids.tolist()):
            entry = (
                people.keypoints[n].astype(np.float64),
                people.keypoint_scores[n],
                _height(people.boxes[n]),
            )
            paths.setdefault(track_id, {})[t] = entry
    return paths


def _true_paths(sequence: motion.Sequence) -> dict[int, dict[int, np.ndarray]]:
    paths: dict[int, dict[int, np.ndarray]] = {}
    for t, frame in enumerate(sequence.frames):
        for n, true_id in enumerate(frame.ids.tolist()):
            paths.setdefault(true_id, {})[t] = frame.keypoints[n]
    return paths


def tracker_benchmark(
    sequences: Iterable[motion.Sequence],
    seed: int = 0,
    smoother_options: dict[str, float] | None = None,
    **tracker_options: Any,
) -> dict[str, Any]:
    """IDF1/MOTA/switches per association setting and scenario, and jitter with and without
    smoothing (on the IoU+OKS tracks), over `sequences` with `motion.detect` detections."""
    sequences = list(sequences)
    detections = [motion.detect(s, seed + i) for i, s in enumerate(sequences)]
    names = [s.name for s in sequences]
    result: dict[str, Any] = {"sequences": names, "associations": {}}
    for association, oks_weight in ASSOCIATIONS.items():
        start = time.perf_counter()
        tracked = [
            run_tracker(s, d, oks_weight, **tracker_options)
            for s, d in zip(sequences, detections, strict=True)
        ]
        elapsed = time.perf_counter() - start
        accs = [accumulate(s, t) for s, t in zip(sequences, tracked, strict=True)]
        per_sequence = summarize(accs, names)
        result["associations"][association] = {
            "overall": per_sequence.pop("OVERALL"),
            "by_scenario": _by_scenario(sequences, accs),
            "sequences": per_sequence,
            "frames_per_s": sum(len(s.frames) for s in sequences) / elapsed,
        }
        if association == "iou+oks":
            result["smoothing"] = _smoothing(sequences, detections, tracked, accs,
                                             smoother_options or {}, tracker_options)  # fmt: skip
    return result


def _by_scenario(sequences: list[motion.Sequence], accs: list) -> dict[str, dict[str, float]]:
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(sequences):
        groups.setdefault(s.name.rsplit("-", 1)[0], []).append(i)
    return {
        scenario: summarize([accs[i] for i in members], [sequences[i].name for i in members])[
            "OVERALL"
        ]
        for scenario, members in groups.items()
    }


def _smoothing(sequences, detections, tracked, accs, smoother_options, tracker_options):
    raw = [
        jitter_and_error(s, t, matched_pairs(a))
        for s, t, a in zip(sequences, tracked, accs, strict=True)
    ]
    smoothed_runs = [
        run_tracker(s, d, ASSOCIATIONS["iou+oks"], OneEuroSmoother(**smoother_options),
                    **tracker_options)
        for s, d in zip(sequences, detections, strict=True)
    ]  # fmt: skip
    smoothed = [
        jitter_and_error(s, t, matched_pairs(accumulate(s, t)))
        for s, t in zip(sequences, smoothed_runs, strict=True)
    ]
    return {"raw": _mean_dicts(raw), "one-euro": _mean_dicts(smoothed), **smoother_options}


def _mean_dicts(rows: list[dict[str, float]]) -> dict[str, float]:
    """Each key's mean over the rows that have a number for it (NaN if none has)."""
    means = {}
    for key in rows[0]:
        values = [row[key] for row in rows if not np.isnan(row[key])]
        means[key] = float(np.mean(values)) if values else float("nan")
    return means


def benchmark_sequences(
    seeds: Iterable[int], frames: int = 150, scenarios: Iterable[str] = motion.SCENARIOS
) -> list[motion.Sequence]:
    return [motion.make_sequence(s, seed, frames) for s in scenarios for seed in seeds]


def procedural_sequences(folder: Path) -> list[motion.Sequence]:
    """The sequences (json) of a procedural dataset folder."""
    sequences = [motion.load_coco_sequence(p) for p in sorted(Path(folder).glob("*.json"))]
    if not sequences:
        raise ValueError(f"{folder}: no sequence json files")
    return sequences


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter sequences")
    parser.add_argument("--seeds", default=None, help="first,last scenario seed (default 100,109)")
    parser.add_argument("--frames", type=int, default=150, help="frames per built-in scenario")
    parser.add_argument(
        "--sequences",
        type=Path,
        help="procedural dataset sequences (rtmo data synth --motion); default: the canonical "
        "tracking set, generated in a temporary folder",
    )
    parser.add_argument("--checkpoint", type=Path, help="also run this model on the videos")
    parser.add_argument("--device", default=None)
    return parser.parse_args(argv)


def run(
    quick: bool = False,
    seeds: Iterable[int] | None = None,
    frames: int = 150,
    sequences_dir: Path | None = None,
    checkpoint: Path | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """The tracker benchmark on the procedural dataset's sequences and on the built-in scenarios,
    and the model benchmark on the sequences' videos when a checkpoint is given."""
    start = time.perf_counter()
    seeds = list(seeds if seeds is not None else (QUICK_SEEDS if quick else SEEDS))
    result: dict[str, Any] = {
        "detections": "true poses with simulated detector errors (benchmarks.motion.detect)"
    }
    with tempfile.TemporaryDirectory() as tmp:
        if sequences_dir is None:
            sequences_dir = _canonical_sequences(Path(tmp) / "sequences", quick)
            source = "procedural dataset, canonical tracking set (rtmo data synth --motion " + (
                "--sequences 2 --frames 75 --seed 2)"
                if quick
                else "--sequences 4 --frames 150 --seed 2)"
            )
        else:
            source = f"procedural dataset sequences in {sequences_dir}"
        result["procedural"] = {
            "source": source,
            **tracker_benchmark(procedural_sequences(sequences_dir)),
        }
        result["scenarios"] = {
            "source": f"built-in scenarios, seeds {seeds[0]}-{seeds[-1]}, {frames} frames, 30 fps",
            **tracker_benchmark(benchmark_sequences(seeds, frames)),
        }
        if checkpoint is not None:
            from rtmo.predictor import RTMO

            model = RTMO.from_checkpoint(checkpoint, device=device)
            result["model"] = {
                "checkpoint": str(checkpoint),
                **model_benchmark(model, sequences_dir),
            }
    result["runtime_s"] = time.perf_counter() - start
    return result


def _canonical_sequences(folder: Path, quick: bool) -> Path:
    from rtmo.train.synthetic import SEQUENCE_SEED, synthesize_sequences

    count, frames = (2, 75) if quick else (4, 150)
    synthesize_sequences(folder, count, frames, SEQUENCE_SEED)
    return folder


def model_benchmark(model: Any, folder: Path, batch_size: int = 8) -> dict[str, Any]:
    """IDF1/MOTA/switches of `model.track` (an `RTMO`) on every NAME.mp4 of `folder` that has a
    NAME.json, per association; keypoint jitter with and without smoothing (IoU+OKS)."""
    pairs = [(v, v.with_suffix(".json")) for v in sorted(Path(folder).glob("*.mp4"))]
    pairs = [(v, j) for v, j in pairs if j.exists()]
    if not pairs:
        raise ValueError(f"{folder}: no NAME.mp4 with a NAME.json beside it")
    truths = [motion.load_coco_sequence(j) for _, j in pairs]
    names = [t.name for t in truths]
    result: dict[str, Any] = {"videos": [str(v) for v, _ in pairs], "associations": {}}
    runs = {
        "iou": {"oks_weight": ASSOCIATIONS["iou"]},
        "iou+oks": {"oks_weight": ASSOCIATIONS["iou+oks"]},
        "iou+oks, one-euro": {"oks_weight": ASSOCIATIONS["iou+oks"], "smooth": "one-euro"},
    }
    for label, options in runs.items():
        start = time.perf_counter()
        tracked = [_track_video(model, video, truth, batch_size, options)
                   for (video, _), truth in zip(pairs, truths, strict=True)]  # fmt: skip
        elapsed = time.perf_counter() - start
        accs = [accumulate(t, p) for t, p in zip(truths, tracked, strict=True)]
        jitter = _mean_dicts(
            [
                jitter_and_error(t, p, matched_pairs(a))
                for t, p, a in zip(truths, tracked, accs, strict=True)
            ]
        )
        if label in ASSOCIATIONS:
            table = summarize(accs, names)
            result["associations"][label] = {
                "overall": table.pop("OVERALL"),
                "sequences": table,
                "frames_per_s": sum(len(t.frames) for t in truths) / elapsed,
            }
        result.setdefault("smoothing", {})["raw" if "smooth" not in options else "one-euro"] = (
            jitter
        )
    return result


def _track_video(
    model: Any, video: Path, truth: motion.Sequence, batch_size: int, options
) -> list[Poses]:
    """The tracked people of every frame of `video` (an unreadable frame: nobody)."""
    empty = Poses.empty(len(COCO_SIGMAS), truth.image_size)
    empty.track_ids = np.zeros(0, np.int64)
    tracked = [empty] * len(truth.frames)
    frames = model.track(video, persist=False, batch_size=batch_size, on_error="yield", **options)
    for frame, people in frames:
        if people is not None and frame.index < len(tracked):
            tracked[frame.index] = people
    return tracked


TABLE_HEAD = [
    "| association | IDF1 | MOTA | id switches | false positives | misses | frames/s |",
    "|---|---|---|---|---|---|---|",
]


def markdown_lines(tracking: dict[str, Any]) -> list[str]:
    """The tracking result as markdown tables."""
    lines = [f"Detections: {tracking['detections']}."]
    for key in ("procedural", "scenarios"):
        if key in tracking:
            part = tracking[key]
            lines += ["", f"{part['source']}:", "", *_association_table(part["associations"])]
            lines += _scenario_table(part["associations"])
            lines += ["", _smoothing_line(part["smoothing"])]
    if "model" in tracking:
        model = tracking["model"]
        lines += ["", f"Model {model['checkpoint']} through RTMO.track, procedural videos:", ""]
        lines += [
            *_association_table(model["associations"]),
            "",
            _smoothing_line(model["smoothing"]),
        ]
    return lines


def _association_table(associations: dict[str, Any]) -> list[str]:
    lines = list(TABLE_HEAD)
    for name, row in associations.items():
        o = row["overall"]
        cells = [f"{o['idf1']:.3f}", f"{o['mota']:.3f}", f"{o['num_switches']:.0f}"]
        cells += [f"{o['num_false_positives']:.0f}", f"{o['num_misses']:.0f}"]
        cells.append(f"{row['frames_per_s']:.1f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _scenario_table(associations: dict[str, Any]) -> list[str]:
    rows = [row.get("by_scenario") for row in associations.values()]
    if not all(rows):
        return []
    head = " | ".join(f"{a} IDF1 | {a} switches" for a in associations)
    lines = ["", f"| scenario | {head} |", "|---|" + "---|---|" * len(associations)]
    for scenario in rows[0]:
        cells = []
        for by_scenario in rows:
            cells += [f"{by_scenario[scenario]['idf1']:.3f}"]
            cells += [f"{by_scenario[scenario]['num_switches']:.0f}"]
        lines.append(f"| {scenario} | " + " | ".join(cells) + " |")
    return lines


def _smoothing_line(smoothing: dict[str, Any]) -> str:
    raw, smooth = smoothing["raw"], smoothing["one-euro"]
    return (
        f"Keypoint jitter (frame-to-frame acceleration) / error against the truth, % of person "
        f"height: raw {raw['jitter_pct']:.2f} / {raw['error_pct']:.2f}, One-Euro "
        f"{smooth['jitter_pct']:.2f} / {smooth['error_pct']:.2f} (the true motion's own "
        f"acceleration: {raw['truth_jitter_pct']:.2f})."
    )


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    seeds = None
    if args.seeds:
        first, last = (int(x) for x in args.seeds.split(","))
        seeds = range(first, last + 1)
    result = run(args.quick, seeds, args.frames, args.sequences, args.checkpoint, args.device)
    json.dump(result, sys.stdout, indent=1)
    print()
    print("\n".join(markdown_lines(result)), file=sys.stderr)


if __name__ == "__main__":
    main()
