"""Where OpenVINO spends its time on an LSO graph: the CPU plugin's own per-node counters, by execution type.

Issue 20 asks, where a speed target is missed, for a profile of where the time goes. This runs graphs with
OpenVINO's ``PERF_COUNT`` on (per-node ``real_time`` of the CPU plugin, ``InferRequest.profiling_info``) after a
warm-up, and sums the times by layer type and kernel (``exec_type``, e.g. ``brgconv_avx512_f32``), in the same
process and at the same thread count for every graph:

- ``ours``: :class:`lso.runtime.OpenVinoRunner`'s default, the graph compiled for the input shape;
- ``peer``: OpenVINO's own API on the same graph compiled once with its open dimensions (what
  ``benchmarks/latency.py``'s ``peer-ov-plain`` runs), both FP32 (``INFERENCE_PRECISION_HINT`` f32);
- ``int8`` (with ``--int8``): the CPU-flavour INT8 Q/DQ graph (``lso calibrate``), compiled for the shape.

The sum of the node times is compared with the wall time of the profiled runs.

    python benchmarks/ov_profile.py                        # bundled demo checkpoint, plain export, 512² and 1024² x4
    python benchmarks/ov_profile.py --sizes 256 --no-int8 --no-write
Results: benchmarks/results/ov_profile.{json,md}.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

TOP = 8


def profile(model_path: str, size: int, ratio: int, *, static: bool, threads: int, runs: int) -> dict[str, Any]:
    """``runs`` profiled runs (after one warm-up) of ``model_path`` at ``size``² x``ratio``, FP32 hint."""
    import openvino as ov
    import openvino.properties as props
    import openvino.properties.hint as hints

    core = ov.Core()
    model = core.read_model(model_path)
    hr_shape, lr_shape = [1, 3, size, size], [1, 31, size // ratio, size // ratio]
    if static:
        model.reshape({"hr_msi": hr_shape, "lr_hsi": lr_shape})
    compiled = core.compile_model(model, "CPU", {hints.performance_mode: hints.PerformanceMode.LATENCY,
                                                 hints.inference_precision: ov.Type.f32,
                                                 props.inference_num_threads: threads, "PERF_COUNT": True})
    request = compiled.create_infer_request()
    rng = np.random.default_rng(0)
    feeds = {"hr_msi": rng.random(hr_shape, dtype=np.float32), "lr_hsi": rng.random(lr_shape, dtype=np.float32)}
    request.infer(feeds)  # warm-up
    by_kind: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    nodes: dict[str, float] = defaultdict(float)
    walls = []
    for _ in range(runs):
        start = time.perf_counter()
        request.infer(feeds)
        walls.append(time.perf_counter() - start)
        for info in request.profiling_info:
            seconds = info.real_time.total_seconds()
            kind = f"{info.node_type} [{info.exec_type}]"
            by_kind[kind] += seconds / runs
            counts[kind] += 1
            nodes[f"{info.node_name} ({kind})"] += seconds / runs
    total = sum(by_kind.values())
    return {"size": size, "ratio": ratio, "static": static, "runs": runs, "wall_s": float(np.median(walls)),
            "node_sum_s": total,
            "by_kind": [{"kind": k, "seconds": v, "share": v / total if total else 0.0, "nodes": counts[k] // runs}
                        for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])],
            "top_nodes": [{"node": k, "seconds": v} for k, v in sorted(nodes.items(), key=lambda kv: -kv[1])[:TOP]]}


def _conv_seconds(result: dict[str, Any]) -> float:
    return sum(r["seconds"] for r in result["by_kind"] if r["kind"].startswith("Convolution"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="@demo", help="checkpoint to export (default: the bundled demo)")
    parser.add_argument("--onnx", default=None, help="profile this FP32 graph instead of exporting the checkpoint")
    parser.add_argument("--sizes", default="512,1024", help="HR sizes (square)")
    parser.add_argument("--ratio", type=int, default=4, help="scale ratio")
    parser.add_argument("--threads", type=int, default=2, help="OpenVINO inference threads")
    parser.add_argument("--runs", type=int, default=2, help="profiled runs per graph and size (after a warm-up)")
    parser.add_argument("--int8", action=argparse.BooleanOptionalAction, default=True,
                        help="also the CPU-flavour INT8 graph (calibrated on 8 synthetic scenes; output head in float)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    from lso.benchmarks._report import markdown_table, write_results

    sizes = [int(s) for s in args.sizes.split(",") if s]
    with tempfile.TemporaryDirectory() as tmp:
        graph = args.onnx
        if graph is None:
            from lso.export import ParityCase, export_onnx

            graph = str(export_onnx(args.checkpoint, Path(tmp) / "plain.onnx", cases=[ParityCase(4, 64, 64)]))
        graphs = {"ours": (graph, True), "peer": (graph, False)}
        if args.int8:
            from lso.calibration import calibration_feeds, quantize_int8

            feeds = list(calibration_feeds(count=8, size=128))  # as latency.py's ov-int8 cell
            graphs["int8"] = (str(quantize_int8(graph, Path(tmp) / "int8.onnx", feeds=feeds, flavour="cpu",
                                                float_blocks=("outc",))), True)
        results = []
        for size in sizes:
            for name, (path, static) in graphs.items():
                result = profile(path, size, args.ratio, static=static, threads=args.threads, runs=args.runs)
                results.append({"graph": name, **result})
                print(f"{name} {size}²: wall {result['wall_s']:.3f} s, nodes {result['node_sum_s']:.3f} s", flush=True)
    md = ["# Where OpenVINO spends its time (CPU plugin per-node counters, FP32 hint)", "",
          f"Plain export of `{args.onnx or args.checkpoint}`, x{args.ratio}, {args.threads} threads, median wall of "
          f"{args.runs} profiled runs after a warm-up, node times averaged over them. `ours` = the graph compiled for "
          "the input shape (`OpenVinoRunner`'s default); `peer` = compiled once with open dimensions (OpenVINO's own "
          "API, `latency.py`'s `peer-ov-plain`); `int8` = the CPU-flavour INT8 Q/DQ graph (output head in float), "
          "compiled for the shape.", ""]
    rows = []
    for r in results:
        conv = _conv_seconds(r)
        rows.append([r["graph"], r["size"], f"{r['wall_s']:.3f}", f"{r['node_sum_s']:.3f}", f"{conv:.3f}",
                     f"{r['node_sum_s'] - conv:.3f}", f"{100 * conv / r['node_sum_s']:.0f} %"])
    md += [markdown_table(["graph", "size", "wall s", "sum of nodes s", "convolutions s", "everything else s",
                           "convolution share"], rows), ""]
    for r in results:
        md += [f"## {r['graph']}, {r['size']}²", "",
               markdown_table(["layer [kernel]", "s", "share", "nodes"],
                              [[k["kind"], f"{k['seconds']:.3f}", f"{100 * k['share']:.1f} %", k["nodes"]]
                               for k in r["by_kind"][:TOP]]), ""]
    text = "\n".join(md)
    print(text)
    if not args.no_write:
        write_results("ov_profile", {"graph": args.onnx or args.checkpoint, "ratio": args.ratio,
                                     "threads": args.threads, "runs": args.runs, "results": results}, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
