"""BF16 sensitivity of LSO: which parts of the network tolerate BF16, in PyTorch and in OpenVINO (issue 20).

    python benchmarks/bf16_sensitivity.py [--checkpoint PATH] [--sweep-size 128] [--scenes 4] [--size 256]
    python benchmarks/bf16_sensitivity.py --skip-torch --solver-chunk 256 --name bf16_sensitivity_chunk256

Writes ``benchmarks/results/bf16_sensitivity.{json,md}`` (``--name``: another name). ``--solver-chunk``/
``--align-channels`` export the OpenVINO table's graph with those CPU passes, as ``lso export --target cpu`` may
choose them (the islands then sit inside the chunked solver's ``Scan`` body).

1. **PyTorch** (independent of OpenVINO): the model runs in its graph form (the computation the ONNX export
   holds: bicubic resizes as matrix products, folded attention features, ``solve_folded_graph``), every part
   of it a *region* that runs either FP32 or BF16 under ``torch.autocast("cpu", dtype=torch.bfloat16)``:
   the convolution blocks (the spatial encoder's head, residual blocks and tail, ``inc``, ``down1/2``,
   ``up1/2``, ``outc``), the spectral blocks (``process1..3``: features convolution and attention products)
   and the FP32 islands of :mod:`lso.islands` (solver, softmax, coordinate grid, bicubic). A region's output
   is cast back to FP32 where it ends, so "only region k in BF16" measures k alone. Rows: everything BF16;
   BF16 with the islands FP32 (what the OpenVINO BF16 mode aims at); each region alone in BF16 (on the
   held-out scenes, and on validation scenes that rank the regions); and the curve "BF16 with the islands
   and the ``k`` most sensitive convolution regions (validation ranking) FP32".
2. **OpenVINO** (``lso.runtime.openvino_runner.OpenVinoRunner``) on the FP32 ONNX export: FP32, BF16 with
   islands, OpenVINO's default (BF16 everywhere on a BF16 CPU): ΔPSNR/ΔSAM on the held-out scenes and time
   (median of interleaved runs, one process), plus the compiled model's execution precision per operation
   (how many operations of each island still run BF16).

ΔPSNR = PSNR(FP32 PyTorch vs GT) - PSNR(variant vs GT), ΔSAM likewise in degrees (:mod:`lso.calibration.accuracy`);
the budget is the FP16 one of :mod:`lso.tolerances`.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lso.tolerances import bound

log = logging.getLogger("lso.benchmarks.bf16_sensitivity")

TARGET = {"dpsnr": bound("fp16", "dpsnr"), "dsam": bound("fp16", "dsam")}
ISLAND_REGIONS = ("solver", "softmax", "coordinate_grid", "bicubic")


# ----------------------------------------------------------------------------------- PyTorch regions
class BF16Regions:
    """An LSO model split into named regions, each run in FP32 or BF16 (``active``: the BF16 ones).

    Module regions are wrapped in place (the model given is changed: pass a copy); the function regions
    (solver, softmax, coordinate grid, bicubic) are switched while :meth:`patched` is entered.
    """

    def __init__(self, model: Any) -> None:
        import torch
        from torch import nn

        self.active: set[str] = set()
        self.model = model.float().eval()
        regions = self

        class _Region(nn.Module):
            def __init__(self, name: str, block: nn.Module) -> None:
                super().__init__()
                self.region, self.block = name, block

            def forward(self, *args: Any) -> Any:
                on = self.region in regions.active
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=on):
                    out = self.block(*(a.float() if torch.is_tensor(a) and a.is_floating_point() else a
                                       for a in args))
                return out.float()

        names: list[str] = []
        encoder = self.model.spatial_encoder
        encoder.head = _Region("spatial_encoder.head", encoder.head)
        names.append("spatial_encoder.head")
        for i in range(len(encoder.body)):
            name = f"spatial_encoder.body.{i}"
            setattr(encoder.body, str(i), _Region(name, encoder.body[i]))
            names.append(name)
        for name in ("inc", "down1", "down2", "process1", "process2", "process3", "up1", "up2", "outc"):
            setattr(self.model, name, _Region(name, getattr(self.model, name)))
            names.append(name)
        self.conv_regions: tuple[str, ...] = tuple(names)
        self.regions: tuple[str, ...] = (*names, *ISLAND_REGIONS)

    @contextlib.contextmanager
    def patched(self) -> Iterator[BF16Regions]:
        """The graph form (``lso.model._in_graph`` true) and the function regions switched by :attr:`active`."""
        import torch
        from torch.overrides import TorchFunctionMode

        import lso.model as M

        regions = self
        orig_resize, orig_grid, orig_solve = M.resize_bicubic, M.coordinate_grid, M.solve_folded_graph

        def resize(x: Any, like: Any) -> Any:
            on = "bicubic" in regions.active
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=on):
                return orig_resize(x.float(), like).float()

        def grid(ref: Any, extent: Any = None, full_size: Any = None, dtype: Any = None) -> Any:
            on = "coordinate_grid" in regions.active
            return orig_grid(ref, extent, full_size=full_size,
                             dtype=torch.bfloat16 if on else torch.float32).float()

        def solve(z: Any, weights: Any, channel_view: Any = None) -> Any:
            on = "solver" in regions.active
            kind = torch.bfloat16 if on else torch.float32
            with torch.autocast("cpu", enabled=False):
                return orig_solve(z.to(kind), weights.to(kind), channel_view).float()

        softmaxes = {torch.Tensor.softmax, torch.softmax, torch.nn.functional.softmax}

        class _Softmax(TorchFunctionMode):
            def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
                kwargs = kwargs or {}
                if func in softmaxes:
                    on = "softmax" in regions.active
                    x = args[0].to(torch.bfloat16 if on else torch.float32)
                    with torch.autocast("cpu", enabled=False):
                        return func(x, *args[1:], **kwargs).float()
                return func(*args, **kwargs)

        saved = M._in_graph
        M._in_graph = lambda: True
        M.resize_bicubic, M.coordinate_grid, M.solve_folded_graph = resize, grid, solve
        try:
            with _Softmax():
                yield self
        finally:
            M._in_graph = saved
            M.resize_bicubic, M.coordinate_grid, M.solve_folded_graph = orig_resize, orig_grid, orig_solve

    def runner(self, bf16: Sequence[str]) -> Callable[[Any], np.ndarray]:
        """``scene -> [31, H, W]`` with the regions ``bf16`` in BF16 (call inside :meth:`patched`)."""
        import torch

        unknown = set(bf16) - set(self.regions)
        if unknown:
            raise KeyError(f"unknown regions {sorted(unknown)}; known: {', '.join(self.regions)}")

        def run(scene: Any) -> np.ndarray:
            self.active = set(bf16)
            with torch.no_grad():
                out = self.model(torch.from_numpy(scene.hr_msi)[None], torch.from_numpy(scene.lr_hsi)[None])
            return out[0].float().numpy()

        return run


def _row(name: str, comp: Any, bf16: Sequence[str], **extra: Any) -> dict[str, Any]:
    return {"name": name, "bf16": list(bf16), "dpsnr": comp.dpsnr, "dsam": comp.dsam,
            "fidelity_psnr": comp.fidelity_psnr, "per_scene": [r["dpsnr"] for r in comp.rows], **extra}


def run_torch(model: Any, scenes: Sequence[Any], reference: Sequence[np.ndarray], val_scenes: Sequence[Any],
              val_reference: Sequence[np.ndarray], ks: Sequence[int]) -> dict[str, Any]:
    """The per-region table, the island rows and the FP32-block curve (see the module docstring)."""
    import copy

    from lso.calibration.accuracy import compare

    regions = BF16Regions(copy.deepcopy(model))
    convs = regions.conv_regions
    everything = regions.regions
    out: dict[str, Any] = {"regions": list(everything), "conv_regions": list(convs)}
    with regions.patched():
        graph_fp32 = compare(regions.runner([]), scenes, reference)
        out["graph_form_fp32"] = _row("graph form, FP32 (sanity: equal to the reference)", graph_fp32, [])
        summary = []
        for name, bf16 in (("everything BF16 (islands too)", everything), ("BF16, FP32 islands", convs)):
            t0 = time.perf_counter()
            summary.append(_row(name, compare(regions.runner(bf16), scenes, reference), bf16))
            log.info("%s: %+.3f dB (%.0f s)", name, summary[-1]["dpsnr"], time.perf_counter() - t0)
        out["summary"] = summary
        single = []
        for name in everything:
            held = compare(regions.runner([name]), scenes, reference)
            val = compare(regions.runner([name]), val_scenes, val_reference)
            single.append(_row(name, held, [name], validation_dpsnr=val.dpsnr))
            log.info("only %s BF16: %+.4f dB (validation %+.4f)", name, held.dpsnr, val.dpsnr)
        out["single"] = single
        ranking = [r["name"] for r in sorted((r for r in single if r["name"] in convs),
                                             key=lambda r: -r["validation_dpsnr"])]
        out["ranking"] = ranking
        curve = []
        for k in ks:
            if k > len(ranking):
                continue
            fp32 = ranking[:k]
            lowered = [c for c in convs if c not in fp32]
            comp = compare(regions.runner(lowered), scenes, reference)
            curve.append(_row(f"islands + {k} FP32", comp, lowered, k=k, fp32_blocks=fp32))
            log.info("islands + %d most sensitive FP32: %+.4f dB", k, comp.dpsnr)
        out["curve"] = curve
    return out


# ----------------------------------------------------------------------------------- OpenVINO
def _marks_and_hint(onnx_path: Path, work: Path, threads: int | None) -> Any:
    """The former BF16 mode, for comparison: the island marks in the IR and OpenVINO's BF16 inference precision
    hint (the CPU plugin lowers what it chooses and keeps the marked operations it does not replace)."""
    import openvino as ov

    from lso.runtime.openvino_runner import mark_fp32_islands, openvino_core

    core = openvino_core()
    xml, _ = mark_fp32_islands(onnx_path, work / "marked.xml", core)
    hint = ov.properties.hint
    config: dict[Any, Any] = {hint.inference_precision: ov.Type.bf16,
                              hint.performance_mode: hint.PerformanceMode.LATENCY}
    if threads:
        config[ov.properties.inference_num_threads] = threads
    return core.compile_model(core.read_model(str(xml)), "CPU", config)


def run_openvino(onnx_path: Path, scenes: Sequence[Any], reference: Sequence[np.ndarray], *, threads: int | None,
                 rounds: int, work: Path) -> dict[str, Any]:
    """FP32 / BF16 (FP32 islands) / the former marks+hint BF16 / OpenVINO's default on the held-out scenes, timed
    in one process (interleaved rounds, rotated order)."""
    import onnx
    import torch

    from lso.calibration.accuracy import compare
    from lso.export.graph_query import island_nodes
    from lso.islands import islands_for
    from lso.runtime.openvino_runner import OpenVinoRunner, runtime_precisions

    graph = onnx.load(str(onnx_path))
    islands = set(island_nodes(graph, [i.name for i in islands_for("bf16")]))
    del graph
    runners = {name: OpenVinoRunner(onnx_path, precision=p, threads=threads, verify=False)
               for name, p in (("fp32", "fp32"), ("bf16 (FP32 islands)", "bf16"),
                               ("OpenVINO default (hazard)", "default"))}
    out: dict[str, Any] = {"variants": {}, "runtime": {}}
    with contextlib.ExitStack() as stack:
        for r in runners.values():
            stack.enter_context(r)
        calls: dict[str, Callable[[Any], np.ndarray]] = {}
        for name, r in runners.items():
            def call(scene: Any, r: Any = r) -> np.ndarray:
                y = r.fuse(torch.from_numpy(scene.hr_msi)[None], torch.from_numpy(scene.lr_hsi)[None])
                return np.asarray(y)[0]
            calls[name] = call
            out["runtime"][name] = runtime_precisions(r.compiled_model, islands)
        former = _marks_and_hint(onnx_path, work, threads)
        request = former.create_infer_request()

        def call_former(scene: Any) -> np.ndarray:
            return np.array(request.infer({"hr_msi": scene.hr_msi[None], "lr_hsi": scene.lr_hsi[None]})[0][0])
        former_name = "bf16 hint + island marks (before)"
        calls = {**dict(list(calls.items())[:2]), former_name: call_former, **dict(list(calls.items())[2:])}
        out["runtime"][former_name] = runtime_precisions(former, islands)
        settings = {name: r.settings for name, r in runners.items()}
        settings[former_name] = {"inference_precision": "bf16 (hint)"}
        for name, fn in calls.items():  # accuracy (and a warm-up)
            comp = compare(fn, scenes, reference)
            row = _row(name, comp, [], settings=settings[name],
                       dsam_per_scene=[r["dsam"] for r in comp.rows])
            row.pop("bf16")
            out["variants"][name] = row
            log.info("OpenVINO %s: %+.4f dB, %+.4f deg", name, comp.dpsnr, comp.dsam)
        times: dict[str, list[float]] = {name: [] for name in calls}
        timing_scene = scenes[0]
        names = list(calls)
        for i in range(rounds):
            for name in names[i % len(names):] + names[:i % len(names)]:
                t0 = time.perf_counter()
                calls[name](timing_scene)
                times[name].append(time.perf_counter() - t0)
        for name, ts in times.items():
            if not ts:
                continue
            out["variants"][name]["seconds"] = float(np.median(ts))
            out["variants"][name]["times"] = ts
            out["variants"][name]["speedup_vs_fp32"] = float(np.median(times["fp32"]) / np.median(ts))
    out["timing"] = {"scene": timing_scene.name, "rounds": rounds, "threads": threads}
    return out


# ----------------------------------------------------------------------------------- report
def markdown(data: dict[str, Any]) -> str:
    from lso.benchmarks._report import markdown_table

    passes = ", ".join(f"{k} {v}" for k, v in ((data.get("openvino") or {}).get("graph_passes") or {}).items())
    lines = ["# BF16 sensitivity of LSO (issue 20)" + (f": OpenVINO on the {passes} graph" if passes else ""), "",
             f"Checkpoint: `{Path(data['checkpoint']).name}`, x{data['ratio']}; budget (the FP16 one): "
             f"ΔPSNR ≤ {TARGET['dpsnr']} dB, ΔSAM ≤ {TARGET['dsam']}°. CPU: {data.get('cpu', '?')}.", ""]
    t = data.get("torch")
    if t:
        lines += [f"## PyTorch autocast (BF16), {t['scenes']} held-out scenes at {t['size']}² "
                  f"(ranking on {t['val_scenes']} validation scenes)", "",
                  "Graph form FP32 vs the eager reference: "
                  f"ΔPSNR {t['graph_form_fp32']['dpsnr']:+.2e} dB.", ""]
        rows = [[r["name"], r["dpsnr"], r["dsam"], r["fidelity_psnr"]] for r in t["summary"]]
        lines += [markdown_table(["mode", "ΔPSNR dB", "ΔSAM °", "PSNR vs FP32 dB"], rows), "",
                  "Only one region in BF16 (everything else FP32):", ""]
        rows = [[r["name"], r["dpsnr"], r["dsam"], r["fidelity_psnr"], r["validation_dpsnr"]]
                for r in t["single"]]
        lines += [markdown_table(["region in BF16", "ΔPSNR dB", "ΔSAM °", "PSNR vs FP32 dB", "ΔPSNR validation"],
                                 rows), "",
                  "BF16 with the islands FP32 and the k most sensitive convolution regions (validation ranking) "
                  "FP32:", ""]
        rows = [[r["k"], ", ".join(r["fp32_blocks"]) or "—", r["dpsnr"], r["dsam"]] for r in t["curve"]]
        lines += [markdown_table(["k", "FP32 regions (besides the islands)", "ΔPSNR dB", "ΔSAM °"], rows), ""]
    o = data.get("openvino")
    if o:
        lines += [f"## OpenVINO {o['openvino']}, {o['scenes']} held-out scenes at {o['size']}², "
                  f"{o['timing']['threads'] or 'default'} threads; graph: {passes or 'the plain export'}", ""]
        rows = [[name, v["settings"].get("inference_precision"), v["dpsnr"], v["dsam"], v["fidelity_psnr"],
                 o["runtime"][name]["bf16_ops"], len(o["runtime"][name]["island_ops_in_bf16"]), v["seconds"],
                 v["speedup_vs_fp32"]] for name, v in o["variants"].items()]
        lines += [markdown_table(["mode", "hint", "ΔPSNR dB", "ΔSAM °", "PSNR vs FP32 dB", "ops in BF16",
                                  "island ops in BF16", "s / image (median)", "× FP32"], rows), "",
                  f"Time: {o['timing']['rounds']} interleaved rounds (rotated order) on `{o['timing']['scene']}` in "
                  "one process. Ops in BF16: the compiled model's runtime graph (Reorder/Convert/constants left "
                  "out).", ""]
    for extra in data.get("openvino_large", []):
        rows = [[name, v["dpsnr"], v["dsam"], v["fidelity_psnr"], len(extra["runtime"][name]["island_ops_in_bf16"])]
                for name, v in extra["variants"].items()]
        lines += [f"OpenVINO at {extra['size']}² ({extra['scenes']} held-out scene(s); BF16 rounds indices "
                  "beyond 256):", "",
                  markdown_table(["mode", "ΔPSNR dB", "ΔSAM °", "PSNR vs FP32 dB", "island ops in BF16"], rows), ""]
    if data.get("conclusion"):
        lines += ["## Conclusion", "", data["conclusion"], ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="checkpoint (default: the bundled demo weights)")
    parser.add_argument("--ratio", type=int, default=4)
    parser.add_argument("--sweep-scenes", type=int, default=4, help="held-out scenes of the PyTorch sweep")
    parser.add_argument("--sweep-size", type=int, default=128, help="scene size of the PyTorch sweep")
    parser.add_argument("--val-scenes", type=int, default=2, help="validation scenes ranking the regions")
    parser.add_argument("--scenes", type=int, default=4, help="held-out scenes of the OpenVINO table")
    parser.add_argument("--size", type=int, default=256, help="scene size of the OpenVINO table")
    parser.add_argument("--ks", default="0,1,2,3,4,6,8,10,12", help="numbers of FP32 convolution regions (curve)")
    parser.add_argument("--threads", type=int, default=2, help="threads (torch and OpenVINO)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (OpenVINO)")
    parser.add_argument("--large-size", type=int, default=512, help="scene size of the OpenVINO accuracy check "
                        "beyond 256 px (where BF16 indices round)")
    parser.add_argument("--large-scenes", type=int, default=1, help="held-out scenes at --large-size (0: none)")
    parser.add_argument("--solver-chunk", type=int, default=None,
                        help="export the OpenVINO table's graph with the solver chunked (lso export --solver-chunk)")
    parser.add_argument("--align-channels", type=int, default=None,
                        help="export the OpenVINO table's graph with aligned channels (lso export --align-channels)")
    parser.add_argument("--name", default="bf16_sensitivity", help="results name (benchmarks/results/NAME.{json,md})")
    parser.add_argument("--skip-torch", action="store_true")
    parser.add_argument("--skip-openvino", action="store_true")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    import torch

    from lso import load_checkpoint
    from lso.benchmarks._report import machine_info, write_results
    from lso.calibration.accuracy import torch_reference
    from lso.calibration.feeds import held_out_scenes
    from lso.data.sources import SceneSource
    from lso.weights import demo_checkpoint

    torch.set_num_threads(args.threads)
    ckpt = Path(args.checkpoint) if args.checkpoint else demo_checkpoint()
    model = load_checkpoint(ckpt).eval()
    data: dict[str, Any] = {"checkpoint": str(ckpt), "ratio": args.ratio, "target": TARGET,
                            "cpu": machine_info()["cpu"]}
    if not args.skip_torch:
        scenes = held_out_scenes(args.sweep_scenes, size=args.sweep_size, ratio=args.ratio)
        val = list(SceneSource(split="train", size=args.sweep_size).degraded(args.ratio, args.val_scenes,
                                                                            exact=True))
        ks = [int(k) for k in args.ks.split(",") if k.strip()]
        data["torch"] = {"scenes": len(scenes), "size": args.sweep_size, "val_scenes": len(val),
                         "scene_names": [s.name for s in scenes],
                         **run_torch(model, scenes, torch_reference(model, scenes), val,
                                     torch_reference(model, val), ks)}
    if not args.skip_openvino:
        import openvino

        from lso.export import export_onnx

        scenes = held_out_scenes(args.scenes, size=args.size, ratio=args.ratio)
        reference = torch_reference(model, scenes)
        with tempfile.TemporaryDirectory(prefix="lso-bf16-") as tmp:
            passes = {"solver_chunk": args.solver_chunk, "align_channels": args.align_channels}
            onnx_path = Path(export_onnx(model, Path(tmp) / "model.onnx", check=False, **passes))
            data["openvino"] = {"openvino": openvino.__version__, "scenes": len(scenes), "size": args.size,
                                "graph_passes": {k: v for k, v in passes.items() if v},
                                "scene_names": [s.name for s in scenes],
                                **run_openvino(onnx_path, scenes, reference, threads=args.threads,
                                               rounds=args.rounds, work=Path(tmp))}
            if args.large_scenes:  # accuracy only: where BF16 index arithmetic would show
                large = held_out_scenes(args.large_scenes, size=args.large_size, ratio=args.ratio)
                result = run_openvino(onnx_path, large, torch_reference(model, large), threads=args.threads,
                                      rounds=0, work=Path(tmp))
                data["openvino_large"] = [{"size": args.large_size, "scenes": len(large),
                                           "variants": result["variants"], "runtime": result["runtime"]}]
    md = markdown(data)
    print(md)
    if not args.no_write:
        write_results(args.name, data, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
