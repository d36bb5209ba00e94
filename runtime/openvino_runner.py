"""OpenVINO runner (CPU): the package's ONNX graphs (plain, tileable, CPU-tuned, INT8 Q/DQ) or an OpenVINO IR.

``OpenVinoRunner`` compiles the graph for OpenVINO's ``CPU`` device with ``PERFORMANCE_HINT`` = ``LATENCY`` and an
explicit ``INFERENCE_PRECISION_HINT``, then **checks** the compiled model's effective precision
(:func:`effective_precision`) and refuses to run when it is not the one asked for. The reason: on CPUs with
AVX512-BF16 or AMX, OpenVINO's CPU plugin defaults the inference precision to BF16 for the whole graph, and on
LSO that silently gives an image off by up to 1.24 (the solver's arguments reach 24·π² rad). Precisions:

- ``"fp32"`` (default): FP32 everywhere, matching PyTorch FP32 within the export tolerance.
- ``"bf16"``: the convolutions and every other operation outside the FP32 islands of :mod:`lso.islands`
  (solver, softmax, coordinate grid, interpolation matrices) in BF16, the islands and the operations that make
  the graph's outputs in FP32 (:func:`to_bf16`). The BF16 is written into the model itself: its operations are
  typed BF16 by explicit ``Convert`` nodes at the islands' borders, and the model is compiled with
  ``INFERENCE_PRECISION_HINT`` = f32, so the CPU plugin keeps the types as given (on a CPU with native BF16 it
  runs BF16 operations as BF16). The islands are found by their graph queries
  (:data:`lso.export.graph_query.ISLAND_QUERIES`) and recorded in the IR as OpenVINO's
  ``DisablePrecisionConversion`` runtime attribute (:func:`mark_fp32_islands`). That attribute alone is not
  enough: the CPU plugin honours it only on the operations its transformations leave in place, and it replaces
  many (``Subtract``/``Divide`` with a constant, ``Unsqueeze``, eltwise chains it fuses into snippets); with
  BF16 by hint and marks, 40 island operations of the demo graph ran BF16, among them the index arithmetic
  of the bicubic matrices, which BF16 rounds beyond 256 pixels (+1.41 dB at 512²). After compiling, the runner
  checks the compiled model: BF16 convolutions present, no island operation in BF16
  (:func:`runtime_precisions`). Only on CPUs with native BF16 (AVX512-BF16 or AMX): elsewhere an
  :class:`~lso.errors.InputError` says so (no silent FP32 fallback; ask for ``"fp32"``).
- ``"default"``: no precision hint (OpenVINO's own choice, BF16 on BF16 CPUs): a comparison point for
  benchmarks only; the runner warns when the effective precision is not FP32.

Inputs and the output are OpenVINO tensors over the caller's memory: float32 C-contiguous numpy arrays (and
CPU torch tensors, through their numpy view) are read in place, and the output is written straight into a
caller-provided ``out`` (or into one array the runner allocates), never copied out of OpenVINO's memory.

Every spatial size and batch runs (the graphs' spatial dimensions are dynamic); the tileable graph gets
``(0, 0, H, W)`` when no extent is given. By default (``shapes="static"``) the runner compiles the graph for each
input shape it meets, with batch, height and width fixed, and keeps the last ``shape_cache`` compiled shapes:
OpenVINO's CPU plugin plans and reuses its intermediate memory only for static shapes (its documentation says
the same of shapes with upper bounds; on LSO bounds did not help). Compiled with open dimensions, the CPU graph
peaked at 1.67 GB at 512² and 5.95 GB at 1024², compiled for the shape at 0.95 and 3.31 GB (x4, 2 threads,
OpenVINO alone in the process, 2-core AMD EPYC; ``benchmarks/memory_profile.py`` has the runner's figures). A
compile takes about 0.3 s at 512², against seconds for one fusion. ``shapes="dynamic"`` compiles once with open
dimensions (one compiled model for every shape, at that memory cost); it is the default in BF16 mode, because
with static shapes the CPU plugin fuses the FP32 island's multiplications behind the BF16 border into BF16
snippets (the island check refuses that compiled model).

A graph whose solver is chunked in ``Scan`` loops (``lso export
--solver-chunk``) keeps its loops FP32 in BF16 mode (they hold only the solver).
"""
from __future__ import annotations

import logging
import os
import tempfile
import threading
import xml.etree.ElementTree as ET
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from lso.artifacts import read_sidecar
from lso.config import LSOConfig
from lso.deps import is_tensor, require
from lso.errors import ArtifactError, InputError
from lso.io_spec import EXTENT, HR_HSI, HR_MSI, INPUT_NAMES, LR_HSI, TensorSpec
from lso.runtime.base import Runner, RunnerStateError
from lso.runtime.validation import FuseInputs, host_array

__all__ = ["OpenVinoRunner", "PRECISIONS", "ISLAND_MARK", "OPENVINO_SUFFIXES", "openvino_core", "cpu_bf16_support",
           "mark_fp32_islands", "island_marks", "effective_precision", "to_bf16", "runtime_precisions"]

log = logging.getLogger(__name__)

PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "default")
"""``precision=`` of :class:`OpenVinoRunner`; ``"default"`` sets no hint (OpenVINO's own choice)."""

SHAPE_MODES: tuple[str, ...] = ("static", "dynamic")
"""``shapes=`` of :class:`OpenVinoRunner`: compile per input shape (the FP32 default), or once with open
dimensions (the BF16 default)."""

PROBE_HR = 64
"""The HR size (x4, batch 1) a static-shape runner compiles at activation, to check its precision up front."""

OPENVINO_SUFFIXES = (".xml",)
"""OpenVINO IR (``model.xml`` + ``model.bin``); ONNX graphs run with ``backend="openvino"``."""

ISLAND_MARK = "DisablePrecisionConversion_0"
"""The runtime-info key of OpenVINO's ``DisablePrecisionConversion`` attribute (on a node of an ``ov.Model``)."""

# the attribute as OpenVINO's IR writes it: no conversion of the node from any type to BF16 or FP16. OpenVINO's
# Python API has no call that sets it; its IR reader builds it from this element (see mark_fp32_islands).
_MARK_ELEMENT = {"name": "DisablePrecisionConversion", "version": "0", "value": "dynamic:bf16,f16"}

# how each island of lso.islands is kept FP32 here (islands_for("bf16")): its graph query's nodes get the mark
_OPENVINO_MECHANISM = {"solver": "graph_query", "softmax": "graph_query", "coordinate_grid": "graph_query",
                       "bicubic": "graph_query"}

# the inference precision hint of each mode: BF16 mode is typed in the model itself (to_bf16) and compiled with the
# f32 hint, so that the CPU plugin enforces no precision of its own
_HINT_TYPES = {"fp32": "f32", "bf16": "f32"}
_NP_TYPES: dict[str, type[np.generic]] = {"f32": np.float32, "f16": np.float16, "f64": np.float64, "i64": np.int64,
                                          "i32": np.int32}

_core_lock = threading.Lock()
_core: dict[str, Any] = {}


def openvino_core() -> Any:
    """The process's ``openvino.Core`` (one per process: it holds the plugins and their thread pools)."""
    ov = require("openvino")
    with _core_lock:
        if "core" not in _core:
            _core["core"] = ov.Core()
        return _core["core"]


def _cpu_flags() -> set[str] | None:
    """The CPU flags of /proc/cpuinfo (None where there is no such file)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_bf16_support(core: Any = None) -> tuple[bool, str]:
    """Whether this CPU computes BF16 natively (AVX512-BF16 or AMX-BF16), and what says so.

    Both OpenVINO (``BF16`` among the CPU device's ``OPTIMIZATION_CAPABILITIES``) and, where ``/proc/cpuinfo``
    exists, the CPU flags (``avx512_bf16`` or ``amx_bf16``) must agree: OpenVINO can list BF16 on AVX-512 CPUs
    that only emulate it, which is slower than FP32.
    """
    props = require("openvino.properties")
    core = core if core is not None else openvino_core()
    capabilities = [str(c) for c in core.get_property("CPU", props.device.capabilities)]
    name = str(core.get_property("CPU", props.device.full_name))
    if "BF16" not in capabilities:
        return False, f"OpenVINO lists no BF16 capability for {name} ({', '.join(capabilities)})"
    flags = _cpu_flags()
    if flags is not None and not flags & {"avx512_bf16", "amx_bf16"}:
        return False, f"{name} has neither avx512_bf16 nor amx_bf16 in /proc/cpuinfo (BF16 would be emulated)"
    return True, f"{name}: " + ("OpenVINO BF16 capability" + (
        f", {'/'.join(sorted(flags & {'avx512_bf16', 'amx_bf16'}))}" if flags else ""))


def _island_node_names(onnx_model: Any) -> tuple[dict[str, str], list[str]]:
    """``({node name: reason}, [chunked solver loops])``: what :func:`mark_fp32_islands` marks, from the table."""
    from lso.export.graph_query import SOLVER_CHUNK_PREFIX, has_chunked_solver, island_nodes
    from lso.islands import islands_for

    names = [entry.name for entry in islands_for("bf16")]
    missing = set(names) - set(_OPENVINO_MECHANISM)
    if missing:  # a new island in the table must get a mechanism here
        raise NotImplementedError(f"OpenVinoRunner has no FP32 mechanism for island(s) {sorted(missing)}")
    nodes = island_nodes(onnx_model, names)
    loops = []
    if has_chunked_solver(onnx_model):  # the solver lives in Scan bodies, where the island queries cannot see it
        loops = [n.name for n in onnx_model.graph.node
                 if n.op_type == "Scan" and n.name.startswith(SOLVER_CHUNK_PREFIX)]
    return nodes, loops


def mark_fp32_islands(onnx_path: str | os.PathLike, out: str | os.PathLike, core: Any = None) -> tuple[Path, int]:
    """Write the OpenVINO IR of an LSO ONNX graph with its FP32 islands marked; returns ``(out, marked ops)``.

    Every node of the islands :func:`lso.islands.islands_for` ``("bf16")`` lists, found by its graph query,
    carries OpenVINO's ``DisablePrecisionConversion`` runtime attribute (key :data:`ISLAND_MARK` once read), so
    the CPU plugin keeps it FP32 when it runs the rest in BF16; the ``Scan`` loops of a chunked solver are marked
    with their whole bodies. OpenVINO's Python API cannot create that attribute, so the marks are written into
    the IR (``out``, an ``.xml`` with its ``.bin`` beside it), whose reader builds them; the ONNX frontend names
    each operation after its ONNX node, which is how the islands are found again. ``OpenVinoRunner(out,
    precision="bf16")`` then runs the IR (it refuses an IR without marks).

    Raises:
        ArtifactError: the graph cannot be read, or none of its nodes is an island (not an LSO graph).
    """
    onnx = require("onnx")
    ov = require("openvino")
    core = core if core is not None else openvino_core()
    path, xml = Path(onnx_path), Path(out)
    if xml.suffix.lower() != ".xml":
        raise InputError(f"{xml.name}: an OpenVINO IR is an .xml file (with its .bin beside it)")
    try:
        graph = onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError and the like
        raise ArtifactError(f"cannot read {path} as ONNX ({exc}); re-export it") from exc
    nodes, loops = _island_node_names(graph)
    del graph
    ov.serialize(_read_model(core, path), str(xml), str(xml.with_suffix(".bin")))
    tree = ET.parse(xml)
    marked = 0
    for layer in tree.getroot().iter("layer"):
        name = layer.get("name", "")
        if name in nodes or name in loops:
            for target in (layer.iter("layer") if name in loops else [layer]):  # a loop: itself and its body
                _stable_version(target)
                _add_mark(target)
                marked += 1
    if not marked:
        raise ArtifactError(f"{path.name}: none of its operations is an FP32 island of lso.islands (found by "
                            f"lso.export.graph_query); is this an LSO graph exported by lso export?")
    tree.write(xml, encoding="utf-8", xml_declaration=True)
    log.info("%s: %d OpenVINO operations marked FP32 (%s%s)", path.name, marked,
             ", ".join(sorted(set(nodes.values()))), f"; {len(loops)} solver loop(s)" if loops else "")
    return xml, marked


def _stable_version(layer: Any) -> None:
    """Write an island operation in the opset version the CPU plugin runs, so that its pipeline keeps the node.

    The mark is not copied when a transformation replaces a node (OpenVINO declares it not copyable), and the
    CPU plugin replaces ``SoftMax``-8 by ``SoftMax``-1 and ``Pad``-12 by ``Pad``-1: such nodes would lose it.
    """
    kind, version = layer.get("type"), layer.get("version")
    if kind == "SoftMax" and version == "opset8":
        data = layer.find("data")
        ports = layer.find("input")
        rank = len(ports[0].findall("dim")) if ports is not None and len(ports) else 0
        axis = int(data.get("axis", "1")) if data is not None else 1
        if axis < 0 and rank:
            axis += rank
        if axis >= 0 and data is not None:
            data.set("axis", str(axis))
            layer.set("version", "opset1")
    elif kind == "Pad" and version == "opset12":
        layer.set("version", "opset1")  # the same operation for non-negative pads, which the bicubic pad has


def _add_mark(layer: Any) -> None:
    info = layer.find("rt_info")
    if info is None:
        info = ET.SubElement(layer, "rt_info")
    if not any(a.get("name") == _MARK_ELEMENT["name"] for a in info.findall("attribute")):
        ET.SubElement(info, "attribute", dict(_MARK_ELEMENT))


def island_marks(model: Any) -> list[str]:
    """Friendly names of the operations of an ``ov.Model`` (and of its loops' bodies) that carry the FP32 mark."""
    found = []
    for op in model.get_ordered_ops():
        if ISLAND_MARK in op.get_rt_info().keys():
            found.append(op.get_friendly_name())
        body = op.get_function() if hasattr(op, "get_function") else None
        if body is not None:
            found.extend(island_marks(body))
    return found


_FIXED_TYPE_OPS = ("Constant", "Parameter", "Result", "Convert", "Range", "Eye", "RandomUniform")
"""Operations whose output type is an attribute, not their inputs' type: :func:`to_bf16` never retypes them."""


def to_bf16(model: Any, keep: set[str] | frozenset[str]) -> dict[str, int]:
    """Type the float operations of an ``ov.Model`` BF16, except those named in ``keep`` (changed in place).

    Kept FP32: the operations whose friendly name is in ``keep`` (the islands: :func:`island_marks`), the ones
    that make a graph output (LSO's last ``Add`` puts the up-sampled LR-HSI into the output as it is) and the
    float operations read by a conversion to an integer type (shape arithmetic). Every other operation with an
    FP32 output computes in BF16: its FP32 inputs from outside that set (graph inputs, constants, island outputs)
    go through a ``Convert`` to BF16, and its outputs reach FP32 readers through a ``Convert`` back. Compiled
    with the f32 inference precision hint, the CPU plugin then runs exactly these types (on a CPU with native
    BF16; elsewhere it would run them in FP32). Returns ``{"bf16_ops", "fp32_ops", "converts"}``.

    Raises:
        ArtifactError: OpenVINO cannot infer the types of the result.
    """
    ov = require("openvino")
    ops = [op for op in model.get_ordered_ops() if op.get_type_name() not in _FIXED_TYPE_OPS]
    f32 = ov.Type.f32

    def floating(op: Any) -> bool:
        return any(op.get_output_element_type(i) == f32 for i in range(op.get_output_size()))

    def stays_fp32(op: Any) -> bool:
        if op.get_friendly_name() in keep:
            return True
        for output in op.outputs():
            for reader in output.get_target_inputs():
                node = reader.get_node()
                if node.get_type_name() == "Result":
                    return True
                if node.get_type_name() == "Convert" and not node.get_output_element_type(0).is_real():
                    return True
        return False

    region = {op.get_name() for op in ops if floating(op) and not stays_fp32(op)}  # unique names
    convert = require("openvino.opset13").convert
    converted: dict[tuple[str, int, str], Any] = {}

    def cast(source: Any, kind: str) -> Any:
        key = (source.get_node().get_name(), source.get_index(), kind)
        if key not in converted:
            converted[key] = convert(source, kind).output(0)
        return converted[key]

    for op in ops:
        inside = op.get_name() in region
        for port in op.inputs():
            source = port.get_source_output()
            if source.get_element_type() != f32:  # types are inferred again below: a float tensor is f32 here
                continue
            from_region = source.get_node().get_name() in region
            if inside and not from_region:
                port.replace_source_output(cast(source, "bf16"))
            elif not inside and from_region:
                port.replace_source_output(cast(source, "f32"))
    try:
        model.validate_nodes_and_infer_types()
    except Exception as exc:  # RuntimeError from OpenVINO's type inference
        raise ArtifactError(f"OpenVINO cannot type the graph BF16 outside its FP32 islands: {exc}") from exc
    return {"bf16_ops": len(region), "fp32_ops": sum(1 for op in ops if floating(op)) - len(region),
            "converts": len(converted)}


def runtime_precisions(compiled: Any, islands: set[str] | frozenset[str] = frozenset()) -> dict[str, Any]:
    """What a compiled model executes in which precision, from its runtime model (OpenVINO's execution graph).

    Returns ``{"by_type": {"<layer type> <precision>": count}, "bf16_ops": n, "island_ops_in_bf16": [names]}``
    (constants, inputs, outputs and ``Reorder``/``Convert`` left out); an operation counts as an island one when
    any of the original operations it executes is named in ``islands``.
    """
    by_type: dict[str, int] = {}
    in_bf16: list[str] = []
    bf16_ops = 0
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        kind, precision = str(info["layerType"].astype(str)), str(info["runtimePrecision"].astype(str))
        if kind in ("Const", "Input", "Output", "Reorder", "Convert"):
            continue
        by_type[f"{kind} {precision}"] = by_type.get(f"{kind} {precision}", 0) + 1
        if precision == "bf16":
            bf16_ops += 1
            originals = str(info["originalLayersNames"].astype(str)).split(",")
            if islands.intersection(originals):
                in_bf16.append(op.get_friendly_name())
    return {"by_type": dict(sorted(by_type.items())), "bf16_ops": bf16_ops, "island_ops_in_bf16": in_bf16}


def effective_precision(compiled: Any) -> str:
    """The inference precision a compiled model computes with, as OpenVINO reports it (``"f32"``, ``"bf16"``)."""
    hints = require("openvino.properties.hint")
    return str(compiled.get_property(hints.inference_precision).get_type_name())


def _read_model(core: Any, path: Path) -> Any:
    try:
        return core.read_model(str(path))
    except Exception as exc:  # OpenVINO raises RuntimeError / its own types for unreadable graphs
        raise ArtifactError(f"OpenVINO cannot read {path}: {exc}; re-export it (lso export / "
                            f"lso.export.export_onnx)") from exc


class OpenVinoRunner(Runner):
    """Runs an LSO graph with OpenVINO on the CPU.

    Args:
        path: the ``.onnx`` graph (any variant ``lso export`` / ``lso calibrate`` writes: plain, tileable,
            CPU-tuned, INT8 Q/DQ) or an OpenVINO IR ``.xml`` (its ``.bin`` beside it). A ``.json`` sidecar, when
            present, is checked (sha256) and gives the configuration.
        device: ``"cpu"`` (the only one; OpenVINO's ``CPU`` device).
        threads: ``INFERENCE_NUM_THREADS`` (default: OpenVINO's choice, the physical cores). A hint: other
            backends ignore it.
        streams: ``NUM_STREAMS`` (default: what ``PERFORMANCE_HINT`` = ``LATENCY`` picks, one).
        shapes: ``"static"`` (one compiled model per input shape; OpenVINO then plans its memory, about 40 % less
            at 512² and 1024²) or ``"dynamic"`` (one compiled model for every shape). Default: static, except in
            BF16 mode (see the module docstring).
        shape_cache: how many compiled shapes a static-shape runner keeps (default 2: a tiled run uses one
            window shape; the least recently used is dropped, with its memory). Each kept shape holds its
            intermediate memory, so 1 is the least memory for a stream of images of changing sizes.
        precision: ``"fp32"`` (default), ``"bf16"`` (FP32 islands kept; CPUs with native BF16 only) or
            ``"default"`` (OpenVINO's own choice: benchmarks only). See the module docstring.
        verify: check the artifact's sha256 against its sidecar.
        config: the model's architecture, if neither the sidecar nor the graph's metadata records it.

    Raises (on activation):
        InputError: an unknown precision, a device other than the CPU, BF16 on a CPU without it, or BF16 for an
            IR without island marks.
        ArtifactError: an unreadable or foreign graph, or a compiled model whose effective precision is not the
            one asked for.

    Threads: one ``InferRequest`` serves the calls one at a time (:attr:`concurrent` is False); OpenVINO's
    own thread pool (``threads``) parallelises each call.
    """

    backend = "openvino"
    concurrent = False

    def __init__(self, path: str | os.PathLike, *, device: Any = "cpu", threads: int | None = None,
                 streams: int | None = None, precision: str = "fp32", shapes: str | None = None,
                 shape_cache: int = 2, verify: bool = True, config: LSOConfig | None = None) -> None:
        super().__init__()
        self._path = Path(path)
        if device is not None and str(device).lower() != "cpu":
            raise InputError(f"OpenVinoRunner runs on the CPU, not {device!r}; use device='cpu' (or another "
                             f"backend for a GPU)")
        if precision not in PRECISIONS:
            raise InputError(f"precision must be one of {list(PRECISIONS)}, not {precision!r}")
        if shapes is None:
            shapes = "dynamic" if precision == "bf16" else "static"
        if shapes not in SHAPE_MODES:
            raise InputError(f"shapes must be one of {list(SHAPE_MODES)}, not {shapes!r}")
        for name, value in (("threads", threads), ("streams", streams)):
            if value is not None and not _positive_int(value):
                raise InputError(f"{name} must be an integer >= 1 (or None for OpenVINO's choice), not {value!r}")
        if not _positive_int(shape_cache):
            raise InputError(f"shape_cache must be an integer >= 1, not {shape_cache!r}")
        self._threads, self._streams, self._precision = threads, streams, precision
        self._shapes, self._shape_cache = shapes, shape_cache
        self._verify = verify
        self._config = config
        self._compiled: Any = None
        self._request: Any = None
        self._model: Any = None  # the ov.Model static shapes are compiled from (BF16-typed in BF16 mode)
        self._compile_settings: dict[Any, Any] = {}
        self._island_set: set[str] = set()
        # static shapes: (hr shape, lr shape) -> compiled model, its infer request, its output port
        self._cache: OrderedDict[tuple, tuple[Any, Any, Any]] = OrderedDict()
        self._compiles = 0
        self._bf16_counts: dict[str, int] = {}
        self._specs: tuple[TensorSpec, ...] = ()
        self._types: dict[str, type[np.generic]] = {}
        self._out_port: Any = None
        self._marked = 0
        self._settings: dict[str, Any] = {}
        self._ir_dir: Any = None  # a tempfile.TemporaryDirectory holding the marked IR (BF16 of an .onnx)

    # ----------------------------------------------------------------------------- lifecycle
    def _activate(self) -> None:
        try:
            self._compile()
        except BaseException:
            self._deactivate()
            raise

    def _compile(self) -> None:
        ov = require("openvino")
        props = require("openvino.properties")
        hints = require("openvino.properties.hint")
        if not self._path.is_file():
            raise ArtifactError(f"{self._path} does not exist (or is not a file)")
        suffix = self._path.suffix.lower()
        if suffix not in (".onnx", *OPENVINO_SUFFIXES):
            raise ArtifactError(f"OpenVinoRunner runs ONNX graphs (.onnx) and OpenVINO IR (.xml), not "
                                f"{self._path.name}: export it first (lso export)")
        sidecar = read_sidecar(self._path, verify=self._verify)
        core = openvino_core()
        islands: set[str] = set()
        if self._precision == "bf16":
            supported, why = cpu_bf16_support(core)
            if not supported:
                raise InputError(f"precision='bf16' needs a CPU with native BF16 (AVX512-BF16 or AMX): {why}; "
                                 f"use precision='fp32'")
            source = self._path
            if suffix == ".onnx":  # the marked IR lives in a temporary folder while the runner is active
                self._ir_dir = tempfile.TemporaryDirectory(prefix="lso_openvino_")
                source, _ = mark_fp32_islands(self._path, Path(self._ir_dir.name) / "model.xml", core)
            model = _read_model(core, source)
            islands = set(island_marks(model))
            self._marked = len(islands)
            if suffix != ".onnx":
                if not self._marked:
                    raise InputError(f"{self._path.name} carries no FP32 island marks ({ISLAND_MARK}), so BF16 "
                                     f"would lower the solver and softmax too; run its .onnx graph with "
                                     f"precision='bf16' (the islands are marked then), or use precision='fp32'")
        else:
            model = _read_model(core, self._path)
        self._check_io(model)
        if self._config is None:
            self._config = _recorded_config(model, sidecar)
        self._weights_sha256 = _recorded_fingerprint(self._path, model, sidecar)
        self._bf16_counts = {}
        if self._precision == "bf16":
            self._bf16_counts["bf16_typed_ops"] = to_bf16(model, islands)["bf16_ops"]
        settings: dict[str, Any] = {hints.performance_mode: hints.PerformanceMode.LATENCY}
        if self._precision in _HINT_TYPES:
            settings[hints.inference_precision] = getattr(ov.Type, _HINT_TYPES[self._precision])
        if self._threads is not None:
            settings[props.inference_num_threads] = int(self._threads)
        if self._streams is not None:
            settings[props.num_streams] = int(self._streams)
        self._model, self._compile_settings, self._island_set = model, settings, islands
        self._cache.clear()
        probe = None  # dynamic: the one compiled model, for every shape
        if self._shapes == "static":
            # compiled here at a small shape, so that its precision is checked before any call; not kept in the
            # cache: the first call's shape replaces it (and frees its ~30 MB)
            channels = {p.get_any_name(): p.get_partial_shape()[1] for p in model.inputs if p.get_any_name() != EXTENT}
            probe = ((1, _static(channels[HR_MSI], 3), PROBE_HR, PROBE_HR),
                     (1, _static(channels[LR_HSI], 31), PROBE_HR // 4, PROBE_HR // 4))
        self._compiled, self._request, self._out_port = self._compile_checked(probe)
        compiled = self._compiled
        self._settings = {"precision": self._precision, "inference_precision": effective_precision(compiled),
                          "performance_hint": str(compiled.get_property(hints.performance_mode)),
                          "threads": int(compiled.get_property(props.inference_num_threads)),
                          "streams": int(compiled.get_property(props.num_streams)), "shapes": self._shapes,
                          "fp32_island_ops": self._marked, "openvino": ov.__version__, **self._bf16_counts}
        if self._shapes == "static":
            self._settings["shape_cache"] = self._shape_cache
        log.info("OpenVINO %s: %s on CPU (%s)", ov.__version__, self._path.name, self._settings)

    def _use_shape(self, key: tuple) -> None:
        """Make the compiled model for the input shapes ``key`` (``(hr shape, lr shape)``) the current one: from the
        cache, or compiled (and checked) now, dropping the least recently used beyond ``shape_cache``."""
        hit = self._cache.get(key)
        if hit is None:
            hit = self._compile_checked(key)
            self._cache[key] = hit
            while len(self._cache) > self._shape_cache:
                self._cache.popitem(last=False)  # the least recently used shape, and its memory, go
        self._cache.move_to_end(key)
        self._compiled, self._request, self._out_port = hit

    def _compile_checked(self, key: tuple | None) -> tuple[Any, Any, Any]:
        ov = require("openvino")
        model = self._model
        if key is not None:
            shapes = {HR_MSI: list(key[0]), LR_HSI: list(key[1])}
            if EXTENT in self._types:
                shapes[EXTENT] = [4]
            try:
                model.reshape(shapes)
            except Exception as exc:  # RuntimeError: the graph's shape inference rejects the shapes
                raise ArtifactError(f"OpenVINO cannot fix {self._path.name}'s input shapes at "
                                    f"{ {k: 'x'.join(map(str, v)) for k, v in shapes.items()} }: {exc}; "
                                    f"try shapes='dynamic'") from exc
        try:
            compiled = openvino_core().compile_model(model, "CPU", self._compile_settings)
        except Exception as exc:  # RuntimeError for operators or shapes the CPU plugin rejects
            raise ArtifactError(f"OpenVINO cannot compile {self._path.name} for the CPU: {exc}") from exc
        self._compiles += 1
        effective = effective_precision(compiled)
        wanted = _HINT_TYPES.get(self._precision)
        if wanted is not None and effective != wanted:
            raise ArtifactError(f"OpenVINO compiled {self._path.name} with inference precision {effective}, not the "
                                f"{wanted} asked for (precision={self._precision!r}); its output would differ from "
                                f"the model's: this OpenVINO ({ov.__version__}) ignores the hint, use another backend")
        if self._precision == "default" and effective != "f32" and self._compiles == 1:
            log.warning("%s: OpenVINO's default inference precision on this CPU is %s, not FP32, for the whole "
                        "graph (FP32 islands included): outputs differ from the model's (on LSO by up to ~1); use "
                        "precision='fp32', or 'bf16' (FP32 islands kept)", self._path.name, effective)
        if self._precision == "bf16":
            ran = runtime_precisions(compiled, self._island_set)
            if not any(k.startswith("Convolution") and k.endswith("bf16") for k in ran["by_type"]):
                raise ArtifactError(f"OpenVINO {ov.__version__} compiled the BF16-typed {self._path.name} without BF16 "
                                    f"convolutions ({ran['by_type']}): this CPU plugin does not run BF16 here; use "
                                    f"precision='fp32'")
            if ran["island_ops_in_bf16"]:
                raise ArtifactError(f"OpenVINO {ov.__version__} runs FP32 island operations of {self._path.name} in "
                                    f"BF16 ({', '.join(ran['island_ops_in_bf16'][:8])}); use precision='fp32'"
                                    + (" or shapes='dynamic'" if key is not None else ""))
            self._bf16_counts["bf16_runtime_ops"] = ran["bf16_ops"]
        return compiled, compiled.create_infer_request(), compiled.outputs[0]

    def _check_io(self, model: Any) -> None:
        specs, types = [], {}
        for port in model.inputs:
            name = port.get_any_name()
            np_type = _NP_TYPES.get(port.get_element_type().get_type_name(), np.float32)
            shape = tuple(int(d.get_length()) if d.is_static else f"d{i}"
                          for i, d in enumerate(port.get_partial_shape()))
            specs.append(TensorSpec(name, str(np.dtype(np_type)), shape))
            types[name] = np_type
        names = [s.name for s in specs]
        unknown = [n for n in names if n not in (*INPUT_NAMES, EXTENT)]
        if any(n not in names for n in INPUT_NAMES) or unknown:
            raise ArtifactError(f"{self._path.name} takes inputs {names}; an LSO graph takes {list(INPUT_NAMES)} "
                                f"(and optionally '{EXTENT}'): is this an LSO model exported by lso export?")
        if len(model.outputs) != 1:
            raise ArtifactError(f"{self._path.name} has {len(model.outputs)} outputs; an LSO graph has one ({HR_HSI})")
        out_type = model.outputs[0].get_element_type().get_type_name()
        if out_type != "f32":
            raise ArtifactError(f"{self._path.name}'s output is {out_type}; an LSO graph's is float32")
        self._specs, self._types = tuple(specs), types

    def _deactivate(self) -> None:
        self._request = None
        self._compiled = None
        self._out_port = None
        self._cache.clear()
        self._model = None
        if self._ir_dir is not None:
            self._ir_dir.cleanup()
            self._ir_dir = None

    # ----------------------------------------------------------------------------- description
    @property
    def input_specs(self) -> tuple[TensorSpec, ...]:
        if not self._specs:
            raise RunnerStateError(f"{self!r}: the graph's inputs are known once the runner is active")
        return self._specs

    @property
    def compiled_model(self) -> Any:
        """The ``openvino.CompiledModel`` (only while active)."""
        self._require_active()
        return self._compiled

    @property
    def infer_request(self) -> Any:
        """The ``openvino.InferRequest`` the calls run on (only while active)."""
        self._require_active()
        return self._request

    @property
    def settings(self) -> dict[str, Any]:
        """What the compiled model runs with, as OpenVINO reports it: ``precision`` (asked),
        ``inference_precision`` (OpenVINO's effective hint: f32 in BF16 mode too, whose BF16 is in the model's
        types), ``performance_hint``, ``threads``, ``streams``, ``fp32_island_ops`` (operations marked FP32 in BF16
        mode), in BF16 mode ``bf16_typed_ops`` (operations :func:`to_bf16` typed BF16) and ``bf16_runtime_ops``
        (operations the compiled model executes in BF16), and the ``openvino`` version. Empty until activated."""
        return dict(self._settings)

    def _describe(self) -> str:
        return f"{self._path.name}, precision={self._precision}"

    # ----------------------------------------------------------------------------- running
    def _fuse(self, inputs: FuseInputs, extent: tuple[int, int, int, int] | None, out: Any, **options: Any) -> Any:
        if options:
            raise TypeError(f"OpenVinoRunner.fuse got unexpected options {sorted(options)}")
        ov = require("openvino")
        if self._shapes == "static":
            self._use_shape((tuple(inputs.hr_msi.shape), tuple(inputs.lr_hsi.shape)))
        request = self._request
        keep = []  # the arrays the tensors view must outlive infer()
        for name, tensor in ((HR_MSI, inputs.hr_msi), (LR_HSI, inputs.lr_hsi)):
            arr = host_array(tensor, self._types.get(name, np.float32))
            keep.append(arr)
            request.set_tensor(name, ov.Tensor(arr, shared_memory=True))
        if EXTENT in self._types:
            _, _, height, width = inputs.output_shape
            ext = np.ascontiguousarray(extent if extent is not None else (0, 0, height, width), dtype=np.int64)
            keep.append(ext)
            request.set_tensor(EXTENT, ov.Tensor(ext, shared_memory=True))
        result = _output_array(out, inputs.output_shape)
        request.set_tensor(self._out_port, ov.Tensor(result, shared_memory=True))
        request.infer()
        return out if out is not None and _shares(out, result) else result


def _positive_int(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value >= 1


def _static(dim: Any, default: int) -> int:
    """A dimension's length where the graph fixes it, else ``default``."""
    return int(dim.get_length()) if dim.is_static else default


def _output_array(out: Any, shape: tuple[int, int, int, int]) -> np.ndarray:
    """The float32 host array the output is written into: ``out`` itself (numpy, or a CPU torch tensor's numpy
    view) when it is one, else a new array (``restore_output`` then copies it where ``out`` lives)."""
    if isinstance(out, np.ndarray) and out.dtype == np.float32 and out.flags.c_contiguous:
        return out
    if is_tensor(out) and not out.is_cuda and str(out.dtype) == "torch.float32" and out.is_contiguous():
        return out.detach().numpy()
    return np.empty(shape, dtype=np.float32)


def _shares(out: Any, result: np.ndarray) -> bool:
    if isinstance(out, np.ndarray):
        return out is result
    return is_tensor(out) and not out.is_cuda and out.data_ptr() == result.ctypes.data


def _framework_info(model: Any, key: str) -> str | None:
    """A metadata entry the ONNX graph recorded (``lso.<key>``), as OpenVINO keeps it, or None."""
    try:
        return str(model.get_rt_info(["framework", f"lso.{key}"]).astype(str))
    except Exception:  # RuntimeError: no such entry (an IR, an older export)
        return None


def _recorded_config(model: Any, sidecar: dict | None) -> LSOConfig | None:
    """The architecture the sidecar (else the graph's metadata) records; None if neither does."""
    import json

    if sidecar and isinstance(sidecar.get("config"), dict):
        return LSOConfig.from_dict(sidecar["config"])
    text = _framework_info(model, "config")
    if text:
        try:
            return LSOConfig.from_dict(json.loads(text))
        except (ValueError, TypeError) as exc:
            log.warning("the graph's lso.config metadata cannot be read (%s); tiling uses the default", exc)
    return None


def _recorded_fingerprint(path: Path, model: Any, sidecar: dict | None) -> str | None:
    """The weights' fingerprint the graph's metadata (else its sidecar) records; None if neither does."""
    from lso.artifacts import WEIGHTS_FINGERPRINT_KEY, recorded_fingerprint

    return recorded_fingerprint(path, _framework_info(model, WEIGHTS_FINGERPRINT_KEY), sidecar)
