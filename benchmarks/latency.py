"""Latency, throughput, peak memory and accuracy per backend x precision x size, against the baseline and the peers.

The baseline is the official code's computation: PyTorch eager with the reference (basis) solver. Next to this
package's paths the table runs the **peers** a user would pick instead, each at its documented latency settings
and the same thread count:

- ``peer-ov-plain``: OpenVINO on the plain export (``PERFORMANCE_HINT`` LATENCY, ``INFERENCE_PRECISION_HINT``
  f32), through OpenVINO's own API, compiled once with the graph's open dimensions as the ONNX declares them
  (this package's ``ov-*`` cells compile per input shape, :class:`lso.runtime.OpenVinoRunner`'s default);
- ``peer-torch-compile``: ``torch.compile`` (default mode) of the PyTorch model with the folded solver;
- ``peer-ort-plain``: ONNX Runtime with default session options (intra-op threads set) on the plain export.

This package's CPU paths run the graph ``lso export --target cpu`` tuned on this machine (``--graph`` to give one):
``ort-fp32`` and ``ov-fp32`` (FP32, checked), ``ov-bf16`` (BF16 with the FP32 islands, on CPUs with BF16),
``ort-fp16`` (FP16 mixed graph), ``ort-int8`` / ``ov-int8`` (CPU INT8 flavour, output head in float). ``ov-default``
is OpenVINO with its own default precision on the same graph: BF16 on BF16 CPUs, shown as the hazard it is.

Every cell runs in its own fresh process, in **interleaved rounds** (``--rounds``: each round runs every cell
once, in a rotated order, so drift of a shared machine hits every cell alike): one warm-up, then ``--repeats``
timed runs per round; the table gives the median and p90 over all rounds. Peak memory is each cell process's own
``VmHWM`` (``/proc/self/status``; a child's ``ru_maxrss`` would carry the parent's high-water mark across
fork+exec), the largest over the rounds. Accuracy: the max abs difference of each cell's output to PyTorch FP32
(``torch-folded``) on the same seeded inputs. The FLOP floor is measured in the same run: the rate of an fp32
4096x4096 ``torch.matmul`` on the same thread count; floor = 2 x full MACs (folded solver, benchmarks/flops.py) /
that rate, and each cell reports its distance from it (time / floor). The CPU model is in the header.

On a GPU also ``torch-cuda-ref``, ``torch-cuda``, ``torch-cuda-fp16``, ``torch-cuda-compile``, and TensorRT
plans given with ``--plan`` (CUDA events, allocator peak).

    python benchmarks/latency.py                      # default table on this machine
    python benchmarks/latency.py --sizes 64,256 --ratios 4 --rounds 1 --repeats 1 --tune-budget 30
Results: benchmarks/results/latency.{json,md,png} (machine and versions recorded).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

OURS = ("ort-fp32", "ov-fp32", "ov-bf16", "ort-fp16", "ort-int8", "ov-int8")
PEERS = ("peer-ov-plain", "peer-torch-compile", "peer-ort-plain")
HAZARDS = ("ov-default",)
CPU_BACKENDS = ("torch-ref", "torch-folded", *OURS, *HAZARDS, *PEERS)
REFERENCE = "torch-folded"  # PyTorch FP32: what every cell's output is compared with
OPENVINO_CELLS = {"ov-fp32": "fp32", "ov-bf16": "bf16", "ov-default": "default", "ov-int8": "fp32"}
GPU_BACKENDS = ("torch-cuda-ref", "torch-cuda", "torch-cuda-fp16", "torch-cuda-compile")


# --------------------------------------------------------------------------------------- one cell
def _inputs(size: int, ratio: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return (rng.random((1, 3, size, size), dtype=np.float32),
            rng.random((1, 31, size // ratio, size // ratio), dtype=np.float32))


def _peer_fuser(backend: str, artifact: str, threads: int) -> Callable[[Any, Any], Any]:
    """``fuse(hr, lr) -> output`` of a peer, set up as its own documentation says (not through lso.runtime)."""
    from lso.io_spec import HR_MSI, LR_HSI

    if backend == "peer-ov-plain":
        import openvino as ov

        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads}
        compiled = ov.Core().compile_model(artifact, "CPU", config)
        request = compiled.create_infer_request()

        def fuse(hr, lr):
            return request.infer({HR_MSI: hr, LR_HSI: lr})[compiled.output(0)]
        return fuse
    if backend == "peer-ort-plain":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(artifact, options, providers=["CPUExecutionProvider"])
        return lambda hr, lr: session.run(None, {HR_MSI: hr, LR_HSI: lr})[0]
    raise ValueError(f"unknown peer {backend!r}")


def run_cell(backend: str, artifact: str | None, size: int, ratio: int, repeats: int, threads: int,
             output: str | None = None) -> dict:
    """Time one backend at one size in this process (called in a fresh subprocess); ``output``: save the
    (first) output there as ``.npy`` for the accuracy column. Only the cells that run PyTorch (or CUDA) import
    torch: the ONNX Runtime and OpenVINO cells, ours and the peers', hold what a serving process of theirs holds."""
    from lso.deps import is_tensor

    cuda = backend.startswith("torch-cuda") or backend.startswith("trt")
    if cuda or backend.startswith(("torch", "peer-torch")):
        import torch

        torch.set_num_threads(threads)
    hr, lr = _inputs(size, ratio)
    from lso.runtime import load

    target: Any = artifact
    options: dict[str, Any] = {"threads": threads}  # a hint: backends without intra-op threads ignore it
    if artifact is None:
        raise ValueError(f"{backend} needs an artifact")
    with ExitStack() as stack:
        if backend.startswith("peer-") and backend != "peer-torch-compile":
            fuse = _peer_fuser(backend, artifact, threads)
        else:
            if backend.startswith(("torch", "peer-torch")):
                from lso.checkpoint import load_checkpoint
                from lso.model import set_solver_form

                form = "reference" if backend.endswith("ref") else "folded"
                target = set_solver_form(load_checkpoint(artifact), form)
                options.update(device="cuda" if cuda else "cpu", fp16=backend.endswith("fp16"),
                               compile=backend.endswith("compile"))
            elif backend in OPENVINO_CELLS:
                options.update(backend="openvino", precision=OPENVINO_CELLS[backend])
            elif backend.startswith("ort"):
                options.update(backend="onnxruntime")
            runner = stack.enter_context(load(target, **options))  # checkpoint, graph or plan
            fuse = runner.fuse
        if cuda:
            from lso.benchmarks._report import cuda_times

            hr_d, lr_d = torch.from_numpy(hr).cuda(), torch.from_numpy(lr).cuda()
            times, peak = cuda_times(lambda: fuse(hr_d, lr_d), repeats)
            first = fuse(hr_d, lr_d)
        else:
            first = fuse(hr, lr)  # warm-up (and torch.compile's compilation)
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                fuse(hr, lr)
                times.append(time.perf_counter() - t0)
            peak = _peak_rss_mib()
        if output:
            array = first.detach().float().cpu().numpy() if is_tensor(first) else np.asarray(first)
            np.save(output, array.astype(np.float32, copy=False))
    return {"backend": backend, "size": size, "ratio": ratio, "times": times, "median_s": float(np.median(times)),
            "p90_s": float(np.percentile(times, 90)), "mp_per_s": size * size / 1e6 / float(np.median(times)),
            "peak_mib": peak, "peak_kind": "cuda_allocator" if cuda else "rss"}


def _peak_rss_mib() -> float:
    """This process's peak RSS (VmHWM; ru_maxrss would include the parent's peak, as Linux keeps it across exec)."""
    from lso.memory import proc_status_kib

    kib = proc_status_kib("VmHWM")
    return kib / 1024 if kib else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def matmul_rate(threads: int, n: int = 4096, repeats: int = 3) -> float:
    """fp32 matmul rate (FLOP/s) of an n x n x n product on ``threads`` threads (best of ``repeats``)."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


# ------------------------------------------------------------------------------------ the driver
def _tuned_graph(checkpoint: str, work: Path, graph: str | None, budget: Any, log) -> tuple[str, dict[str, Any]]:
    """This package's CPU graph: ``graph`` as given, else ``lso export --target cpu`` tuned here now; with its
    recorded graph options (``solver_chunk``, ``align_channels``) and tuning choice (empty when it has none)."""
    from lso.artifacts import read_sidecar
    from lso.export.cpu_tuning import tuned_choice

    if graph is None:
        from lso.export import export_onnx

        log("lso export --target cpu (tuning the CPU graph on this machine)")
        graph = str(export_onnx(checkpoint, work / "model.cpu.onnx", target="cpu", tune_budget=budget))
    choice = tuned_choice(read_sidecar(graph, verify=False)) or {}
    return graph, choice


def _artifacts(checkpoint: str, work: Path, backends: list[str], log, graph: str | None = None,
               tune_budget: Any = None) -> tuple[dict[str, str | None], dict[str, Any]]:
    """The artifact of every backend (None: not available here) and the tuned choice of the CPU graph."""
    from lso.deps import available

    arts: dict[str, str | None] = {b: checkpoint for b in backends if b.startswith(("torch", "peer-torch"))}
    choice: dict[str, Any] = {}
    wants = set(backends)
    if wants & {"peer-ov-plain", "peer-ort-plain", *OURS, *HAZARDS}:
        from lso.export import ParityCase, export_onnx

        log("exporting the plain ONNX graph (the peers' input)")
        plain = str(export_onnx(checkpoint, work / "model.onnx", cases=[ParityCase(4, 64, 64)]))
        arts["peer-ort-plain"] = plain
        arts["peer-ov-plain"] = plain if available("openvino") else None
    if wants & {"ort-fp32", "ov-fp32", "ov-bf16", "ov-default"}:
        tuned, choice = _tuned_graph(checkpoint, work, graph, tune_budget, log)
        arts["ort-fp32"] = tuned
        for name in ("ov-fp32", "ov-bf16", "ov-default"):
            arts[name] = tuned if available("openvino") else None
        if "ov-bf16" in wants and available("openvino"):
            from lso.runtime.openvino_runner import cpu_bf16_support

            if not cpu_bf16_support():
                arts["ov-bf16"] = None
                log("ov-bf16 skipped: this CPU has no native BF16 (AVX512-BF16 or AMX)")
    if wants & {"ort-fp16", "ort-int8", "ov-int8"}:
        from lso.calibration import calibration_feeds, convert_fp16, quantize_int8
        from lso.export import ParityCase, export_onnx
        from lso.export.passes import save_chunked

        graph_opts = choice.get("graph") or {}
        align, chunk = graph_opts.get("align_channels") or None, graph_opts.get("solver_chunk") or 0
        # channels are aligned before the FP16/INT8 conversions (they quantize the padded convolutions as they
        # are); solver chunks come last, on each graph (the conversions refuse chunked graphs)
        log(f"FP16/INT8 base graph (the tuned graph options: align {align or 'none'}, solver chunk {chunk or 'none'})")
        base = export_onnx(checkpoint, work / "model.base.onnx", cases=[ParityCase(4, 64, 64)], align_channels=align)
        log("calibration feeds (synthetic training scenes, 128x128)")
        feeds = list(calibration_feeds(count=8, size=128))
        if "ort-fp16" in wants:
            log("FP16 mixed graph")
            arts["ort-fp16"] = save_chunked(convert_fp16(base, work / "model.fp16.onnx", feeds=feeds), chunk)
        if wants & {"ort-int8", "ov-int8"}:
            log("INT8 graph, cpu flavour, output head kept in float (the point lso calibrate chose)")
            int8 = save_chunked(quantize_int8(base, work / "model.int8.cpu.onnx", feeds=feeds, flavour="cpu",
                                              float_blocks=("outc",)), chunk)
            arts["ort-int8"] = int8
            arts["ov-int8"] = int8 if available("openvino") else None
    return arts, choice


def main(argv: Sequence[str] | None = None) -> int:
    """``python benchmarks/latency.py``: the options are defined with the CLI (:func:`lso.cli.command_parser`)."""
    from lso.cli import script_main

    return script_main("latency", "python benchmarks/latency.py", argv)


def run(args: argparse.Namespace) -> int:
    """The benchmark, from parsed options (a cell subprocess runs one cell and prints its result)."""
    if args._cell:
        spec = json.loads(args._cell)
        print("RESULT " + json.dumps(run_cell(**spec)), flush=True)
        return 0

    import torch

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    checkpoint = args.checkpoint
    if checkpoint is None:
        from lso.weights import demo_checkpoint

        checkpoint = str(demo_checkpoint())
    backends = args.backends.split(",") if args.backends else list(CPU_BACKENDS) + (
        list(GPU_BACKENDS) if torch.cuda.is_available() else [])
    if REFERENCE not in backends and any(not b.startswith(("torch-cuda", "trt")) for b in backends):
        backends.insert(0, REFERENCE)  # the accuracy column's reference
    sizes = [int(s) for s in args.sizes.split(",")]
    ratios = [int(r) for r in args.ratios.split(",")]
    work = Path(tempfile.mkdtemp(prefix="lso_latency_"))
    load_at_start = _load_average()
    arts, choice = _artifacts(checkpoint, work, backends, log, args.graph, args.tune_budget)
    for plan in args.plan:
        name = f"trt-{Path(plan).stem}"
        backends.append(name)
        arts[name] = plan

    from lso import LSOConfig
    from lso.benchmarks.flops import count_macs
    from lso.model import LSO

    rate = matmul_rate(args.threads)
    log(f"fp32 matmul 4096^3: {rate / 1e9:.1f} GFLOP/s on {args.threads} threads")
    macs = {s: count_macs(LSO(LSOConfig()).eval(), (s, s), 4)["full_folded"] for s in sizes}
    runs: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
    notes: dict[tuple[str, int, int], str] = {}
    todo = []
    for ratio in ratios:
        for size in sizes:
            for b in backends:
                if arts.get(b) is None:
                    notes[(b, size, ratio)] = "not available on this machine"
                elif b.endswith("ref") and size > args.baseline_max_size:
                    notes[(b, size, ratio)] = "baseline above --baseline-max-size"
                else:
                    todo.append((b, size, ratio))
    try:
        from tqdm import tqdm

        progress = tqdm(total=len(todo) * args.rounds, desc="cells", file=sys.stderr)
    except ImportError:
        progress = None
    for round_ in range(args.rounds):
        # a rotated order in every round, so that slow drift of a shared machine does not favour one backend
        order = todo[round_ % len(todo):] + todo[:round_ % len(todo)] if todo else []
        for b, size, ratio in order:
            if progress:
                progress.update(1)
            if notes.get((b, size, ratio)):  # failed in an earlier round
                continue
            output = str(work / f"out_{b}_{ratio}_{size}.npy") if round_ == 0 else None
            spec = {"backend": b, "artifact": arts[b], "size": size, "ratio": ratio, "repeats": args.repeats,
                    "threads": args.threads, "output": output}
            cell = _run_cell_process(spec, args.timeout)
            if "error" in cell:
                notes[(b, size, ratio)] = cell["error"]
                log(f"x{ratio} {size}: {b}: {cell['error']}")
                continue
            runs.setdefault((b, size, ratio), []).append(cell)
            log(f"round {round_ + 1}: x{ratio} {size}: {b}: {cell['median_s']:.3f} s, {cell['peak_mib']:.0f} MiB")
    if progress:
        progress.close()
    cells = _summarize(backends, sizes, ratios, runs, notes, macs, rate, work)
    load = (load_at_start, _load_average())
    write(args, cells, rate, checkpoint, choice, load=load)
    _write_tuning_record(work / "model.cpu.onnx", args, load)
    return 0


def _load_average() -> float | None:
    """The 1-minute load average (None where the OS has none): a shared machine's times say how busy it was."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _run_cell_process(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """One cell in a fresh process: its result, or ``{"error": ...}``."""
    try:
        proc = subprocess.run([sys.executable, __file__, "--_cell", json.dumps(spec)], capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout} s"}
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        lines = (proc.stderr or "no result").strip().splitlines() or ["no result"]
        return {"error": lines[-1][:300]}
    return json.loads(line[7:])


def _summarize(backends, sizes, ratios, runs, notes, macs, rate, work: Path) -> list[dict[str, Any]]:
    """One row per backend x size x ratio: times over all rounds, the largest peak, accuracy, ratios."""
    cells: list[dict[str, Any]] = []
    for ratio in ratios:
        for size in sizes:
            reference = work / f"out_{REFERENCE}_{ratio}_{size}.npy"
            ref = np.load(reference) if reference.exists() else None
            for b in backends:
                key = (b, size, ratio)
                if key not in runs:
                    cells.append({"backend": b, "size": size, "ratio": ratio, "skipped": notes.get(key, "not run")})
                    continue
                times = [t for c in runs[key] for t in c["times"]]
                median = float(np.median(times))
                cell: dict[str, Any] = {
                    "backend": b, "size": size, "ratio": ratio, "rounds": len(runs[key]), "times": times,
                    "median_s": median, "p90_s": float(np.percentile(times, 90)),
                    "mp_per_s": size * size / 1e6 / median,
                    "peak_mib": max(c["peak_mib"] for c in runs[key]),
                    "peak_mib_per_round": [c["peak_mib"] for c in runs[key]], "peak_kind": runs[key][0]["peak_kind"]}
                if size in macs:
                    cell["floor_s"] = 2 * macs[size] / rate
                    cell["x_floor"] = median / cell["floor_s"]
                out = work / f"out_{b}_{ratio}_{size}.npy"
                if ref is not None and out.exists():
                    cell["max_abs_diff"] = float(np.max(np.abs(np.load(out) - ref)))
                cells.append(cell)
            for out in work.glob(f"out_*_{ratio}_{size}.npy"):
                out.unlink()  # large at 1024²
    for c in cells:
        base_name = "torch-cuda-ref" if c["backend"].startswith(("torch-cuda", "trt")) else "torch-ref"
        base = next((d for d in cells if d["backend"] == base_name and d["size"] == c["size"]
                     and d["ratio"] == c["ratio"] and "median_s" in d), None)
        if base and "median_s" in c:
            c["speedup_vs_baseline"] = base["median_s"] / c["median_s"]
    return cells


def _kind(backend: str) -> str:
    if backend in PEERS:
        return "peer"
    if backend in HAZARDS:
        return "hazard"
    return "baseline" if backend.endswith("ref") else "ours" if backend != REFERENCE else "reference"


def write(args, cells: list[dict], rate: float, checkpoint: str, choice: dict[str, Any] | None = None,
          load: tuple[float | None, float | None] = (None, None)) -> None:
    from lso.benchmarks._report import machine_info, markdown_table, write_results

    rows = []
    for c in cells:
        if "median_s" in c:
            rows.append([c["backend"], _kind(c["backend"]), f"x{c['ratio']}", c["size"], c["median_s"], c["p90_s"],
                         c["mp_per_s"], c["peak_mib"],
                         f"{c['speedup_vs_baseline']:.2f}x" if "speedup_vs_baseline" in c else "-",
                         f"{c['x_floor']:.2f}x" if "x_floor" in c else "-",
                         f"{c['max_abs_diff']:.2e}" if "max_abs_diff" in c else "-"])
        else:
            rows.append([c["backend"], _kind(c["backend"]), f"x{c['ratio']}", c["size"], "-", "-", "-", "-", "-", "-",
                         c.get("skipped") or c.get("error")])
    choice = choice or {}
    tuned = (f"the graph `lso export --target cpu` chose on this machine: {choice.get('name')}"
             if choice else "the graph given with --graph (no tuning record)" if args.graph else "no tuned graph")
    md = "# Latency" + ("" if args.name == "latency" else f" ({args.name})") + "\n\n"
    md += (f"CPU: **{machine_info().get('cpu')}**. Checkpoint `{Path(checkpoint).name}`; {args.threads} threads; "
           f"{args.rounds} interleaved round(s), each cell in its own fresh process per round, one warm-up then "
           f"{args.repeats} timed run(s) per round; median/p90 over all runs; peak = the cell process's own VmHWM "
           f"(largest over rounds). Baseline = PyTorch eager, reference solver (the official computation). "
           f"FLOP floor = 2 x full MACs / fp32 matmul rate ({rate / 1e9:.1f} GFLOP/s measured in this run). "
           f"Max abs diff: to PyTorch FP32 (`{REFERENCE}`) on the same seeded inputs. Our CPU graph: {tuned}. "
           "Peers at their documented latency settings: `peer-ov-plain` OpenVINO on the plain export "
           "(PERFORMANCE_HINT LATENCY, INFERENCE_PRECISION_HINT f32, compiled once with open dimensions; our "
           "`ov-*` cells compile per input shape, the runner's default), `peer-torch-compile` torch.compile (default "
           "mode) of the folded model, `peer-ort-plain` ONNX Runtime default session options on the plain export. "
           "`ov-default` = OpenVINO's own default precision on our graph (BF16 on BF16 CPUs): a hazard, not a "
           f"path. Load average (1 min) at the start / end of the run: {load[0]} / {load[1]} on "
           f"{os.cpu_count()} cores (times on a busier machine are longer; ratios within one run hold better)."
           "\n\n")
    md += markdown_table(["backend", "kind", "ratio", "size", "median s", "p90 s", "MP/s", "peak MiB", "vs baseline",
                          "time / floor", "max abs diff"], rows)
    write_results(args.name, {"checkpoint": checkpoint, "matmul_flops": rate, "threads": args.threads,
                              "rounds": args.rounds, "repeats": args.repeats, "graph": args.graph,
                              "cpu_tuning_choice": choice, "peers": list(PEERS),
                              "load_average_1m": {"start": load[0], "end": load[1]}, "cells": cells},
                  md, Path(args.out))
    try:
        _plot(cells, Path(args.out) / f"{args.name}.png")
    except Exception as exc:  # plotting is a convenience
        print(f"plot skipped: {exc}", file=sys.stderr)
    print(md)


def _write_tuning_record(graph: Path, args: argparse.Namespace, load: tuple) -> None:
    """The whole tuning record of the CPU graph tuned at the start of this run (``cpu_tuning_<name>_run``): every
    candidate's timings and parity, the budget, the choice. Nothing when the graph was given (``--graph``)."""
    from lso.artifacts import read_sidecar
    from lso.benchmarks._report import write_results
    from lso.export.cpu_tuning import SIDECAR_KEY, format_tuning

    if args.graph is not None or not graph.is_file():
        return
    block = (read_sidecar(graph, verify=False) or {}).get(SIDECAR_KEY)
    if not isinstance(block, dict):
        return
    md = (f"# CPU tuning inside the {args.name} run (`lso export --target cpu`, budget {args.tune_budget or 'default'})"
          f"\n\nThe tuning record (the sidecar's `{SIDECAR_KEY}` block) of the graph `benchmarks/latency.py` tuned at "
          f"its start, before its cells ran. Load average (1 min) at the start of the run: {load[0]} on "
          f"{os.cpu_count()} cores.\n\n{format_tuning(block)}\n")
    write_results(f"cpu_tuning_{args.name}_run", {"cpu_tuning": block, "source": str(graph.name)}, md,
                  Path(args.out))


def _plot(cells: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ratios = sorted({c["ratio"] for c in cells})
    fig, axes = plt.subplots(1, len(ratios), figsize=(6 * len(ratios), 4.5), squeeze=False)
    for ax, ratio in zip(axes[0], ratios, strict=True):
        for b in sorted({c["backend"] for c in cells}):
            pts = sorted((c["size"], c["median_s"]) for c in cells
                         if c["backend"] == b and c["ratio"] == ratio and "median_s" in c)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=b)
        floor = sorted({(c["size"], c["floor_s"]) for c in cells if c["ratio"] == ratio and "floor_s" in c})
        if floor:
            ax.plot([p[0] for p in floor], [p[1] for p in floor], "k--", label="FLOP floor")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("HR size (px, square)")
        ax.set_ylabel("median latency (s)")
        ax.set_title(f"x{ratio}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    from lso.artifacts import atomic_path

    with atomic_path(path) as tmp:  # never a half-written PNG under the final name
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
