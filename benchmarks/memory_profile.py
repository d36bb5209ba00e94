"""Whole-image peak memory by size, graph variant and backend, and a profile of where the memory goes.

Every measurement is one **fresh process** (a subprocess per cell) that loads the runner with
:func:`lso.runtime.load`, fuses one random ``size x size`` x``ratio`` scene ``--runs`` times (the output of a
run is dropped before the next) and reads its own peak resident set size, ``VmHWM`` of
``/proc/self/status``, after loading and after every run. ``ru_maxrss`` is not used: a child inherits its
parent's high-water mark across ``fork`` + ``exec``, so a small child of a large parent would report the parent's
peak. The first run at a shape and the later ones allocate differently in ONNX Runtime (its memory pattern
is planned after a first run), which is why each cell runs at least twice.

Cells:

- **whole image**: sizes ``--sizes`` (256, 512, 1024), graph variants ``--variants`` (``plain``: ``lso export``;
  ``cpu``: ``--solver-chunk 128 --align-channels 16``; ``chunk``: ``--solver-chunk 128`` alone, OpenVINO's
  lean graph: aligned channels raise its memory), backends ``--backends`` (``onnxruntime``; ``openvino``
  when its runner is installed), each with the runner's **default settings**.
- **settings** (``--settings``, on the ``cpu`` variant at ``--settings-sizes``): OpenVINO compiled with open
  dimensions (``ov_dynamic_shapes``, the runner's default before this benchmark; :data:`OV_SETTINGS`), and the
  ONNX Runtime session options behind its default, one changed at a time (:data:`ORT_SETTINGS`): ONNX Runtime's memory
  pattern on (the runner's default before this benchmark), the shared arena growing by the requested size
  (``kSameAsRequested``) instead of powers of two, ONNX Runtime's own per-session arena, no arena.
- **tiled** (``--tiled 2048``): :func:`lso.runtime.fuse_tiled` with the default tile (:data:`AUTO_TILE`) on the
  tileable ``cpu`` graph, default settings.
- **arena profile** (``--profile-size``): ONNX Runtime's profiler on the default settings records, after
  every node, the arena's bytes in use and held (``mem_bytes_in_use``, ``mem_arena_held``); the node where
  the bytes in use peak and the largest outputs are reported per run.
- **graph profile** (``--graph-size``, 1024 by default): the plain graph's tensor shapes at that size by
  ONNX Runtime's symbolic shape inference, then the live tensors in graph order (a tensor lives from its
  node to its last consumer; reshapes alias their input): the peak live bytes, the tensors live at the peak,
  the largest tensors and their bytes per HR pixel (all O(pixels): nothing grows faster).

    python benchmarks/memory_profile.py                          # the full table (tens of minutes on 2 cores)
    python benchmarks/memory_profile.py --sizes 256 --variants cpu --settings none --tiled 0 --no-write
Results: benchmarks/results/memory_profile.{json,md} (CPU model recorded).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lso.memory import proc_status_kib

GB = 1e9
TARGET_BYTES = {512: int(1.1 * GB), 1024: int(4.5 * GB)}
"""Issue 20's whole-image targets: peak RSS of a fresh process, default runner settings."""
TILED_BUDGET_BYTES = int(3 * GB)

ORT_SETTINGS: dict[str, dict[str, Any]] = {
    "default": {},
    "mem_pattern": {"memory_arena": "shared", "enable_mem_pattern": True},
    "mem_pattern_same_as_requested": {"memory_arena": "shared_same_as_requested", "enable_mem_pattern": True},
    "ort_defaults": {"memory_arena": "session", "enable_mem_pattern": True},
    "session_arena": {"memory_arena": "session", "enable_mem_pattern": False},
    "no_arena": {"memory_arena": "off", "enable_mem_pattern": False},
}
"""ONNX Runtime session settings compared with the runner's default (``{}``: whatever ``OrtRunner`` sets). The
default is the shared arena with the memory pattern off; ``mem_pattern`` is the default before that change."""

OV_SETTINGS: dict[str, dict[str, Any]] = {
    "ov_dynamic_shapes": {"shapes": "dynamic"},
}
"""OpenVINO runner options compared with its default (static shapes, compiled per input shape); cells named
``ov_*`` run the ``openvino`` backend."""

DEFAULT_EQUIVALENT = {"memory_arena": "shared", "enable_mem_pattern": False}
"""The session options ``OrtRunner`` uses by default on CPU (the arena profile rebuilds them with profiling on)."""


# ------------------------------------------------------------------------------------ in the child
def _peak_bytes() -> int:
    return proc_status_kib("VmHWM") * 1024


def _session_options(setting: dict[str, Any], threads: int, profile_prefix: str | None = None) -> Any:
    """An ``onnxruntime.SessionOptions`` for ``setting`` (keys of :data:`ORT_SETTINGS`' entries)."""
    from lso.deps import require
    from lso.runtime.ort_runner import apply_memory_arena

    ort = require("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_mem_pattern = bool(setting.get("enable_mem_pattern", True))
    arena = setting.get("memory_arena", "shared")
    if arena == "shared_same_as_requested":  # the shared arena of OrtRunner, grown by what is asked for
        info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
        ort.create_and_register_allocator(info, ort.OrtArenaCfg({"arena_extend_strategy": 1,  # kSameAsRequested
                                                                 "initial_chunk_size_bytes": 2**31 - 1}))
        options.enable_cpu_mem_arena = True
        options.add_session_config_entry("session.use_env_allocators", "1")
    else:
        apply_memory_arena(options, arena)
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return options


def run_cell(spec: dict[str, Any]) -> dict[str, Any]:
    """One cell, in this (fresh) process: load, fuse ``runs`` times, peak RSS after each step.

    Nothing here imports torch: the runners of exported graphs on the CPU do not need it, so the cell measures
    what a serving process of that graph holds (``torch_loaded`` records whether anything loaded it anyway).
    """
    threads = int(spec["threads"])
    from lso.runtime import fuse_tiled, load

    size, ratio = int(spec["size"]), int(spec["ratio"])
    rng = np.random.default_rng(0)
    hr = rng.random((1, 3, size, size), dtype=np.float32)
    lr = rng.random((1, 31, size // ratio, size // ratio), dtype=np.float32)
    start_peak = _peak_bytes()
    options: dict[str, Any] = {"threads": threads}
    name = spec.get("setting", "default")
    setting = ORT_SETTINGS.get(name, {})
    if spec["backend"] == "openvino":
        options.update(OV_SETTINGS.get(name, {}))
    profile_dir = None
    if spec["backend"] == "onnxruntime" and (setting or spec.get("profile")):
        profile_dir = tempfile.mkdtemp(prefix="lso_memprof_") if spec.get("profile") else None
        options["session_options"] = _session_options(setting or DEFAULT_EQUIVALENT, threads,
                                                      os.path.join(profile_dir, "ort") if profile_dir else None)
    runner = load(spec["artifact"], backend=spec["backend"], **options)
    runner.activate()
    after_load = _peak_bytes()
    runs = []
    result: Any = None
    for _ in range(int(spec["runs"])):
        result = None  # the previous output is dropped: the runner's own memory is measured
        t0 = time.perf_counter()
        if spec.get("tile"):
            result = fuse_tiled(runner, hr, lr, tile=int(spec["tile"]))
        else:
            result = runner.fuse(hr, lr)
        runs.append({"seconds": time.perf_counter() - t0, "peak_rss_bytes": _peak_bytes(),
                     "rss_bytes": proc_status_kib("VmRSS") * 1024})
    finite = bool(np.isfinite(result).all())
    arena = None
    if profile_dir is not None:
        events = json.loads(Path(runner.session.end_profiling()).read_text())
        arena = arena_profile(events)
    runner.deactivate()
    return {**spec, "peak_rss_start_bytes": start_peak, "peak_rss_after_load_bytes": after_load, "runs": runs,
            "peak_rss_bytes": _peak_bytes(), "output_finite": finite, "arena_profile": arena,
            "torch_loaded": "torch" in sys.modules}


def arena_profile(events: list[dict], top: int = 8) -> list[dict[str, Any]]:
    """Per model run of ONNX Runtime's profile: the arena's peak bytes in use and held, the node at the peak,
    and the largest node outputs (``output_size``) of the run."""
    runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                  key=lambda e: e["ts"])
    nodes = [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]
    out = []
    for run in runs:
        inside = [e for e in nodes if run["ts"] <= e["ts"] <= run["ts"] + run["dur"]]
        if not inside:
            continue

        def num(e: dict, key: str) -> int:
            return int(e.get("args", {}).get(key, 0) or 0)

        at_peak = max(inside, key=lambda e: num(e, "mem_bytes_in_use"))
        largest = sorted(inside, key=lambda e: -num(e, "output_size"))[:top]
        out.append({
            "seconds": run["dur"] / 1e6, "nodes": len(inside),
            "peak_in_use_bytes": max(num(e, "mem_in_use_peak") or num(e, "mem_bytes_in_use") for e in inside),
            "peak_arena_held_bytes": max(num(e, "mem_arena_held") for e in inside),
            "node_at_peak": {"name": at_peak["name"].removesuffix("_kernel_time"),
                             "op": at_peak["args"].get("op_name"), "in_use_bytes": num(at_peak, "mem_bytes_in_use"),
                             "output_shape": at_peak["args"].get("output_type_shape")},
            "largest_outputs": [{"name": e["name"].removesuffix("_kernel_time"), "op": e["args"].get("op_name"),
                                 "output_bytes": num(e, "output_size"),
                                 "output_shape": e["args"].get("output_type_shape")} for e in largest],
        })
    return out


# ----------------------------------------------------------------------------- graph profile (static)
_ALIAS_OPS = {"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity"}


def _subgraph_inputs(node: Any) -> list[str]:
    names: list[str] = []
    for attr in node.attribute:
        for graph in ([attr.g] if attr.HasField("g") else list(attr.graphs)):
            for inner in graph.node:
                names += list(inner.input) + _subgraph_inputs(inner)
    return names


def graph_profile(onnx_path: str | os.PathLike, size: int, ratio: int = 4, top: int = 12) -> dict[str, Any]:
    """Tensor shapes of the graph at ``size``² x``ratio`` (symbolic shape inference) and its live tensors in graph
    order: the peak live bytes, what is live there, and the largest tensors with their bytes per HR pixel."""
    import onnx
    from onnx import helper
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    model = onnx.load(str(onnx_path))
    dims = {"hr_msi": [1, 3, size, size], "lr_hsi": [1, 31, size // ratio, size // ratio], "extent": [4]}
    for value in model.graph.input:
        for d, v in zip(value.type.tensor_type.shape.dim, dims.get(value.name, []), strict=False):
            d.Clear()
            d.dim_value = v
    inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    graph = inferred.graph
    sizes: dict[str, tuple[list[int], int]] = {}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        t = value.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        if t.HasField("shape") and -1 not in shape:
            item = np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type)).itemsize
            sizes[value.name] = (shape, int(np.prod(shape, dtype=np.int64)) * item)
    inits = {i.name for i in graph.initializer}
    last: dict[str, int] = {}
    for index, node in enumerate(graph.node):
        for name in [*node.input, *_subgraph_inputs(node)]:
            last[name] = index
    for value in graph.output:
        last[value.name] = len(graph.node)
    root: dict[str, str] = {}  # an alias's buffer owner
    holds: dict[str, int] = {}  # owner -> last use of it or of any alias of it

    def owner(name: str) -> str:
        while name in root:
            name = root[name]
        return name

    live: dict[str, int] = {n: sizes[n][1] for n in dims if n in sizes}
    for n in live:
        holds[n] = len(graph.node)
    peak = (0, -1, dict(live))
    for index, node in enumerate(graph.node):
        for name in node.output:
            if node.op_type in _ALIAS_OPS and node.input and node.input[0] not in inits:
                root[name] = node.input[0]
                o = owner(name)
                holds[o] = max(holds.get(o, 0), last.get(name, index))
            elif name in sizes:
                live[name] = sizes[name][1]
                holds[name] = max(holds.get(name, 0), last.get(name, index))
        total = sum(live.values())
        if total > peak[0]:
            peak = (total, index, dict(live))
        for name in [n for n in live if holds.get(n, 0) <= index]:
            del live[name]
    pixels = size * size
    total, index, at_peak = peak
    node = graph.node[index] if index >= 0 else None

    def entry(name: str) -> dict[str, Any]:
        shape, nbytes = sizes[name]
        return {"name": name, "shape": shape, "bytes": nbytes, "bytes_per_pixel": nbytes / pixels}

    activations = [n for n in sizes if n not in inits]
    return {
        "graph": Path(onnx_path).name, "size": size, "ratio": ratio, "nodes": len(graph.node),
        "tensors_with_shape": len(activations),
        "peak_live_bytes": total, "peak_live_bytes_per_pixel": total / pixels,
        "peak_at": {"node": node.name, "op": node.op_type} if node is not None else None,
        "live_at_peak": [entry(n) for n in sorted(at_peak, key=lambda n: -at_peak[n])[:top]],
        "largest": [entry(n) for n in sorted(activations, key=lambda n: -sizes[n][1])[:top]],
        "bytes_per_pixel_max": max(sizes[n][1] for n in activations) / pixels,
    }


# ------------------------------------------------------------------------------------ the driver
def _export(work: Path, checkpoint: str, log: Any, reuse: bool = False) -> dict[str, str]:
    from lso.export import ParityCase, export_onnx

    paths = {}
    for name, kwargs in (("plain", {}), ("cpu", {"solver_chunk": 128, "align_channels": 16}),
                         ("chunk", {"solver_chunk": 128}),
                         ("cpu_tileable", {"solver_chunk": 128, "align_channels": 16, "tileable": True})):
        if reuse and (work / f"{name}.onnx").is_file():
            paths[name] = str(work / f"{name}.onnx")
            continue
        log(f"export {name}")
        paths[name] = str(export_onnx(checkpoint, work / f"{name}.onnx", cases=[ParityCase(4, 64, 64)], **kwargs))
    return paths


def _spawn(spec: dict[str, Any]) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {**spec, "error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


_CACHE = "memory_profile_cells.jsonl"


def _cached_cell(work: Path, spec: dict[str, Any], log: Any) -> dict[str, Any]:
    """The cell of ``spec``: measured in a fresh process, or taken from ``work``'s record of an earlier run of the
    same spec (each cell is appended there as it finishes, so an interrupted run resumes where it stopped)."""
    key = json.dumps(spec, sort_keys=True)
    cache = work / _CACHE
    if cache.is_file():
        for line in cache.read_text().splitlines():
            record = json.loads(line)
            if record.get("key") == key and "error" not in record["cell"]:
                return record["cell"]
    log(f"{spec['kind']} {spec['backend']} {spec['variant']} {spec['setting']} {spec['size']}²")
    load = os.getloadavg()[0]
    cell = _spawn(spec)
    cell["load_average_1min"] = {"before": load, "after": os.getloadavg()[0]}
    with cache.open("a") as f:
        f.write(json.dumps({"key": key, "cell": cell}) + "\n")
    log(f"  peak {_gb(cell.get('peak_rss_bytes'))} GB, runs "
        f"{[round(r['seconds'], 1) for r in cell.get('runs', [])]} s {cell.get('error', '')}")
    return cell


def _openvino_ready() -> bool:
    from lso.deps import available
    from lso.runtime.base import BACKENDS

    return "openvino" in BACKENDS and available("openvino")


def _portable(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cells with their graphs named by file name only (the work folder is not part of the results)."""
    return [{**c, "artifact": Path(c["artifact"]).name} if c.get("artifact") else c for c in cells]


def _openvino_version() -> str | None:
    try:
        import openvino

        return str(openvino.__version__)
    except Exception:  # not installed or broken: not recorded
        return None


def _gb(value: Any) -> str:
    return f"{value / GB:.2f}" if isinstance(value, (int, float)) else "-"


def _markdown(data: dict[str, Any]) -> str:
    from lso.benchmarks._report import markdown_table

    rows = []
    for c in data["cells"]:
        if "error" in c:
            rows.append([c["kind"], c["backend"], c["variant"], c.get("setting", "default"), c["size"], "-", "-", "-",
                         "-", "-", f"error: {' '.join(c['error'])}"])
            continue
        target = TILED_BUDGET_BYTES if c.get("tile") else TARGET_BYTES.get(c["size"])
        runs = c["runs"]
        rows.append([c["kind"], c["backend"], c["variant"], c.get("setting", "default"), c["size"],
                     _gb(c["peak_rss_after_load_bytes"]), " / ".join(_gb(r["peak_rss_bytes"]) for r in runs),
                     _gb(c["peak_rss_bytes"]), " / ".join(f"{r['seconds']:.1f}" for r in runs),
                     _gb(target) if target else "-",
                     ("yes" if c["peak_rss_bytes"] <= target else f"NO (+{_gb(c['peak_rss_bytes'] - target)})")
                     if target else "-"])
    md = ["# Peak memory by image size (fresh process per cell)", "",
          "`python benchmarks/memory_profile.py`: each row is one fresh process; peak RSS is that process's own "
          "`VmHWM` (not a child's `ru_maxrss`, which carries the parent's peak). Random scene, x4, "
          f"{data['threads']} threads, checkpoint {data['checkpoint']}; the output of each run is dropped before "
          "the next. Times are wall seconds on a shared machine (load average in the JSON).", "",
          markdown_table(["kind", "backend", "graph", "setting", "size", "after load (GB)", "after run 1 / 2 ... (GB)",
                          "peak (GB)", "run 1 / 2 ... (s)", "target (GB)", "within"], rows)]
    for prof in data.get("arena_profiles", []):
        md += ["", f"## ONNX Runtime arena, {prof['variant']} graph at {prof['size']}² (profiler, default settings)",
               ""]
        arows = [[i + 1, _gb(r["peak_in_use_bytes"]), _gb(r["peak_arena_held_bytes"]),
                  f"{r['node_at_peak']['op']} `{r['node_at_peak']['name']}`",
                  ", ".join(f"{o['op']} {_gb(o['output_bytes'])}" for o in r["largest_outputs"][:4])]
                 for i, r in enumerate(prof.get("arena_profile") or [])]
        md.append(markdown_table(["run", "in use peak (GB)", "arena held (GB)", "node at the peak",
                                  "largest outputs (GB)"], arows))
    g = data.get("graph_profile")
    if g:
        md += ["", f"## Live tensors of the plain graph at {g['size']}² x{g['ratio']} (shape inference, graph order)",
               "", f"Peak live {_gb(g['peak_live_bytes'])} GB ({g['peak_live_bytes_per_pixel']:.0f} bytes per HR "
               f"pixel) at {g['peak_at']['op']} `{g['peak_at']['node']}`; the largest single tensor is "
               f"{g['bytes_per_pixel_max']:.0f} bytes per HR pixel.", "",
               markdown_table(["live at the peak", "shape", "GB", "bytes / pixel"],
                              [[t["name"], "x".join(map(str, t["shape"])), _gb(t["bytes"]),
                                f"{t['bytes_per_pixel']:.0f}"] for t in g["live_at_peak"]]), "",
               markdown_table(["largest tensors", "shape", "GB", "bytes / pixel"],
                              [[t["name"], "x".join(map(str, t["shape"])), _gb(t["bytes"]),
                                f"{t['bytes_per_pixel']:.0f}"] for t in g["largest"]])]
    if data.get("notes"):
        md += ["", "## Findings", "", data["notes"]]
    return "\n".join(md)


def _render(path: Path, notes: str | None, write: bool) -> int:
    """Rewrite the Markdown of an earlier run (its machine record kept), with ``notes`` as its findings."""
    from lso.artifacts import atomic_write_text

    data = json.loads(path.read_text())
    if notes is not None:
        data["notes"] = Path(notes).read_text()
    data["cells"], data["arena_profiles"] = _portable(data["cells"]), _portable(data.get("arena_profiles", []))
    m = data["machine"]
    versions = ", ".join(f"{k} {m[k]}" for k in ("python", "torch", "numpy", "onnx", "onnxruntime") if k in m)
    md = (f"{_markdown(data)}\n\nMachine: {m['cpu']} ({m['cpu_count']} cores, torch threads {m.get('torch_threads')}), "
          f"{m['platform']}; {versions}, openvino {data.get('openvino_version') or '-'}; {m['date']}.\n")
    print(md)
    if write:
        atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")
        atomic_write_text(path.with_suffix(".md"), md)
    return 0


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip() and int(v) > 0]


def _names(text: str) -> list[str]:
    return [] if text in ("", "none") else [v.strip() for v in text.split(",") if v.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="@demo", help="checkpoint to export (default: the bundled demo)")
    parser.add_argument("--sizes", default="256,512,1024", help="whole-image sizes (HR pixels per side)")
    parser.add_argument("--variants", default="plain,cpu,chunk",
                        help="graph variants: plain, cpu (solver chunked at 128 and channels aligned to 16), chunk "
                             "(the solver chunked only)")
    parser.add_argument("--backends", default="onnxruntime,openvino",
                        help="backends (openvino is skipped, with a note, where its runner is not installed)")
    parser.add_argument("--settings", default="mem_pattern,ov_dynamic_shapes",
                        help=f"runner settings compared with the default (ONNX Runtime: {', '.join(ORT_SETTINGS)}; "
                             f"OpenVINO: {', '.join(OV_SETTINGS)}; none); "
                             "name@512/1024 gives one its own sizes")
    parser.add_argument("--settings-sizes", default="512,1024", help="sizes of the settings cells")
    parser.add_argument("--tiled", type=int, default=2048, help="size of the tiled cell (0: none)")
    parser.add_argument("--tiled-backends", default="onnxruntime,openvino", help="backends of the tiled cell")
    parser.add_argument("--profile-size", type=int, default=512, help="size of the arena profile (0: none)")
    parser.add_argument("--graph-size", type=int, default=1024, help="size of the graph profile (0: none)")
    parser.add_argument("--runs", type=int, default=2, help="runs per cell (at least 2: first and later runs differ)")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads")
    parser.add_argument("--ratio", type=int, default=4, help="scale ratio")
    parser.add_argument("--work", default=None,
                        help="folder for the exported graphs, kept and reused by the next run (default: a temporary "
                             "one); graphs already there are not exported again")
    parser.add_argument("--notes", default=None, help="a Markdown file whose text is added as the findings")
    parser.add_argument("--no-write", action="store_true", help="print only, write no results")
    parser.add_argument("--render", default=None,
                        help="measure nothing: rewrite the Markdown (and the JSON's notes) from this results JSON")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(run_cell(json.loads(args.child))))
        return 0
    if args.render is not None:
        return _render(Path(args.render), args.notes, write=not args.no_write)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        graphs = _export(work, args.checkpoint, log, reuse=args.work is not None)
        base = {"ratio": args.ratio, "threads": args.threads, "runs": max(2, args.runs)}
        specs: list[dict[str, Any]] = []
        backends = _names(args.backends)
        skipped = []
        if "openvino" in backends and not _openvino_ready():
            backends.remove("openvino")
            skipped.append("openvino: its runner or the openvino package is not installed")
        for size in _ints(args.sizes):
            for variant in _names(args.variants):
                for backend in backends:
                    specs.append({**base, "kind": "whole", "backend": backend, "variant": variant,
                                  "artifact": graphs[variant], "size": size, "setting": "default"})
        for item in _names(args.settings):  # name, or name@512/1024 for its own sizes
            setting, _, sizes = item.partition("@")
            if setting not in ORT_SETTINGS and setting not in OV_SETTINGS:
                parser.error(f"--settings: {setting!r} is not one of {[*ORT_SETTINGS, *OV_SETTINGS]}")
            backend = "openvino" if setting in OV_SETTINGS else "onnxruntime"
            if backend not in backends:
                continue
            for size in _ints(sizes.replace("/", ",") if sizes else args.settings_sizes):
                specs.append({**base, "kind": "setting", "backend": backend, "variant": "cpu",
                              "artifact": graphs["cpu"], "size": size, "setting": setting})
        if args.tiled:
            from lso.runtime.tiling import AUTO_TILE

            for backend in [b for b in _names(args.tiled_backends) if b in backends]:
                specs.append({**base, "kind": "tiled", "backend": backend, "variant": "cpu_tileable",
                              "artifact": graphs["cpu_tileable"], "size": args.tiled, "setting": "default",
                              "tile": AUTO_TILE, "runs": 1})
        cells = [_cached_cell(work, spec, log) for spec in specs]
        profiles = []
        if args.profile_size:
            for variant in ("cpu", "plain"):
                profiles.append(_cached_cell(work, {**base, "kind": "profile", "backend": "onnxruntime",
                                                    "variant": variant, "artifact": graphs[variant],
                                                    "size": args.profile_size, "setting": "default",
                                                    "profile": True}, log))
        graph = graph_profile(graphs["plain"], args.graph_size, args.ratio) if args.graph_size else None
    data = {"checkpoint": args.checkpoint, "threads": args.threads, "ratio": args.ratio,
            "openvino_version": _openvino_version(),
            "targets_bytes": {str(k): v for k, v in TARGET_BYTES.items()}, "tiled_budget_bytes": TILED_BUDGET_BYTES,
            "settings": {**ORT_SETTINGS, **OV_SETTINGS}, "default_equivalent": DEFAULT_EQUIVALENT, "skipped": skipped,
            "cells": _portable(cells), "arena_profiles": _portable(profiles), "graph_profile": graph,
            "notes": Path(args.notes).read_text() if args.notes else None}
    md = _markdown(data)
    print(md)
    if not args.no_write:
        from lso.benchmarks._report import write_results

        write_results("memory_profile", data, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
