"""Reading an exported LSO graph for precision decisions: blocks, solver nodes, MACs, types, activation ranges.

Everything here reads a ``ModelProto`` (never changes its argument) and needs onnx (and
onnxruntime for the functions that run the graph). The graph questions themselves (which nodes form
the solver, the softmaxes, the coordinate grid, the bicubic matrices; which convolution reads which
weight and belongs to which block; tensor types) are answered by :mod:`lso.export.graph_query` and
re-exported here under their old names:

- :func:`conv_blocks`: Conv node -> the named module it belongs to (``spatial_encoder.body.2``, ``inc``,
  ``process1``, ``outc`` ...), from the weight initializer's name the exporter kept.
- :func:`solver_nodes`, :func:`softmax_nodes`, :func:`coordinate_grid_nodes`, :func:`resize_nodes`: the parts of
  the graph that must stay in float (with the reason).
- :func:`tensor_types`: element type of every tensor (ONNX type inference).

Computed here by running the graph:

- :func:`conv_macs`: multiply-accumulates of every Conv at one input size (ONNX Runtime run).
- :func:`activation_absmax`: ``max |x|`` of every float tensor over feeds, computed in the graph
  (``Abs -> ReduceMax`` appended per tensor, so only scalars leave ONNX Runtime).
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from lso.deps import require
from lso.export.graph_query import (
    FLOAT,
    FLOAT16,
    INT8,
    UINT8,
    block_of,
    block_order,
    consumers,
    conv_blocks,
    conv_weights,
    coordinate_grid_nodes,
    producers,
    resize_nodes,
    softmax_nodes,
    solver_nodes,
    tensor_types,
)

if TYPE_CHECKING:  # pragma: no cover
    import onnx

__all__ = ["block_of", "conv_blocks", "block_order", "solver_nodes", "softmax_nodes", "coordinate_grid_nodes",
           "resize_nodes",
           "conv_macs", "activation_absmax", "tensor_types", "consumers", "producers", "ort_session",
           "FLOAT", "FLOAT16", "INT8", "UINT8"]

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ running
def ort_session(model: onnx.ModelProto, *, threads: int | None = None, optimize: bool = True) -> Any:
    """A CPU ``onnxruntime.InferenceSession`` on an in-memory model (:func:`lso.runtime.ort_session`), errors only
    in its log; ``optimize=False`` turns ONNX Runtime's graph optimisations off."""
    from lso.runtime.ort_runner import ort_session

    return ort_session(model, threads=threads or None, optimization=None if optimize else "disable", log_severity=3)


def _with_outputs(model: onnx.ModelProto, names: Iterable[str], elem_type: int = FLOAT) -> onnx.ModelProto:
    onnx = require("onnx")
    extended = onnx.ModelProto()
    extended.CopyFrom(model)
    existing = {o.name for o in extended.graph.output}
    for name in names:
        if name not in existing:
            extended.graph.output.append(onnx.helper.make_tensor_value_info(name, elem_type, None))
    return extended


def conv_macs(model: onnx.ModelProto, feed: Mapping[str, np.ndarray]) -> dict[str, int]:
    """Multiply-accumulates of each Conv (node name -> MACs) for one feed: ``out_elems * Cin/groups * kH * kW``.

    Output shapes come from running the graph (ONNX Runtime, CPU) on ``feed``; give a small one.
    """
    inits = {i.name: i for i in model.graph.initializer}
    weights = conv_weights(model)
    convs = [n for n in model.graph.node if n.name in weights]
    session = ort_session(_with_outputs(model, [n.output[0] for n in convs]))
    names = [o.name for o in session.get_outputs()]
    values = dict(zip(names, session.run(names, dict(feed)), strict=True))
    macs = {}
    for node in convs:
        w = inits[node.input[1]].dims  # [Cout, Cin/groups, kH, kW]
        macs[node.name] = int(np.prod(values[node.output[0]].shape)) * int(np.prod(w[1:]))
    return macs


def activation_absmax(model: onnx.ModelProto, feeds: Iterable[Mapping[str, np.ndarray]],
                      names: Iterable[str] | None = None) -> dict[str, float]:
    """``max |x|`` over ``feeds`` of every float32 tensor a node produces (or of ``names``).

    Each tensor gets ``Abs -> ReduceMax`` appended inside the graph, so only one scalar per tensor leaves
    ONNX Runtime (a 512² feed has activations of hundreds of MB). Non-finite values are reported as ``inf``.
    """
    onnx = require("onnx")
    helper = onnx.helper
    types = tensor_types(model)
    if names is None:
        names = [o for n in model.graph.node for o in n.output if o and types.get(o) == FLOAT]
    names = list(dict.fromkeys(names))
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    outs = []
    for i, name in enumerate(names):
        abs_name, max_name = f"__absmax_abs_{i}", f"__absmax_{i}"
        probe.graph.node.extend([helper.make_node("Abs", [name], [abs_name], name=abs_name),
                                 helper.make_node("ReduceMax", [abs_name], [max_name], name=max_name, keepdims=0)])
        probe.graph.output.append(helper.make_tensor_value_info(max_name, FLOAT, []))
        outs.append(max_name)
    session = ort_session(probe)
    best = np.zeros(len(names), dtype=np.float64)
    for feed in feeds:
        values = session.run(outs, dict(feed))
        current = np.array([float(v) if np.isfinite(v) else np.inf for v in values])
        best = np.maximum(best, current)
    return dict(zip(names, best.tolist(), strict=True))
