"""Parity of every backend x precision on held-out scenes, against PyTorch FP32 and the ground truth.

For each variant the machine can run — PyTorch FP32 with the reference solver (the official
computation, the reference of every Δ), PyTorch folded solver, ONNX Runtime FP32 (the CPU graph:
channels aligned, solver in Scan chunks), the FP16 mixed graph, the INT8 Q/DQ graphs (``cpu``
flavour from the CPU graph, ``tensorrt`` flavour from the portable one, both run by ONNX Runtime on CPU) and
TensorRT plans given with ``--plan`` (GPU only), and with ``--backend openvino`` OpenVINO's variants
(FP32 and, on CPUs with native BF16, BF16 with the FP32 islands, both on the portable graph; the INT8
``cpu`` flavour) — it fuses every scene and reports PSNR, SAM, ERGAS and SSIM against the ground truth,
ΔPSNR / ΔSAM against PyTorch FP32 (``docs/architecture.md``), the fidelity PSNR and the largest absolute
difference from PyTorch FP32. Each variant is checked against
its precision's row of the one tolerance table (``lso.tolerances``); the script exits with status 1
when any variant misses it.

The ONNX Runtime and TensorRT variants run through **Polygraphy's comparator** (NVIDIA's tooling:
``polygraphy.comparator.Comparator.run`` with ``OnnxrtRunner`` over ``SessionFromOnnx``, and ``TrtRunner``
for plans on a GPU), fed the same scenes by a data loader; the same code runs ONNX Runtime on a CPU today
and TensorRT on a GPU. The figures above are computed from those outputs exactly as before; each row also
records Polygraphy's own accuracy check against PyTorch FP32 (``Comparator.compare_accuracy``, max |Δ| at
the precision's ``max_abs`` bound, where the table has one) under ``comparator``.

How each precision is run on a CPU: FP16 by :func:`lso.calibration.fp16.emulate_fp16` (every tensor
the FP16 graph stores in FP16 is rounded to FP16, as a GPU stores it; ONNX Runtime's CPU provider
would otherwise compute most FP16 nodes in FP32); INT8 by ONNX Runtime on the Q/DQ graph itself
(its integer kernels); the ``tensorrt`` flavour's symmetric scales are what a TensorRT engine uses,
its kernels are not.

    python benchmarks/parity.py                          # bundled demo checkpoint, 4 held-out scenes, 256², x4
    python benchmarks/parity.py --checkpoint ckpt.pth.tar --h5 test.h5 --scenes 8 --size 512
    python benchmarks/parity.py --plan model.fp16.plan   # on a GPU with TensorRT
    python benchmarks/parity.py --backend openvino       # adds ov-fp32, ov-bf16, ov-int8-cpu
Results: benchmarks/results/<name>.{json,md} (default name ``parity``).
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lso.tolerances import TOLERANCES, violations

log = logging.getLogger("lso.benchmarks.parity")

# variant -> precision row of the tolerance table
VARIANTS = {
    "torch-ref": "fp32",
    "torch-folded": "fp32",
    "ort-fp32": "fp32",
    "ort-fp16": "fp16",
    "ort-int8-cpu": "int8",
    "ort-int8-tensorrt": "int8",
    "ov-fp32": "fp32",
    "ov-bf16": "fp16",  # BF16 with FP32 islands is held to the FP16 budget
    "ov-int8-cpu": "int8",
}
REFERENCE = "torch-ref"
DEFAULT_VARIANTS = tuple(n for n in VARIANTS if not n.startswith("ov-"))
"""The variants run without ``--variants``; ``--backend openvino`` adds ``BACKEND_VARIANTS["openvino"]``."""
BACKEND_VARIANTS = {"onnxruntime": tuple(n for n in VARIANTS if n.startswith("ort-")),
                    "openvino": tuple(n for n in VARIANTS if n.startswith("ov-"))}
"""``--backend NAME``: the variants of that backend, added to the run."""


def _torch_runner(model, form: str) -> Callable:
    import copy

    import torch

    from lso.model import set_solver_form

    m = set_solver_form(copy.deepcopy(model).float().eval(), form)

    def run(hr: np.ndarray, lr: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return m(torch.from_numpy(hr)[None], torch.from_numpy(lr)[None])[0].numpy()

    return run


def _ort_runner(model_or_path: Any, threads: int | None, name: str) -> Any:
    """A Polygraphy ``OnnxrtRunner`` (CPU) on a graph: a path, a ``ModelProto`` or serialized bytes.

    The session comes from the package's one session factory (:func:`lso.runtime.ort_session`: CPU; with
    ``threads``, that many intra-op threads and errors only in ONNX Runtime's log, as calibration's sessions),
    run by ``OnnxrtRunner``, which activates and releases it inside ``Comparator.run``.
    """
    from lso.deps import require_polygraphy
    from lso.runtime.ort_runner import ort_session

    onnxrt = require_polygraphy("polygraphy.backend.onnxrt")
    if hasattr(model_or_path, "SerializeToString"):
        model_or_path = model_or_path.SerializeToString()
    elif not isinstance(model_or_path, bytes):
        model_or_path = str(model_or_path)
    options: dict[str, Any] = {"threads": threads, "log_severity": 3} if threads else {}
    return onnxrt.OnnxrtRunner(lambda: ort_session(model_or_path, **options), name=name)


def _openvino_runner(path: Path, threads: int | None, precision: str) -> Callable:
    """A callable ``(hr, lr) -> [31, H, W]`` over an active :class:`~lso.runtime.openvino_runner.OpenVinoRunner`
    (released at exit)."""
    import atexit

    from lso.runtime import load

    runner = load(path, backend="openvino", threads=threads, precision=precision).activate()
    atexit.register(runner.deactivate)

    def run(hr: np.ndarray, lr: np.ndarray) -> np.ndarray:
        return runner.fuse(hr, lr)

    return run


def _trt_runner(plan: str, name: str) -> Any:
    """A Polygraphy ``TrtRunner`` on a plan (GPU only: the CUDA check comes first, then TensorRT)."""
    from lso.runtime.trt_support import polygraphy_trt, tensorrt_on_device

    _, trt = tensorrt_on_device()
    pg = polygraphy_trt(trt)
    return pg.TrtRunner(pg.EngineFromBytes(lambda: Path(plan).read_bytes()), name=name)


def _is_polygraphy_runner(run: Any) -> bool:
    return hasattr(run, "activate") and hasattr(run, "infer") and hasattr(run, "name")


def build_variants(model, checkpoint_label: str, work: Path, names: Sequence[str], *, feeds, threads: int | None,
                   plans: Sequence[str] = ()) -> tuple[dict[str, Callable], dict[str, str], dict[str, str]]:
    """``(runners, precision per variant, skipped variant -> reason)`` for the requested variant names."""
    runners: dict[str, Callable] = {}
    precision = {n: VARIANTS[n] for n in names if n in VARIANTS}
    skipped: dict[str, str] = {}
    if "torch-ref" in names:
        runners["torch-ref"] = _torch_runner(model, "reference")
    if "torch-folded" in names:
        runners["torch-folded"] = _torch_runner(model, "folded")
    if any(n.startswith(("ort", "ov-")) for n in names):
        from lso.deps import available

        if not available("openvino"):
            for n in names:
                if n.startswith("ov-"):
                    skipped[n] = "openvino not installed (pip install 'lso-deploy[openvino]')"
        elif "ov-bf16" in names:
            from lso.runtime.openvino_runner import cpu_bf16_support

            has_bf16, why = cpu_bf16_support()
            if not has_bf16:
                skipped["ov-bf16"] = f"no native BF16 on this CPU: {why}"
        if not available("onnxruntime") or not available("onnx"):
            for n in names:
                if n.startswith(("ort", "ov-")):
                    skipped[n] = "onnx/onnxruntime not installed (pip install 'lso-deploy[onnx]')"
        else:
            from lso.export import ParityCase, export_onnx
            from lso.export.passes import DEFAULT_CHANNEL_MULTIPLE, DEFAULT_SOLVER_CHUNK, save_chunked

            log.info("exporting %s to ONNX (the portable graph: FP16 and the TensorRT INT8 flavour)", checkpoint_label)
            fp32 = export_onnx(model, work / "model.onnx", cases=[ParityCase(4, 64, 64)])
            for name, ov_precision in (("ov-fp32", "fp32"), ("ov-bf16", "bf16")):
                if name in names and name not in skipped:  # OpenVINO on the portable graph
                    runners[name] = _openvino_runner(fp32, threads, ov_precision)
            cpu = None
            if "ort-fp32" in names or "ort-int8-cpu" in names or "ov-int8-cpu" in names:
                log.info("exporting the ONNX Runtime CPU graph (channels aligned; solver chunks added last)")
                cpu = export_onnx(model, work / "model.cpu.onnx", cases=[ParityCase(4, 64, 64)],
                                  align_channels=DEFAULT_CHANNEL_MULTIPLE)
            if "ort-fp32" in names:
                runners["ort-fp32"] = _ort_runner(save_chunked(cpu, DEFAULT_SOLVER_CHUNK), threads, "ort-fp32")
            if "ort-fp16" in names:
                import onnx

                from lso.calibration import convert_fp16
                from lso.calibration.fp16 import emulate_fp16

                log.info("FP16 mixed graph (emulated FP16 rounding on CPU)")
                fp16 = convert_fp16(fp32, work / "model.fp16.onnx", feeds=feeds)
                runners["ort-fp16"] = _ort_runner(emulate_fp16(onnx.load(str(fp16))), threads, "ort-fp16")
            int8_cpu = None
            ov_int8 = "ov-int8-cpu" in names and "ov-int8-cpu" not in skipped
            for flavour in ("cpu", "tensorrt"):
                name = f"ort-int8-{flavour}"
                if name in names or (flavour == "cpu" and ov_int8):
                    from lso.calibration import quantize_int8

                    log.info("INT8 graph, %s flavour (output head kept in float, as lso calibrate chooses)", flavour)
                    source = cpu if flavour == "cpu" else fp32  # the cpu flavour runs the ORT CPU graph
                    q = quantize_int8(source, work / f"model.int8.{flavour}.onnx", feeds=feeds, flavour=flavour,
                                      float_blocks=("outc",))
                    if flavour == "cpu":
                        int8_cpu = q
                    if name in names:
                        runners[name] = _ort_runner(save_chunked(q, DEFAULT_SOLVER_CHUNK) if flavour == "cpu" else q,
                                                    threads, name)
            if int8_cpu is not None and ov_int8:
                runners["ov-int8-cpu"] = _openvino_runner(int8_cpu, threads, "fp32")
    for plan in plans:
        name = f"trt-{Path(plan).stem}"
        precision[name] = _plan_precision(plan)
        try:
            runners[name] = _trt_runner(plan, name)
        except Exception as exc:  # TensorRT missing, no GPU, plan not loadable here: reported, not fatal
            skipped[name] = f"{type(exc).__name__}: {exc}"
    return runners, precision, skipped


def _plan_precision(plan: str) -> str:
    from lso.artifacts import read_sidecar

    try:
        side = read_sidecar(plan, verify=False) or {}
    except Exception:  # unreadable sidecar: treated as unknown, checked as fp32 would be too strict
        side = {}
    value = str(side.get("precision", "fp16")).lower()
    return value if value in TOLERANCES else "fp16"


def _comparator_outputs(runners: dict[str, Any], scenes) -> tuple[Any, dict[str, list[np.ndarray]],
                                                                     dict[str, float]]:
    """Run the Polygraphy runners with ``Comparator.run`` on the scenes (one feed per scene, batch 1)."""
    from lso import io_spec
    from lso.deps import require_polygraphy

    comparator = require_polygraphy("polygraphy.comparator")
    feeds = [{io_spec.HR_MSI: np.ascontiguousarray(s.hr_msi[None], dtype=np.float32),
              io_spec.LR_HSI: np.ascontiguousarray(s.lr_hsi[None], dtype=np.float32)} for s in scenes]
    results = comparator.Comparator.run(list(runners.values()), data_loader=feeds)
    outputs: dict[str, list[np.ndarray]] = {}
    seconds: dict[str, float] = {}
    for name, iterations in results.items():
        outputs[name] = [np.asarray(it[next(iter(it.keys()))], dtype=np.float32)[0] for it in iterations]
        seconds[name] = float(sum(it.runtime or 0.0 for it in iterations))
    return results, outputs, seconds


def _comparator_checks(results: Any, reference: list[np.ndarray], precision: dict[str, str]) -> dict[str, Any]:
    """Polygraphy's ``compare_accuracy`` of each of its runners against PyTorch FP32, at the ``max_abs`` bound."""
    from polygraphy.comparator import Comparator
    from polygraphy.comparator.compare import SimpleCompareFunc

    from lso import io_spec

    names = list(results.keys())
    first = results[names[0]][0]
    out_name = next(iter(first.keys())) if names else io_spec.HR_HSI
    results.add([{out_name: ref[None]} for ref in reference], runner_name=REFERENCE)
    checks: dict[str, Any] = {}
    for i, name in enumerate(names):
        atol = TOLERANCES[precision[name]].max_abs
        if atol is None:
            checks[name] = {"checked": False, "reason": f"{precision[name]} has no max_abs bound (ΔPSNR/ΔSAM rows)"}
            continue
        verdict = Comparator.compare_accuracy(results, comparisons=[(len(names), i)],
                                              compare_func=SimpleCompareFunc(atol=atol, rtol=0.0,
                                                                             check_error_stat="max"))
        checks[name] = {"checked": True, "passed": bool(verdict), "atol": atol, "check_error_stat": "max"}
    return checks


def run_parity(runners: dict[str, Any], precision: dict[str, str], scenes, ratio: int) -> dict[str, Any]:
    """Fuse every scene with every runner; metrics vs GT, Δ vs the reference variant, tolerance checks.

    A runner is a callable ``(hr, lr) -> [31, H, W]`` (PyTorch) or a Polygraphy runner (ONNX Runtime,
    TensorRT), which runs through ``Comparator.run``; both give the same figures.
    """
    from lso.metrics import evaluate

    if REFERENCE not in runners:
        raise ValueError(f"the reference variant {REFERENCE!r} must be among the variants")
    scenes = list(scenes)
    per: dict[str, list[dict[str, float]]] = {name: [] for name in runners}
    seconds: dict[str, float] = {name: 0.0 for name in runners}
    poly = {name: run for name, run in runners.items() if _is_polygraphy_runner(run)}
    poly_results, poly_outputs, poly_seconds = _comparator_outputs(poly, scenes) if poly else (None, {}, {})
    seconds.update(poly_seconds)
    references: list[np.ndarray] = []
    for index, scene in enumerate(scenes):
        outputs = {}
        for name, run in runners.items():
            if name in poly:
                outputs[name] = poly_outputs[name][index]
                continue
            t0 = time.perf_counter()
            outputs[name] = np.asarray(run(scene.hr_msi, scene.lr_hsi), dtype=np.float32)
            seconds[name] += time.perf_counter() - t0
        ref = outputs[REFERENCE]
        references.append(ref)
        ref_metrics = evaluate(scene.gt, ref, ratio)
        for name, out in outputs.items():
            m = evaluate(scene.gt, out, ratio)
            m.update(dpsnr=ref_metrics["psnr"] - m["psnr"], dsam=m["sam"] - ref_metrics["sam"],
                     max_abs=float(np.abs(out - ref).max()),
                     fidelity_psnr=float(evaluate(np.clip(ref, 0, 1), out, ratio)["psnr"]))
            per[name].append({"scene": scene.name, **m})
    rows = []
    for name, items in per.items():
        mean = {k: float(np.mean([it[k] for it in items])) for k in ("psnr", "sam", "ergas", "ssim", "dpsnr", "dsam",
                                                                       "fidelity_psnr")}
        mean["max_abs"] = float(max(it["max_abs"] for it in items))
        bad = [] if name == REFERENCE else violations(precision[name], mean)
        rows.append({"variant": name, "precision": precision[name], **mean, "seconds": seconds[name],
                     "tolerance": TOLERANCES[precision[name]].to_dict(), "passed": not bad, "violations": bad,
                     "per_scene": items})
    if poly:
        checks = _comparator_checks(poly_results, references, precision)
        for row in rows:
            row["backend"] = "polygraphy" if row["variant"] in poly else "pytorch"
            if row["variant"] in checks:
                row["comparator"] = checks[row["variant"]]
    return {"rows": rows, "passed": all(r["passed"] for r in rows)}


def markdown(result: dict[str, Any], meta: dict[str, Any]) -> str:
    from lso.benchmarks._report import markdown_table

    def bound(tol: dict, key: str) -> str:
        return "-" if tol.get(key) is None else f"≤ {tol[key]:g}"

    table = [[r["variant"], r["precision"], f"{r['psnr']:.3f}", f"{r['sam']:.3f}", f"{r['ergas']:.3f}",
              f"{r['ssim']:.4f}", f"{r['dpsnr']:+.4f}", f"{r['dsam']:+.4f}", f"{r['max_abs']:.2e}",
              f"{r['fidelity_psnr']:.1f}",
              "reference" if r["variant"] == REFERENCE else
              ("ok" if r["passed"] else "**FAIL** " + "; ".join(r["violations"]))] for r in result["rows"]]
    tol_rows = [[p, bound(t.to_dict(), "dpsnr"), bound(t.to_dict(), "dsam"), bound(t.to_dict(), "max_abs")]
                for p, t in TOLERANCES.items()]
    lines = [f"# Parity: every backend x precision vs PyTorch FP32 ({meta['checkpoint']})", "",
             f"{meta['scenes']} held-out scenes ({meta['source']}), {meta['size']}², x{meta['ratio']}. Metrics vs "
             "ground truth (outputs clamped to [0, 1]); Δ vs PyTorch FP32 with the reference solver (positive = "
             "worse); max |Δ| over all pixels; fidelity = PSNR vs PyTorch FP32. FP16 = mixed graph with FP16 "
             "rounding emulated on CPU; INT8 = Q/DQ graphs run by ONNX Runtime (CPU), output head in float. "
             "ONNX Runtime and TensorRT variants run through Polygraphy's Comparator.", "",
             markdown_table(["variant", "precision", "PSNR", "SAM °", "ERGAS", "SSIM", "ΔPSNR dB", "ΔSAM °", "max |Δ|",
                             "fidelity dB", "tolerance"], table), "",
             "Tolerances (`lso.tolerances`, shared with the tests):", "",
             markdown_table(["precision", "ΔPSNR dB", "ΔSAM °", "max |Δ|"], tol_rows)]
    if meta.get("skipped"):
        lines += ["", "Not run here: " + "; ".join(f"{k} ({v})" for k, v in meta["skipped"].items())]
    lines += ["", f"Result: **{'all within tolerance' if result['passed'] else 'TOLERANCE MISSED'}**."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from lso.checkpoint import add_config_argument

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="checkpoint, or @demo (default: the bundled demo weights)")
    add_config_argument(parser)
    parser.add_argument("--h5", help="held-out scenes from a community-format .h5 file (default: synthetic held-out)")
    parser.add_argument("--scenes", type=int, default=4, help="number of scenes (synthetic: at most 8)")
    parser.add_argument("--size", type=int, default=256, help="scene size (center crop for --h5)")
    parser.add_argument("--ratio", type=int, default=4, help="scale ratio")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                        help=f"comma list of variants (default: {', '.join(DEFAULT_VARIANTS)}; all: "
                             f"{', '.join(VARIANTS)})")
    parser.add_argument("--backend", action="append", default=[], choices=sorted(BACKEND_VARIANTS),
                        help="add every variant of this backend (openvino: " + ", ".join(BACKEND_VARIANTS["openvino"])
                             + "; repeatable)")
    parser.add_argument("--plan", action="append", default=[], help="TensorRT plan(s) to add (needs a GPU)")
    parser.add_argument("--calib-count", type=int, default=8, help="calibration scenes for the FP16/INT8 graphs")
    parser.add_argument("--calib-size", type=int, default=128, help="calibration scene size")
    parser.add_argument("--threads", type=int, help="ONNX Runtime / OpenVINO / torch threads (default: all cores)")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"), help="results folder")
    parser.add_argument("--name", default="parity", help="results file stem")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    import torch

    from lso import load_checkpoint
    from lso.benchmarks._report import write_results
    from lso.calibration import calibration_feeds
    from lso.calibration.feeds import held_out_scenes
    from lso.checkpoint import parse_config_arg
    from lso.data.sources import SceneSource
    from lso.errors import InputError

    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    for backend in args.backend:
        names += [n for n in BACKEND_VARIANTS[backend] if n not in names]
    if REFERENCE not in names:
        names.insert(0, REFERENCE)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.checkpoint:
        checkpoint, label = args.checkpoint, Path(args.checkpoint).name
    else:
        from lso.weights import demo_checkpoint

        checkpoint = str(demo_checkpoint())
        label = Path(checkpoint).name
    model = load_checkpoint(checkpoint, parse_config_arg(args.config))
    if args.h5:
        with SceneSource(args.h5, size=args.size, centre_crop=True) as h5_scenes:
            scenes = list(h5_scenes.degraded(args.ratio, args.scenes, exact=True))
        source = Path(args.h5).name
    else:
        if args.scenes > 8:
            raise InputError(f"--scenes {args.scenes}: the synthetic held-out split has 8 scenes")
        scenes = held_out_scenes(args.scenes, size=args.size, ratio=args.ratio)
        source = "synthetic held-out split"
    needs_feeds = any(n in names for n in ("ort-fp16", "ort-int8-cpu", "ort-int8-tensorrt", "ov-int8-cpu"))
    feeds = (list(calibration_feeds(count=args.calib_count, size=args.calib_size, ratio=args.ratio, min_count=1))
             if needs_feeds else None)
    with tempfile.TemporaryDirectory(prefix="lso-parity-") as tmp:
        runners, precision, skipped = build_variants(model, label, Path(tmp), names, feeds=feeds,
                                                     threads=args.threads, plans=args.plan)
        for name, why in skipped.items():
            log.warning("%s not run: %s", name, why)
        log.info("fusing %d scene(s) with %d variant(s)", len(scenes), len(runners))
        result = run_parity(runners, precision, scenes, args.ratio)
    meta = {"checkpoint": label, "scenes": len(scenes), "source": source, "size": args.size, "ratio": args.ratio,
            "skipped": skipped}
    md = markdown(result, meta)
    write_results(args.name, {**meta, "tolerances": {k: v.to_dict() for k, v in TOLERANCES.items()}, **result}, md,
                  Path(args.out))
    print(md)
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
