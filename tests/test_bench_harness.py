"""The benchmark harness on the CPU at small sizes: timers, the synthetic crowd, the report and a
whole `benchmarks.run --quick` pass. No timing is asserted; only that every figure is produced
and that the synthetic inputs are what the benchmarks claim they are."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from benchmarks import harness, postprocess_scaling, report, roofline, run
from benchmarks.synthetic import (
    SCORE_THR,
    build_model,
    crowd_boxes,
    crowd_dense_outputs,
    crowd_frame,
    plant_crowd,
)
from rtmo.config import from_name
from rtmo.model.head import decode_boxes
from rtmo.model.postprocess import postprocess_padded
from rtmo.precision import bf16_support

SMALL = 128  # square input of the small end-to-end runs: 64 + 16 priors


class _Counter:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log, self.calls = name, log, 0

    def __call__(self) -> None:
        self.calls += 1
        self.log.append(self.name)


def test_timing_statistics():
    timing = harness.Timing([4.0, 1.0, 3.0, 2.0, 5.0])
    assert timing.median_ms == 3.0
    assert timing.min_ms == 1.0
    assert timing.quantile_ms(0.0) == 1.0
    assert timing.quantile_ms(1.0) == 5.0
    assert timing.quantile_ms(0.1) == pytest.approx(1.4)
    summary = timing.to_dict()
    assert summary["rounds"] == 5
    assert summary["p90_ms"] == pytest.approx(4.6)


def test_time_callable_warms_up_then_times_min_rounds():
    counter = _Counter("a", [])
    timing = harness.time_callable(counter, "cpu", warmup=2, min_rounds=4)
    assert counter.calls == 6
    assert len(timing.samples_ms) == 4
    assert all(ms >= 0 for ms in timing.samples_ms)


def test_time_callable_respects_max_rounds_when_min_seconds_is_long():
    counter = _Counter("a", [])
    timing = harness.time_callable(counter, warmup=0, min_rounds=1, max_rounds=7, min_seconds=60)
    assert len(timing.samples_ms) == counter.calls == 7


def test_time_interleaved_rotates_the_order():
    log: list[str] = []
    fns = {name: _Counter(name, log) for name in "abc"}
    timings = harness.time_interleaved(fns, warmup=1, rounds=3)
    assert [len(t.samples_ms) for t in timings.values()] == [3, 3, 3]
    timed = log[3:]  # after one warm-up call each
    assert timed == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]


def test_bench_kernel_on_cpu_gives_samples():
    x = torch.randn(64, 64)
    timing = harness.bench_kernel(lambda: x @ x, "cpu", rep_ms=1.0, min_rounds=3)
    assert len(timing.samples_ms) >= 3


def test_stage_clock_laps_add_up():
    clock = harness.StageClock("cpu")
    clock.start()
    clock.lap("one")
    torch.randn(100, 100).sum()
    clock.lap("two")
    assert list(clock.laps) == ["one", "two"]
    assert clock.total_ms == pytest.approx(sum(clock.laps.values()))


def test_graph_callable_on_cpu_is_the_function_itself():
    def fn(x):
        return x * 2

    assert harness.graph_callable(fn, torch.ones(3)) is fn


def test_crowd_boxes_never_overlap():
    boxes = crowd_boxes(37, (640, 640))
    iou = torchvision.ops.box_iou(boxes, boxes)
    assert torch.equal(iou > 0, torch.eye(37, dtype=torch.bool))


@pytest.mark.parametrize(("people", "candidates"), [(1, 100), (7, 50), (20, 400), (100, 2000)])
def test_crowd_dense_outputs_hold_exactly_the_planted_people(people, candidates):
    config = from_name("rtmo-s")
    dense = crowd_dense_outputs(config, people, candidates, batch=2)
    scores = dense.cls_logits.sigmoid()
    assert (scores > SCORE_THR).sum(1).tolist() == [candidates, candidates]
    boxes = decode_boxes(dense.bbox_preds, dense.priors, dense.strides)[0]
    candidate = scores[0] > SCORE_THR
    keep = torchvision.ops.nms(boxes[candidate], scores[0, candidate], 0.65)
    assert len(keep) == people


def test_crowd_dense_outputs_clip_candidates_to_the_priors():
    dense = crowd_dense_outputs(from_name("rtmo-t"), 5, 5000)
    assert int((dense.cls_logits.sigmoid() > SCORE_THR).sum()) == 845  # every prior at 416x416


@torch.inference_mode()
def test_planted_model_predicts_the_planted_people_with_kernels_and_reference():
    kernels = plant_crowd(build_model("rtmo-t").reparameterize(), 4, 30, (SMALL, SMALL))
    reference = plant_crowd(
        build_model("rtmo-t", use_kernels=False).reparameterize(), 4, 30, (SMALL, SMALL)
    )
    images = torch.rand(2, 3, SMALL, SMALL) * 255
    a = kernels.predict_padded(images, max_det=10)
    b = reference.predict_padded(images, max_det=10)
    assert a.num_detections.tolist() == b.num_detections.tolist() == [4, 4]
    torch.testing.assert_close(a.boxes, b.boxes)
    # fp32 kernel vs mmpose's unfolded decode: keypoints agree to a hundredth of a pixel.
    torch.testing.assert_close(a.keypoints, b.keypoints, rtol=0, atol=1e-2)


def test_crowd_frame_is_a_bgr_uint8_frame():
    frame = crowd_frame(5, (320, 180))
    assert frame.shape == (180, 320, 3)
    assert frame.dtype == np.uint8
    assert frame.std() > 10  # textured, not a flat fill


def test_flop_counts_match_performance_md():
    # PERFORMANCE.md, per person: logits (17 x 448 x 128) 1.95 MFLOP, x_fc/y_fc over the 448
    # bin encodings 14.7 MFLOP (both rounded there).
    logits = roofline.dcc_logit_flop(1, 17, 128, (192, 256))
    assert logits == 2 * 17 * 448 * 128 == pytest.approx(1.95e6, rel=1e-3)
    linear = roofline.dcc_unfolded_flop(1, 17, 128, (192, 256)) - logits
    assert linear == 2 * 448 * 128 * 128 == pytest.approx(14.7e6, rel=2e-3)


def test_roofline_rows_at_small_cost():
    machine = {"sgemm_gflops": 30.0, "memcpy_gbps": 10.0}
    result = roofline.run("rtmo-t", "cpu", quick=True, machine=machine)
    kinds = [row["kernel"] for row in result["rows"]]
    assert kinds.count("dcc_decode") == 2
    assert kinds.count("batched_nms") == 2
    for row in result["rows"]:
        assert row["kernel_ms"] > 0
        assert ("fraction_of_sgemm" in row) or ("fraction_of_memcpy" in row)


@torch.inference_mode()
def test_postprocess_scaling_point_counts_people():
    dcc = build_model("rtmo-t").reparameterize().head.dcc
    point = postprocess_scaling.measure_point(dcc, "rtmo-t", 3, 40, 8, "cpu", rep_ms=1.0)
    assert point["detections_kernels"] == point["detections_reference"] == 3
    for part in ("postprocess", "nms", "dcc", "dcc_people"):
        assert point[f"{part}_kernels_ms"] > 0
        assert point[f"{part}_reference_ms"] > 0


def test_postprocess_is_the_function_the_scaling_times():
    # The sweep times the model's own post-process, not a copy.
    assert postprocess_scaling.postprocess_padded is postprocess_padded


def test_dense_rows_find_the_planted_crowd():
    """The raw-head rows (dense network in onnxruntime / OpenVINO, post-process on the kernels)
    run in the harness and find the planted people where the eager kernels row does."""
    from benchmarks import end_to_end

    rows = ("kernels", "onnxruntime", *end_to_end.DENSE_ROWS)
    case = end_to_end.CaseSettings(
        "rtmo-t",
        people=3,
        candidates=24,
        input_size=(SMALL, SMALL),
        rounds=1,
        rows=rows,
        max_det=10,
    )
    result = end_to_end.run_case(case)
    by_key = {row["key"]: row for row in result["rows"]}
    expected = set(rows) - set(result["skipped"])
    assert set(by_key) == expected
    assert {"ort-dense", "openvino"} <= expected  # both runtimes are requirements
    for key, row in by_key.items():
        assert row["detections"] == [3], key
        assert set(row["stages"]) == {"preprocess", "network", "postprocess"}
    for key in ("ort-dense", "openvino"):
        # fp32 networks: the same people as the eager row, to float32 noise (frame pixels).
        assert by_key[key]["max_keypoint_diff_px"] < 0.05, by_key[key]
    assert "rtmo.Postprocessor" in by_key["ort-dense"]["settings"]


@pytest.mark.skipif(bf16_support() is None, reason="this CPU has no native bfloat16")
def test_bf16_row_runs_the_network_in_bfloat16_and_finds_the_planted_crowd():
    from benchmarks import end_to_end

    case = end_to_end.CaseSettings(
        "rtmo-t",
        people=3,
        candidates=24,
        input_size=(SMALL, SMALL),
        rows=("kernels", "bf16"),
        max_det=10,
    )
    rows, skipped = end_to_end.build_rows(case, Path("unused"))
    assert [row.key for row in rows] == ["kernels", "bf16"]
    assert not skipped
    batch = torch.full((1, 3, SMALL, SMALL), 114.0)
    with torch.inference_mode():
        dense = rows[1].network(batch)
        people = rows[1].post(dense, batch)
    assert dense.pose_vecs.dtype == torch.bfloat16
    assert len(people[0]["scores"]) == 3
    assert people[0]["keypoints"].dtype == torch.float32


def test_bf16_row_is_left_out_where_the_cpu_would_emulate_it(monkeypatch):
    from benchmarks import end_to_end
    from rtmo import precision

    monkeypatch.setattr(precision, "cpu_features", lambda: frozenset({"avx2"}))
    case = end_to_end.CaseSettings("rtmo-t", input_size=(SMALL, SMALL), rows=("bf16",))
    rows, skipped = end_to_end.build_rows(case, Path("unused"))
    assert rows == []
    assert skipped == {"bf16": "this CPU has no native bfloat16 (AVX512-BF16/AMX)"}


def test_quick_run_writes_json_markdown_and_plots(tmp_path, capsys):
    run.main(
        [
            "--quick",
            "--skip-suites",
            "--skip-readiness",
            "--skip-scaling",
            "--skip-tracking",  # tests/test_tracking_bench.py tests that step
            "--skip-distributed",  # starts Ray and its workers (a minute): left to `make bench`
            "--kernel-variant=rtmo-t",
            "--variants=rtmo-t",
            f"--input-size={SMALL}",
            "--rows=kernels,reference,onnxruntime",
            "--people=3",
            "--candidates=24",
            "--rounds=1",
            "--max-det=10",
            f"--out={tmp_path}",
        ]
    )
    (path,) = tmp_path.glob("*.json")
    result = json.loads(path.read_text())
    assert {"machine", "roofline", "end_to_end", "targets"} <= result.keys()
    (case,) = result["end_to_end"]["cases"]
    keys = [row["key"] for row in case["rows"]]
    if importlib.util.find_spec("rtmo.export") is None:  # the ONNX exporter is optional
        assert keys == ["kernels", "reference"]
        assert "rtmo.export" in case["skipped"]["onnxruntime"]
    else:
        assert keys == ["kernels", "reference", "onnxruntime"]
    for row in case["rows"]:
        assert row["detections"] == [3]
        assert row["max_keypoint_diff_px"] is not None
        assert set(row["stages"]) == {"preprocess", "network", "postprocess"}
        assert row["accuracy"] is None  # no annotated set: no AP, and the report says so
    assert case["accuracy_note"].startswith("AP: not measured (no annotated set")
    markdown = path.with_suffix(".md").read_text()
    assert "AP: not measured (no annotated set" in markdown
    assert "(d) onnxruntime" in markdown  # measured, or named with why it was left out
    assert "## Roofline" in markdown
    assert len(list(tmp_path.glob("*.png"))) == 2  # end to end and roofline (no scaling run)
    assert "| model | batch | row |" in capsys.readouterr().out


def test_quick_run_measures_each_rows_ap_on_an_annotated_set(tmp_path):
    """--val-data/--val-images/--val-checkpoint: every end-to-end row also gets its AP, with the
    checkpoint's weights run the row's way (random weights here: the path is tested, not the
    number)."""
    from checkpoints import write_published_checkpoint
    from test_eval import annotated_folder

    from rtmo.model import RTMOModel

    data, images = annotated_folder(tmp_path, count=3)
    weights = write_published_checkpoint(build_model("rtmo-t"), tmp_path / "rtmo-t.pth")
    common = [
        "--quick", "--skip-suites", "--skip-readiness", "--skip-scaling", "--skip-roofline",
        "--skip-tracking", "--skip-distributed", "--variants=rtmo-t", f"--input-size={SMALL}",
        "--people=3", "--candidates=24", "--rounds=1", "--max-det=10", "--batches=2",
    ]  # fmt: skip
    run.main(
        [
            *common,
            f"--rows=kernels,onnxruntime,ort-dense,openvino{',bf16' if bf16_support() else ''}",
            f"--val-data={data}",
            f"--val-images={images}",
            f"--val-checkpoint={weights}",
            f"--out={tmp_path / 'with'}",
        ]
    )
    (path,) = (tmp_path / "with").glob("*.json")
    (case,) = json.loads(path.read_text())["end_to_end"]["cases"]
    assert case["validation"]["checkpoint"] == str(weights)
    for row in case["rows"]:
        ap = row["accuracy"]
        assert ap["images"] == 3
        assert ap["people"] == 3
        assert 0 < ap["results"] <= 3 * 10  # max_det 10 per image
        assert ap["AP"] is not None
        assert 0.0 <= ap["AP"] <= 1.0
    assert "rtmo-t.pth on ann.json (3 images, 3 people)" in case["accuracy_note"]
    markdown = path.with_suffix(".md").read_text()
    ap_cells = [
        line.rsplit("|", 2)[1].strip() for line in markdown.splitlines() if "| 2 | (" in line
    ]
    assert len(ap_cells) == len(case["rows"])
    assert all(cell != "-" for cell in ap_cells)

    # A checkpoint of another architecture: the rows say why there is no AP.
    other = write_published_checkpoint(
        RTMOModel(from_name("rtmo-s-crowdpose")).eval(), tmp_path / "crowd.pth"
    )
    run.main(
        [
            *common,
            "--rows=kernels",
            f"--val-data={data}",
            f"--val-images={images}",
            f"--val-checkpoint={other}",
            f"--out={tmp_path / 'other'}",
        ]
    )
    (path,) = (tmp_path / "other").glob("*.json")
    (case,) = json.loads(path.read_text())["end_to_end"]["cases"]
    assert case["rows"][0]["accuracy"] is None
    assert "crowd.pth holds rtmo-s-crowdpose, not a rtmo-t model" in case["accuracy_note"]


def test_validation_options_go_together(capsys):
    with pytest.raises(SystemExit):
        run.main(["--quick", "--val-data=ann.json"])
    assert "go together" in capsys.readouterr().err


def test_report_targets_from_a_result():
    def row(key, ms):
        timing = {"median_ms": ms}
        return {"key": key, "total": timing}

    case = {
        "variant": "rtmo-s-body7",
        "batch": 1,
        "rows": [row("kernels", 100.0), row("reference", 200.0), row("onnxruntime", 120.0)],
    }
    (target,) = report.evaluate_targets({"end_to_end": {"cases": [case]}})
    assert target["pass"] is True
    assert "1.20x onnxruntime" in target["measured"]
    case["rows"][2] = row("onnxruntime", 90.0)
    (target,) = report.evaluate_targets({"end_to_end": {"cases": [case]}})
    assert target["pass"] is False


def test_report_bf16_target_needs_the_speed_and_the_ap():
    def row(key, ms, ap=None):
        return {"key": key, "total": {"median_ms": ms}, "accuracy": ap and {"AP": ap}}

    def bf16_target(bf16_row):
        case = {
            "variant": "rtmo-s-body7",
            "batch": 1,
            "rows": [row("kernels", 100.0, 0.600), row("onnxruntime", 100.0), bf16_row],
        }
        targets = report.evaluate_targets({"end_to_end": {"cases": [case]}})
        (target,) = [t for t in targets if t["target"].startswith("6. bf16")]
        return target

    target = bf16_target(row("bf16", 60.0))
    assert target["pass"] is None
    assert target["measured"] == "1.67x onnxruntime; AP not measured"
    target = bf16_target(row("bf16", 60.0, 0.597))
    assert target["pass"] is True
    assert target["measured"] == "1.67x onnxruntime; AP 0.30 points below (a)"
    assert bf16_target(row("bf16", 60.0, 0.590))["pass"] is False
    assert bf16_target(row("bf16", 65.0, 0.600))["pass"] is False
