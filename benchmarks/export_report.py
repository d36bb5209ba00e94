"""Export report: time, file size, node counts and the parity table of ``export_onnx`` on real weights.

    python benchmarks/export_report.py            # -> benchmarks/results/export_report.{json,md}

Weights: the bundled demo checkpoint when this install has it, else the official reference weights
(``tests/data/reference/lso_official_reference.safetensors``, keys ``weights.*``, saved into a
temporary ``.pth.tar`` so they go through the normal official-checkpoint path), or ``--checkpoint``.
The export runs with its default options and the full default parity table (x4 at 64x64 and
512x512, x8, x16, x32, x3 at 75x57, batch 2). The report says which weights were used.
"""
from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from lso.benchmarks._report import RESULTS, markdown_table, write_results

REFERENCE = Path(__file__).resolve().parents[1] / "tests" / "data" / "reference" / "lso_official_reference.safetensors"


def _weights(checkpoint: str | None, tmp: Path) -> tuple[Path, str]:
    """(checkpoint path, description of the weights)."""
    from lso.weights import demo_checkpoint, has_demo_checkpoint

    if checkpoint:
        return Path(checkpoint), f"--checkpoint {checkpoint}"
    if has_demo_checkpoint():
        path = demo_checkpoint()
        return path, f"bundled demo checkpoint {path.name}"
    if not REFERENCE.exists():
        raise SystemExit(f"no demo checkpoint bundled and no reference weights at {REFERENCE}; pass --checkpoint")
    import torch
    from safetensors.torch import load_file

    state = {k[len("weights."):]: v for k, v in load_file(str(REFERENCE)).items() if k.startswith("weights.")}
    path = tmp / "lso_official_reference.pth.tar"
    torch.save({"model_state_dict": state}, path)
    return path, ("official reference weights (tests/data/reference/lso_official_reference.safetensors, weights.*: "
                  "paper configuration, spectral blocks at trained-like magnitudes), via a .pth.tar")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="weights to export (default: demo checkpoint, else reference weights)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS, help="where to write export_report.{json,md}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("lso.export").setLevel(logging.INFO)

    from lso.artifacts import read_sidecar
    from lso.export import ParityReport, export_onnx

    load_1m = os.getloadavg()[0]  # the timings are wall-clock: record how busy the machine was
    with tempfile.TemporaryDirectory() as tmp:
        ckpt, weights = _weights(args.checkpoint, Path(tmp))
        t0 = time.perf_counter()
        out = export_onnx(ckpt, Path(tmp) / "model.onnx")
        wall = time.perf_counter() - t0
        side = read_sidecar(out)
    if side is None:
        raise SystemExit(f"export_onnx wrote {out} without its sidecar {out}.json")
    report = ParityReport.from_dict(side["parity"])
    graph = side["graph"]
    data = {
        "weights": weights,
        "source_sha256": side["source"]["sha256"],
        "config": side["config"],
        "opset": side["opset"],
        "tileable": side["tileable"],
        "export_s": side["timing_s"]["export"],
        "parity_s": side["timing_s"]["parity"],
        "wall_s": round(wall, 2),
        "load_average_1m_at_start": round(load_1m, 2),
        "file_bytes": graph["bytes"],
        "nodes": graph["nodes"],
        "op_counts": graph["op_counts"],
        "simplifier": side["simplifier"],
        "trt_lint_issues": side["trt_lint"]["issues"],
        "parity": side["parity"],
        "export_versions": side["versions"],
    }
    counts = sorted(graph["op_counts"].items(), key=lambda kv: (-kv[1], kv[0]))
    md = "\n".join([
        "# ONNX export report",
        "",
        f"Weights: {weights}.",
        f"Command: `export_onnx(checkpoint, 'model.onnx')` (= `python export/to_onnx.py --checkpoint CKPT`), opset "
        f"{side['opset']}, default options; simplifier {side['simplifier']['tool']} {side['simplifier']['version']} "
        f"({'applied' if side['simplifier']['applied'] else 'failed: kept unsimplified'}).",
        "",
        markdown_table(["export (s)", "parity table (s)", "file (MB)", "nodes", "TensorRT lint issues"],
                       [[data["export_s"], data["parity_s"], round(graph["bytes"] / 1e6, 2), graph["nodes"],
                         len(data["trt_lint_issues"])]]),
        "",
        "Nodes by type: " + ", ".join(f"{op} {n}" for op, n in counts) + ".",
        "",
        f"Parity: {report.runtime} vs {report.reference}, seeded uniform inputs (seed {report.seed}); "
        f"fails above {report.atol:g}.",
        "",
        report.format_table(),
        "",
        f"Largest max abs error: {report.max_abs:.2e}. Export time is torch.export + ONNX translation + passes + "
        "lint on CPU; the torch/ORT columns are single runs (not latency benchmarks). Load average when the run "
        f"started: {load_1m:.1f} on {os.cpu_count()} cores"
        + (" (above the core count: other jobs shared the CPU and the times are inflated)."
           if load_1m > (os.cpu_count() or 1) else "."),
    ])
    json_path, md_path = write_results("export_report", data, md, args.out_dir)
    print(md)
    print(f"\nwrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
