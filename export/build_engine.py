"""Build a TensorRT engine (plan) from an LSO ONNX graph: FP32, FP16 mixed or INT8 Q/DQ.

::

    python export/build_engine.py model.fp16.onnx --out model.fp16.plan       # same as: lso build ...
    python export/build_engine.py model.int8.onnx --print-trtexec             # the equivalent trtexec line

    from lso.export.build_engine import build_engine
    build_engine("model.fp16.onnx", "model.fp16.plan", workspace_gib=4, timing_cache="trt.cache")

**Precision is in the graph.** TensorRT 11 removed the FP16/INT8 builder flags; this builder sets
none on any version. On TensorRT 10 the network is created *strongly typed* so the graph's dtypes
are obeyed exactly as TensorRT 11 always does (there, the flag is deprecated and ignored, so it is
not set). After building, the engine is inspected layer by layer and an FP16 (INT8) graph whose
engine holds no FP16 (INT8) layer is an error: precision is never downgraded silently.

What it writes: ``<out>`` holds the serialized plan as plain bytes (``trtexec --loadEngine`` and
``polygraphy run`` load it), ``<out>.json`` the sidecar: TensorRT version, GPU name and compute
capability, precision, profiles, version/hardware compatibility, the ONNX's sha256 and the engine's
layer precisions. The timing cache file (``timing_cache``) is loaded when it exists and saved after.

Optimization profiles come from :mod:`lso.io_spec` (min/opt/max for both inputs; overridable with
trtexec-style shape specs). ``--print-trtexec`` prints the equivalent ``trtexec`` command line and
builds nothing (no GPU needed); its flags are checked in the tests against per-version flag lists
taken from NVIDIA's trtexec sources.

**Polygraphy does the TensorRT calls.** The build is a thin layer over NVIDIA's Polygraphy loaders
(``polygraphy.backend.trt``: ``network_from_onnx_path``, ``CreateConfig`` with ``Profile`` objects,
``engine_bytes_from_network``, ``engine_from_bytes``), NVIDIA's tested wrappers over the TensorRT 10/11 API;
our checks stay around them: the graph variant (:func:`lso.export.variants.require_tensorrt_graph`) and the
largest tensor (:func:`check_tensor_limit`) before, the layer precisions, the sidecar and the plan's
integrity (atomic write, sha256 in the sidecar) after. Polygraphy's log goes to the Python logger
``Polygraphy``.

TensorRT is touched only after a CUDA device has been found (:func:`lso.runtime.cuda_arrays.require_cuda`)
and TensorRT imported (:func:`lso.runtime._trt_compat.import_tensorrt`): without a GPU or without
TensorRT the error comes before any TensorRT object exists.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import os
import shlex
import sys
import time
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

from lso import io_spec
from lso.errors import ArtifactError, ExportError, InputError, MissingDependencyError

__all__ = ["build_engine", "trtexec_command", "plan_sidecar", "check_layer_precisions", "BuildOptions",
           "graph_precision", "resolve_profiles", "parse_shape_spec", "layer_precisions", "BuilderCompat",
           "builder_compat", "detect_trt_major", "main", "PRECISIONS", "HARDWARE_COMPATIBILITY", "check_tensor_limit",
           "trtexec_notes", "UNKNOWN_TRT_NOTE"]

log = logging.getLogger(__name__)

PathLike: TypeAlias = str | os.PathLike
PRECISIONS = ("fp32", "fp16", "int8")
HARDWARE_COMPATIBILITY = ("none", "ampere_plus", "same_compute_capability")
_TRTEXEC_HW = {"ampere_plus": "ampere+", "same_compute_capability": "sameComputeCapability"}
_TRT_HW = {"ampere_plus": "AMPERE_PLUS", "same_compute_capability": "SAME_COMPUTE_CAPABILITY"}
#: TensorRT names the build uses, directly or through the Polygraphy calls it makes (class -> members); the
#: builder-only ones (Builder, NetworkDefinitionCreationFlag, OnnxParser) are not in the lean bindings.
BUILD_API_USED: dict[str, tuple[str, ...]] = {
    "BuilderFlag": ("TF32", "VERSION_COMPATIBLE"),  # Polygraphy: clear_flag(TF32), set_flag(VERSION_COMPATIBLE)
    "MemoryPoolType": ("WORKSPACE",),
    "ProfilingVerbosity": ("DETAILED",),
    "HardwareCompatibilityLevel": tuple(_TRT_HW.values()),
    "LayerInformationFormat": ("JSON",),
    "Runtime": ("engine_host_code_allowed", "deserialize_cuda_engine"),
    "ICudaEngine": ("create_engine_inspector",),
    "NetworkDefinitionCreationFlag": ("STRONGLY_TYPED",),
    "Builder": ("create_network", "create_builder_config", "create_optimization_profile",
                "build_serialized_network"),
    "ITensor": ("is_shape_tensor", "name"),
}


# ----------------------------------------------------------------------------------- version checks
@dataclass(frozen=True)
class BuilderCompat:
    """What the builder does differently per TensorRT major version (the one place that decides it)."""

    major: int
    strongly_typed_flag: bool  # set NetworkDefinitionCreationFlag.STRONGLY_TYPED (10: yes; 11: always on, ignored)
    trtexec_strongly_typed: bool  # emit --stronglyTyped (10: yes; 11: deprecated no-op)
    inspector_schema: str  # "format_datatype" (10: "Format/Datatype" strings) or "split" (11: "DataType" field)
    hardware_levels: tuple[str, ...] = ("none", "ampere_plus")  # 11 adds same_compute_capability

    @classmethod
    def for_major(cls, major: int) -> BuilderCompat:
        if major < 10:
            raise MissingDependencyError(f"TensorRT {major}.x is too old: engines need TensorRT 10 or 11 (strongly "
                                         "typed networks, name-based I/O); pip install -U tensorrt-cu12")
        if major == 10:
            return cls(10, strongly_typed_flag=True, trtexec_strongly_typed=True, inspector_schema="format_datatype")
        return cls(major, strongly_typed_flag=False, trtexec_strongly_typed=False, inspector_schema="split",
                   hardware_levels=HARDWARE_COMPATIBILITY)

    def check(self, options: BuildOptions) -> None:
        """Options this TensorRT version cannot honour -> InputError."""
        if options.hardware_compatibility not in self.hardware_levels:
            raise InputError(f"hardware compatibility {options.hardware_compatibility!r} needs TensorRT 11 (TensorRT "
                             f"{self.major} knows {', '.join(self.hardware_levels)})")


def builder_compat(trt_or_version: Any) -> BuilderCompat:
    """:class:`BuilderCompat` for a TensorRT module or version string."""
    from lso.runtime._trt_compat import version_tuple

    return BuilderCompat.for_major(version_tuple(trt_or_version)[0])


def detect_trt_major(default: int | None = 11) -> int | None:
    """Major version of the installed TensorRT, read from package metadata (nothing imported), else ``default``.

    Any flavour counts (full first; :data:`lso.runtime._trt_compat.TRT_DISTRIBUTIONS`, the one list).
    """
    from lso.runtime._trt_compat import installed_tensorrt, version_tuple

    for found in installed_tensorrt():
        major = version_tuple(found.version)[:1]
        if major:
            return major[0]
    return default


#: What --print-trtexec assumes when no TensorRT is installed and no --trt-version is given.
UNKNOWN_TRT_NOTE = ("# TensorRT version unknown (none installed here, no --trt-version): --stronglyTyped is included "
                    "so that a TensorRT 10 build keeps the graph's own precisions (on TensorRT 11 it is a deprecated "
                    "no-op); pass --trt-version 10|11 for the exact line")


# ----------------------------------------------------------------------------------- the graph
def graph_precision(onnx_path: PathLike) -> str:
    """``"int8"`` (Q/DQ nodes), ``"fp16"`` (FP16 tensors) or ``"fp32"``: from the sidecar, else the graph."""
    from lso._deps import require
    from lso._io import read_sidecar

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


def _graph_inputs(onnx_path: PathLike) -> list[str]:
    from lso._deps import require

    onnx = require("onnx")
    model = onnx.load(str(onnx_path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits]


# ----------------------------------------------------------------------------------- profiles
def parse_shape_spec(text: str) -> dict[str, tuple[int, ...]]:
    """trtexec-style ``"hr_msi:1x3x512x512,lr_hsi:1x31x128x128"`` -> ``{name: shape}``."""
    out: dict[str, tuple[int, ...]] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, dims = part.rpartition(":")
        try:
            if not sep or not name:
                raise ValueError
            out[name.strip("'")] = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            raise InputError(f"shape spec {part!r}: expected NAME:DxDxDxD, e.g. hr_msi:1x3x512x512") from None
    return out


def resolve_profiles(profiles: Sequence[io_spec.ShapeProfile] | None = None, *,
                     min_shapes: Mapping[str, Sequence[int]] | None = None,
                     opt_shapes: Mapping[str, Sequence[int]] | None = None,
                     max_shapes: Mapping[str, Sequence[int]] | None = None,
                     config: Any = None) -> list[io_spec.ShapeProfile]:
    """The optimization profiles to build: ``profiles``, or the I/O spec's default with overrides.

    Each profile is checked: every input of :data:`lso.io_spec.INPUT_NAMES` present, ranks of 4, channel
    counts fixed, ``min <= opt <= max`` element-wise.
    """
    if profiles is None:
        base = io_spec.default_profile(config)
        prof = {k: dict(getattr(base, k)) for k in ("min", "opt", "max")}
        for key, override in (("min", min_shapes), ("opt", opt_shapes), ("max", max_shapes)):
            for name, shape in (override or {}).items():
                if name not in io_spec.INPUT_NAMES:
                    raise InputError(f"profile override for unknown input {name!r}; "
                                     f"inputs: {list(io_spec.INPUT_NAMES)}")
                prof[key][name] = tuple(int(d) for d in shape)
        profiles = [io_spec.ShapeProfile(**prof)]
    for i, prof in enumerate(profiles):
        for name in io_spec.INPUT_NAMES:
            shapes = [getattr(prof, k).get(name) for k in ("min", "opt", "max")]
            if any(s is None for s in shapes):
                raise InputError(f"profile {i} lacks min/opt/max for {name}")
            if any(len(s) != 4 for s in shapes) or len({s[1] for s in shapes}) != 1:
                raise InputError(f"profile {i}, {name}: shapes must be [B, C, H, W] with one C, got {shapes}")
            lo, opt, hi = shapes
            if not all(a <= b <= c for a, b, c in zip(lo, opt, hi, strict=True)) or min(lo) < 1:
                raise InputError(f"profile {i}, {name}: need 1 <= min <= opt <= max per dimension; got "
                                 f"{prof.describe(name)}")
    return list(profiles)


def _fmt_shapes(shapes: Mapping[str, Sequence[int]]) -> str:
    return ",".join(f"{name}:{'x'.join(map(str, shape))}" for name, shape in shapes.items())


# ----------------------------------------------------------------------------------- options
@dataclass
class BuildOptions:
    """Everything the builder and the trtexec line take (one definition for both)."""

    profiles: Sequence[io_spec.ShapeProfile]
    workspace_gib: float = 4.0
    timing_cache: PathLike | None = None
    optimization_level: int = 3
    version_compatible: bool = False
    hardware_compatibility: str = "none"
    device: int = 0
    precision: str | None = None  # expected precision (default: read from the graph); checked after building

    def __post_init__(self) -> None:
        if not 0 <= int(self.optimization_level) <= 5:
            raise InputError(f"builder optimization level must be 0-5, got {self.optimization_level}")
        if self.workspace_gib <= 0:
            raise InputError(f"workspace must be positive, got {self.workspace_gib} GiB")
        hw = str(self.hardware_compatibility).lower().replace("-", "_").replace("+", "_plus")
        if hw not in HARDWARE_COMPATIBILITY:
            raise InputError(f"hardware compatibility must be one of {HARDWARE_COMPATIBILITY}, got "
                             f"{self.hardware_compatibility!r}")
        self.hardware_compatibility = hw
        if self.precision is not None and self.precision not in PRECISIONS:
            raise InputError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")

    @property
    def workspace_bytes(self) -> int:
        return int(self.workspace_gib * (1 << 30))


def trtexec_command(onnx_path: PathLike, out: PathLike, options: BuildOptions, *,
                    trt_major: int | None = None) -> list[str]:
    """The ``trtexec`` argument list that builds the same engine.

    ``trt_major``: the TensorRT major version to write for; default: the installed one. Where none is
    installed the version is unknown: the line is TensorRT 11's plus ``--stronglyTyped`` (see
    :data:`UNKNOWN_TRT_NOTE`), since a TensorRT 10 user copying it would otherwise build a weakly typed
    engine from a graph that carries its own precision.
    """
    major = trt_major if trt_major is not None else detect_trt_major(default=None)
    compat = BuilderCompat.for_major(major if major is not None else 11)
    compat.check(options)
    cmd = ["trtexec", f"--onnx={onnx_path}", f"--saveEngine={out}"]
    if compat.trtexec_strongly_typed or major is None:
        cmd.append("--stronglyTyped")
    cmd.append("--noTF32")  # as the build (Polygraphy's CreateConfig clears TF32): FP32 layers compute in FP32
    many = len(options.profiles) > 1
    for i, prof in enumerate(options.profiles):
        if many:
            cmd.append(f"--profile={i}")
        cmd += [f"--minShapes={_fmt_shapes(prof.min)}", f"--optShapes={_fmt_shapes(prof.opt)}",
                f"--maxShapes={_fmt_shapes(prof.max)}"]
    cmd.append(f"--memPoolSize=workspace:{max(1, round(options.workspace_gib * 1024))}")  # MiB (trtexec's unit)
    cmd.append(f"--builderOptimizationLevel={int(options.optimization_level)}")
    if options.timing_cache:
        cmd.append(f"--timingCacheFile={options.timing_cache}")
    if options.version_compatible:
        cmd.append("--versionCompatible")
    if options.hardware_compatibility != "none":
        cmd.append(f"--hardwareCompatibilityLevel={_TRTEXEC_HW[options.hardware_compatibility]}")
    cmd += ["--profilingVerbosity=detailed", f"--device={int(options.device)}", "--skipInference"]
    return cmd


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
    counts = {"layers": 0, "fp16": 0, "int8": 0, "fp32_only": 0, "unknown": 0}
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
    import torch

    major, minor = torch.cuda.get_device_capability(index)
    return {"gpu": torch.cuda.get_device_name(index), "compute_capability": f"{major}.{minor}", "device": index}


def _device_context(dev: Any) -> Any:
    """The CUDA device TensorRT builds on (the current device while building)."""
    import torch

    return torch.cuda.device(dev)


def polygraphy_trt(trt: Any) -> Any:
    """``polygraphy.backend.trt`` (NVIDIA's TensorRT loaders), made to use ``trt`` and to log through Python logging.

    Polygraphy imports TensorRT lazily under the name ``tensorrt``; a TensorRT installed as the bindings wheel
    alone (``tensorrt_bindings``) is registered under that name so Polygraphy finds the module in use.
    """
    import importlib.util
    import sys as _sys

    from lso._deps import require_polygraphy

    if trt.__name__ != "tensorrt" and importlib.util.find_spec("tensorrt") is None:
        log.info("registering %s as 'tensorrt' for Polygraphy", trt.__name__)
        _sys.modules["tensorrt"] = trt
    return require_polygraphy("polygraphy.backend.trt")


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
    hardware = (getattr(trt.HardwareCompatibilityLevel, _TRT_HW[options.hardware_compatibility])
                if options.hardware_compatibility != "none" else None)
    with contextlib.ExitStack() as stack:
        cache_file = (stack.enter_context(open(cache_path, "rb")) if cache_path is not None and cache_path.is_file()
                      else None)
        return _build_with(pg, trt, compat, onnx_path, options, cache_path, cache_file, hardware)


def _build_with(pg: Any, trt: Any, compat: BuilderCompat, onnx_path: Path, options: BuildOptions,
                cache_path: Path | None, cache_file: Any, hardware: Any) -> tuple[bytes, dict]:
    from polygraphy.exception import PolygraphyException

    create_config = pg.CreateConfig(
        profiles=polygraphy_profiles(options, _graph_inputs(onnx_path)),
        memory_pool_limits={trt.MemoryPoolType.WORKSPACE: options.workspace_bytes},
        builder_optimization_level=int(options.optimization_level),
        profiling_verbosity=trt.ProfilingVerbosity.DETAILED,
        # an open file, not the path: Polygraphy would leave a <cache>.lock file; ours is replaced atomically
        load_timing_cache=cache_file,
        version_compatible=bool(options.version_compatible) or None,
        hardware_compatibility_level=hardware)
    try:
        builder, network, parser = pg.network_from_onnx_path(str(onnx_path),
                                                             strongly_typed=compat.strongly_typed_flag or None)
    except PolygraphyException as exc:
        raise ExportError(f"TensorRT's ONNX parser rejected {onnx_path}: {exc} (the parser's errors are logged "
                          f"above under 'Polygraphy')") from exc
    profiled = {name for prof in options.profiles for name in prof.opt}
    pinned = [t.name for t in (network.get_input(i) for i in range(network.num_inputs))
              if getattr(t, "is_shape_tensor", False) and t.name not in profiled]
    if pinned:  # Polygraphy would pin their values to its default (1): an engine that is silently wrong
        raise ExportError(f"{onnx_path}: TensorRT takes input(s) {pinned} as shape tensors, and the profile gives "
                          f"them no values; build this graph without them (a non-tileable export) or report it")
    try:
        config = create_config(builder, network)
        plan = pg.engine_bytes_from_network((builder, network, parser), config=config)
    except PolygraphyException as exc:
        raise ExportError(f"TensorRT failed to build an engine from {onnx_path} ({exc}; see the log above; raise "
                          f"the workspace with --workspace-gib or narrow the profile)") from exc
    plan_bytes = bytes(memoryview(plan))
    if cache_path is not None:
        from lso._io import atomic_write_bytes

        atomic_write_bytes(cache_path, bytes(memoryview(config.get_timing_cache().serialize())))
    try:
        engine = pg.engine_from_bytes(plan_bytes)  # allows host code: version-compatible plans deserialize too
    except PolygraphyException as exc:
        raise ExportError(f"the engine just built from {onnx_path} could not be deserialized for inspection "
                          f"({exc})") from exc
    inspector = engine.create_engine_inspector()
    info = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
    return plan_bytes, json.loads(info)


def _graph_weights_fingerprint(onnx_path: Path) -> str | None:
    """The weights' fingerprint the graph records (None: exported before fingerprints were recorded)."""
    from lso.checkpoint import weights_fingerprint

    try:
        return weights_fingerprint(onnx_path)
    except ArtifactError as exc:
        log.warning("%s; the plan's sidecar records no weights fingerprint", exc)
        return None


def plan_sidecar(onnx_path: PathLike, out: PathLike, options: BuildOptions, *, precision: str, tensorrt_version: str,
                 gpu: Mapping[str, Any], layers: Mapping[str, Any], build_seconds: float) -> dict[str, Any]:
    """The sidecar of a plan (``write_sidecar`` adds the plan's sha256). Keys read by
    :func:`lso.runtime.trt_runner.check_plan_sidecar`: ``tensorrt_version``, ``compute_capability``,
    ``version_compatible``, ``hardware_compatibility``."""
    from lso._io import read_sidecar, sha256_file
    from lso.export.variants import read_variant
    from lso.runtime._trt_compat import version_tuple

    onnx_path = Path(onnx_path)
    source_side = read_sidecar(onnx_path, verify=False) or {}
    return {
        "stage": "build",
        "format": "tensorrt-plan",
        "precision": precision,
        "tensorrt_version": str(tensorrt_version),
        "gpu": gpu.get("gpu"),
        "compute_capability": gpu.get("compute_capability"),
        "device": gpu.get("device"),
        "version_compatible": bool(options.version_compatible),
        "hardware_compatibility": options.hardware_compatibility,
        "strongly_typed": True,
        "tf32": False,  # cleared (Polygraphy's CreateConfig default; trtexec --noTF32): FP32 layers compute in FP32
        "builder_optimization_level": int(options.optimization_level),
        "workspace_bytes": options.workspace_bytes,
        "timing_cache": str(options.timing_cache) if options.timing_cache else None,
        "profiles": [p.to_dict() for p in options.profiles],
        "config": source_side.get("config"),
        "weights_sha256": _graph_weights_fingerprint(onnx_path),
        "source": {"path": str(onnx_path), "sha256": sha256_file(onnx_path),
                   "precision": source_side.get("precision"), "flavour": source_side.get("flavour"),
                   "variant": read_variant(onnx_path).name},
        "layers": dict(layers),
        "build_seconds": round(float(build_seconds), 1),
        "trtexec_equivalent": shlex.join(trtexec_command(onnx_path, out, options,
                                                         trt_major=version_tuple(str(tensorrt_version))[0])),
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def check_build_clash(onnx: PathLike, out: PathLike, timing_cache: PathLike | None = None) -> None:
    """InputError when the plan, its sidecar or the timing cache (read and rewritten) would be written over the
    ONNX graph or its sidecar (see :mod:`lso._clash`)."""
    from lso._clash import check_no_clash, with_sidecars
    from lso._io import sidecar_path

    check_no_clash(with_sidecars([onnx], "input graph"),
                   [("plan", out), ("plan sidecar", sidecar_path(out)), ("timing cache", timing_cache)])


def build_engine(onnx: PathLike, out: PathLike = None, *, allow_cpu_graph: bool = False, **options: Any) -> Path:
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
    from lso._io import atomic_path, check_writable_target, write_sidecar
    from lso.export.variants import require_tensorrt_graph

    onnx_path = Path(onnx)
    if not onnx_path.is_file():
        raise ArtifactError(f"{onnx_path} does not exist: export it first (lso export / lso calibrate)")
    out = Path(out) if out is not None else onnx_path.with_suffix(".plan")
    check_build_clash(onnx_path, out, options.get("timing_cache"))  # before anything runs
    check_writable_target(out)
    opts = _options(onnx_path, options)
    precision = opts.precision or graph_precision(onnx_path)
    require_tensorrt_graph(onnx_path, consumer="lso build", allow=allow_cpu_graph)
    check_tensor_limit(onnx_path, opts)  # an oversized profile is refused before anything touches TensorRT

    from lso.runtime.cuda_arrays import require_cuda  # before anything touches TensorRT

    dev = require_cuda(opts.device)
    from lso.runtime._trt_compat import import_tensorrt

    trt = import_tensorrt()
    if not hasattr(trt, "Builder"):
        raise MissingDependencyError(f"the installed TensorRT ({trt.__name__} {trt.__version__}) is a runtime-only "
                                     f"(lean/dispatch) package and cannot build engines: pip install tensorrt-cu12")
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
    with atomic_path(out) as tmp:
        tmp.write_bytes(plan)  # plain plan bytes: trtexec --loadEngine and polygraphy read them as they are
    info = plan_sidecar(onnx_path, out, opts, precision=precision, tensorrt_version=trt.__version__,
                        gpu=gpu, layers=counts, build_seconds=seconds)
    try:
        write_sidecar(out, info)
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    log.info("wrote %s (%.1f MB, %d layers: %d FP16, %d INT8) in %.0f s", out, len(plan) / 1e6, counts["layers"],
             counts["fp16"], counts["int8"], seconds)
    return out


def check_tensor_limit(onnx_path: PathLike, options: BuildOptions) -> list[Any]:
    """The largest tensor of the graph at each profile's max shapes; InputError if one is past TensorRT's limit.

    Returns :class:`lso.export.tensor_limits.TensorSize` per profile (empty for a graph without the LSO
    inputs, which is not checked).
    """
    from lso.export.tensor_limits import check_profiles

    return check_profiles(onnx_path, options.profiles)


def trtexec_notes(onnx_path: PathLike, options: BuildOptions, *, trt_major: int | None = None) -> list[str]:
    """Comment lines printed above ``--print-trtexec``'s command: the largest tensor, the version assumption.

    Raises:
        InputError: a profile's largest tensor is past TensorRT's limit (nothing is printed then).
    """
    from lso.export import tensor_limits

    notes = [f"# largest tensor at the max shapes{'' if len(options.profiles) == 1 else f' of profile {i}'}: "
             f"{big.describe()} (TensorRT's limit: {tensor_limits.TRT_MAX_ELEMENTS:,} elements)"
             for i, big in enumerate(check_tensor_limit(onnx_path, options))]
    if trt_major is None and detect_trt_major(default=None) is None:
        notes.append(UNKNOWN_TRT_NOTE)
    return notes


def _options(onnx_path: Path, options: Mapping[str, Any]) -> BuildOptions:
    opts = dict(options)
    profiles = opts.pop("profiles", None)
    overrides = {k: opts.pop(k, None) for k in ("min_shapes", "opt_shapes", "max_shapes")}
    config = opts.pop("config", None)
    if config is None:
        from lso._io import read_sidecar
        from lso.config import LSOConfig

        side = read_sidecar(onnx_path, verify=False) or {}
        if isinstance(side.get("config"), dict):
            config = LSOConfig.from_dict(side["config"])
    unknown = set(opts) - set(BuildOptions.__dataclass_fields__)
    if unknown:
        raise InputError(f"unknown build option(s) {sorted(unknown)}; "
                         f"known: {sorted(BuildOptions.__dataclass_fields__)}")
    return BuildOptions(profiles=resolve_profiles(profiles, config=config, **overrides), **opts)


# ----------------------------------------------------------------------------------- command line
DESCRIPTION = """\
Build a TensorRT engine (plan) from an LSO ONNX graph: model.onnx (FP32), model.fp16.onnx (FP16 with
FP32 islands) or model.int8.onnx (INT8 Q/DQ). Precision is read from the graph; no precision flag exists
(TensorRT 11 removed them; on TensorRT 10 the network is built strongly typed). The optimization profile
is the I/O spec's (batch 1/1/4, hr_msi 32²/512²/1024², lr_hsi 1²/128²/512²) unless --min/--opt/--max-shapes
override it; a max shape whose largest tensor passes TensorRT's 2^31-element limit is refused before the
build, with the largest shape that fits and the tile size for larger scenes. The engine is inspected after
building: an FP16/INT8 graph without FP16/INT8 layers is an error. Writes the plan as plain bytes (loadable
by trtexec and polygraphy) and <out>.json. Needs an NVIDIA GPU, TensorRT 10/11 and Polygraphy (NVIDIA's
TensorRT loaders do the build: pip install 'lso-deploy[onnx]'; TF32 is off, so FP32 layers compute in FP32),
except --print-trtexec, which only prints the equivalent trtexec command line."""


def add_build_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The build options (shared by ``python export/build_engine.py`` and ``lso build``)."""
    parser.add_argument("onnx", help="ONNX graph: model.onnx, model.fp16.onnx or model.int8.onnx")
    parser.add_argument("--out", help="plan to write (default: the ONNX path with .plan)")
    parser.add_argument("--min-shapes", metavar="SPEC",
                        help="override min shapes, e.g. hr_msi:1x3x64x64,lr_hsi:1x31x16x16")
    parser.add_argument("--opt-shapes", metavar="SPEC", help="override opt shapes (default: the I/O spec's)")
    parser.add_argument("--max-shapes", metavar="SPEC", help="override max shapes (default: the I/O spec's)")
    parser.add_argument("--workspace-gib", type=float, default=4.0, help="workspace memory pool limit in GiB")
    parser.add_argument("--timing-cache", metavar="PATH", help="timing cache file, loaded if present and saved after")
    parser.add_argument("--optimization-level", type=int, default=3, choices=range(6), metavar="0-5",
                        help="builder optimization level (TensorRT's default 3)")
    parser.add_argument("--version-compatible", action="store_true",
                        help="build a version-compatible plan (runs on later TensorRT and the lean runtime)")
    parser.add_argument("--hardware-compatibility", default="none", choices=HARDWARE_COMPATIBILITY,
                        help="hardware compatibility level")
    parser.add_argument("--device", type=int, default=0, help="CUDA device index")
    parser.add_argument("--allow-cpu-graph", action="store_true",
                        help="build a CPU-tuned graph (exported with --solver-chunk/--align-channels, or the cpu INT8 "
                             "flavour) anyway; without it such a graph is refused")
    parser.add_argument("--print-trtexec", action="store_true",
                        help="print the equivalent trtexec command line and exit (builds nothing, needs no GPU)")
    parser.add_argument("--trt-version", type=int, choices=(10, 11),
                        help="TensorRT major version for --print-trtexec (default: the installed one; if none is "
                             "installed, the line also carries --stronglyTyped, needed on 10 and a no-op on 11)")
    return parser


def run_build(args: argparse.Namespace) -> int:
    """Parse -> one library call -> a short report on stdout."""
    overrides = {key: parse_shape_spec(getattr(args, key)) for key in ("min_shapes", "opt_shapes", "max_shapes")
                 if getattr(args, key, None)}
    kwargs = dict(workspace_gib=args.workspace_gib, timing_cache=args.timing_cache,
                  optimization_level=args.optimization_level, version_compatible=args.version_compatible,
                  hardware_compatibility=args.hardware_compatibility, device=args.device, **overrides)
    onnx_path = Path(args.onnx)
    out = Path(args.out) if args.out else onnx_path.with_suffix(".plan")
    if args.print_trtexec:
        from lso.export.variants import require_tensorrt_graph

        if not onnx_path.is_file():
            raise ArtifactError(f"{onnx_path} does not exist: export it first (lso export / lso calibrate)")
        require_tensorrt_graph(onnx_path, consumer="lso build --print-trtexec", allow=args.allow_cpu_graph)
        opts = _options(onnx_path, kwargs)
        for note in trtexec_notes(onnx_path, opts, trt_major=args.trt_version):
            print(note)
        print(shlex.join(trtexec_command(onnx_path, out, opts, trt_major=args.trt_version)))
        return 0
    export_log = logging.getLogger("lso.export")
    if export_log.getEffectiveLevel() > logging.INFO:
        export_log.setLevel(logging.INFO)
    plan = build_engine(onnx_path, out, allow_cpu_graph=args.allow_cpu_graph, **kwargs)
    from lso._io import read_sidecar

    side = read_sidecar(plan, verify=False) or {}
    layers = side.get("layers", {})
    print(f"wrote {plan} ({side.get('precision')}, TensorRT {side.get('tensorrt_version')}, {side.get('gpu')} "
          f"sm_{str(side.get('compute_capability', '')).replace('.', '')}; {layers.get('layers')} layers: "
          f"{layers.get('fp16')} FP16, {layers.get('int8')} INT8) and {plan.name}.json")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from lso.cli import HelpFormatter

    parser = argparse.ArgumentParser(prog="python export/build_engine.py", description=DESCRIPTION,
                                     formatter_class=HelpFormatter)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging; -v also shows tracebacks")
    return add_build_arguments(parser)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose > 1 else logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    from lso.errors import LSOError

    try:
        return run_build(args)
    except LSOError as exc:
        if args.verbose:
            raise
        print(f"build_engine: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("build_engine: interrupted (no plan written)", file=sys.stderr)
        return 130


class _CallableModule(types.ModuleType):
    """``lso.export.build_engine`` is both this module and its function (the layout names both the same).

    Importing a submodule sets it as an attribute of its package, which would shadow a package-level
    ``lso.export.build_engine`` *function* as soon as anything imports this module; making the module
    callable keeps ``lso.export.build_engine(onnx, out, ...)`` working either way.
    """

    def __call__(self, onnx: PathLike, out: PathLike = None, **options: Any) -> Path:
        return build_engine(onnx, out, **options)


if __name__ == "__main__":
    sys.exit(main())
else:
    sys.modules[__name__].__class__ = _CallableModule
