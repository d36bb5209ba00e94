"""Shared helpers for benchmark scripts: machine/version info and writing JSON + Markdown results."""
from __future__ import annotations

import json
import os
import platform
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"

__all__ = ["machine_info", "write_results", "markdown_table", "cuda_times", "RESULTS"]


def machine_info() -> dict[str, Any]:
    """Machine, CPU, thread count and library versions (whatever is importable)."""
    import importlib

    from lso.artifacts import cpu_model

    info: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu": cpu_model(),  # with vendor, family and model numbers (one name covers several generations)
    }
    for mod in ("torch", "numpy", "onnx", "onnxruntime", "onnxslim", "tensorrt"):
        try:
            info[mod] = importlib.import_module(mod).__version__
        except Exception:  # not installed or broken: just not recorded
            continue
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["compute_capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
    except ImportError:
        pass
    return info


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(name: str, data: dict[str, Any], markdown: str, out_dir: Path = RESULTS) -> tuple[Path, Path]:
    """Write ``<name>.json`` and ``<name>.md`` (with a machine line) into ``benchmarks/results``."""
    from lso.artifacts import atomic_write_text

    out_dir.mkdir(parents=True, exist_ok=True)
    data = {"machine": machine_info(), **data}
    m = data["machine"]
    versions = ", ".join(f"{k} {m[k]}" for k in ("python", "torch", "numpy", "onnx", "onnxruntime") if k in m)
    md = (f"{markdown}\n\nMachine: {m['cpu']} ({m['cpu_count']} cores, torch threads {m.get('torch_threads')}), "
          f"{m['platform']}; {versions}; {m['date']}.\n")
    j = atomic_write_text(out_dir / f"{name}.json", json.dumps(data, indent=2, default=str) + "\n")
    k = atomic_write_text(out_dir / f"{name}.md", md)
    return j, k


def cuda_times(fn: Any, repeats: int) -> tuple[list[float], float]:
    """``(seconds per call by CUDA events, peak MiB allocated)`` of ``fn()`` after one warm-up call."""
    import torch

    fn()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return times, torch.cuda.max_memory_allocated() / 2**20
