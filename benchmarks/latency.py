"""Latency, throughput and peak memory per backend x precision x size x ratio, against the baseline.

The baseline is the official code's computation: PyTorch eager with the reference (basis) solver.
Each cell runs in its own process (peak RSS on CPU via ru_maxrss; allocator peak on GPU), warms up,
then times ``--repeats`` runs (CUDA events on GPU) and reports median and p90 latency and
megapixels per second. The FLOP floor is measured in the same run: the rate of an fp32 4096x4096
``torch.matmul`` on the same thread count; floor = 2 x full MACs (folded solver, benchmarks/flops.py)
/ that rate, and each cell reports its distance from it (time / floor).

Backends (whatever the machine has): ``torch-ref`` (baseline), ``torch-folded``, ``ort-fp32``,
``ort-fp16`` (FP16 mixed graph), ``ort-int8`` (CPU INT8 flavour), ``trt-*`` plans given with
``--plan``; on a GPU also ``torch-cuda``, ``torch-cuda-fp16``, ``torch-cuda-compile``.

    python benchmarks/latency.py                      # default table on this machine
    python benchmarks/latency.py --sizes 64,256 --ratios 4 --repeats 3 --quick
Results: benchmarks/results/latency.{json,md,png} (machine and versions recorded).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

CPU_BACKENDS = ("torch-ref", "torch-folded", "ort-fp32", "ort-fp16", "ort-int8")
GPU_BACKENDS = ("torch-cuda-ref", "torch-cuda", "torch-cuda-fp16", "torch-cuda-compile")


# --------------------------------------------------------------------------------------- one cell
def _inputs(size: int, ratio: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return (rng.random((1, 3, size, size), dtype=np.float32),
            rng.random((1, 31, size // ratio, size // ratio), dtype=np.float32))


def run_cell(backend: str, artifact: str | None, size: int, ratio: int, repeats: int, threads: int) -> dict:
    """Time one backend at one size in this process (called in a fresh subprocess)."""
    import torch

    torch.set_num_threads(threads)
    hr, lr = _inputs(size, ratio)
    from lso.runtime import load

    cuda = backend.startswith("torch-cuda") or backend.startswith("trt")
    target: Any = artifact
    options: dict[str, Any] = {"threads": threads}  # a hint: backends without intra-op threads ignore it
    if backend.startswith("torch"):
        from lso.checkpoint import load_checkpoint
        from lso.model import set_solver_form

        if artifact is None:
            raise ValueError(f"{backend} needs a checkpoint")
        target = set_solver_form(load_checkpoint(artifact), "reference" if backend.endswith("ref") else "folded")
        options.update(device="cuda" if cuda else "cpu", fp16=backend.endswith("fp16"),
                       compile=backend.endswith("compile"))
    with load(target, **options) as runner:  # the backend from the artifact: checkpoint, graph or plan
        if cuda:
            from lso.benchmarks._report import cuda_times

            hr_d, lr_d = torch.from_numpy(hr).cuda(), torch.from_numpy(lr).cuda()
            times, peak = cuda_times(lambda: runner.fuse(hr_d, lr_d), repeats)
        else:
            runner.fuse(hr, lr)  # warm-up
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                runner.fuse(hr, lr)
                times.append(time.perf_counter() - t0)
            peak = _peak_rss_mib()
    return {"backend": backend, "size": size, "ratio": ratio, "times": times, "median_s": float(np.median(times)),
            "p90_s": float(np.percentile(times, 90)), "mp_per_s": size * size / 1e6 / float(np.median(times)),
            "peak_mib": peak, "peak_kind": "cuda_allocator" if cuda else "rss"}


def _peak_rss_mib() -> float:
    """This process's peak RSS (VmHWM; ru_maxrss would include the parent's peak, as Linux keeps it across exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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
def _artifacts(checkpoint: str, work: Path, backends: list[str], log, chunk: int = 0,
               align: int = 0) -> dict[str, str | None]:
    arts: dict[str, str | None] = {b: checkpoint for b in backends if b.startswith("torch")}
    if any(b.startswith("ort") for b in backends):
        from lso.export import ParityCase, export_onnx
        from lso.export.passes import save_chunked as _chunked

        # channels are aligned before the FP16/INT8 conversions (they quantize the padded convolutions
        # as they are); solver chunks come last, on each graph (the conversions refuse chunked graphs)
        log(f"exporting ONNX (fp32{f', channels aligned to {align}' if align else ''})")
        fp32 = export_onnx(checkpoint, work / "model.onnx", cases=[ParityCase(4, 64, 64)], align_channels=align or None)
        arts["ort-fp32"] = _chunked(fp32, chunk)
        if "ort-fp16" in backends or "ort-int8" in backends:
            from lso.calibration import calibration_feeds, convert_fp16, quantize_int8

            log("calibration feeds (synthetic training scenes, 128x128)")
            feeds = list(calibration_feeds(count=8, size=128))
            if "ort-fp16" in backends:
                log("FP16 mixed graph")
                arts["ort-fp16"] = _chunked(convert_fp16(fp32, work / "model.fp16.onnx", feeds=feeds), chunk)
            if "ort-int8" in backends:
                log("INT8 graph, cpu flavour, output head kept in float (the point lso calibrate chose)")
                arts["ort-int8"] = _chunked(quantize_int8(fp32, work / "model.int8.cpu.onnx", feeds=feeds,
                                                          flavour="cpu", float_blocks=("outc",)), chunk)
    return arts


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
    sizes = [int(s) for s in args.sizes.split(",")]
    ratios = [int(r) for r in args.ratios.split(",")]
    work = Path(tempfile.mkdtemp(prefix="lso_latency_"))
    arts = _artifacts(checkpoint, work, backends, log, args.solver_chunk, args.align_channels)
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
    cells: list[dict[str, Any]] = []
    try:
        from tqdm import tqdm

        progress = tqdm(total=len(backends) * len(sizes) * len(ratios), desc="cells", file=sys.stderr)
    except ImportError:
        progress = None
    for ratio in ratios:
        for size in sizes:
            for b in backends:
                if progress:
                    progress.update(1)
                if arts.get(b) is None:
                    continue
                if b.endswith("ref") and size > args.baseline_max_size:
                    cells.append({"backend": b, "size": size, "ratio": ratio,
                                  "skipped": "baseline above --baseline-max-size"})
                    continue
                spec = {"backend": b, "artifact": arts[b], "size": size, "ratio": ratio, "repeats": args.repeats,
                        "threads": args.threads}
                try:
                    proc = subprocess.run([sys.executable, __file__, "--_cell", json.dumps(spec)], capture_output=True,
                                          text=True, timeout=args.timeout)
                    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
                    if line is None:
                        cells.append({**spec, "error": (proc.stderr or "no result").strip().splitlines()[-1][:300]})
                        continue
                    cell = json.loads(line[7:])
                except subprocess.TimeoutExpired:
                    cells.append({**spec, "error": f"timeout after {args.timeout} s"})
                    continue
                floor = 2 * macs[size] / rate
                cell["floor_s"] = floor
                cell["x_floor"] = cell["median_s"] / floor
                cells.append(cell)
                log(f"x{ratio} {size}: {b}: {cell['median_s']:.3f} s, {cell['peak_mib']:.0f} MiB, "
                    f"{cell['x_floor']:.2f}x floor")
    if progress:
        progress.close()
    for c in cells:
        base_name = "torch-cuda-ref" if c["backend"].startswith(("torch-cuda", "trt")) else "torch-ref"
        base = next((d for d in cells if d["backend"] == base_name and d["size"] == c["size"]
                     and d["ratio"] == c["ratio"] and "median_s" in d), None)
        if base and "median_s" in c:
            c["speedup_vs_baseline"] = base["median_s"] / c["median_s"]
    write(args, cells, rate, checkpoint)
    return 0


def write(args, cells: list[dict], rate: float, checkpoint: str) -> None:
    from lso.benchmarks._report import markdown_table, write_results

    rows = []
    for c in cells:
        if "median_s" in c:
            rows.append([c["backend"], f"x{c['ratio']}", c["size"], c["median_s"], c["p90_s"], c["mp_per_s"],
                         c["peak_mib"], f"{c['speedup_vs_baseline']:.2f}x" if "speedup_vs_baseline" in c else "-",
                         f"{c['x_floor']:.2f}x"])
        else:
            rows.append([c["backend"], f"x{c['ratio']}", c["size"], "-", "-", "-", "-", "-",
                         c.get("skipped") or c.get("error")])
    md = "# Latency" + ("" if args.name == "latency" else f" ({args.name})") + "\n\n"
    md += (f"Checkpoint `{Path(checkpoint).name}`; {args.threads} threads; median/p90 of {args.repeats} runs after a "
           f"warm-up, each cell in its own process. Baseline = PyTorch eager, reference solver (the official "
           f"computation). FLOP floor = 2 x full MACs / fp32 matmul rate ({rate / 1e9:.1f} GFLOP/s measured in this "
           f"run). "
           f"ONNX Runtime graphs: solver in Scan chunks of {args.solver_chunk or 'none (portable graph)'} patches, "
           f"convolution channels aligned to {args.align_channels or 'none (as exported)'}, OrtRunner's default "
           f"shared CPU arena.\n\n")
    md += markdown_table(["backend", "ratio", "size", "median s", "p90 s", "MP/s", "peak MiB", "vs baseline",
                          "time / floor"], rows)
    write_results(args.name, {"checkpoint": checkpoint, "matmul_flops": rate, "threads": args.threads,
                              "solver_chunk": args.solver_chunk, "align_channels": args.align_channels,
                              "repeats": args.repeats, "cells": cells}, md, Path(args.out))
    try:
        _plot(cells, Path(args.out) / f"{args.name}.png")
    except Exception as exc:  # plotting is a convenience
        print(f"plot skipped: {exc}", file=sys.stderr)
    print(md)


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
