"""Markdown tables, target verdicts and PNG plots from one combined result JSON.

python -m benchmarks.report benchmarks/results/<date>-<host>.json   # rewrites .md and plots
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

ROW_LABELS = {
    "kernels": "(a) rtmo kernels, eager",
    "reference": "(b) use_kernels=False",
    "compile": "(c) rtmo kernels + torch.compile",
    "onnxruntime": "(d) onnxruntime",
    "cuda-graph": "(e) rtmo kernels, CUDA graph",
    "ort-dense": "(f) onnxruntime dense + rtmo kernels",
    "openvino": "(g) OpenVINO dense + rtmo kernels",
    "openvino-bf16": "(h) OpenVINO bf16 dense + rtmo kernels",
    "bf16": "(i) rtmo kernels, bf16 dense network",
}
SHORT_LABELS = {
    "kernels": "(a) kernels",
    "reference": "(b) reference",
    "compile": "(c) compile",
    "onnxruntime": "(d) onnxrt",
    "cuda-graph": "(e) graph",
    "ort-dense": "(f) ort+k",
    "openvino": "(g) ov+k",
    "openvino-bf16": "(h) ov bf16+k",
    "bf16": "(i) bf16",
}


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if value < 1 else f"{value:.1f}"


def _ap(accuracy: dict | None) -> str:
    """A row's AP; "-" when it was not measured (the table's note says why), "n/a" when the set
    had no person to score."""
    if not accuracy:
        return "-"
    return "n/a" if accuracy.get("AP") is None else f"{accuracy['AP']:.3f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _verdict(ok: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: "n/a"}[ok]


# ---------------------------------------------------------------- targets (PERFORMANCE.md)


def _suite_median_ms(result: dict, test: str, **params: Any) -> float | None:
    for bench in result.get("kernel_suites", {}).get("benchmarks", []):
        if bench["name"].split("[")[0] != test:
            continue
        if all(bench.get("params", {}).get(k) == v for k, v in params.items()):
            return bench["median_ms"]
    return None


def _best_ours(rows: dict[str, dict]) -> tuple[str, float] | None:
    keys = [k for k in ("kernels", "compile", "cuda-graph") if k in rows]
    ours = [(k, rows[k]["total"]["median_ms"]) for k in keys]
    return min(ours, key=lambda kv: kv[1]) if ours else None


def evaluate_targets(result: dict) -> list[dict[str, Any]]:
    """Each PERFORMANCE.md target as a measured ratio with a verdict."""
    targets = []
    for row in result.get("roofline", {}).get("rows", []):
        if row["kernel"] == "dcc_decode":
            ok = row["speedup_vs_reference"] >= 5 and row.get("x_floor", float("inf")) <= 2
            targets.append(
                {
                    "target": f"1. dcc_decode {row['people']} people, roofline run: >=5x "
                    "reference, <=2x floor",
                    "measured": f"{row['speedup_vs_reference']:.1f}x faster than the reference; "
                    f"{_ratio(row.get('x_floor'))} the sgemm floor",
                    "pass": ok if "x_floor" in row else None,
                }
            )
        if row["kernel"] == "batched_nms":
            n = row["candidates"]
            loop = _suite_median_ms(result, "test_nms_cpu", impl="python_loop", n=n, batch=1)
            kern = _suite_median_ms(result, "test_nms_cpu", impl="cpu_batched_nms", n=n, batch=1)
            loop_ratio = loop / kern if loop and kern else None
            ok = row["speedup_vs_torchvision"] >= 1 and (
                None if loop_ratio is None else loop_ratio >= 50
            )
            targets.append(
                {
                    "target": f"2. NMS {n} candidates: >= torchvision, >=50x Python loop",
                    "measured": f"{row['speedup_vs_torchvision']:.2f}x torchvision; "
                    f"{_ratio(loop_ratio)} the Python loop (NMS suite)",
                    "pass": ok,
                }
            )
    targets += _mle_loss_targets(result)
    for bench in result.get("kernel_suites", {}).get("benchmarks", []):
        info = bench.get("extra_info", {})
        if info.get("case") != "cpu_kernel" or info.get("people") not in (20, 50):
            continue
        speedup = info.get("speedup_over_unfused_reference")
        floor = info.get("time_over_op_floor")
        targets.append(
            {
                "target": f"1. dcc_decode {info['people']} people, {info.get('threads')} "
                "thread(s), dcc_decode suite: >=5x reference, <=2x floor",
                "measured": f"{_ratio(speedup)} the reference; {_ratio(floor)} the sgemm floor",
                "pass": None if speedup is None or floor is None else speedup >= 5 and floor <= 2,
            }
        )
    for case in result.get("end_to_end", {}).get("cases", []):
        if not case["variant"].startswith("rtmo-s"):
            continue
        rows = {r["key"]: r for r in case["rows"]}
        best = _best_ours(rows)
        if best is None:
            continue
        name, ours = best
        vs_ref = rows["reference"]["total"]["median_ms"] / ours if "reference" in rows else None
        vs_ort = rows["onnxruntime"]["total"]["median_ms"] / ours if "onnxruntime" in rows else None
        ok = None if vs_ref is None or vs_ort is None else vs_ref >= 1.5 and vs_ort > 1
        targets.append(
            {
                "target": f"3. end to end {case['variant']} batch {case['batch']}: "
                "faster than onnxruntime, >=1.5x use_kernels=False",
                "measured": f"best ours = {ROW_LABELS[name]}: {_ratio(vs_ort)} onnxruntime, "
                f"{_ratio(vs_ref)} use_kernels=False",
                "pass": ok,
            }
        )
    targets += _bf16_targets(result)
    readiness = result.get("gpu_readiness")
    if readiness:
        targets.append(
            {
                "target": "4. fullgraph compile, no host sync, bounded post-process launches",
                "measured": readiness["summary"],
                "pass": readiness["passed"],
            }
        )
    return targets


def _bf16_targets(result: dict) -> list[dict[str, Any]]:
    """RTMO-s bf16 end to end: >= 1.6x onnxruntime (float32), AP within 0.5 points of the
    float32 kernels row (when the AP was measured)."""
    targets = []
    for case in result.get("end_to_end", {}).get("cases", []):
        rows = {r["key"]: r for r in case["rows"]}
        if not case["variant"].startswith("rtmo-s") or "bf16" not in rows:
            continue
        ort = rows.get("onnxruntime", {}).get("total", {}).get("median_ms")
        speedup = ort / rows["bf16"]["total"]["median_ms"] if ort else None
        aps = [(rows.get(k) or {}).get("accuracy") or {} for k in ("kernels", "bf16")]
        drop = None
        if all(ap.get("AP") is not None for ap in aps):
            drop = 100 * (aps[0]["AP"] - aps[1]["AP"])
        targets.append(
            {
                "target": f"6. bf16 end to end {case['variant']} batch {case['batch']}: >=1.6x "
                "onnxruntime (float32), AP within 0.5 points of (a)",
                "measured": f"{_ratio(speedup)} onnxruntime; AP "
                + ("not measured" if drop is None else f"{drop:.2f} points below (a)"),
                "pass": None if speedup is None or drop is None else speedup >= 1.6 and drop <= 0.5,
            }
        )
    return targets


def _mle_loss_rows(result: dict) -> list[dict[str, Any]]:
    """The dcc_mle_loss suite's benchmarks (their extra_info has `positives`)."""
    benches = result.get("kernel_suites", {}).get("benchmarks", [])
    return [b for b in benches if "positives" in b.get("extra_info", {})]


def _mle_loss_targets(result: dict) -> list[dict[str, Any]]:
    targets = []
    for bench in _mle_loss_rows(result):
        info = bench["extra_info"]
        if info["case"] != "cpu_kernel" or info["positives"] != 1000:
            continue
        speedup = info.get("speedup_over_unfused_reference")
        memory = info.get("memory_ratio_unfused_over_this")
        targets.append(
            {
                "target": "5. dcc_mle_loss forward + backward, 1000 positives, CPU: >=3x faster, "
                ">=10x less peak memory than the unfused reference",
                "measured": f"{_ratio(speedup)} faster, {_ratio(memory)} less memory",
                "pass": None
                if speedup is None or memory is None
                else speedup >= 3 and memory >= 10,
            }
        )
    return targets


# ---------------------------------------------------------------- markdown


def _machine_md(result: dict) -> list[str]:
    m = result["machine"]
    rates = m.get("rates", {})
    lines = [
        f"Machine: {m['host']} - {m['cpu']} ({m['cores']} cores, torch threads {m['threads']}), "
        f"GPU: {m['gpu'] or 'none'}.",
        f"Versions: python {m['python']}, torch {m['torch']}, triton {m['triton']}, onnxruntime "
        f"{m['onnxruntime']}, numpy {m['numpy']}; commit {m['commit']}.",
    ]
    if rates.get("sgemm_gflops"):
        lines.append(
            f"Measured in the same run: sgemm {rates['sgemm_gflops']:.1f} GFLOP/s, "
            f"memory copy {rates.get('memcpy_gbps', float('nan')):.1f} GB/s."
        )
    return lines


def end_to_end_md(result: dict) -> list[str]:
    cases = result.get("end_to_end", {}).get("cases", [])
    if not cases:
        return []
    lines = [
        "| model | batch | row | preprocess ms | network ms | post-process ms | total ms | "
        "images/s | vs (b) | vs (d) | AP |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    settings: dict[str, str] = {}
    for case in cases:
        rows = {r["key"]: r for r in case["rows"]}
        ref = rows.get("reference", {}).get("total", {}).get("median_ms")
        ort = rows.get("onnxruntime", {}).get("total", {}).get("median_ms")
        for key, row in rows.items():
            settings[key] = row["settings"]
            total = row["total"]["median_ms"]
            stages = [
                row["stages"][s]["median_ms"] for s in ("preprocess", "network", "postprocess")
            ]
            lines.append(
                f"| {case['variant']} {case['input_size'][0]}x{case['input_size'][1]} | "
                f"{case['batch']} | {ROW_LABELS[key]} | "
                + " | ".join(_ms(s) for s in stages)
                + f" | {_ms(total)} | {row['images_per_s']:.2f} | "
                f"{_ratio(ref / total if ref else None)} | "
                f"{_ratio(ort / total if ort else None)} | {_ap(row.get('accuracy'))} |"
            )
    first = cases[0]
    lines += [
        "",
        f"Each image: a {first['frame_size'][0]}x{first['frame_size'][1]} synthetic crowd frame "
        f"with {first['people']} people and {first['candidates']} candidates planted in the head "
        f"outputs (benchmarks/synthetic.py), max_det {first['max_det']}, float32 (bf16 rows: "
        "the dense network in bfloat16), "
        f"{first['threads']} threads, medians of {first['rounds']} interleaved rounds. "
        "'vs (b)' and 'vs (d)' are the row's speed-up over use_kernels=False and onnxruntime "
        "(>1 means faster).",
        "",
        # One note per distinct set (older results have none: their AP was not measured).
        *dict.fromkeys(case.get("accuracy_note", "AP: not measured.") for case in cases),
        "",
        *[f"- {ROW_LABELS[k]}: {v}" for k, v in settings.items()],
    ]
    skipped = {k: v for case in cases for k, v in case.get("skipped", {}).items()}
    lines += [f"- {ROW_LABELS[k]}: not run ({v})" for k, v in skipped.items()]
    return lines


def scaling_md(result: dict) -> list[str]:
    scaling = result.get("postprocess_scaling")
    if not scaling:
        return []
    lines = [
        "| people | candidates | post-process kernels ms | reference ms | NMS kernels ms | "
        "NMS reference ms | DCC kernels ms | DCC reference ms | DCC on kept people, kernels ms | "
        "detections |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for sweep in ("by_people", "by_candidates"):
        for p in scaling[sweep]["points"]:
            lines.append(
                f"| {p['people']} | {p['candidates']} | {_ms(p['postprocess_kernels_ms'])} | "
                f"{_ms(p['postprocess_reference_ms'])} | {_ms(p['nms_kernels_ms'])} | "
                f"{_ms(p['nms_reference_ms'])} | {_ms(p['dcc_kernels_ms'])} | "
                f"{_ms(p['dcc_reference_ms'])} | {_ms(p['dcc_people_kernels_ms'])} | "
                f"{p['detections_kernels']} |"
            )
    lines += [
        "",
        f"{scaling['variant']}, batch 1, max_det {scaling['max_det']} slots, score_thr "
        f"{scaling['score_thr']}, nms_thr {scaling['nms_thr']}, {scaling['device']}. The "
        "static-shape post-process decodes all max_det slots whatever the number of people (what "
        "keeps it free of host syncs and graph-capturable); the last DCC column decodes only the "
        "kept people.",
    ]
    return lines


def roofline_md(result: dict) -> list[str]:
    roof = result.get("roofline")
    if not roof:
        return []
    lines = [
        "| kernel | shape | ms | achieved | of machine peak | compared with |",
        "|---|---|---|---|---|---|",
    ]
    for row in roof["rows"]:
        if "gflops" in row:
            achieved = f"{row['gflops']:.1f} GFLOP/s"
            peak = f"{row['fraction_of_sgemm']:.0%} of sgemm" if "fraction_of_sgemm" in row else "-"
            other = (
                f"reference {_ms(row['reference_ms'])} ms ({row['speedup_vs_reference']:.1f}x); "
                f"floor {_ms(row.get('floor_ms'))} ms"
            )
        else:
            achieved = f"{row['gbps']:.2f} GB/s"
            peak = (
                f"{row['fraction_of_memcpy']:.1%} of memcpy" if "fraction_of_memcpy" in row else "-"
            )
            other = "-"
            if "torchvision_ms" in row:
                speedup = row["speedup_vs_torchvision"]
                other = f"torchvision {_ms(row['torchvision_ms'])} ms ({speedup:.2f}x)"
        lines.append(
            f"| {row['kernel']} | {row['shape']} | {_ms(row['kernel_ms'])} | {achieved} | "
            f"{peak} | {other} |"
        )
    return lines


def suites_md(result: dict) -> list[str]:
    suites = result.get("kernel_suites", {})
    benches = suites.get("benchmarks", [])
    lines = [f"Suites: {', '.join(suites.get('files', [])) or 'none'}."]
    if suites.get("exit_code"):
        lines.append(f"pytest exit code {suites['exit_code']} (see the suites' own output).")
    if not benches:
        return lines
    lines += ["", "| benchmark | median ms | rounds |", "|---|---|---|"]
    lines += [f"| {b['name']} | {_ms(b['median_ms'])} | {b['rounds']} |" for b in benches]
    return lines


def mle_loss_md(result: dict) -> list[str]:
    rows = _mle_loss_rows(result)
    if not rows:
        return []
    lines = [
        "Forward + backward of the loss to the features, both Linears, the boxes and the sigmas;",
        "peak memory of the tensors of one call; error: the largest relative L2 error of the",
        "gradients against mmpose's path in float64 (64 positives).",
        "",
        "| positives | case | median ms | peak MB | vs unfused: speed | vs unfused: memory "
        "| gradient error |",
        "|---|---|---|---|---|---|---|",
    ]
    for bench in sorted(rows, key=lambda b: b["extra_info"]["positives"]):
        info = bench["extra_info"]
        accuracy = info.get("accuracy_vs_float64", {})
        errors = [v for k, v in accuracy.items() if k.startswith("grad")]
        error = f"{max(errors):.1e}" if errors else "-"
        speedup = _ratio(info.get("speedup_over_unfused_reference"))
        memory = _ratio(info.get("memory_ratio_unfused_over_this"))
        lines.append(
            f"| {info['positives']} | {info['case']} | {_ms(bench['median_ms'])} "
            f"| {info['peak_memory_mb']:.1f} | {speedup} | {memory} | {error} |"
        )
    return lines


def tracking_md(result: dict) -> list[str]:
    if "tracking" not in result:
        return []
    from benchmarks.tracking import markdown_lines

    return markdown_lines(result["tracking"])


def distributed_md(result: dict) -> list[str]:
    if "distributed" not in result:
        return []
    from benchmarks.distributed import markdown_lines

    return markdown_lines(result["distributed"])


def markdown(result: dict) -> str:
    """The whole report as markdown."""
    targets = evaluate_targets(result)
    out = [f"# rtmo benchmarks {result['created']}{' (--quick)' if result.get('quick') else ''}"]
    out += ["", *_machine_md(result), "", "## Targets (PERFORMANCE.md)", ""]
    out += ["| target | measured | verdict |", "|---|---|---|"]
    out += [f"| {t['target']} | {t['measured']} | {_verdict(t['pass'])} |" for t in targets]
    sections = [
        ("End to end", end_to_end_md(result)),
        ("Post-process scaling", scaling_md(result)),
        ("Roofline", roofline_md(result)),
        ("DCC MLE loss (training)", mle_loss_md(result)),
        ("Kernel suites (pytest-benchmark)", suites_md(result)),
        ("Tracking", tracking_md(result)),
        ("Ray Data: 2 workers against one process", distributed_md(result)),
    ]
    for title, lines in sections:
        if lines:
            out += ["", f"## {title}", "", *lines]
    notes = result.get("notes", [])
    if notes:
        out += ["", "## Notes", "", *[f"- {n}" for n in notes]]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- plots


def _plot_end_to_end(result: dict, path: Path) -> Path | None:
    import matplotlib.pyplot as plt

    cases = result.get("end_to_end", {}).get("cases", [])
    if not cases:
        return None
    fig, axes = plt.subplots(1, len(cases), figsize=(4.2 * len(cases), 4.2), squeeze=False)
    colours = {"preprocess": "#9ecae1", "network": "#3182bd", "postprocess": "#e6550d"}
    for ax, case in zip(axes[0], cases, strict=True):
        labels = []
        for i, row in enumerate(case["rows"]):
            bottom = 0.0
            for stage, colour in colours.items():
                ms = row["stages"][stage]["median_ms"] / case["batch"]
                ax.bar(i, ms, bottom=bottom, color=colour, label=stage if i == 0 else None)
                bottom += ms
            labels.append(SHORT_LABELS[row["key"]])
        ax.set_xticks(range(len(labels)), labels, fontsize=7, rotation=20)
        ax.set_title(f"{case['variant']}, batch {case['batch']}")
        ax.set_ylabel("ms per image")
    axes[0][0].legend(loc="upper left", fontsize=8)
    fig.suptitle("End to end per image (median), " + result["machine"]["cpu"], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_scaling(result: dict, path: Path) -> Path | None:
    import matplotlib.pyplot as plt

    scaling = result.get("postprocess_scaling")
    if not scaling:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (sweep, x, fixed) in zip(
        axes,
        (("by_people", "people", "candidates"), ("by_candidates", "candidates", "people")),
        strict=True,
    ):
        points = scaling[sweep]["points"]
        xs = [p[x] for p in points]
        parts = (("postprocess", "-"), ("nms", "--"), ("dcc", ":"), ("dcc_people", "-."))
        for part, style in parts:
            for impl, colour in (("kernels", "#e6550d"), ("reference", "#636363")):
                ys = [p[f"{part}_{impl}_ms"] for p in points]
                ax.plot(xs, ys, style, marker="o", color=colour, label=f"{part} {impl}")
        ax.set_xlabel(x)
        ax.set_ylabel("ms")
        ax.set_yscale("log")
        ax.set_title(f"{scaling['variant']} post-process vs {x} ({fixed} {scaling[sweep][fixed]})")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_roofline(result: dict, path: Path) -> Path | None:
    import matplotlib.pyplot as plt

    roof = result.get("roofline")
    if not roof:
        return None
    rates = result["machine"].get("rates", {})
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    compute = [r for r in roof["rows"] if "gflops" in r]
    memory = [r for r in roof["rows"] if "gbps" in r]
    for ax, rows, key, peak, unit in (
        (axes[0], compute, "gflops", rates.get("sgemm_gflops"), "GFLOP/s"),
        (axes[1], memory, "gbps", rates.get("memcpy_gbps"), "GB/s"),
    ):
        labels = [f"{r['kernel']}\n{r['shape']}" for r in rows]
        ax.barh(range(len(rows)), [r[key] for r in rows], color="#3182bd")
        if key == "gflops":
            ax.barh(
                range(len(rows)),
                [r["reference_gflops_useful"] for r in rows],
                color="#bdbdbd",
                height=0.4,
                label="reference (same useful FLOP)",
            )
        if peak:
            ax.axvline(peak, color="#e6550d", label=f"machine {unit.split('/')[0]} rate {peak:.1f}")
        ax.set_yticks(range(len(rows)), labels, fontsize=7)
        ax.set_xlabel(unit)
        ax.legend(fontsize=7)
    fig.suptitle("Achieved rate vs the machine's measured sgemm / memory copy", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plots(result: dict, stem: Path) -> list[Path]:
    """PNG plots next to `stem` (stem-end_to_end.png, -postprocess_scaling.png, -roofline.png)."""
    import matplotlib

    matplotlib.use("Agg")
    made = [
        _plot_end_to_end(result, stem.with_name(stem.name + "-end_to_end.png")),
        _plot_scaling(result, stem.with_name(stem.name + "-postprocess_scaling.png")),
        _plot_roofline(result, stem.with_name(stem.name + "-roofline.png")),
    ]
    return [p for p in made if p is not None]


def write_report(result: dict, json_path: Path) -> tuple[Path, list[Path]]:
    """Writes <json stem>.md and the plots beside the JSON; returns their paths."""
    stem = json_path.with_suffix("")
    md = stem.with_suffix(".md")
    md.write_text(markdown(result))
    return md, plots(result, stem)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("result", type=Path, help="a combined result JSON from benchmarks.run")
    args = parser.parse_args(argv)
    result = json.loads(args.result.read_text())
    md, pngs = write_report(result, args.result)
    print(md.read_text())
    print("\n".join(f"plot: {p}" for p in pngs))


if __name__ == "__main__":
    main()
