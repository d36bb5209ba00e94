"""Precision report: FP16 (mixed vs naive) and INT8 (float-block curve, CPU speed-up) against FP32 PyTorch.

    python benchmarks/precision.py [--checkpoint PATH] [--scenes 8] [--size 256] [--int8-size 128]

Writes ``benchmarks/results/precision_fp16.{json,md}`` and ``precision_int8.{json,md}``.

- The checkpoint (default: the bundled demo weights) is exported to FP32 ONNX (``lso.export.export_onnx``).
- Measured on the held-out synthetic evaluation scenes (``split_seeds("eval")``) at x4; calibration on
  synthetic training scenes; the INT8 sensitivity ranking on validation scenes (training seeds after
  the calibration ones), so the held-out scenes never choose anything.
- ΔPSNR = PSNR(FP32 PyTorch vs GT) - PSNR(variant vs GT), ΔSAM = SAM(variant) - SAM(FP32), fidelity
  PSNR = PSNR(variant vs FP32 PyTorch); outputs clamped to [0, 1].
- FP16 is measured with :func:`lso.calibration.fp16.emulate_fp16` (every FP16 tensor rounded to FP16;
  ONNX Runtime on CPU does not round FP16 intermediates): see that module for what it does not model.
- INT8 is run by ONNX Runtime (CPU) on the Q/DQ graphs themselves; latency is ONNX Runtime CPU, median
  of ``--repeats`` runs, FP32 graph measured in the same process.
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lso.tolerances import bound

log = logging.getLogger("lso.benchmarks.precision")

FP16_TARGET = {"dpsnr": bound("fp16", "dpsnr"), "dsam": bound("fp16", "dsam")}  # the one tolerance table


def _checkpoint_info(path: Path) -> dict[str, Any]:
    from lso.artifacts import sha256_file

    info: dict[str, Any] = {"path": str(path), "sha256": sha256_file(path)}
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        info.update({k: meta[k] for k in ("step", "val_psnr") if k in meta})
    return info


def _resolve_checkpoint(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    from lso.weights import demo_checkpoint

    return demo_checkpoint()


def _summary(comp) -> dict[str, float]:
    return {"dpsnr": comp.dpsnr, "dsam": comp.dsam, "fidelity_psnr": comp.fidelity_psnr}


# ----------------------------------------------------------------------------------- FP16
def run_fp16(fp32_path: Path, scenes, reference, feeds, work: Path) -> dict[str, Any]:
    import onnx

    from lso.calibration import fp16 as F
    from lso.calibration import graph as G
    from lso.calibration.accuracy import compare, ort_runner
    from lso.calibration.source import graph_config, mac_feed

    model = onnx.load(str(fp32_path))
    absmax = G.activation_absmax(model, feeds)
    macs = G.conv_macs(model, mac_feed(graph_config(model, {}), model))
    full = F.fp32_islands(model, absmax=absmax)
    solver, softmax = G.solver_nodes(model), G.softmax_nodes(model)
    variants = {
        "FP32 graph (ONNX Runtime)": None,
        "naive FP16 (converter defaults: solver and softmax FP16)": {},
        "mixed without the solver island (solver FP16)": {k: v for k, v in full.items() if k not in solver},
        "mixed without the softmax island (softmax FP16)": {k: v for k, v in full.items() if k not in softmax},
        "mixed FP16 (lso calibrate --precision fp16)": full,
    }
    rows: list[dict[str, Any]] = []
    for name, islands in variants.items():
        t0 = time.perf_counter()
        if islands is None:
            comp = compare(ort_runner(model), scenes, reference)
            rows.append({"variant": name, **_summary(comp), "fp32_nodes": None, "conv_mac_fraction_fp16": 0.0})
        else:
            if islands:
                model16 = F.to_mixed_fp16(model, islands)
            else:
                model16 = F.to_naive_fp16(model)
            summary = F.fp16_summary(model16, macs)
            comp = compare(ort_runner(F.emulate_fp16(model16)), scenes, reference)
            rows.append({"variant": name, **_summary(comp), "fp32_nodes": summary["nodes_fp32"],
                         "conv_mac_fraction_fp16": summary["conv_mac_fraction_fp16"],
                         "per_scene": comp.rows})
            if islands is full:
                as_is = compare(ort_runner(model16), scenes, reference)
                rows.append({"variant": "mixed FP16 run by ONNX Runtime CPU as is (FP16 intermediates NOT "
                                        "rounded: not a measure of FP16)", **_summary(as_is),
                             "fp32_nodes": summary["nodes_fp32"],
                             "conv_mac_fraction_fp16": summary["conv_mac_fraction_fp16"]})
        log.info("%-60s ΔPSNR %+.4f dB  ΔSAM %+.4f°  (%.0f s)", name, rows[-1]["dpsnr"], rows[-1]["dsam"],
                 time.perf_counter() - t0)
    mixed = next(r for r in rows if r["variant"].startswith("mixed FP16 ("))
    reasons: dict[str, int] = {}
    for reason in full.values():
        key = reason.split(":")[0].split(" (")[0]
        reasons[key] = reasons.get(key, 0) + 1
    return {"rows": rows, "fp32_island_reasons": reasons,
            "targets": FP16_TARGET,
            "target_met": bool(mixed["dpsnr"] <= FP16_TARGET["dpsnr"] and mixed["dsam"] <= FP16_TARGET["dsam"]),
            "max_activation": max(absmax.values()) if absmax else None}


def fp16_markdown(data: dict[str, Any]) -> str:
    from lso.benchmarks._report import markdown_table

    res = data["fp16"]
    rows = [[r["variant"], f"{r['dpsnr']:+.4f}", f"{r['dsam']:+.4f}", f"{r['fidelity_psnr']:.2f}",
             "–" if r["fp32_nodes"] is None else r["fp32_nodes"], f"{100 * r['conv_mac_fraction_fp16']:.1f} %"]
            for r in res["rows"]]
    table = markdown_table(["variant", "ΔPSNR (dB)", "ΔSAM (°)", "fidelity PSNR (dB)", "FP32 nodes",
                            "conv MACs in FP16"], rows)
    ck = data["checkpoint"]
    mixed = next(r for r in res["rows"] if r["variant"].startswith("mixed FP16 ("))
    naive = next(r for r in res["rows"] if r["variant"].startswith("naive"))
    no_solver = next(r for r in res["rows"] if "without the solver" in r["variant"])
    no_softmax = next(r for r in res["rows"] if "without the softmax" in r["variant"])
    reading = (f"Fidelity to FP32 PyTorch: mixed {mixed['fidelity_psnr']:.2f} dB vs naive "
               f"{naive['fidelity_psnr']:.2f} dB ({mixed['fidelity_psnr'] - naive['fidelity_psnr']:+.2f} dB); "
               f"without the solver island {no_solver['fidelity_psnr']:.2f} dB, without the softmax island "
               f"{no_softmax['fidelity_psnr']:.2f} dB. "
               "ΔPSNR/ΔSAM against the ground truth at the 1e-3 level are within scene-to-scene noise (their sign "
               "varies by scene: per-scene values are in the JSON); the fidelity column is the direct measure of "
               "what each FP32 island buys.")
    return "\n".join([
        f"# FP16 precision: mixed (FP32 islands) vs naive, x{data['ratio']}",
        "",
        f"Checkpoint `{Path(ck['path']).name}` (step {ck.get('step', '?')}, validation PSNR "
        f"{float(ck.get('val_psnr', 'nan')):.2f} dB, sha256 {ck['sha256'][:12]}…); {data['scenes']} held-out synthetic "
        f"scenes ({', '.join(data['scene_names'])}) at {data['size']}×{data['size']}, x{data['ratio']}. FP32 PyTorch: "
        f"mean PSNR {data['fp32_psnr']:.3f} dB, SAM {data['fp32_sam']:.3f}°.",
        "",
        table,
        "",
        f"Target (issue 6): ΔPSNR ≤ {FP16_TARGET['dpsnr']} dB and ΔSAM ≤ {FP16_TARGET['dsam']}° for the mixed "
        f"graph: **{'met' if res['target_met'] else 'NOT met'}** (ΔPSNR {mixed['dpsnr']:+.4f} dB, "
        f"ΔSAM {mixed['dsam']:+.4f}°).",
        reading,
        "",
        f"FP32 islands of the mixed graph by reason: {res['fp32_island_reasons']}. Largest activation on the "
        f"calibration feeds: {res['max_activation']:.4g} (FP16 max 65504).",
        "",
        "How FP16 is measured on a CPU: `lso.calibration.fp16.emulate_fp16` rewrites the FP16 graph into an FP32 "
        "graph in which every tensor the FP16 graph stores in FP16 (weights and every FP16 node's output) is rounded "
        "by an explicit Cast(FLOAT16)→Cast(FLOAT) pair. It models FP16 storage of all activations and weights and the "
        "FP32 islands exactly; it does not model FP16 accumulation inside convolutions (accumulates in FP32, like "
        "tensor-core kernels by default), TensorRT's fusions (which round less often: the emulation is pessimistic "
        "there), or the "
        "internal precision of TensorRT's FP16 softmax/transcendental kernels. The row 'run by ONNX Runtime CPU as is' "
        "shows why the emulation is needed: ONNX Runtime's CPU provider computes chains of FP16 nodes in FP32.",
        f"Calibration (range check): {data['calibration']['count']} synthetic training scenes at "
        f"{data['calibration']['shapes']['hr_msi'][2]}².",
    ])


# ----------------------------------------------------------------------------------- INT8
def _latency_pair(models: dict[str, Any], feed, repeats: int, threads: int | None) -> dict[str, float]:
    from lso.calibration.int8 import ort_latency

    return {name: ort_latency(m, feed, repeats=repeats, threads=threads) for name, m in models.items()}


def run_int8(fp32_path: Path, scenes, reference, feeds, val_scenes, work: Path, *, ks: Sequence[int],
             latency_feed, repeats: int, threads: int | None, method: str) -> dict[str, Any]:
    import onnx

    from lso.calibration import int8 as Q
    from lso.calibration.accuracy import ort_reference

    cache = work / "calibration.json"
    t0 = time.perf_counter()
    Q.calibrate_ranges(fp32_path, feeds, cache, method=method)
    log.info("calibration: %.0f s", time.perf_counter() - t0)
    val_ref = ort_reference(fp32_path, val_scenes)
    t0 = time.perf_counter()
    ranking = Q.sensitivity_sweep(fp32_path, val_scenes, val_ref, calibration_cache=cache, method=method)
    log.info("sweep: %.0f s", time.perf_counter() - t0)
    ks = [k for k in ks if k <= len(ranking)]
    points = Q.float_block_curve(fp32_path, ranking, scenes, reference, calibration_cache=cache, ks=ks, method=method,
                                 flavours=("tensorrt", "cpu"), latency_feed=latency_feed, latency_repeats=repeats,
                                 threads=threads, workdir=work)
    fp32_model = onnx.load(str(fp32_path))
    fp32_latency = Q.ort_latency(fp32_model, latency_feed, repeats=repeats, threads=threads)
    # choose as `lso calibrate` does: on the validation scenes (the held-out ones only measure the choice)
    val_points = Q.float_block_curve(fp32_path, ranking, val_scenes, val_ref, calibration_cache=cache, ks=ks,
                                     method=method, flavours=("tensorrt",), workdir=work)
    val_choice, met = Q.choose_float_blocks(val_points, margin=Q.DEFAULT_SELECTION_MARGIN)
    chosen = next(p for p in points if p.k == val_choice.k)
    # the chosen point once more, FP32 interleaved, for the speed-up figure
    q_cpu = work / "chosen.cpu.onnx"
    Q.quantize_model(fp32_path, q_cpu, flavour="cpu", float_blocks=chosen.float_blocks, calibration_cache=cache,
                     method=method)
    q_model = onnx.load(str(q_cpu))
    lat: dict[str, list[float]] = {"fp32": [], "int8_cpu": []}
    for _ in range(3):
        pair = _latency_pair({"fp32": fp32_model, "int8_cpu": q_model}, latency_feed, repeats, threads)
        for k, v in pair.items():
            lat[k].append(v)
    speed = {k: float(np.median(v)) for k, v in lat.items()}
    return {
        "calibration_method": method,
        "ranking": ranking,
        "validation_scenes": [s.name for s in val_scenes],
        "points": [p.to_dict() for p in points],
        "fp32_latency_s": fp32_latency,
        "validation_curve": [{"k": p.k, "dpsnr": p.dpsnr, "int8_mac_fraction": p.int8_mac_fraction}
                             for p in val_points],
        "chosen": {"k": chosen.k, "float_blocks": chosen.float_blocks, "target_met_on_validation": met,
                   "target_met_on_held_out": bool(chosen.dpsnr <= Q.DEFAULT_TARGET_DPSNR
                                                  and chosen.int8_mac_fraction >= Q.DEFAULT_MIN_INT8_MACS),
                   "dpsnr_tensorrt": chosen.dpsnr_by_flavour.get("tensorrt"),
                   "dpsnr_cpu": chosen.dpsnr_by_flavour.get("cpu"), "dsam": chosen.dsam,
                   "int8_mac_fraction": chosen.int8_mac_fraction},
        "speedup": {"fp32_s": speed["fp32"], "int8_cpu_s": speed["int8_cpu"],
                    "speedup": speed["fp32"] / speed["int8_cpu"]},
        "targets": {"dpsnr": Q.DEFAULT_TARGET_DPSNR, "min_int8_macs": Q.DEFAULT_MIN_INT8_MACS,
                    "selection_margin": Q.DEFAULT_SELECTION_MARGIN},
    }


def int8_markdown(data: dict[str, Any]) -> str:
    from lso.benchmarks._report import markdown_table

    res = data["int8"]
    rows = []
    for p in res["points"]:
        lat = p["latency_s"]
        rows.append([p["k"], ", ".join(p["float_blocks"]) or "–", f"{100 * p['int8_mac_fraction']:.1f} %",
                     f"{p['dpsnr_by_flavour'].get('tensorrt', float('nan')):+.4f}",
                     f"{p['dpsnr_by_flavour'].get('cpu', float('nan')):+.4f}", f"{p['dsam']:+.4f}",
                     f"{1000 * lat.get('tensorrt', float('nan')):.0f}", f"{1000 * lat.get('cpu', float('nan')):.0f}"])
    table = markdown_table(["float blocks (k)", "kept in float (worst first)", "conv MACs in INT8",
                            "ΔPSNR tensorrt (dB)", "ΔPSNR cpu (dB)", "ΔSAM tensorrt (°)",
                            "latency tensorrt flavour (ms)", "latency cpu flavour (ms)"], rows)
    rank = markdown_table(["block", "ΔPSNR when quantized alone (dB)", "conv MACs (64² x4)"],
                          [[r["block"], f"{r['dpsnr']:+.4f}", r["macs"]] for r in res["ranking"]])
    ck, ch, sp = data["checkpoint"], res["chosen"], res["speedup"]
    val_curve = ", ".join(f"k={v['k']}: {v['dpsnr']:+.3f} dB" for v in res["validation_curve"])
    lat_size = data["latency_size"]
    return "\n".join([
        f"# INT8 precision: blocks kept in float vs ΔPSNR vs CPU latency, x{data['ratio']}",
        "",
        f"Checkpoint `{Path(ck['path']).name}` (step {ck.get('step', '?')}, validation PSNR "
        f"{float(ck.get('val_psnr', 'nan')):.2f} dB, sha256 {ck['sha256'][:12]}…). ΔPSNR on {data['scenes']} held-out "
        f"synthetic scenes at {data['int8_size']}×{data['int8_size']} (x{data['ratio']}) against FP32 PyTorch; "
        f"latency: ONNX Runtime CPU, one {lat_size}×{lat_size} x{data['ratio']} image, median of {data['repeats']} "
        f"runs (FP32 graph: {1000 * res['fp32_latency_s']:.0f} ms in the same run).",
        "",
        table,
        "",
        f"Chosen as `lso calibrate` chooses — the first k whose tensorrt-flavour ΔPSNR on the *validation* scenes is "
        f"≤ {res['targets']['selection_margin']} x {res['targets']['dpsnr']} dB with "
        f"≥ {100 * res['targets']['min_int8_macs']:.0f} % of conv MACs in INT8 "
        f"(validation curve: {val_curve}): "
        f"**k = {ch['k']}** ({', '.join(ch['float_blocks']) or 'no block'} in float). On the held-out scenes: "
        f"ΔPSNR {ch['dpsnr_tensorrt']:+.4f} dB (tensorrt), {ch['dpsnr_cpu']:+.4f} dB (cpu), "
        f"{100 * ch['int8_mac_fraction']:.1f} % of conv MACs in INT8: target "
        f"**{'met' if ch['target_met_on_held_out'] else 'NOT met'}**.",
        f"CPU speed-up of the cpu flavour at that point (ONNX Runtime, {lat_size}², interleaved with FP32, median of 3x"
        f"{data['repeats']}): FP32 {1000 * sp['fp32_s']:.0f} ms -> INT8 {1000 * sp['int8_cpu_s']:.0f} ms = "
        f"**{sp['speedup']:.2f}x**. The tensorrt flavour (symmetric S8 activations, zero points 0) is not meant for "
        f"ONNX Runtime's CPU kernels; its latency column shows why there are two flavours.",
        "",
        f"Sensitivity ranking (each block quantized alone; {len(res['validation_scenes'])} validation scenes — "
        f"synthetic training seeds {', '.join(res['validation_scenes'])}, not the held-out ones — at "
        f"{data['val_size']}², "
        f"reference: FP32 graph):",
        "",
        rank,
        "",
        f"Calibration: {data['calibration']['count']} synthetic training scenes at "
        f"{data['calibration']['shapes']['hr_msi'][2]}², method {res['calibration_method']}, shared by both flavours. "
        "Quantized: convolutions only (per-tensor activations, per-channel weights); solver, softmaxes and all other "
        "arithmetic in float. Both flavours are evaluated by ONNX Runtime on the Q/DQ graphs (the tensorrt flavour's "
        "accuracy on TensorRT itself is unverified here: no GPU).",
    ])


# ----------------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="checkpoint (default: the bundled demo weights)")
    parser.add_argument("--scenes", type=int, default=8, help="held-out scenes (at most 8)")
    parser.add_argument("--size", type=int, default=256, help="scene size of the FP16 table")
    parser.add_argument("--int8-size", type=int, default=128, help="scene size of the INT8 curve")
    parser.add_argument("--ratio", type=int, default=4, help="scale ratio")
    parser.add_argument("--calib-count", type=int, default=16, help="calibration scenes")
    parser.add_argument("--calib-size", type=int, default=256, help="calibration scene size")
    parser.add_argument("--val-count", type=int, default=4, help="validation scenes of the INT8 sweep")
    parser.add_argument("--val-size", type=int, default=128, help="validation scene size of the INT8 sweep")
    parser.add_argument("--latency-size", type=int, default=256, help="image size of the latency measurements")
    parser.add_argument("--repeats", type=int, default=3, help="latency runs per measurement (median)")
    parser.add_argument("--ks", default="0,1,2,3,4,5,6,8,10,12,16", help="numbers of float blocks on the curve")
    parser.add_argument("--method", default="minmax", choices=("minmax", "percentile", "entropy"))
    parser.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (default: ORT's)")
    parser.add_argument("--skip-fp16", action="store_true")
    parser.add_argument("--skip-int8", action="store_true")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    import torch

    from lso import load_checkpoint
    from lso.benchmarks._report import write_results
    from lso.calibration import calibration_feeds
    from lso.calibration.accuracy import torch_reference
    from lso.calibration.feeds import held_out_scenes
    from lso.data.sources import SceneSource
    from lso.export import export_onnx
    from lso.metrics import psnr, sam

    if args.threads:
        torch.set_num_threads(args.threads)
    ckpt = _resolve_checkpoint(args.checkpoint)
    ck_info = _checkpoint_info(ckpt)
    model = load_checkpoint(ckpt)
    with tempfile.TemporaryDirectory(prefix="lso-precision-") as tmp:
        work = Path(tmp)
        fp32_path = export_onnx(model, work / "model.onnx", check=False)
        feeds = calibration_feeds(count=args.calib_count, size=args.calib_size, ratio=args.ratio, min_count=1)
        common = {"checkpoint": ck_info, "ratio": args.ratio, "calibration": feeds.describe()}
        if not args.skip_fp16:
            scenes = held_out_scenes(args.scenes, size=args.size, ratio=args.ratio)
            reference = torch_reference(model, scenes)
            pairs = list(zip(scenes, reference, strict=True))
            data = {**common, "scenes": len(scenes), "scene_names": [s.name for s in scenes], "size": args.size,
                    "fp32_psnr": float(np.mean([psnr(s.gt, np.clip(r, 0, 1)) for s, r in pairs])),
                    "fp32_sam": float(np.mean([sam(s.gt, np.clip(r, 0, 1)) for s, r in pairs])),
                    "fp16": run_fp16(fp32_path, scenes, reference, feeds, work)}
            md = fp16_markdown(data)
            print(md)
            if not args.no_write:
                write_results("precision_fp16", data, md)
        if not args.skip_int8:
            scenes = held_out_scenes(args.scenes, size=args.int8_size, ratio=args.ratio)
            reference = torch_reference(model, scenes)
            val = list(SceneSource(split="train", size=args.val_size).degraded(
                args.ratio, args.val_count, offset=args.calib_count, exact=True))
            lat_scene = held_out_scenes(1, size=args.latency_size, ratio=args.ratio)[0]
            latency_feed = {"hr_msi": lat_scene.hr_msi[None], "lr_hsi": lat_scene.lr_hsi[None]}
            ks = [int(k) for k in args.ks.split(",") if k.strip()]
            data = {**common, "scenes": len(scenes), "scene_names": [s.name for s in scenes],
                    "int8_size": args.int8_size, "val_size": args.val_size, "latency_size": args.latency_size,
                    "repeats": args.repeats, "threads": args.threads,
                    "int8": run_int8(fp32_path, scenes, reference, feeds, val, work, ks=ks, latency_feed=latency_feed,
                                     repeats=args.repeats, threads=args.threads, method=args.method)}
            md = int8_markdown(data)
            print(md)
            if not args.no_write:
                write_results("precision_int8", data, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
