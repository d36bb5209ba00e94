"""Graph passes on the exported ONNX model: each is ``ModelProto -> ModelProto`` and ends with cleanup.

- :func:`name_dynamic_axes`: give the symbolic dimensions the names of ``lso.io_spec`` (the exporter
  calls them ``s0``, ``s1`` ...) and fail if one of them was baked in as a number.
- :func:`simplify`: constant folding and cleanup with onnxslim.
- :func:`annotate`: model metadata (``metadata_props``) and doc string.
- :func:`chunk_solver`: run each spectral block's solver chain inside a ``Scan`` over chunks of
  patches (for CPU runtimes: the ~90-node element-wise chain then works on cache-sized tensors).
- :func:`cleanup`: sort topologically, then drop nodes, initializers and value infos nothing uses.

Which nodes form a solver chain, which convolution reads which weight: :mod:`lso.export.graph_query`, which
also holds the helpers that read a graph without changing it (:func:`op_counts`, :func:`tensor_dims`, re-exported
here).
"""
from __future__ import annotations

import heapq
import logging
from collections import defaultdict
from collections.abc import Mapping
from typing import TYPE_CHECKING

from lso.deps import require
from lso.errors import ExportError
from lso.export import graph_query as Q
from lso.export.graph_query import op_counts, tensor_dims

if TYPE_CHECKING:  # pragma: no cover
    import onnx

__all__ = ["name_dynamic_axes", "simplify", "annotate", "chunk_solver", "cleanup", "toposort", "op_counts",
           "tensor_dims", "DEFAULT_SOLVER_CHUNK", "align_conv_channels", "DEFAULT_CHANNEL_MULTIPLE", "save_chunked"]

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


def toposort(model: onnx.ModelProto) -> onnx.ModelProto:
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


def cleanup(model: onnx.ModelProto) -> onnx.ModelProto:
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
def name_dynamic_axes(model: onnx.ModelProto, axes: Mapping[str, Mapping[int, str]]) -> onnx.ModelProto:
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


def simplify(model: onnx.ModelProto) -> onnx.ModelProto:
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


def annotate(model: onnx.ModelProto, metadata: Mapping[str, str], doc: str = "") -> onnx.ModelProto:
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


DEFAULT_SOLVER_CHUNK = 128  # patches per Scan iteration: 2 x 128 x 64 x 8 float32 = 512 KiB per tensor


def chunk_solver(model: onnx.ModelProto, chunk: int = DEFAULT_SOLVER_CHUNK) -> onnx.ModelProto:
    """Run every solver chain (Sigmoid of the latent codes ``z [N, ...]`` -> solved codes) in a ``Scan``.

    The folded solver is ~90 element-wise nodes on ``[2, N, heads, T, d]`` tensors (at 512² and patch 4,
    N = 16384: 67 MB each), so a CPU runtime that executes node by node streams every intermediate
    through memory. Here ``z`` is padded to a multiple of ``chunk`` patches and reshaped to
    ``[K, chunk, ...]``; a ``Scan`` runs the *same nodes* on one chunk at a time (cache-resident),
    and the result is reshaped and cut back to N. Every element is computed by the same operations
    as before, so outputs are unchanged. TensorRT fuses such chains itself: use this for ONNX
    Runtime on CPU, not for engines. A chain that does not have the expected form (one tensor
    leaving it, no non-constant input from outside) is left as it is, with a log message.
    """
    onnx = require("onnx")
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    if int(chunk) < 1:
        raise ExportError(f"solver chunk must be a positive number of patches, not {chunk}")
    graph = model.graph
    nodes = list(graph.node)
    chains = Q.solver_chains(model)  # indices into nodes (the graph's order)
    types = Q.tensor_types(model)  # element types of the chains' ends
    replaced, removed, added = 0, set(), []
    constants = set(Q.constants(graph))
    for index, solver in enumerate(chains):
        z, leaving = solver.z, solver.leaving
        chain = [nodes[i] for i in solver.members]
        inside = {z} | {o for n in chain for o in n.output}
        outside = sorted({i for n in chain for i in n.input if i and i not in inside and i not in constants})
        if len(leaving) != 1 or outside:
            log.info("solver chain at %s left unchunked (%d outputs, non-constant inputs %s)",
                     nodes[solver.seed].name, len(leaving), outside[:3])
            continue
        y = leaving[0]
        pre = f"{Q.SOLVER_CHUNK_PREFIX}{index}"
        z_in, y_out = f"{pre}_z", f"{pre}_y"
        body_nodes = []
        for node in chain:
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            for k, name in enumerate(copy.input):
                if name == z:
                    copy.input[k] = z_in
            for k, name in enumerate(copy.output):
                if name == y:
                    copy.output[k] = y_out
            body_nodes.append(copy)
        body = helper.make_graph(
            body_nodes, f"{pre}_body",
            [helper.make_tensor_value_info(z_in, types.get(z) or TensorProto.FLOAT, None)],
            [helper.make_tensor_value_info(y_out, types.get(y) or TensorProto.FLOAT, None)])

        def name(suffix: str, pre: str = pre) -> str:  # this chunk's prefix, bound now
            return f"{pre}_{suffix}"

        consts = {"one_m": [chunk - 1], "chunk": [chunk], "zero": [0], "minus1": [-1]}
        for key, value in consts.items():
            graph.initializer.append(numpy_helper.from_array(np.array(value, dtype=np.int64), name(key)))
        outer = [
            helper.make_node("Shape", [z], [name("n")], start=0, end=1),
            helper.make_node("Shape", [z], [name("rest")], start=1),
            helper.make_node("Add", [name("n"), name("one_m")], [name("n_up")]),
            helper.make_node("Div", [name("n_up"), name("chunk")], [name("k")]),
            helper.make_node("Mul", [name("k"), name("chunk")], [name("n_pad")]),
            helper.make_node("Sub", [name("n_pad"), name("n")], [name("pad_end")]),
            helper.make_node("Concat", [name("zero"), name("pad_end")], [name("pads")], axis=0),
            helper.make_node("Pad", [z, name("pads"), "", name("zero")], [name("zp")]),  # axis 0 only
            helper.make_node("Concat", [name("k"), name("chunk"), name("rest")], [name("shape_in")], axis=0),
            helper.make_node("Reshape", [name("zp"), name("shape_in")], [name("z_chunks")]),
            helper.make_node("Scan", [name("z_chunks")], [name("y_chunks")], num_scan_inputs=1, body=body),
            helper.make_node("Concat", [name("minus1"), name("rest")], [name("shape_out")], axis=0),
            helper.make_node("Reshape", [name("y_chunks"), name("shape_out")], [name("y_pad")]),
            helper.make_node("Slice", [name("y_pad"), name("zero"), name("n"), name("zero")], [y]),
        ]
        for i, node in enumerate(outer):
            node.name = f"{pre}_{node.op_type}_{i}"
        removed |= set(solver.members)
        added += outer
        replaced += 1
    if replaced:
        keep = [n for i, n in enumerate(nodes) if i not in removed]
        del graph.node[:]
        graph.node.extend(keep + added)
        log.info("solver: %d chain(s) run in Scan over chunks of %d patches", replaced, chunk)
    from lso.export.variants import mark_pass

    return mark_pass(cleanup(model), "chunk_solver", chunk)


DEFAULT_CHANNEL_MULTIPLE = 16  # ONNX Runtime's NCHWc block on AVX-512 (8 on AVX2: 16 suits both)
_ZERO_PRESERVING = frozenset({"Relu", "LeakyRelu"})  # act(0) = 0: padded output channels stay zero


def align_conv_channels(model: onnx.ModelProto, multiple: int = DEFAULT_CHANNEL_MULTIPLE) -> onnx.ModelProto:
    """Pad convolutions' channel counts to a multiple of ``multiple`` with zero weights (same outputs).

    ONNX Runtime's CPU provider runs a convolution in its blocked NCHWc layout only when the input
    channels are a multiple of its block (16 on AVX-512); the paper model's head (34 = RGB + 31
    bands), ``inc`` (130 = 128 + coordinates) and decoder convolutions (131 in, 65 mid) miss it, run
    as plain NCHW convolutions at about two thirds of the blocked rate, and force layout reorders
    (with their residual adds left unfused) around them. Here:

    - a convolution whose input is a ``Concat`` read by nothing else gets zero channels appended to
      that ``Concat`` (``ConstantOfShape``, so non-finite inputs cannot leak into them) and zero
      weight columns;
    - a convolution whose output channels miss the multiple, and whose output reaches only other
      convolutions directly or through one ``Relu``/``LeakyRelu``, gets zero output channels (zero
      weights and bias: the activation keeps them zero) and its consumers zero weight columns.

    Every output element is the same sum plus exact zeros, so results are unchanged up to the
    order the runtime adds in. Only float convolutions with constant weights (``group`` 1) are
    touched; TensorRT pads internally, so use this for ONNX Runtime on CPU, like :func:`chunk_solver`.
    """
    require("onnx")
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    multiple = int(multiple)
    if multiple < 1:
        raise ExportError(f"channel multiple must be a positive number of channels, not {multiple}")
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    consumers: dict[str, list] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    producer = {o: n for n in graph.node for o in n.output if o}
    graph_outputs = {o.name for o in graph.output}

    def weight_of(node):
        if Q.conv_weight(node, inits) is None:
            return None
        if any(a.name == "group" and a.i != 1 for a in node.attribute):
            return None
        w = numpy_helper.to_array(inits[node.input[1]])
        return w if w.dtype in (np.float32, np.float16) and w.ndim == 4 else None

    def replace(name: str, array) -> str:
        new = f"{name}_aligned{'x'.join(str(d) for d in array.shape)}"
        graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(array), new))
        inits[new] = graph.initializer[-1]
        return new

    def pad_axis(array, axis: int, extra: int):
        widths = [(0, 0)] * array.ndim
        widths[axis] = (0, extra)
        return np.pad(array, widths)

    added_in = added_out = 0
    stale: set[str] = set()  # tensors whose channel count changed: their recorded shapes go
    for index, conv in enumerate(list(graph.node)):
        w = weight_of(conv)
        if w is None:
            continue
        # output channels: pad when only convolutions (directly or through one zero-preserving activation) read them
        out_ch = w.shape[0]
        extra = -out_ch % multiple
        if extra:
            readers, users = [], consumers.get(conv.output[0], [])
            if len(users) == 1 and users[0].op_type in _ZERO_PRESERVING:
                readers = consumers.get(users[0].output[0], [])
            elif users:
                readers = users
            reader_weights = [weight_of(r) for r in readers]
            if readers and conv.output[0] not in graph_outputs and all(
                    rw is not None and rw.shape[1] == out_ch and r.input[0] in (conv.output[0], users[0].output[0])
                    for r, rw in zip(readers, reader_weights, strict=True)):
                conv.input[1] = replace(conv.input[1], pad_axis(w, 0, extra))
                if len(conv.input) > 2 and conv.input[2] in inits:
                    bias = numpy_helper.to_array(inits[conv.input[2]])
                    conv.input[2] = replace(conv.input[2], pad_axis(bias, 0, extra))
                for reader, rw in zip(readers, reader_weights, strict=True):
                    reader.input[1] = replace(reader.input[1], pad_axis(rw, 1, extra))
                added_out += 1
                stale.update(conv.output[:1], (u.output[0] for u in users))
                w = weight_of(conv)
        # input channels: pad through a Concat that only this convolution reads
        in_ch = w.shape[1]
        extra = -in_ch % multiple
        src = producer.get(conv.input[0])
        if not extra or src is None or src.op_type != "Concat" or len(consumers.get(conv.input[0], [])) != 1:
            continue
        if not any(a.name == "axis" and a.i in (1, -3) for a in src.attribute):
            continue
        pre = f"lso_align{index}"
        graph.initializer.extend([numpy_helper.from_array(np.array([extra], dtype=np.int64), f"{pre}_extra")])
        zero_type = TensorProto.FLOAT16 if w.dtype == np.float16 else TensorProto.FLOAT
        first = src.input[0]
        new_nodes = [
            helper.make_node("Shape", [first], [f"{pre}_batch"], start=0, end=1, name=f"{pre}_Shape_0"),
            helper.make_node("Shape", [first], [f"{pre}_hw"], start=2, name=f"{pre}_Shape_1"),
            helper.make_node("Concat", [f"{pre}_batch", f"{pre}_extra", f"{pre}_hw"], [f"{pre}_shape"], axis=0,
                             name=f"{pre}_Concat"),
            helper.make_node("ConstantOfShape", [f"{pre}_shape"], [f"{pre}_zeros"], name=f"{pre}_ConstantOfShape",
                             value=helper.make_tensor("value", zero_type, [1], [0])),
        ]
        graph.node.extend(new_nodes)
        src.input.append(f"{pre}_zeros")
        stale.add(src.output[0])
        conv.input[1] = replace(conv.input[1], pad_axis(w, 1, extra))
        added_in += 1
    infos = [v for v in graph.value_info if v.name not in stale]
    del graph.value_info[:]
    graph.value_info.extend(infos)
    if added_in or added_out:
        log.info("channels aligned to %d: %d convolution input(s), %d output(s)", multiple, added_in, added_out)
    from lso.export.variants import mark_pass

    return mark_pass(cleanup(model), "align_conv_channels", multiple)


def save_chunked(path, chunk: int = DEFAULT_SOLVER_CHUNK) -> str:
    """Write ``<stem>.chunk<chunk>.onnx`` next to the graph at ``path`` with :func:`chunk_solver` applied;
    returns its path (``path`` itself when ``chunk`` is 0/None). For graphs made by other tools
    (``lso calibrate``'s FP16/INT8 outputs) that are to run on ONNX Runtime on CPU."""
    from pathlib import Path

    onnx = require("onnx")
    from lso.artifacts import atomic_path

    if not chunk:
        return str(path)
    path = Path(path)
    out = path.with_name(f"{path.stem}.chunk{int(chunk)}.onnx")
    with atomic_path(out) as tmp:
        onnx.save(chunk_solver(onnx.load(str(path)), int(chunk)), str(tmp))
    return str(out)
