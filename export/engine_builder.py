"""The engine builder: a TensorRT plan from an LSO ONNX graph (FP32, FP16 mixed or INT8 Q/DQ), on Polygraphy's loaders.

::

    lso build model.fp16.onnx --out model.fp16.plan        # or: python export/build_engine.py ...
    lso build model.int8.onnx --print-trtexec              # the equivalent trtexec line (lso.export.trtexec)

    from lso.export import build_engine
    build_engine("model.fp16.onnx", "model.fp16.plan", workspace_gib=4, timing_cache="trt.cache")

**Precision is in the graph.** TensorRT 11 removed the FP16/INT8 builder flags; this builder sets
none on any version. On TensorRT 10 the network is created *strongly typed* so the graph's dtypes
are obeyed exactly as TensorRT 11 always does (there, the flag is deprecated and ignored, so it is
not set). After building, the engine is inspected layer by layer and an FP16 (INT8) graph whose
engine holds no FP16 (INT8) layer is an error: precision is never downgraded silently.

The builder is split by job: profiles and options (:mod:`lso.export.profiles`), the trtexec recipe
(:mod:`lso.export.trtexec`), this module (the build and the precision check) and the plan and sidecar
I/O (:mod:`lso.export.plan_io`); what differs between TensorRT 10 and 11, and the CUDA gate, are in
:mod:`lso.runtime.trt_support`, shared with the runner. The timing cache file (``timing_cache``) is
loaded when it exists and saved after.

**Polygraphy does the TensorRT calls.** The build is a thin layer over NVIDIA's Polygraphy loaders
(``polygraphy.backend.trt``: ``network_from_onnx_path``, ``CreateConfig`` with ``Profile`` objects,
``engine_bytes_from_network``, ``engine_from_bytes``), NVIDIA's tested wrappers over the TensorRT 10/11 API;
our checks stay around them: the graph variant (:func:`lso.export.variants.require_tensorrt_graph`) and the
largest tensor (:func:`lso.export.profiles.check_tensor_limit`) before, the layer precisions, the sidecar and the plan's
integrity (atomic write, sha256 in the sidecar) after. Polygraphy's log goes to the Python logger
``Polygraphy``.

TensorRT is touched only after a CUDA device has been found and TensorRT imported
(:func:`lso.runtime.trt_support.tensorrt_on_device`): without a GPU or without TensorRT the error comes
before any TensorRT object exists.
"""
from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lso.errors import ArtifactError, ExportError
from lso.export.plan_io import check_build_clash, plan_sidecar, write_plan
from lso.export.profiles import PRECISIONS, BuildOptions, PathLike, build_options, check_tensor_limit
from lso.runtime.trt_support import HARDWARE_LEVELS, BuilderCompat, builder_compat, gpu_info, polygraphy_trt

__all__ = ["build_engine", "graph_precision", "layer_precisions", "check_layer_precisions", "polygraphy_profiles",
           "BUILD_API_USED"]

log = logging.getLogger(__name__)

#: TensorRT names the build uses, directly or through the Polygraphy calls it makes (class -> members); the
#: builder-only ones (Builder, NetworkDefinitionCreationFlag, OnnxParser) are not in the lean bindings.
BUILD_API_USED: dict[str, tuple[str, ...]] = {
    "BuilderFlag": ("TF32", "VERSION_COMPATIBLE"),  # Polygraphy: clear_flag(TF32), set_flag(VERSION_COMPATIBLE)
    "MemoryPoolType": ("WORKSPACE",),
    "ProfilingVerbosity": ("DETAILED",),
    "HardwareCompatibilityLevel": tuple(HARDWARE_LEVELS.values()),
    "LayerInformationFormat": ("JSON",),
    "Runtime": ("engine_host_code_allowed", "deserialize_cuda_engine"),
    "ICudaEngine": ("create_engine_inspector",),
    "NetworkDefinitionCreationFlag": ("STRONGLY_TYPED",),
    "Builder": ("create_network", "create_builder_config", "create_optimization_profile",
                "build_serialized_network"),
    "ITensor": ("is_shape_tensor", "name"),
}


def build_engine(onnx: PathLike, out: PathLike | None = None, *, allow_cpu_graph: bool = False,
                 **options: Any) -> Path:
    """Build a TensorRT plan from an LSO ONNX graph (FP32, FP16 mixed or INT8 Q/DQ) and write its sidecar.

    Args:
        onnx: the ``.onnx`` (``model.onnx``, ``model.fp16.onnx``, ``model.int8.onnx``).
        out: the plan to write (default: the ONNX name with ``.plan``).
        **options: fields of :class:`BuildOptions` (``workspace_gib``, ``timing_cache``,
            ``optimization_level``, ``version_compatible``, ``hardware_compatibility``, ``device``,
            ``precision``) and ``profiles`` (list of :class:`~lso.io_spec.ShapeProfile`) or ``min_shapes``/
            ``opt_shapes``/``max_shapes`` overrides of the I/O spec's default profile.
        allow_cpu_graph: build a CPU-tuned graph (the ``cpu`` variant, :mod:`lso.export.variants`) anyway.

    Raises:
        DeviceUnavailableError / MissingDependencyError: no CUDA GPU, or no (full) TensorRT - before any
            TensorRT object is created.
        ExportError: parse or build failure, or an FP16/INT8 graph that built without FP16/INT8 layers.
        InputError: the plan, its sidecar or the timing cache is the graph or its sidecar (before anything runs).
    """
    from lso.artifacts import check_writable_target
    from lso.export.variants import require_tensorrt_graph

    onnx_path = Path(onnx)
    if not onnx_path.is_file():
        raise ArtifactError(f"{onnx_path} does not exist: export it first (lso export / lso calibrate)")
    out = Path(out) if out is not None else onnx_path.with_suffix(".plan")
    check_build_clash(onnx_path, out, options.get("timing_cache"))  # before anything runs
    check_writable_target(out)
    opts = build_options(onnx_path, options)
    precision = opts.precision or graph_precision(onnx_path)
    require_tensorrt_graph(onnx_path, consumer="lso build", allow=allow_cpu_graph)
    check_tensor_limit(onnx_path, opts)  # an oversized profile is refused before anything touches TensorRT

    from lso.runtime import trt_support

    dev, trt = trt_support.tensorrt_on_device(opts.device, build=True)  # the CUDA device first, then TensorRT
    compat = builder_compat(trt)
    compat.check(opts)
    gpu = _gpu(dev.index)
    log.info("building %s (%s) with TensorRT %s on %s (Polygraphy's loaders)", onnx_path.name, precision,
             trt.__version__, gpu["gpu"])
    t0 = time.perf_counter()
    with _device_context(dev):  # TensorRT builds on the current device
        plan, engine_info = _build(trt, compat, onnx_path, opts)
    seconds = time.perf_counter() - t0
    counts = layer_precisions(engine_info)
    check_layer_precisions(counts, precision, onnx_path)
    write_plan(out, plan, plan_sidecar(onnx_path, out, opts, precision=precision, tensorrt_version=trt.__version__,
                                       gpu=gpu, layers=counts, build_seconds=seconds))
    log.info("wrote %s (%.1f MB, %d layers: %d FP16, %d INT8) in %.0f s", out, len(plan) / 1e6, counts["layers"],
             counts["fp16"], counts["int8"], seconds)
    return out


def graph_precision(onnx_path: PathLike) -> str:
    """``"int8"`` (Q/DQ nodes), ``"fp16"`` (FP16 tensors) or ``"fp32"``: from the sidecar, else the graph."""
    from lso.artifacts import read_sidecar
    from lso.deps import require

    side = read_sidecar(onnx_path, verify=False) or {}
    precision = str(side.get("precision", ""))
    if precision in PRECISIONS:
        return precision
    if precision.startswith("fp16"):
        return "fp16"
    onnx = require("onnx")
    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:  # protobuf errors
        raise ArtifactError(f"cannot read {onnx_path} as ONNX ({exc})") from exc
    ops = {n.op_type for n in model.graph.node}
    if ops & {"QuantizeLinear", "DequantizeLinear"}:
        return "int8"
    fp16 = any(i.data_type == 10 for i in model.graph.initializer) or any(
        n.op_type == "Cast" and any(a.name == "to" and a.i == 10 for a in n.attribute) for n in model.graph.node)
    return "fp16" if fp16 else "fp32"


# ----------------------------------------------------------------------------------- inspection
_FP16_TOKENS = ("half", "fp16", "float16")
_INT8_TOKENS = ("int8",)


def layer_precisions(engine_info: str | Mapping[str, Any]) -> dict[str, Any]:
    """Count layers by the precision of their tensors in an ``IEngineInspector`` JSON (DETAILED verbosity).

    Reads both schemas: TensorRT 10 (``"Format/Datatype": "Row major linear FP16 format (kLINEAR)"``) and
    TensorRT 11 (``"DataType": "Half"`` beside ``"Format"``). A layer counts as FP16 (INT8) when any of
    its inputs or outputs is FP16 (INT8).
    """
    info = json.loads(engine_info) if isinstance(engine_info, str) else dict(engine_info)
    layers = info.get("Layers", [])
    counts: dict[str, Any] = {"layers": 0, "fp16": 0, "int8": 0, "fp32_only": 0, "unknown": 0}
    fp16_layers, int8_layers = [], []
    for layer in layers:
        counts["layers"] += 1
        if not isinstance(layer, Mapping):  # layer_names_only verbosity: just names
            counts["unknown"] += 1
            continue
        texts = []
        for key in ("Inputs", "Outputs"):
            for tensor in layer.get(key, []) or []:
                if isinstance(tensor, Mapping):
                    texts += [str(v).lower() for k, v in tensor.items()
                              if "type" in k.lower() or "format" in k.lower()]
        blob = " ".join(texts)
        name = str(layer.get("Name", "?"))
        if not blob:
            counts["unknown"] += 1
        elif any(t in blob for t in _INT8_TOKENS):
            counts["int8"] += 1
            int8_layers.append(name)
        elif any(t in blob for t in _FP16_TOKENS):
            counts["fp16"] += 1
            fp16_layers.append(name)
        else:
            counts["fp32_only"] += 1
    counts["fp16_layers"] = fp16_layers[:50]
    counts["int8_layers"] = int8_layers[:50]
    return counts


def check_layer_precisions(counts: Mapping[str, Any], precision: str, path: Any) -> None:
    """Fail when an FP16 (INT8) graph built into an engine with no FP16 (INT8) layer."""
    if precision == "fp16" and counts.get("fp16", 0) == 0:
        raise ExportError(f"{path}: the graph is FP16 but the engine has no FP16 layer ({counts.get('layers')} "
                          f"layers inspected): TensorRT did not honour the graph's types. Refusing to write an "
                          f"FP32 engine labelled FP16 (is the network strongly typed? is the GPU FP16-capable?)")
    if precision == "int8" and counts.get("int8", 0) == 0:
        raise ExportError(f"{path}: the graph has Q/DQ nodes but the engine has no INT8 layer "
                          f"({counts.get('layers')} layers inspected): refusing to write a float engine labelled INT8")


# ----------------------------------------------------------------------------------- building
def _gpu(index: int) -> dict[str, Any]:
    return gpu_info(index)


def _device_context(dev: Any) -> Any:
    """The CUDA device TensorRT builds on (the current device while building)."""
    import torch

    return torch.cuda.device(dev)


def polygraphy_profiles(options: BuildOptions, inputs: Sequence[str] | None = None) -> list[Any]:
    """Our profiles as Polygraphy ``Profile`` objects (only the names the graph takes, when ``inputs`` is given)."""
    from polygraphy.backend.trt import Profile

    out = []
    for prof in options.profiles:
        profile = Profile()
        for name in prof.opt:
            if inputs is None or name in inputs:
                profile.add(name, tuple(prof.min[name]), tuple(prof.opt[name]), tuple(prof.max[name]))
        out.append(profile)
    return out


def _build(trt: Any, compat: BuilderCompat, onnx_path: Path, options: BuildOptions) -> tuple[bytes, dict]:
    """Build with Polygraphy's TensorRT loaders (network from ONNX, config, engine bytes); inspect the engine.

    Strongly typed on TensorRT 10 (``NetworkFromOnnxPath(strongly_typed=True)``; always so on 11), no precision
    flag (``CreateConfig`` leaves FP16/INT8/BF16/FP8 off and clears TF32: FP32 layers, the FP32 islands of an
    FP16 graph included, compute in FP32), the workspace pool limit, builder optimisation level, version and
    hardware compatibility, DETAILED profiling verbosity (for the inspector) and the timing cache (loaded if
    present; the updated cache is written atomically by us after the build).
    """
    pg = polygraphy_trt(trt)
    cache_path = Path(options.timing_cache) if options.timing_cache else None
    hardware = (getattr(trt.HardwareCompatibilityLevel, HARDWARE_LEVELS[options.hardware_compatibility])
                if options.hardware_compatibility != "none" else None)
    with contextlib.ExitStack() as stack:
        cache_file = (stack.enter_context(open(cache_path, "rb")) if cache_path is not None and cache_path.is_file()
                      else None)
        return _build_with(pg, trt, compat, onnx_path, options, cache_path, cache_file, hardware)


def _build_with(pg: Any, trt: Any, compat: BuilderCompat, onnx_path: Path, options: BuildOptions,
                cache_path: Path | None, cache_file: Any, hardware: Any) -> tuple[bytes, dict]:
    from polygraphy.exception import PolygraphyException

    try:
        builder, network, parser = pg.network_from_onnx_path(str(onnx_path),
                                                             strongly_typed=compat.strongly_typed_flag or None)
    except PolygraphyException as exc:
        raise ExportError(f"TensorRT's ONNX parser rejected {onnx_path}: {exc} (the parser's errors are logged "
                          f"above under 'Polygraphy')") from exc
    profiled = {name for prof in options.profiles for name in prof.opt}
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    pinned = [t.name for t in inputs if getattr(t, "is_shape_tensor", False) and t.name not in profiled]
    if pinned:  # Polygraphy would pin their values to its default (1): an engine that is silently wrong
        raise ExportError(f"{onnx_path}: TensorRT takes input(s) {pinned} as shape tensors, and the profile gives "
                          f"them no values; build this graph without them (a non-tileable export) or report it")
    create_config = pg.CreateConfig(
        profiles=polygraphy_profiles(options, [t.name for t in inputs]),
        memory_pool_limits={trt.MemoryPoolType.WORKSPACE: options.workspace_bytes},
        builder_optimization_level=int(options.optimization_level),
        profiling_verbosity=trt.ProfilingVerbosity.DETAILED,
        # an open file, not the path: Polygraphy would leave a <cache>.lock file; ours is replaced atomically
        load_timing_cache=cache_file,
        version_compatible=bool(options.version_compatible) or None,
        hardware_compatibility_level=hardware)
    try:
        config = create_config(builder, network)
        plan = pg.engine_bytes_from_network((builder, network, parser), config=config)
    except PolygraphyException as exc:
        raise ExportError(f"TensorRT failed to build an engine from {onnx_path} ({exc}; see the log above; raise "
                          f"the workspace with --workspace-gib or narrow the profile)") from exc
    plan_bytes = bytes(memoryview(plan))
    if cache_path is not None:
        from lso.artifacts import atomic_write_bytes

        atomic_write_bytes(cache_path, bytes(memoryview(config.get_timing_cache().serialize())))
    try:
        engine = pg.engine_from_bytes(plan_bytes)  # allows host code: version-compatible plans deserialize too
    except PolygraphyException as exc:
        raise ExportError(f"the engine just built from {onnx_path} could not be deserialized for inspection "
                          f"({exc})") from exc
    inspector = engine.create_engine_inspector()
    info = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
    return plan_bytes, json.loads(info)


