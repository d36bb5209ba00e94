"""Where ONNX Runtime spends its time on an LSO graph: ORT's own profiler, aggregated by operator.

Runs a graph at one size with ONNX Runtime's built-in profiler (``SessionOptions.enable_profiling``)
after a warm-up, then sums the kernel times of the profiled runs by operator type and lists the most
expensive nodes. The kernel times are what ORT's executor measured; their sum is compared with the
wall time of the runs (the rest is session overhead: allocation, copies between nodes).

    python benchmarks/ort_profile.py                               # bundled demo checkpoint, 512² x4
    python benchmarks/ort_profile.py --onnx model.onnx --size 256 --name ort_profile_256
Results: benchmarks/results/<name>.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np


def profile_graph(onnx_path: str, size: int, ratio: int, *, threads: int, runs: int,
                  session_options: Any = None) -> dict[str, Any]:
    """Profile ``runs`` runs (after one warm-up) of the graph at ``size``² and ``ratio``."""
    from lso.runtime.ort_runner import ort_session

    with tempfile.TemporaryDirectory() as tmp:
        # OrtRunner's CPU defaults (shared arena, memory pattern off) unless the caller brings its own options
        default = session_options is None
        session = ort_session(onnx_path, threads=threads, profile_prefix=os.path.join(tmp, "ort"),
                              memory_arena="shared" if default else None, memory_pattern=False if default else None,
                              session_options=session_options)
        rng = np.random.default_rng(0)
        feeds = {"hr_msi": rng.random((1, 3, size, size), dtype=np.float32),
                 "lr_hsi": rng.random((1, 31, size // ratio, size // ratio), dtype=np.float32)}
        session.run(None, feeds)  # warm-up (its events are dropped below)
        walls = []
        for _ in range(runs):
            t0 = time.perf_counter()
            session.run(None, feeds)
            walls.append(time.perf_counter() - t0)
        events = json.loads(Path(session.end_profiling()).read_text())
    return summarize(events, runs, walls)


_CONTROL_FLOW = ("Scan", "Loop", "If")


def summarize(events: list[dict], runs: int, walls: list[float]) -> dict[str, Any]:
    """Sum node kernel times of the last ``runs`` model runs by op type and by node.

    The nodes inside control-flow bodies (the solver's ``Scan`` chunks) are reported by ORT as well as
    the ``Scan`` node that runs them; they are summed separately (``inside_by_op``) so that ``by_op``
    counts every second once.
    """
    run_starts = [e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    first_ts = sorted(run_starts)[-runs] if len(run_starts) >= runs else 0
    kernels = [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")
               and e["ts"] >= first_ts]
    spans = [(e["ts"], e["ts"] + e["dur"]) for e in kernels if e.get("args", {}).get("op_name") in _CONTROL_FLOW]
    by_op: dict[str, float] = defaultdict(float)
    inside_by_op: dict[str, float] = defaultdict(float)
    by_node: dict[str, float] = defaultdict(float)
    op_of: dict[str, str] = {}
    for e in kernels:
        op = e.get("args", {}).get("op_name", "?")
        inside = op not in _CONTROL_FLOW and any(start <= e["ts"] < end for start, end in spans)
        if inside:
            inside_by_op[op] += e["dur"] / 1e6 / runs
            continue
        node = e["name"][: -len("_kernel_time")]
        by_op[op] += e["dur"] / 1e6 / runs
        by_node[node] += e["dur"] / 1e6 / runs
        op_of[node] = op
    total = sum(by_op.values())
    ops = sorted(by_op.items(), key=lambda kv: -kv[1])
    nodes = sorted(by_node.items(), key=lambda kv: -kv[1])
    return {"wall_s": float(np.median(walls)), "kernel_s": total,
            "by_op": [{"op": k, "s": v, "share": v / total} for k, v in ops],
            "inside_by_op": [{"op": k, "s": v} for k, v in sorted(inside_by_op.items(), key=lambda kv: -kv[1])],
            "top_nodes": [{"node": k, "op": op_of[k], "s": v, "share": v / total} for k, v in nodes[:25]]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onnx", help="graph to profile (default: export the bundled demo checkpoint)")
    parser.add_argument("--size", type=int, default=512, help="HR size (square), default 512")
    parser.add_argument("--ratio", type=int, default=4, help="scale ratio, default 4")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="ORT intra-op threads")
    parser.add_argument("--runs", type=int, default=2, help="profiled runs after one warm-up")
    parser.add_argument("--name", default="ort_profile", help="results file stem")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"), help="results folder")
    args = parser.parse_args(argv)
    from lso.benchmarks._report import markdown_table, write_results

    with tempfile.TemporaryDirectory() as tmp:
        path = args.onnx
        if path is None:
            from lso.export import ParityCase, export_onnx
            from lso.export.passes import DEFAULT_CHANNEL_MULTIPLE, DEFAULT_SOLVER_CHUNK

            print("exporting the bundled demo checkpoint for ONNX Runtime on CPU (solver chunks, aligned "
                  "channels) ...", flush=True)
            path = str(export_onnx(None, Path(tmp) / "model.onnx", cases=[ParityCase(4, 64, 64)],
                                   solver_chunk=DEFAULT_SOLVER_CHUNK, align_channels=DEFAULT_CHANNEL_MULTIPLE))
        print(f"profiling {Path(path).name} at {args.size}² x{args.ratio}, {args.threads} threads ...", flush=True)
        res = profile_graph(path, args.size, args.ratio, threads=args.threads, runs=args.runs)
    res.update(size=args.size, ratio=args.ratio, threads=args.threads, runs=args.runs,
               graph=Path(args.onnx).name if args.onnx else "demo checkpoint, CPU export (solver chunks 128, channels "
                                                              "aligned to 16)")
    md = [f"# ONNX Runtime profile: {res['graph']}, {args.size}² x{args.ratio}, {args.threads} threads",
          "", f"Wall {res['wall_s']:.3f} s per run; node kernels sum to {res['kernel_s']:.3f} s "
          f"(median/mean of {args.runs} profiled runs after a warm-up).", "", "## By operator", "",
          markdown_table(["op", "s", "share"], [(o["op"], o["s"], f"{100 * o['share']:.1f} %") for o in res["by_op"]]),
          "", "Inside the solver's Scan bodies (already counted in Scan above):", "",
          markdown_table(["op", "s"], [(o["op"], o["s"]) for o in res.get("inside_by_op", [])]),
          "", "## Most expensive nodes", "",
          markdown_table(["node", "op", "s", "share"],
                         [(n["node"], n["op"], n["s"], f"{100 * n['share']:.1f} %") for n in res["top_nodes"]])]
    j, m = write_results(args.name, res, "\n".join(md), Path(args.out))
    print("\n".join(md[:11]))
    print(f"wrote {j} and {m}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
