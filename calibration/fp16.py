"""FP16 mixed-precision graph: FP16 everywhere except the islands that carry LSO's accuracy.

::

    from lso.calibration import convert_fp16
    convert_fp16("model.onnx", "model.fp16.onnx")          # + model.fp16.onnx.json (which nodes stayed FP32, why)

TensorRT 11 has no FP16 builder flag: the precision of every layer is the type of its tensors in the
ONNX graph (TensorRT 10 obeys the same when the network is created strongly typed). This module makes
that graph with onnxconverter-common's ``convert_float_to_float16`` (``keep_io_types=True``: FP32 inputs
and outputs, so callers never change) given a block list of nodes that stay FP32:

- the **solver** of each spectral block (sigmoid, angle, sine/cosine, Clenshaw recurrence): its
  arguments reach ``Q*pi^2`` (237 rad at Q = 24), which FP16 resolves to 0.06-0.125 rad only;
- the **attention softmaxes**;
- the **coordinate grid** (index arithmetic ``(i + row0) / (H - 1)``, input-independent) and the
  **bicubic resizes** (their interpolation matrices come from the same kind of index arithmetic, which
  FP16 cannot resolve beyond 2048 pixels, and the up-sampled LR-HSI is added to the output as it is);
- any node whose output or float input reached more than ``safe_range`` in absolute value on the
  calibration feeds (FP16 overflows at 65504; the default margin is 16x: 4096);
- the converter's own default op block list (``Resize``, ``CumSum``, ``Range``, ``Min``/``Max`` ...).

Four documented repairs surround the converter, each for a known limitation of it: float
initializers shared by an FP32 and an FP16 node are duplicated first (the converter would leave them
FP32 and break the FP16 node); the stale ``value_info`` it leaves behind is dropped (ONNX Runtime
refuses to load the graph otherwise, onnxconverter-common issue #320); a ``Cast(to=FLOAT)`` left inside
the FP16 region is retargeted to FLOAT16; and the ``Cast(FLOAT16) -> Cast(FLOAT)`` round trips it
leaves between two FP32 nodes whose tensor has several readers are bypassed (otherwise the solver's
intermediates would be rounded to FP16 inside its FP32 island). The result is checked with ONNX's
strict type inference.

**Measuring FP16 on a CPU.** ONNX Runtime's CPU provider has no FP16 kernels for most operators: it
wraps FP16 nodes in casts and *removes the cast pairs between consecutive FP16 nodes*, so a chain of
FP16 ops runs in FP32 and intermediates are never rounded (``tests/calibration`` shows it). The FP16
graph run by ONNX Runtime on CPU therefore says nothing about FP16 accuracy. :func:`emulate_fp16`
instead rewrites the FP16 graph into an FP32 graph in which every tensor the FP16 graph stores in
FP16 (weights, every FP16 node's output) is rounded to FP16 by an explicit ``Cast(FLOAT16) ->
Cast(FLOAT)`` pair, which ONNX Runtime keeps. What it models: FP16 storage of every activation and
weight, FP16 graph inputs to FP16 ops, FP32 islands exactly as in the graph. What it does not model:
FP16 *accumulation* inside a convolution or matrix product (it accumulates in FP32, as tensor-core
kernels do by default), TensorRT's layer fusions (a fused conv+activation rounds once, the emulation
twice: pessimistic), the internal precision of TensorRT's FP16 softmax/reduction/transcendental
kernels, and different interpolation kernels.
"""
from __future__ import annotations

import datetime
import logging
import os
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sized
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np

from lso.calibration import graph as G
from lso.calibration.source import (
    graph_config,
    input_names,
    load_fp32_graph,
    mac_feed,
    tool_version,
    tool_versions,
    with_extent,
)
from lso.deps import require
from lso.errors import ExportError, InputError
from lso.export.graph_query import island_nodes
from lso.islands import islands_for

if TYPE_CHECKING:  # pragma: no cover
    import onnx

__all__ = ["convert_fp16", "fp32_islands", "to_mixed_fp16", "to_naive_fp16", "emulate_fp16", "fp16_summary",
           "DEFAULT_SAFE_RANGE", "FP16_MAX"]

log = logging.getLogger(__name__)

FP16_MAX = 65504.0
DEFAULT_SAFE_RANGE = 4096.0
"""Largest ``|activation|`` on the calibration feeds allowed in FP16 (16x margin below FP16's 65504)."""

PathLike: TypeAlias = str | os.PathLike


# ------------------------------------------------------------------------------------------- islands
def _default_op_block_list() -> list[str]:
    float16 = require("onnxconverter_common.float16")
    return list(float16.DEFAULT_OP_BLOCK_LIST)


def fp32_islands(model: onnx.ModelProto, *, absmax: Mapping[str, float] | None = None,
                 safe_range: float = DEFAULT_SAFE_RANGE, solver: bool = True, softmax: bool = True,
                 grid: bool = True) -> dict[str, str]:
    """Nodes that stay FP32 in the mixed graph, ``{node name: reason}``.

    Args:
        model: the FP32 graph.
        absmax: ``max |x|`` per tensor on the calibration feeds (:func:`lso.calibration.graph.activation_absmax`);
            nodes producing or reading a tensor above ``safe_range`` stay FP32.
        safe_range: the range threshold.
        solver, softmax, grid: keep those parts FP32 (all True for the mixed graph).
    """
    islands: dict[str, str] = {}
    default_ops = set(_default_op_block_list())
    for node in model.graph.node:
        if node.op_type in default_ops:
            islands[node.name] = f"converter default op block list ({node.op_type})"
    keep = {"solver": solver, "softmax": softmax, "coordinate_grid": grid, "bicubic": grid}
    # the one table of FP32 islands (lso.islands), each found by its graph query (lso.export.graph_query)
    islands.update(island_nodes(model, [i.name for i in islands_for("fp16") if keep.get(i.name, True)]))
    if absmax:
        for node in model.graph.node:
            seen = [(name, absmax[name]) for name in list(node.output) + list(node.input)
                    if name in absmax and absmax[name] > safe_range]
            if seen:
                name, value = max(seen, key=lambda kv: kv[1])
                islands.setdefault(node.name, f"activation range: max |{name}| = {value:.4g} > {safe_range:g} "
                                              f"on the calibration feeds")
    return islands


# ------------------------------------------------------------------------------------------- conversion
def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    onnx = require("onnx")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def _unshare_initializers(model: onnx.ModelProto, block: set[str]) -> onnx.ModelProto:
    """Give FP32 (blocked) nodes their own copy of float initializers they share with FP16 nodes."""
    inits = {i.name: i for i in model.graph.initializer if i.data_type == G.FLOAT}
    users = G.consumers(model)
    for name, init in inits.items():
        nodes = users.get(name, [])
        blocked = [n for n in nodes if n.name in block]
        if blocked and len(blocked) < len(nodes):
            copy_name = f"{name}__fp32"
            clone = model.graph.initializer.add()
            clone.CopyFrom(init)
            clone.name = copy_name
            for node in blocked:
                for i, inp in enumerate(node.input):
                    if inp == name:
                        node.input[i] = copy_name
    return model


def _retarget_float_casts(model: onnx.ModelProto, block: set[str], op_block: set[str]) -> int:
    """``Cast(to=FLOAT)`` nodes outside the block list whose readers are FP16 nodes -> ``Cast(to=FLOAT16)``."""
    users = G.consumers(model)
    changed = 0
    for node in model.graph.node:
        if node.op_type != "Cast" or node.name in block:
            continue
        to = next(a for a in node.attribute if a.name == "to")
        if to.i != G.FLOAT:
            continue
        readers = users.get(node.output[0], [])
        fp16_readers = [u for u in readers
                        if u.name not in block and u.op_type not in op_block and u.op_type != "Cast"]
        if fp16_readers and len(fp16_readers) == len(readers):
            to.i = G.FLOAT16
            changed += 1
    return changed


def _remove_round_trips(model: onnx.ModelProto) -> int:
    """Bypass ``Cast(to=FLOAT16) -> Cast(to=FLOAT)`` pairs applied to an FP32 tensor (in place).

    The converter puts such a pair between two FP32 (blocked) nodes and removes it only when the FP16
    cast has a single reader (its ``remove_unnecessary_cast_node`` compares the multi-reader case with
    the wrong type codes), which would round the solver's intermediates to FP16 inside the FP32 island.
    Returns the number of inputs rewired (the dead casts go with :func:`lso.export.passes.cleanup`).
    """
    types = G.tensor_types(model)
    prod = G.producers(model)
    users = G.consumers(model)
    rewired = 0
    for node in model.graph.node:
        if node.op_type != "Cast" or next(a.i for a in node.attribute if a.name == "to") != G.FLOAT:
            continue
        src = prod.get(node.input[0])
        if src is None or src.op_type != "Cast" or next(a.i for a in src.attribute if a.name == "to") != G.FLOAT16:
            continue
        if types.get(src.input[0]) != G.FLOAT:
            continue
        for reader in users.get(node.output[0], []):
            for i, name in enumerate(reader.input):
                if name == node.output[0]:
                    reader.input[i] = src.input[0]
                    rewired += 1
    return rewired


def _strip_value_info(model: onnx.ModelProto) -> onnx.ModelProto:
    del model.graph.value_info[:]
    return model


def _check_types(model: onnx.ModelProto, what: str) -> None:
    onnx = require("onnx")
    try:
        onnx.checker.check_model(model)
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except Exception as exc:  # onnx raises ValidationError / InferenceError
        raise ExportError(f"the {what} graph is not type-consistent after conversion: {exc}") from exc


def to_mixed_fp16(model: onnx.ModelProto, keep_fp32: Iterable[str] = (), *,
                  op_block_list: Iterable[str] | None = None) -> onnx.ModelProto:
    """FP32 graph -> FP16 graph with FP32 I/O, the nodes ``keep_fp32`` (names) staying FP32. Pure pass.

    Uses ``onnxconverter_common.float16.convert_float_to_float16`` (``keep_io_types=True``) with
    ``node_block_list=keep_fp32`` and the converter's default op block list (``op_block_list``), then
    the repairs described in the module docstring, cleanup and a strict type check.
    """
    onnx = require("onnx")
    float16 = require("onnxconverter_common.float16")
    from lso.export.passes import cleanup

    op_block = list(op_block_list) if op_block_list is not None else list(float16.DEFAULT_OP_BLOCK_LIST)
    block = set(keep_fp32)
    work = onnx.shape_inference.infer_shapes(_copy(model))  # the converter places casts by value_info types
    work = _unshare_initializers(work, block | {n.name for n in work.graph.node if n.op_type in op_block})
    try:
        with warnings.catch_warnings(record=True) as caught:  # "the float32 number ... will be truncated to 1e-07"
            warnings.simplefilter("always")
            converted = float16.convert_float_to_float16(work, keep_io_types=True, node_block_list=sorted(block),
                                                         op_block_list=op_block, disable_shape_infer=True,
                                                         check_fp16_ready=False)
        if caught:
            log.debug("converter: %d weight value(s) clamped to FP16's range (|x| < 1e-7 or > 1e4)", len(caught))
    except Exception as exc:  # the converter raises ValueError/KeyError on graphs it cannot handle
        raise ExportError(f"onnxconverter-common could not convert the graph to FP16: {type(exc).__name__}: {exc}") \
            from exc
    converted = _strip_value_info(converted)  # stale value_info: onnxconverter-common issue #320
    retargeted = _retarget_float_casts(converted, block, set(op_block))
    if retargeted:
        log.debug("retargeted %d Cast(to=FLOAT) node(s) inside the FP16 region to FLOAT16", retargeted)
    bypassed = _remove_round_trips(converted)
    if bypassed:
        log.debug("bypassed %d FP32 -> FP16 -> FP32 cast round trip(s) inside the FP32 islands", bypassed)
    converted = cleanup(converted)
    _check_types(converted, "FP16")
    return converted


def to_naive_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """The naive conversion for comparison: converter defaults only (solver and softmax in FP16)."""
    return to_mixed_fp16(model, ())


# ------------------------------------------------------------------------------------------- emulation
def emulate_fp16(model16: onnx.ModelProto) -> onnx.ModelProto:
    """FP16 graph -> FP32 graph that rounds every FP16-stored tensor to FP16 (see the module docstring).

    - FP16 initializers and Constant values become FP32 holding the same (FP16) values;
    - every node whose output is FP16 computes in FP32, then its output goes through
      ``Cast(to=FLOAT16) -> Cast(to=FLOAT)``; ``Cast(to=FLOAT16)`` nodes become that pair too.

    Run it with ONNX Runtime on CPU: the rounding pairs are kept (the test suite checks it).
    """
    onnx = require("onnx")
    numpy_helper = require("onnx.numpy_helper")
    helper = onnx.helper
    from lso.export.passes import cleanup

    types = G.tensor_types(model16)
    out = _copy(model16)
    graph = out.graph
    for init in graph.initializer:
        if init.data_type == G.FLOAT16:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float32), init.name))
    new_nodes = []
    counter = 0
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == G.FLOAT16:
                value = numpy_helper.to_array(attr.t).astype(np.float32)
                attr.t.CopyFrom(numpy_helper.from_array(value, attr.t.name))
        is_cast16 = node.op_type == "Cast" and any(a.name == "to" and a.i == G.FLOAT16 for a in node.attribute)
        if is_cast16:
            for a in node.attribute:
                if a.name == "to":
                    a.i = G.FLOAT
        rounded = []
        for i, name in enumerate(node.output):
            if name and (is_cast16 or types.get(name) == G.FLOAT16):
                raw = f"{name}__f32_{counter}"
                counter += 1
                node.output[i] = raw
                rounded.append((raw, name))
        new_nodes.append(node)
        for raw, name in rounded:
            half = f"{raw}__half"
            new_nodes.append(helper.make_node("Cast", [raw], [half], to=G.FLOAT16, name=f"{half}__round"))
            new_nodes.append(helper.make_node("Cast", [half], [name], to=G.FLOAT, name=f"{name}__round"))
    del graph.node[:]
    graph.node.extend(new_nodes)
    del graph.value_info[:]
    out = cleanup(out)
    _check_types(out, "FP16 emulation")
    return out


# ------------------------------------------------------------------------------------------- reporting
def fp16_summary(model16: onnx.ModelProto, macs: Mapping[str, int]) -> dict[str, Any]:
    """Node counts by precision and the fraction of convolution MACs computed in FP16.

    ``macs``: Conv node name -> MACs (:func:`lso.calibration.graph.conv_macs` on the FP32 graph; the
    converter keeps node names).
    """
    types = G.tensor_types(model16)
    fp16_nodes, fp32_nodes = [], []
    for node in model16.graph.node:
        if node.op_type == "Cast" or not node.output:
            continue
        t = types.get(node.output[0])
        if t == G.FLOAT16:
            fp16_nodes.append(node)
        elif t == G.FLOAT:
            fp32_nodes.append(node)
    conv_fp16 = {n.name for n in model16.graph.node if n.op_type == "Conv" and types.get(n.input[0]) == G.FLOAT16}
    total = sum(macs.values())
    in_fp16 = sum(v for k, v in macs.items() if k in conv_fp16)
    return {
        "nodes_fp16": len(fp16_nodes),
        "nodes_fp32": len(fp32_nodes),
        "casts": sum(1 for n in model16.graph.node if n.op_type == "Cast"),
        "fp32_op_counts": dict(Counter(n.op_type for n in fp32_nodes).most_common()),
        "conv_macs_total": int(total),
        "conv_macs_fp16": int(in_fp16),
        "conv_mac_fraction_fp16": (in_fp16 / total) if total else 0.0,
        "convs_fp32": sorted(n for n in macs if n not in conv_fp16),
    }


# ------------------------------------------------------------------------------------------- the artifact
def convert_fp16(
    source: onnx.ModelProto | PathLike,
    out: PathLike,
    *,
    feeds: Iterable[Mapping[str, np.ndarray]] | None = None,
    mode: str = "mixed",
    safe_range: float = DEFAULT_SAFE_RANGE,
    keep_fp32: Iterable[str] = (),
) -> Path:
    """Write the FP16 graph of an FP32 LSO graph (+ ``<out>.json`` sidecar listing the FP32 nodes and why).

    Args:
        source: the FP32 ``.onnx`` (from ``lso export``) or a ``ModelProto``.
        out: the ``.onnx`` file to write (e.g. ``model.fp16.onnx``).
        feeds: calibration feeds (:func:`lso.calibration.calibration_feeds`) for the range check;
            None skips it (the sidecar says so).
        mode: ``"mixed"`` (FP32 islands, the deployment graph) or ``"naive"`` (converter defaults only,
            solver and softmax in FP16: for comparison, never for deployment).
        safe_range: ``max |x|`` above which a node stays FP32.
        keep_fp32: extra node names to keep FP32 ("user request").

    Returns:
        ``out``.
    """
    onnx = require("onnx")
    from lso.artifacts import atomic_path, check_writable_target, sidecar_path, write_sidecar

    out = Path(out)
    if out.suffix != ".onnx":
        raise InputError(f"output {out} must end in .onnx")
    check_writable_target(out)
    if mode not in ("mixed", "naive"):
        raise InputError(f"mode must be 'mixed' or 'naive', got {mode!r}")
    model, source_info = load_fp32_graph(source)
    config = graph_config(model, source_info)
    absmax, feed_info = None, None
    if feeds is not None and mode == "mixed":
        feeds = feeds if isinstance(feeds, Sized) else list(feeds)  # CalibrationFeeds is a sequence
        log.info("activation ranges on %d calibration feed(s)", len(feeds))
        inputs = input_names(model)  # a tileable graph also takes extent: the whole image's is added
        absmax = G.activation_absmax(model, (with_extent(feed, inputs) for feed in feeds))
        feed_info = feeds.describe() if hasattr(feeds, "describe") else {"count": len(feeds)}
    if mode == "mixed":
        islands = fp32_islands(model, absmax=absmax, safe_range=safe_range)
    else:
        default_ops = set(_default_op_block_list())
        islands = {n.name: f"converter default op block list ({n.op_type})" for n in model.graph.node
                   if n.op_type in default_ops}
    for name in keep_fp32:
        islands.setdefault(name, "user request")
    log.info("converting to FP16 (%s): %d node(s) stay FP32", mode, len(islands))
    model16 = to_mixed_fp16(model, islands)
    macs = G.conv_macs(model, mac_feed(config, model))
    summary = fp16_summary(model16, macs)
    model16.doc_string = (f"LSO fusion, FP16 {mode} precision (FP32 I/O), converted by lso-deploy from "
                          f"{source_info.get('path', 'a model')}")
    entry = model16.metadata_props.add()
    entry.key, entry.value = "lso.precision", f"fp16-{mode}"
    with atomic_path(out) as tmp:
        onnx.save_model(model16, str(tmp), save_as_external_data=False)
        G.ort_session(onnx.load(str(tmp)))  # ONNX Runtime must load what we ship
    types_ops = {n.name: n.op_type for n in model.graph.node}
    info = {
        "stage": "calibrate",
        "format": "onnx",
        "precision": "fp16" if mode == "mixed" else "fp16-naive",
        "mode": mode,
        "io_dtype": "float32",
        "config": config,
        "opset": next((o.version for o in model16.opset_import if o.domain in ("", "ai.onnx")), None),
        "source": {k: v for k, v in source_info.items() if k != "sidecar"},
        "converter": {"tool": "onnxconverter-common", "version": tool_version("onnxconverter-common"),
                      "function": "float16.convert_float_to_float16", "keep_io_types": True},
        "safe_range": safe_range,
        "calibration": feed_info if feed_info is not None else {"skipped": True},
        "fp32_nodes": [{"node": k, "op": types_ops.get(k, "?"), "reason": v} for k, v in sorted(islands.items())],
        "fp32_reasons": dict(Counter(_reason_key(v) for v in islands.values()).most_common()),
        "summary": summary,
        "activation_absmax_top": _top(absmax),
        "versions": tool_versions(),
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        write_sidecar(out, info)
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    log.info("wrote %s (%.1f%% of conv MACs in FP16) and %s", out, 100 * summary["conv_mac_fraction_fp16"],
             sidecar_path(out).name)
    return out


def _reason_key(reason: str) -> str:
    return reason.split(":")[0].split(" (")[0]


def _top(absmax: Mapping[str, float] | None, n: int = 10) -> list | None:
    if not absmax:
        return None
    return [{"tensor": k, "absmax": v} for k, v in sorted(absmax.items(), key=lambda kv: -kv[1])[:n]]
