"""Graph passes on the exported ONNX model: each is ``ModelProto -> ModelProto`` and ends with cleanup.

- :func:`name_dynamic_axes`: give the symbolic dimensions the names of ``lso.io_spec`` (the exporter
  calls them ``s0``, ``s1`` ...) and fail if one of them was baked in as a number.
- :func:`simplify`: constant folding and cleanup with onnxslim.
- :func:`annotate`: model metadata (``metadata_props``) and doc string.
- :func:`cleanup`: sort topologically, then drop nodes, initializers and value infos nothing uses.

Helpers that read a graph without changing it: :func:`op_counts`, :func:`tensor_dims`.
"""
from __future__ import annotations

import heapq
import logging
from collections import Counter, defaultdict
from typing import TYPE_CHECKING, Mapping

from lso._deps import require
from lso.errors import ExportError

if TYPE_CHECKING:  # pragma: no cover
    import onnx

__all__ = ["name_dynamic_axes", "simplify", "annotate", "cleanup", "toposort", "op_counts", "tensor_dims"]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------- cleanup
def _subgraph_inputs(node) -> set[str]:
    """Names a node's subgraphs (If/Loop/Scan bodies) read from the enclosing scope (or anywhere)."""
    onnx = require("onnx")
    names: set[str] = set()
    for attr in node.attribute:
        subs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for sub in subs:
            for inner in sub.node:
                names.update(i for i in inner.input if i)
                names |= _subgraph_inputs(inner)
    return names


def toposort(model: "onnx.ModelProto") -> "onnx.ModelProto":
    """Sort the main graph's nodes topologically (Kahn), keeping the original order where it is one."""
    graph = model.graph
    nodes = list(graph.node)
    producer = {out: i for i, node in enumerate(nodes) for out in node.output if out}
    users: dict[int, list[int]] = defaultdict(list)
    indegree = [0] * len(nodes)
    for i, node in enumerate(nodes):
        # names no node produces are graph inputs, initializers or (in subgraphs) outer-scope names
        deps = {producer[name] for name in set(node.input) | _subgraph_inputs(node) if name in producer}
        deps.discard(i)
        indegree[i] = len(deps)
        for j in deps:
            users[j].append(i)
    ready = [i for i, d in enumerate(indegree) if d == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for user in users[i]:
            indegree[user] -= 1
            if indegree[user] == 0:
                heapq.heappush(ready, user)
    if len(order) != len(nodes):
        stuck = [nodes[i].name or nodes[i].op_type for i, d in enumerate(indegree) if d > 0][:5]
        raise ExportError(f"the graph has a cycle (nodes {stuck} ...)")
    del graph.node[:]
    graph.node.extend(nodes[i] for i in order)
    return model


def _all_outputs(nodes) -> set[str]:
    return {o for n in nodes for o in n.output if o}


def cleanup(model: "onnx.ModelProto") -> "onnx.ModelProto":
    """Sort topologically; remove nodes whose outputs nothing reads, unused initializers and value infos."""
    graph = toposort(model).graph
    wanted = {o.name for o in graph.output}
    keep = []
    for node in reversed(list(graph.node)):  # a reverse sweep removes whole dead chains in one pass
        if any(o in wanted for o in node.output if o):
            keep.append(node)
            wanted.update(i for i in node.input if i)
            wanted |= _subgraph_inputs(node)
    keep.reverse()
    removed = len(graph.node) - len(keep)
    del graph.node[:]
    graph.node.extend(keep)
    inits = [i for i in graph.initializer if i.name in wanted]
    dropped_inits = len(graph.initializer) - len(inits)
    del graph.initializer[:]
    graph.initializer.extend(inits)
    produced = _all_outputs(keep) | {i.name for i in graph.input}
    infos = [v for v in graph.value_info if v.name in produced]
    del graph.value_info[:]
    graph.value_info.extend(infos)
    if removed or dropped_inits:
        log.debug("cleanup removed %d node(s) and %d initializer(s)", removed, dropped_inits)
    return model


# ---------------------------------------------------------------------------------------------- passes
def name_dynamic_axes(model: "onnx.ModelProto", axes: Mapping[str, Mapping[int, str]]) -> "onnx.ModelProto":
    """Rename the symbolic dimensions of the graph's inputs/outputs to ``axes`` (``io_spec.dynamic_axes()``).

    Every occurrence of an old symbol (inputs, outputs, value infos) is renamed, so equal dimensions
    stay equal. Raises ExportError if a named input/output is missing or one of its dynamic axes
    is a fixed number in the graph (a shape baked in at the trace size).
    """
    graph = model.graph
    values = {v.name: v for v in list(graph.input) + list(graph.output)}
    rename: dict[str, str] = {}
    for name, dims in axes.items():
        if name not in values:
            continue  # e.g. a name used only by another variant of the graph
        shape = values[name].type.tensor_type.shape
        for axis, new in dims.items():
            if axis >= len(shape.dim):
                raise ExportError(f"{name} has rank {len(shape.dim)}; expected a dynamic axis {axis} ({new})")
            dim = shape.dim[axis]
            if not dim.HasField("dim_param"):
                raise ExportError(
                    f"axis {axis} ({new}) of {name} is fixed to {dim.dim_value} in the exported graph: a shape was "
                    "baked in at the trace size. The model's forward must not turn that size into a Python int."
                )
            old = dim.dim_param
            if rename.get(old, new) != new:
                raise ExportError(f"axes {rename[old]!r} and {new!r} share one symbol ({old}) in the graph: the "
                                  "exporter assumed them equal; they must be independent")
            rename[old] = new
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        if not value.type.HasField("tensor_type"):
            continue
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_param") and dim.dim_param in rename:
                dim.dim_param = rename[dim.dim_param]
    return cleanup(model)


def simplify(model: "onnx.ModelProto") -> "onnx.ModelProto":
    """Constant folding, dead-code and common-subexpression elimination with onnxslim.

    Raises ExportError if onnxslim fails (the caller keeps the unsimplified graph).
    """
    onnxslim = require("onnxslim")
    try:
        slim = onnxslim.slim(model)
    except Exception as exc:  # onnxslim raises anything from its own passes
        raise ExportError(f"onnxslim {getattr(onnxslim, '__version__', '?')} failed: {type(exc).__name__}: {exc}") \
            from exc
    if slim is None:
        raise ExportError("onnxslim returned no model")
    return cleanup(slim)


def annotate(model: "onnx.ModelProto", metadata: Mapping[str, str], doc: str = "") -> "onnx.ModelProto":
    """Set ``metadata_props`` entries (replacing same keys) and the model's doc string."""
    props = {p.key: p.value for p in model.metadata_props}
    props.update({k: str(v) for k, v in metadata.items()})
    del model.metadata_props[:]
    for key, value in sorted(props.items()):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    if doc:
        model.doc_string = doc
    return cleanup(model)


# --------------------------------------------------------------------------------------------- reading
def op_counts(model: "onnx.ModelProto") -> dict[str, int]:
    """Nodes per operator type in the main graph, most frequent first."""
    return dict(Counter(n.op_type for n in model.graph.node).most_common())


def tensor_dims(model: "onnx.ModelProto") -> dict[str, tuple]:
    """Shape of every tensor ONNX shape inference can type (ints, or strings for symbolic dims).

    Covers initializers, inputs, outputs and intermediate values; unknown dims are ``None``.
    """
    onnx = require("onnx")
    inferred = onnx.shape_inference.infer_shapes(model)
    dims: dict[str, tuple] = {}
    graph = inferred.graph
    for value in list(graph.input) + list(graph.value_info) + list(graph.output):
        if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape"):
            dims[value.name] = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                                     for d in value.type.tensor_type.shape.dim)
    for init in graph.initializer:
        dims[init.name] = tuple(init.dims)
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    dims[node.output[0]] = tuple(attr.t.dims)
    return dims
