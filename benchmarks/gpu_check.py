"""The one command to run on a GPU: every GPU/TensorRT check of the package, in at most 8 minutes.

Writes ``benchmarks/results/gpu_check.json`` and ``.md`` with the device named. Steps (``--dry-run`` lists
them and exits 0; on a machine without a CUDA GPU the script says so and exits 3, writing nothing):

1. ``environment``: GPU, driver/CUDA, torch, CuPy, ONNX Runtime providers, TensorRT (if any), Polygraphy.
2. ``tests``: every test marked ``gpu`` or ``trt`` (``pytest -m "gpu or trt"``).
3. ``torch_parity``: ``TorchRunner`` on CUDA against CPU FP32 on the official reference cases: FP32 with
   TF32 off (target max |Δ| ≤ 1e-4) and on, FP16 with the FP32 islands (fidelity PSNR); and FP16's ΔPSNR
   against CPU FP32 on held-out synthetic scenes (target ≤ 0.05 dB; needs ``--prepare``'d scenes).
4. ``torch_latency``: eager FP32, eager FP16 and compiled FP16 (``torch.compile``, default mode) of the
   paper-configuration demo checkpoint at 512² and 1024² ×4 (batch 1) and 512² ×4 batch 4: median of CUDA
   event timings and peak device memory (target: 512² compiled FP16 ≤ 15 ms; the FLOP floor is ~1 ms).
5. ``stream_race``: inputs produced on a side stream behind a slow kernel, by torch and by CuPy, then fused
   from that stream: the output must equal the one from settled inputs (a runner that ignored the
   producer's stream would read unfinished inputs).
6. ``tensorrt``: where TensorRT is installed: FP16 graph, engine at the default profile, parity against CPU
   FP32, latency at 512² ×4 (target ≤ 3 ms) and the runner's CUDA-graph cache counts. Skipped otherwise.

On the lent machines (Python 3.12, torch + CUDA, CuPy, CPU-only ONNX Runtime, no TensorRT, no network),
prepare here, then run there in one call::

    python benchmarks/gpu_check.py --prepare        # here: held-out scenes + wheels the GPU image lacks
    # there (carry .gpu_check):
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu_check/wheels/*.whl; \\
    export PYTHONPATH=/tmp/site; python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . && \\
    python3 benchmarks/gpu_check.py

Every step has a time budget; a step that fails records its error and the next one runs.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PREPARED = REPO / ".gpu_check"
SCENES = PREPARED / "scenes.npz"
WHEELS = PREPARED / "wheels"
REFERENCE = REPO / "tests" / "data" / "reference" / "lso_official_reference.safetensors"
REFERENCE_TAGS = ("x4_64x64", "x4_48x80", "x8_64x64")
#: Packages the GPU image lacks that the checks use (pure Python or manylinux wheels for CPython 3.12).
GPU_IMAGE_WHEELS = ("onnxslim", "onnxconverter-common", "polygraphy", "colorama")
TOTAL_BUDGET_S = 480.0
TARGETS = {"fp32_max_abs": 1e-4, "fp16_dpsnr_db": 0.05, "compiled_fp16_512_ms": 15.0, "trt_fp16_512_ms": 3.0}


@dataclass(frozen=True)
class Step:
    name: str
    budget_s: float
    what: str
    run: Callable[[Context], dict]


class Context:
    """Shared state of one run: the deadline, the device, the demo model (loaded once)."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self._demo = None

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def demo(self):
        if self._demo is None:
            from lso import load_checkpoint

            self._demo = load_checkpoint("@demo")
        return self._demo


# ------------------------------------------------------------------------------------------ steps
def step_environment(ctx: Context) -> dict:
    import torch

    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                            "cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name(0),
                            "compute_capability": ".".join(map(str, torch.cuda.get_device_capability(0))),
                            "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)}
    for module in ("cupy", "onnxruntime", "tensorrt", "polygraphy", "onnxslim", "onnxconverter_common"):
        try:
            info[module] = __import__(module).__version__
        except Exception as exc:  # missing or broken: recorded, not fatal
            info[module] = f"not available ({type(exc).__name__})"
    try:
        import onnxruntime

        info["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except ImportError:
        pass
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        info["nvidia_smi"] = smi.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        info["nvidia_smi"] = "not available"
    return {"status": "ok", **info}


def step_tests(ctx: Context) -> dict:
    timeout = max(30.0, min(240.0, ctx.left() - 200.0))
    # only the files that hold GPU/TensorRT tests: the others may import packages the GPU image lacks (ray, ...)
    files = sorted(str(p) for p in (REPO / "tests").rglob("test_*.py")
                   if any(m in p.read_text(encoding="utf-8") for m in ("mark.gpu", "mark.trt")))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu or trt", "-rfEs", "--tb=short",
           *files]
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        return {"status": "timeout", "seconds": timeout, "tail": (exc.stdout or "")[-3000:]}
    lines = proc.stdout.strip().splitlines()
    summary = next((ln for ln in reversed(lines) if " in " in ln and ("passed" in ln or "failed" in ln
                                                                     or "skipped" in ln or "error" in ln)), "")
    counts = {k: _count(summary, k) for k in ("passed", "failed", "skipped", "error", "deselected")}
    return {"status": "ok" if proc.returncode in (0, 5) and not counts["failed"] and not counts["error"] else "failed",
            "summary": summary, **counts, "tail": "\n".join(lines[-150:])}  # short tracebacks of every failure


def _count(summary: str, word: str) -> int:
    for part in summary.replace(",", " ").split("  "):
        bits = part.strip().split()
        for i, b in enumerate(bits[1:], 1):
            if b.startswith(word) and bits[i - 1].isdigit():
                return int(bits[i - 1])
    return 0


def _max_abs(a, b) -> float:
    return float((a - b).abs().max())


def _psnr(ref, est) -> float:
    from lso.metrics import psnr

    return float(psnr(ref.squeeze(0).numpy(), est.squeeze(0).clamp(0, 1).numpy()))


def step_torch_parity(ctx: Context) -> dict:
    import torch
    from safetensors.torch import load_file

    from lso import LSO, LSOConfig
    from lso.runtime import TorchRunner

    data = load_file(str(REFERENCE))
    model = LSO(LSOConfig()).eval()
    model.load_state_dict({k[len("weights."):]: v for k, v in data.items() if k.startswith("weights.")})
    cpu_out = {}
    with torch.no_grad():
        for tag in REFERENCE_TAGS:
            cpu_out[tag] = model(data[f"{tag}.hr_msi"], data[f"{tag}.lr_hsi"])
    rows: list[dict[str, Any]] = [{"case": tag, "official_vs_cpu": _max_abs(cpu_out[tag], data[f"{tag}.output"])}
                                  for tag in REFERENCE_TAGS]
    for label, kwargs in (("fp32", {}), ("fp32_tf32", {"tf32": True}), ("fp16", {"fp16": True})):
        # a copy: an FP32 runner moves the model it is given to the GPU in place
        with TorchRunner(copy.deepcopy(model), device="cuda", **kwargs) as runner:
            for row in rows:
                tag = row["case"]
                out = runner.fuse(data[f"{tag}.hr_msi"].cuda(), data[f"{tag}.lr_hsi"].cuda()).float().cpu()
                row[f"{label}_max_abs"] = _max_abs(out, cpu_out[tag])
                row[f"{label}_fidelity_psnr"] = _psnr(cpu_out[tag], out)
    worst = max(r["fp32_max_abs"] for r in rows)
    result: dict[str, Any] = {"cases": rows, "fp32_max_abs": worst,
                              "fp32_target_met": worst <= TARGETS["fp32_max_abs"]}
    result.update(_fp16_dpsnr(ctx))
    ok = result["fp32_target_met"] and result.get("fp16_target_met", True)
    return {"status": "ok" if ok else "target missed", **result}


def _fp16_dpsnr(ctx: Context) -> dict:
    """ΔPSNR of CUDA FP16 against CPU FP32 (PSNR vs ground truth, mean over the prepared held-out scenes)."""
    import numpy as np
    import torch

    from lso.data import degrade
    from lso.metrics import psnr
    from lso.runtime import TorchRunner

    if not SCENES.is_file():
        return {"fp16_dpsnr": None, "fp16_dpsnr_note": f"{SCENES.relative_to(REPO)} missing: run --prepare here and "
                                                         f"carry .gpu_check"}
    gts = np.load(SCENES)["gt"]
    model = copy.deepcopy(ctx.demo()).cpu()
    deltas = []
    with TorchRunner(model, device="cuda", fp16=True) as runner:
        for gt in gts:
            msi, lr = degrade(gt.astype(np.float32), 4)
            msi_t = torch.from_numpy(np.asarray(msi, np.float32))[None]
            lr_t = torch.from_numpy(np.asarray(lr, np.float32))[None]
            with torch.no_grad():
                ref = model(msi_t, lr_t).clamp(0, 1)[0].numpy()
            out = runner.fuse(msi_t.cuda(), lr_t.cuda()).float().clamp(0, 1)[0].cpu().numpy()
            deltas.append(psnr(gt, ref) - psnr(gt, out))
    value = float(np.mean(deltas))
    return {"fp16_dpsnr": value, "fp16_dpsnr_scenes": len(deltas), "fp16_target_met": value <= TARGETS["fp16_dpsnr_db"]}


def _time_cuda(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """(median ms by CUDA events, peak MiB allocated) of ``fn`` after one warm-up call."""
    from lso.benchmarks._report import cuda_times

    times, peak = cuda_times(fn, repeats)
    return sorted(times)[len(times) // 2] * 1e3, peak


def step_torch_latency(ctx: Context) -> dict:
    import torch

    from lso.runtime import TorchRunner

    shapes = [(1, 512), (1, 1024), (4, 512)]
    rows: list[dict[str, Any]] = []
    for label, kwargs in (("eager fp32", {}), ("eager fp16", {"fp16": True}),
                          ("compiled fp16", {"fp16": True, "compile": True})):  # compile=True: dynamic shapes
        with TorchRunner(copy.deepcopy(ctx.demo()), device="cuda", **kwargs) as runner:
            for batch, size in shapes:
                if ctx.left() < 60:
                    rows.append({"path": label, "batch": batch, "size": size, "skipped": "out of time"})
                    continue
                hr = torch.rand(batch, 3, size, size, device="cuda")
                lr = torch.rand(batch, 31, size // 4, size // 4, device="cuda")
                t0 = time.perf_counter()
                ms, peak = _time_cuda(functools.partial(runner.fuse, hr, lr, check_finite=False), repeats=10)
                rows.append({"path": label, "batch": batch, "size": size, "ms": ms, "peak_mib": peak,
                             "first_call_s": time.perf_counter() - t0})
    compiled = next((r["ms"] for r in rows if r["path"] == "compiled fp16" and r["size"] == 512 and r["batch"] == 1
                     and "ms" in r), None)
    met = compiled is not None and compiled <= TARGETS["compiled_fp16_512_ms"]
    return {"status": "ok" if met else "target missed", "rows": rows, "compiled_fp16_512_ms": compiled,
            "compiled_fp16_target_met": met}


def step_stream_race(ctx: Context) -> dict:
    import torch

    from lso.runtime import TorchRunner

    model = copy.deepcopy(ctx.demo())
    gen = torch.Generator().manual_seed(0)
    hr_host = torch.rand(1, 3, 256, 256, generator=gen).pin_memory()
    lr_host = torch.rand(1, 31, 64, 64, generator=gen).pin_memory()
    result: dict[str, Any] = {}
    with TorchRunner(model, device="cuda") as runner:
        expected = runner.fuse(hr_host.cuda(), lr_host.cuda()).cpu()
        side = torch.cuda.Stream()
        with torch.cuda.stream(side):  # producer: slow kernel, then the copies, all on the side stream
            hr, lr = torch.empty_like(hr_host, device="cuda"), torch.empty_like(lr_host, device="cuda")
            hr.fill_(float("nan"))
            torch.cuda._sleep(200_000_000)  # a few tens of ms of GPU spin before the data lands
            hr.copy_(hr_host, non_blocking=True)
            lr.copy_(lr_host, non_blocking=True)
            out = runner.fuse(hr, lr, check_finite=False)
        torch.cuda.synchronize()
        result["torch_max_abs"] = _max_abs(out.cpu(), expected)
        try:
            import cupy

            cs = cupy.cuda.Stream(non_blocking=True)
            with cs:
                hr_c = cupy.full(tuple(hr_host.shape), cupy.nan, dtype=cupy.float32)
                big = cupy.random.rand(4096, 4096, dtype=cupy.float32)
                for _ in range(20):  # keep the stream busy before the data lands
                    big = big @ big / 4096.0
                hr_c.set(hr_host.numpy(), stream=cs)  # ordered on cs, behind the busy work
                lr_c = cupy.empty(tuple(lr_host.shape), dtype=cupy.float32)
                lr_c.set(lr_host.numpy(), stream=cs)
                out_c = runner.fuse(hr_c, lr_c, check_finite=False)
                got = cupy.asnumpy(cupy.asarray(out_c)) if not isinstance(out_c, torch.Tensor) else out_c.cpu().numpy()
            cs.synchronize()
            result["cupy_max_abs"] = float(abs(got - expected.numpy()).max())
        except ImportError:
            result["cupy_max_abs"] = None
            result["cupy_note"] = "CuPy not installed"
    values = [v for k, v in result.items() if k.endswith("max_abs") and v is not None]
    ok = all(math.isfinite(v) and v <= 1e-5 for v in values)
    return {"status": "ok" if ok else "failed", **result}


def step_tensorrt(ctx: Context) -> dict:
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None:
        return {"status": "skipped", "reason": "TensorRT is not installed on this machine"}
    import tempfile

    import torch

    from lso.calibration import convert_fp16
    from lso.export import export_onnx
    from lso.export.engine_builder import build_engine  # lso.export.build_engine is also the script's module name
    from lso.runtime import TrtRunner

    model = copy.deepcopy(ctx.demo()).cpu()
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(model, Path(tmp) / "model.onnx", target="tensorrt")
        fp16 = convert_fp16(fp32, Path(tmp) / "model.fp16.onnx", feeds=_feeds())
        t0 = time.perf_counter()
        plan = build_engine(fp16, Path(tmp) / "model.fp16.plan")
        build_s = time.perf_counter() - t0
        hr = torch.rand(1, 3, 512, 512, device="cuda")
        lr = torch.rand(1, 31, 128, 128, device="cuda")
        with torch.no_grad():
            ref = model(hr.cpu(), lr.cpu())
        with TrtRunner(plan) as runner:
            out = runner.fuse(hr, lr, check_finite=False).float().cpu()
            ms, peak = _time_cuda(lambda: runner.fuse(hr, lr, check_finite=False), repeats=20)
            stats = getattr(runner, "cache_stats", None)
    met = ms <= TARGETS["trt_fp16_512_ms"]
    return {"status": "ok" if met else "target missed", "build_s": build_s, "fp16_max_abs": _max_abs(out, ref),
            "fp16_fidelity_psnr": _psnr(ref, out), "ms_512": ms, "peak_mib": peak,
            "graph_cache": (dataclasses.asdict(stats) if dataclasses.is_dataclass(stats) and not isinstance(stats, type)
                            else stats),
            "trt_fp16_target_met": met}


def _feeds() -> list[dict]:
    """Calibration feeds for the FP16 graph's range check: the prepared held-out scenes (synthetic scenes
    cannot be generated on the GPU image: no colour-science), else seeded random inputs."""
    import numpy as np

    from lso import io_spec
    from lso.data import degrade

    if SCENES.is_file():
        pairs = [degrade(gt.astype(np.float32), 4) for gt in np.load(SCENES)["gt"]]
    else:
        rng = np.random.default_rng(0)
        pairs = [(rng.random((3, 256, 256), np.float32), rng.random((31, 64, 64), np.float32)) for _ in range(2)]
    return [{io_spec.HR_MSI: np.asarray(msi, np.float32)[None], io_spec.LR_HSI: np.asarray(lr, np.float32)[None]}
            for msi, lr in pairs]


STEPS: tuple[Step, ...] = (
    Step("environment", 20, "GPU, CUDA, torch, CuPy, ONNX Runtime providers, TensorRT, Polygraphy", step_environment),
    Step("tests", 240, "pytest -m 'gpu or trt' (every GPU/TensorRT test)", step_tests),
    Step("torch_parity", 60, "TorchRunner CUDA FP32 (TF32 off/on) and FP16 vs CPU FP32; FP16 ΔPSNR", step_torch_parity),
    Step("torch_latency", 150, "eager/compiled FP32/FP16 latency and peak memory, 512²/1024² x4, batch 4",
         step_torch_latency),
    Step("stream_race", 20, "torch and CuPy producers on side streams behind slow kernels", step_stream_race),
    Step("tensorrt", 180, "FP16 engine at the default profile: parity, latency, CUDA-graph cache (if TensorRT)",
         step_tensorrt),
)


# ------------------------------------------------------------------------------------------ driver
def prepare(n_scenes: int = 2, size: int = 256) -> list[str]:
    """Here (CPU, network): held-out scenes for the ΔPSNR check and the wheels the GPU image lacks."""
    import numpy as np

    from lso.data import SceneSource

    PREPARED.mkdir(exist_ok=True)
    gts = np.stack([scene.gt for scene in SceneSource(size=size).scenes(n_scenes)]).astype(np.float32)
    tmp = SCENES.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, gt=gts)
    os.replace(tmp, SCENES)
    done = [str(SCENES.relative_to(REPO))]
    WHEELS.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
           "--python-version", "3.12", "--implementation", "cp", "--platform", "manylinux_2_28_x86_64",
           "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64", "--platform", "any",
           "-d", str(WHEELS), *GPU_IMAGE_WHEELS]
    subprocess.run(cmd, check=True)
    done += sorted(str(p.relative_to(REPO)) for p in WHEELS.glob("*.whl"))
    return done


def markdown(report: dict) -> str:
    env = report["steps"].get("environment", {})
    lines = [f"# GPU check on {env.get('gpu', '?')} (compute capability {env.get('compute_capability', '?')})", "",
             f"torch {env.get('torch')}, CUDA {env.get('cuda')}, TensorRT {env.get('tensorrt')}; "
             f"{report['seconds']:.0f} s in all.", "", "| step | status | key figures |", "|---|---|---|"]
    for name, res in report["steps"].items():
        figures = {k: v for k, v in res.items() if k not in ("status", "rows", "cases", "tail", "summary")
                   and not isinstance(v, (dict, list))}
        text = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in list(figures.items())[:8])
        lines.append(f"| {name} | {res.get('status')} | {text} |")
    lat = report["steps"].get("torch_latency", {}).get("rows", [])
    if lat:
        lines += ["", "| path | batch | size | ms (median) | peak MiB |", "|---|---|---|---|---|"]
        for r in lat:
            ms = f"{r['ms']:.2f}" if "ms" in r else r.get("skipped", "-")
            peak = f"{r['peak_mib']:.0f}" if "peak_mib" in r else "-"
            lines.append(f"| {r['path']} | {r['batch']} | {r['size']}² | {ms} | {peak} |")
    lines += ["", "Targets: " + ", ".join(f"{k} {v}" for k, v in TARGETS.items())]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="list the steps and their budgets, run nothing")
    parser.add_argument("--prepare", action="store_true",
                        help="on this (CPU) machine: write .gpu_check/ (held-out scenes, wheels) to carry to the GPU")
    parser.add_argument("--steps", help="comma-separated subset of the steps to run (default: all)")
    parser.add_argument("--budget-s", type=float, default=TOTAL_BUDGET_S, help="total time budget in seconds")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"), help="folder for gpu_check.json/.md")
    args = parser.parse_args(argv)
    wanted = [s.strip() for s in args.steps.split(",")] if args.steps else [s.name for s in STEPS]
    unknown = set(wanted) - {s.name for s in STEPS}
    if unknown:
        print(f"gpu_check: unknown step(s) {sorted(unknown)}; steps: {', '.join(s.name for s in STEPS)}",
              file=sys.stderr)
        return 2
    if args.dry_run:
        for s in STEPS:
            mark = "" if s.name in wanted else " (not selected)"
            print(f"{s.name:14s} {s.budget_s:5.0f} s  {s.what}{mark}")
        print(f"total budget {args.budget_s:.0f} s; writes {Path(args.out) / 'gpu_check.json'} and .md")
        return 0
    if args.prepare:
        for path in prepare():
            print(path)
        return 0
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU here (torch.cuda.is_available() is False); nothing was run or written. "
              "Run it on a GPU machine (see --help), or --dry-run to list the steps.", file=sys.stderr)
        return 3
    t_start = time.monotonic()
    ctx = Context(t_start + args.budget_s)
    report: dict[str, Any] = {"targets": TARGETS, "steps": {}}
    for s in STEPS:
        if s.name not in wanted:
            continue
        if ctx.left() < min(s.budget_s, 30):
            report["steps"][s.name] = {"status": "skipped", "reason": "out of time"}
            continue
        t0 = time.monotonic()
        print(f"[gpu_check] {s.name}: {s.what}", flush=True)
        try:
            res = s.run(ctx)
        except Exception as exc:  # one failing step must not hide the others' results
            import traceback

            res = {"status": "error", "error": f"{type(exc).__name__}: {exc}",
                   "traceback": traceback.format_exc()[-3000:]}
        res["seconds"] = round(time.monotonic() - t0, 1)
        report["steps"][s.name] = res
        print(f"[gpu_check] {s.name}: {res.get('status')} in {res['seconds']} s", flush=True)
    report["seconds"] = time.monotonic() - t_start
    from lso.benchmarks._report import write_results

    out = Path(args.out)
    paths = write_results("gpu_check", report, markdown(report), out_dir=out)
    print("\n".join(map(str, paths)))
    failed = [n for n, r in report["steps"].items() if r.get("status") in ("failed", "error", "timeout")]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
