"""Reading an exported LSO graph for precision decisions: blocks, solver nodes, MACs, types, activation ranges.

Everything here reads a ``ModelProto`` (never changes its argument) and needs onnx (and
onnxruntime for the functions that run the graph):

- :func:`conv_blocks`: Conv node -> the named module it belongs to (``spatial_encoder.body.2``, ``inc``,
  ``process1``, ``outc`` ...), from the weight initializer's name the exporter kept.
- :func:`solver_nodes`, :func:`softmax_nodes`, :func:`coordinate_grid_nodes`, :func:`resize_nodes`: the parts of
  the graph that must stay in float (with the reason).
- :func:`conv_macs`: multiply-accumulates of every Conv at one input size (ONNX Runtime run).
- :func:`activation_absmax`: ``max |x|`` of every float tensor over feeds, computed in the graph
  (``Abs -> ReduceMax`` appended per tensor, so only scalars leave ONNX Runtime).
- :func:`tensor_types`: element type of every tensor (ONNX type inference).
"""
from __future__ import annotations

import logging
import re
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from lso._deps import require

if TYPE_CHECKING:  # pragma: no cover
    import onnx

__all__ = ["block_of", "conv_blocks", "block_order", "solver_nodes", "softmax_nodes", "coordinate_grid_nodes",
           "resize_nodes",
           "conv_macs", "activation_absmax", "tensor_types", "consumers", "producers", "ort_session",
           "FLOAT", "FLOAT16", "INT8", "UINT8"]

log = logging.getLogger(__name__)

FLOAT, FLOAT16, INT8, UINT8 = 1, 10, 3, 2  # onnx.TensorProto element types

# a parameter name -> its block (the named module a block is): spatial_encoder.body.<i> (residual blocks and
# the tail conv), spatial_encoder.head, and the top-level modules of LSO (inc, down1, process1, up1, outc ...).
_BLOCK_PATTERNS = (re.compile(r"^(spatial_encoder\.(?:head|body\.\d+))\."), re.compile(r"^([A-Za-z_]\w*?)\."))
_STOP_OPS = {"MatMul", "Einsum", "Conv", "Gemm"}


def block_of(param_name: str) -> str | None:
    """``"spatial_encoder.body.1.body.0.weight"`` -> ``"spatial_encoder.body.1"``; ``"up1.conv..."`` -> ``"up1"``."""
    for pattern in _BLOCK_PATTERNS:
        match = pattern.match(param_name)
        if match:
            return match.group(1)
    return None


def producers(model: onnx.ModelProto) -> dict[str, Any]:
    """Tensor name -> the node producing it (main graph)."""
    return {out: node for node in model.graph.node for out in node.output if out}


def consumers(model: onnx.ModelProto) -> dict[str, list]:
    """Tensor name -> the nodes reading it (main graph)."""
    users: dict[str, list] = defaultdict(list)
    for node in model.graph.node:
        for name in node.input:
            if name:
                users[name].append(node)
    return users


def conv_blocks(model: onnx.ModelProto) -> dict[str, str]:
    """Conv node name -> block name, read from the name of the Conv's weight initializer."""
    inits = {i.name for i in model.graph.initializer}
    users = None
    out = {}
    for node in model.graph.node:
        if node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in inits:
            block = block_of(node.input[1])
            if block is None:  # a weight the export computed (e.g. a spectral block's fused 1x1 convs)
                users = users if users is not None else consumers(model)
                block = _block_downstream(node, users, inits)
            if block is not None:
                out[node.name] = block
    return out


def _block_downstream(node: Any, users: dict[str, list], inits: set[str], depth: int = 8) -> str | None:
    """The block of the first named parameter read within ``depth`` nodes downstream of ``node``.

    A spectral block's fused key/value/query convolution has a computed weight (``cat_N``); the first
    named parameter after it is the block's ``latent`` (its attention queries).
    """
    frontier, seen = [node], set()
    for _ in range(depth):
        following = []
        for n in frontier:
            for out in n.output:
                for user in users.get(out, ()):
                    if user.name in seen:
                        continue
                    seen.add(user.name)
                    for name in user.input:
                        if name in inits and block_of(name) is not None:
                            return block_of(name)
                    following.append(user)
        frontier = following
    return None


def block_order(model: onnx.ModelProto) -> list[str]:
    """Blocks in the order their first Conv appears in the (topologically sorted) graph."""
    seen: dict[str, None] = {}
    for block in conv_blocks(model).values():
        seen.setdefault(block, None)
    return list(seen)


def _forward_closure(model: onnx.ModelProto, starts: Iterable[Any], stop_ops: set[str]) -> list[Any]:
    users = consumers(model)
    seen: dict[str, Any] = {}
    queue = deque(starts)
    while queue:
        node = queue.popleft()
        if node.name in seen or node.op_type in stop_ops:
            continue
        seen[node.name] = node
        for out in node.output:
            queue.extend(users.get(out, ()))
    return list(seen.values())


def solver_nodes(model: onnx.ModelProto) -> dict[str, str]:
    """Nodes of the trigonometric solver: everything downstream of each ``Sigmoid`` up to the next matrix
    product (the LatentToCoord attention), plus the constant-filled tensors only they read (``zeros_like``).

    Returns ``{node name: reason}``.
    """
    starts = [n for n in model.graph.node if n.op_type == "Sigmoid"]
    nodes = {n.name: n for n in _forward_closure(model, starts, _STOP_OPS)}
    users = consumers(model)
    prod = producers(model)
    # zeros_like(z) / ones-like fillers (Expand or ConstantOfShape of a constant) read only by the solver
    for node in list(nodes.values()):
        for name in node.input:
            src = prod.get(name)
            if src is None or src.name in nodes or src.op_type not in ("Expand", "ConstantOfShape"):
                continue
            if all(u.name in nodes for u in users.get(name, ())):
                nodes[src.name] = src
    return {name: "solver: sigmoid, angle, sin/cos and the Clenshaw recurrence (arguments up to Q*pi^2)"
            for name in nodes}


def softmax_nodes(model: onnx.ModelProto) -> dict[str, str]:
    """Every ``Softmax`` (the attention softmaxes of the spectral blocks)."""
    return {n.name: "attention softmax" for n in model.graph.node if n.op_type == "Softmax"}


def coordinate_grid_nodes(model: onnx.ModelProto) -> dict[str, str]:
    """The coordinate grid: from each ``CumSum`` (row/column indices) up to the ``Concat`` that joins it
    to the features (exclusive): index arithmetic ``(i + row0) / (H_full - 1)``, input-independent and cheap."""
    starts = [n for n in model.graph.node if n.op_type == "CumSum"]
    nodes = _forward_closure(model, starts, _STOP_OPS | {"Concat"})
    # the (H - 1) divisors: Cast(to=FLOAT) of integer shape arithmetic feeding the grid
    prod = producers(model)
    out = {n.name: "coordinate grid (index arithmetic, kept exact)" for n in nodes}
    for node in nodes:
        for name in node.input:
            src = prod.get(name)
            if src is not None and src.op_type == "Cast" and src.name not in out:
                out[src.name] = "coordinate grid (index arithmetic, kept exact)"
    return out


def resize_nodes(model: onnx.ModelProto) -> dict[str, str]:
    """The bicubic resizes as exported (``A_h @ pad(x) @ A_w^T``, see ``lso.model.resize_bicubic``).

    Their matrices are built from ``CumSum`` indices (kept FP32 with the coordinate grid); this adds
    the ``MatMul`` nodes that apply them and the ``Pad`` that feeds them the image. The up-sampled
    LR-HSI is added to the network's output unchanged, so rounding it would show in the result.
    """
    grid = {n.name for n in _forward_closure(model, [n for n in model.graph.node if n.op_type == "CumSum"],
                                                _STOP_OPS)}
    prod = producers(model)
    out: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type != "MatMul":
            continue
        sources = [prod.get(name) for name in node.input]
        if not any(src is not None and src.name in grid for src in sources):
            continue
        out[node.name] = "bicubic resize (interpolation matrix product)"
        for src in sources:
            if src is not None and src.op_type in ("Pad", "MatMul") and src.name not in grid:
                out[src.name] = "bicubic resize (interpolation matrix product)"
    return out


def tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every typed tensor (inputs, initializers, outputs, intermediates by inference)."""
    onnx = require("onnx")
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {}
    for value in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        if value.type.HasField("tensor_type"):
            types[value.name] = value.type.tensor_type.elem_type
    for init in model.graph.initializer:
        types[init.name] = init.data_type
    return types


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
    convs = [n for n in model.graph.node if n.op_type == "Conv" and n.input[1] in inits]
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
