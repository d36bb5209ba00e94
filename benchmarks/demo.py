"""The demo (``lso demo``): bundled checkpoint -> held-out synthetic scene -> export -> ONNX Runtime.

Steps, each announced as it runs:
1. load the bundled demo checkpoint (or ``--checkpoint``) and make a held-out synthetic scene;
2. degrade it with the paper's protocol (x4 by default);
3. export the model to ONNX (dynamic shapes, folded solver; parity checked at 64x64 on the spot);
4. fuse with PyTorch eager + reference solver (the baseline: the official code's computation),
   PyTorch eager + folded solver, and ONNX Runtime on CPU, timing each (median of ``repeats``);
5. print a parity table (PSNR/SAM/ERGAS/SSIM vs ground truth, Delta-PSNR and max |diff| vs the
   PyTorch FP32 baseline; bicubic and GSA for context) and a latency table with ratios;
6. write a PNG (RGB input, bicubic, fused, error map, spectra at three pixels) and a JSON report.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["run_demo", "format_tables"]


def _median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float], Any]:
    out = fn()  # warm-up (also the result)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), times, out


#: what the demo writes in its output folder
DEMO_OUTPUTS = ("model.cpu.onnx", "model.cpu.onnx.json", "demo.png", "demo.json")


def check_demo_clash(checkpoint: str | None, out: Path) -> None:
    """InputError when the checkpoint (or its sidecar) is a file the demo writes in ``out`` (:mod:`lso.artifacts`)."""
    from lso.artifacts import check_no_clash, with_sidecars
    from lso.weights import is_demo_name

    if checkpoint is None or is_demo_name(checkpoint):
        return
    check_no_clash(with_sidecars([checkpoint], "checkpoint"), [("output", Path(out) / name) for name in DEMO_OUTPUTS])


def run_demo(checkpoint: str | None = None, *, config: dict[str, Any] | None = None, size: int = 256,
             ratio: int = 4, seed: int | None = None, out: str = "demo_out", repeats: int = 3,
             threads: int | None = None, echo: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Run the demo; returns the report (also written to ``<out>/demo.json``).

    ``checkpoint``: a checkpoint path or ``@demo`` (None: the bundled demo checkpoint); ``config``: configuration
    fields for it (see :func:`lso.checkpoint.load_checkpoint`: they must agree with what it records).

    Raises:
        InputError: the checkpoint is a file the demo writes (:func:`check_demo_clash`, before anything runs).
    """
    import torch

    from lso.artifacts import atomic_write_text
    from lso.baselines import bicubic_upsample, gsa_fusion
    from lso.benchmarks.evaluation import scene_figure
    from lso.checkpoint import load_checkpoint
    from lso.data import degrade
    from lso.data.synthetic import EVAL_SEEDS, synthetic_scene
    from lso.export import ParityCase, export_onnx
    from lso.metrics import evaluate, psnr
    from lso.model import set_solver_form
    from lso.runtime import OrtRunner

    if threads:
        torch.set_num_threads(threads)
    threads = torch.get_num_threads()
    out_dir = Path(out)
    check_demo_clash(checkpoint, out_dir)  # before anything runs
    out_dir.mkdir(parents=True, exist_ok=True)
    seed = EVAL_SEEDS[0] if seed is None else seed
    t_all = time.perf_counter()

    from lso.weights import DEMO_NAME, resolve_checkpoint

    checkpoint = str(resolve_checkpoint(DEMO_NAME if checkpoint is None else checkpoint))
    echo(f"[1/6] loading {checkpoint} and making held-out synthetic scene {seed} ({size}x{size}, 31 bands)")
    model = load_checkpoint(checkpoint, config)
    gt = synthetic_scene(seed, size)
    echo(f"[2/6] degrading with the paper's protocol at x{ratio}")
    msi, lr = degrade(gt, ratio)
    msi_t, lr_t = torch.from_numpy(msi)[None], torch.from_numpy(lr)[None]

    echo("[3/6] exporting the CPU variant of the graph for ONNX Runtime (dynamic shapes, folded solver in Scan "
         "chunks, convolution channels aligned; not for TensorRT: lso export --target tensorrt makes that one) and "
         "checking parity at 64x64")
    t0 = time.perf_counter()
    from lso.export.passes import DEFAULT_CHANNEL_MULTIPLE, DEFAULT_SOLVER_CHUNK

    onnx_path = export_onnx(model, out_dir / "model.cpu.onnx", cases=[ParityCase(4, 64, 64)],
                            solver_chunk=DEFAULT_SOLVER_CHUNK, align_channels=DEFAULT_CHANNEL_MULTIPLE)
    t_export = time.perf_counter() - t0

    echo(f"[4/6] fusing and timing (median of {repeats}, {threads} threads): PyTorch reference solver (baseline)")
    results: dict[str, dict[str, Any]] = {}
    with torch.no_grad():
        set_solver_form(model, "reference")
        med, times, y = _median_time(lambda: model(msi_t, lr_t), repeats)
        results["pytorch_fp32_reference (baseline)"] = {"seconds": med, "all": times, "out": y[0].numpy()}
        echo("      PyTorch folded solver")
        set_solver_form(model, "folded")
        med, times, y = _median_time(lambda: model(msi_t, lr_t), repeats)
        results["pytorch_fp32_folded"] = {"seconds": med, "all": times, "out": y[0].numpy()}
    echo("      ONNX Runtime (CPU)")
    with OrtRunner(onnx_path, threads=threads) as runner:
        med, times, y = _median_time(lambda: runner.fuse(msi[None], lr[None]), repeats)
        results["onnxruntime_fp32"] = {"seconds": med, "all": times, "out": np.asarray(y)[0]}

    echo("[5/6] metrics")
    base = results["pytorch_fp32_reference (baseline)"]["out"]
    base_psnr = psnr(gt, np.clip(base, 0, 1))
    rows = []
    context = {"bicubic": np.asarray(bicubic_upsample(lr, ratio)), "gsa": np.asarray(gsa_fusion(msi, lr, ratio))}
    for name, est in context.items():
        rows.append({"path": name, **evaluate(gt, est, ratio), "delta_psnr": None, "max_abs_diff": None,
                     "fidelity_psnr": None, "seconds": None, "speedup": None})
    t_base = results["pytorch_fp32_reference (baseline)"]["seconds"]
    for name, r in results.items():
        m = evaluate(gt, r["out"], ratio)
        rows.append({"path": name, **m, "delta_psnr": base_psnr - m["psnr"],
                     "max_abs_diff": float(np.abs(r["out"] - base).max()),
                     "fidelity_psnr": psnr(np.clip(base, 0, 1), np.clip(r["out"], 0, 1)),
                     "seconds": r["seconds"], "speedup": t_base / r["seconds"]})

    echo("[6/6] writing the figure and the report")
    png = scene_figure(out_dir / "demo.png", gt, msi, {"bicubic": context["bicubic"],
                                                         "lso": results["onnxruntime_fp32"]["out"]},
                       title=f"synthetic scene {seed}, x{ratio}, LSO via ONNX Runtime")
    report = {"checkpoint": checkpoint, "scene_seed": seed, "size": size, "ratio": ratio, "threads": threads,
              "repeats": repeats, "onnx": str(onnx_path), "export_seconds": t_export, "rows": rows, "png": str(png),
              "total_seconds": time.perf_counter() - t_all}
    atomic_write_text(out_dir / "demo.json", json.dumps(report, indent=2, default=float) + "\n")
    return report


def format_tables(report: dict[str, Any]) -> str:
    """Parity and latency tables (Markdown) for the demo report."""
    lines = [f"Parity on held-out synthetic scene {report['scene_seed']} ({report['size']}x{report['size']}, "
             f"x{report['ratio']}); Delta = PSNR(baseline) - PSNR(path), fidelity = PSNR vs the baseline output", "",
             "| path | PSNR (dB) | SAM (deg) | ERGAS | SSIM | Delta-PSNR (dB) | fidelity PSNR (dB) | max abs diff |",
             "|---|---|---|---|---|---|---|---|"]

    def f(v, fmt):
        return "-" if v is None else format(v, fmt)

    for r in report["rows"]:
        lines.append(f"| {r['path']} | {r['psnr']:.3f} | {r['sam']:.3f} | {r['ergas']:.3f} | {r['ssim']:.4f} | "
                     f"{f(r['delta_psnr'], '+.4f')} | {f(r['fidelity_psnr'], '.1f')} | {f(r['max_abs_diff'], '.2e')} |")
    lines += ["", f"Latency ({report['threads']} CPU threads, median of {report['repeats']}):", "",
              "| path | seconds | megapixels/s | speed-up vs baseline |", "|---|---|---|---|"]
    mp = report["size"] ** 2 / 1e6
    for r in report["rows"]:
        if r["seconds"] is not None:
            lines.append(f"| {r['path']} | {r['seconds']:.3f} | {mp / r['seconds']:.3f} | {r['speedup']:.2f}x |")
    lines += ["", f"Export took {report['export_seconds']:.1f} s; whole demo {report['total_seconds']:.1f} s. "
              f"Figure: {report['png']}"]
    return "\n".join(lines)
