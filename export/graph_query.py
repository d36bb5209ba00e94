"""Questions about an exported LSO graph, answered in one place: every pass asks here instead of matching nodes.

Everything reads a ``ModelProto`` (never changes it). Who asks: the FP16 conversion and the INT8 Q/DQ
exclusions (``lso.calibration``), the CPU-only passes of :mod:`lso.export.passes` (``chunk_solver``,
``align_conv_channels``) and the TensorRT lint (:mod:`lso.export.lint`).

- **Wiring**: :func:`producers`, :func:`consumers`, :func:`tensor_types`, :func:`constants`,
  :func:`op_counts`, :func:`tensor_dims`.
- **The solver** of each spectral block is marked by its ``Sigmoid`` (:func:`solver_seeds`; the folded
  solver of ``lso.solver`` starts with ``sigmoid(z)``). Two views of it:
  :func:`solver_nodes`, the FP32 island (the seed and everything downstream of it up to the next
  matrix product, plus the ``zeros_like`` fillers only it reads), and :func:`solver_chains`, the unit
  ``chunk_solver`` moves into a ``Scan`` (the element-wise nodes computed from the seed's input ``z``,
  and the tensors leaving them).
- **The other FP32 islands**: :func:`softmax_nodes`, :func:`coordinate_grid_nodes`,
  :func:`resize_nodes` (the bicubic interpolation matrices). :data:`ISLAND_QUERIES` maps every island of
  the table in :mod:`lso.islands` to its query; :func:`island_nodes` answers for a set of islands.
- **Convolutions**: :func:`conv_weight` / :func:`conv_weights` (which convolution reads which weight),
  :func:`block_of`, :func:`conv_blocks`, :func:`block_order` (the named module a convolution belongs
  to), :func:`quantized_convs` (convolutions reading ``DequantizeLinear`` outputs in a Q/DQ graph).
- **Chunked graphs**: :data:`SOLVER_CHUNK_PREFIX` names the ``Scan`` nodes ``chunk_solver`` writes;
  :func:`has_chunked_solver` finds them.
"""
from __future__ import annotations

import logging
import re
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lso.deps import require
from lso.islands import FP32_ISLANDS, ISLAND_NAMES

if TYPE_CHECKING:  # pragma: no cover
    import onnx

__all__ = ["FLOAT", "FLOAT16", "INT8", "UINT8", "MATRIX_PRODUCTS", "SOLVER_OPS", "SOLVER_CHUNK_PREFIX",
           "producers", "consumers", "tensor_types", "constants", "op_counts", "tensor_dims",
           "solver_seeds", "solver_nodes", "SolverChain", "solver_chains", "softmax_nodes", "coordinate_grid_nodes",
           "resize_nodes", "ISLAND_QUERIES", "island_nodes",
           "conv_weight", "conv_weights", "block_of", "conv_blocks", "block_order", "quantized_convs",
           "has_chunked_solver"]

log = logging.getLogger(__name__)

FLOAT, FLOAT16, INT8, UINT8 = 1, 10, 3, 2  # onnx.TensorProto element types
_DEFAULT_DOMAINS = ("", "ai.onnx")

MATRIX_PRODUCTS = frozenset({"MatMul", "Einsum", "Conv", "Gemm"})
"""Where a forward walk from an island's seed stops: the next matrix product (the LatentToCoord attention)."""

SOLVER_OPS = frozenset({"Sigmoid", "Sin", "Cos", "Mul", "Add", "Sub", "Div", "Neg", "Expand", "Shape", "Gather",
                        "Slice", "Split", "Squeeze", "Unsqueeze", "Concat", "Cast", "ConstantOfShape", "Identity"})
"""The element-wise operators a solver chain is made of (FP32 islands of mixed graphs add ``Cast``)."""

SOLVER_CHUNK_PREFIX = "lso_solver_chunk"
"""Name prefix of the nodes ``lso.export.passes.chunk_solver`` adds (its ``Scan`` among them)."""


# ------------------------------------------------------------------------------------------------ wiring
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


def tensor_types(model: onnx.ModelProto, *, strict: bool = True) -> dict[str, int]:
    """Element type of every typed tensor (inputs, initializers, outputs, intermediates by ONNX type inference).

    With ``strict=False`` a failing type inference is logged and only the declared types are used.
    """
    onnx = require("onnx")
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception as exc:  # onnx raises InferenceError and others
        if strict:
            raise
        log.debug("shape inference failed (%s); using the declared types only", exc)
        inferred = model
    types = {}
    for value in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        if value.type.HasField("tensor_type"):
            types[value.name] = value.type.tensor_type.elem_type
    for init in model.graph.initializer:
        types[init.name] = init.data_type
    return types


def constants(graph: onnx.GraphProto, *, values: bool = False) -> dict[str, Any]:
    """Names of the graph's constant tensors (initializers and ``Constant`` outputs) -> their value as a numpy
    array with ``values=True`` (None for a ``Constant`` without a ``value`` attribute), else None."""
    numpy_helper = require("onnx.numpy_helper") if values else None
    found: dict[str, Any] = {}
    for init in graph.initializer:
        found[init.name] = numpy_helper.to_array(init) if numpy_helper else None
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in _DEFAULT_DOMAINS:
            value = None
            if numpy_helper:
                for attr in node.attribute:
                    if attr.name == "value":
                        value = numpy_helper.to_array(attr.t)
            found[node.output[0]] = value
    return found


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    """Nodes per operator type in the main graph, most frequent first."""
    return dict(Counter(n.op_type for n in model.graph.node).most_common())


def tensor_dims(model: onnx.ModelProto) -> dict[str, tuple]:
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


def _forward_closure(model: onnx.ModelProto, starts: Iterable[Any], stop_ops: Iterable[str]) -> list[Any]:
    """``starts`` and every node downstream of them, not entering (nor passing) nodes of ``stop_ops``."""
    stop = set(stop_ops)
    users = consumers(model)
    seen: dict[str, Any] = {}
    queue = deque(starts)
    while queue:
        node = queue.popleft()
        if node.name in seen or node.op_type in stop:
            continue
        seen[node.name] = node
        for out in node.output:
            queue.extend(users.get(out, ()))
    return list(seen.values())


# ------------------------------------------------------------------------------------------------ the solver
_SOLVER_REASON = "solver: sigmoid, angle, sin/cos and the Clenshaw recurrence (arguments up to Q*pi^2)"


def solver_seeds(model: onnx.ModelProto) -> list[Any]:
    """The node that starts each spectral block's solver (its ``Sigmoid``), in graph order."""
    return [n for n in model.graph.node if n.op_type == "Sigmoid"]


def solver_nodes(model: onnx.ModelProto) -> dict[str, str]:
    """The solver island: everything downstream of each seed up to the next matrix product (the
    LatentToCoord attention), plus the constant-filled tensors only they read (``zeros_like``).

    Returns ``{node name: reason}``.
    """
    nodes = {n.name: n for n in _forward_closure(model, solver_seeds(model), MATRIX_PRODUCTS)}
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
    return {name: _SOLVER_REASON for name in nodes}


@dataclass(frozen=True)
class SolverChain:
    """One solver as ``chunk_solver`` sees it; nodes are indices into ``model.graph.node``.

    ``seed`` is the Sigmoid, ``z`` the latent codes it reads (above the FP32 island's ``Cast`` nodes in a
    mixed graph), ``members`` the element-wise nodes (:data:`SOLVER_OPS`) computed from ``z`` up to (not
    including) the first other operator, in graph order, and ``leaving`` the tensors they make that
    something outside them reads.
    """

    seed: int
    z: str
    members: tuple[int, ...]
    leaving: tuple[str, ...]


def solver_chains(model: onnx.ModelProto) -> list[SolverChain]:
    """The solver chain of every seed, in graph order (see :class:`SolverChain`)."""
    nodes = list(model.graph.node)
    users: dict[str, list[int]] = defaultdict(list)
    for i, node in enumerate(nodes):
        for name in node.input:
            users[name].append(i)
    producer = {o: n for n in nodes for o in n.output if o}
    chains = []
    for seed, sigmoid in enumerate(nodes):
        if sigmoid.op_type != "Sigmoid":
            continue
        z = sigmoid.input[0]
        while z in producer and producer[z].op_type == "Cast":  # mixed graphs: start above the island's Cast
            z = producer[z].input[0]
        members: dict[int, None] = {}
        produced, front = {z}, [z]
        while front:
            name = front.pop()
            for i in users.get(name, ()):
                if i in members or nodes[i].op_type not in SOLVER_OPS:
                    continue
                members[i] = None
                for out in nodes[i].output:
                    if out and out not in produced:
                        produced.add(out)
                        front.append(out)
        chain = tuple(sorted(members))
        leaving = tuple(sorted({o for i in chain for o in nodes[i].output
                                if any(j not in members for j in users.get(o, ()))}))
        chains.append(SolverChain(seed, z, chain, leaving))
    return chains


def has_chunked_solver(model: onnx.ModelProto) -> bool:
    """True when ``chunk_solver`` has moved a solver into a ``Scan`` (where the island queries cannot see it)."""
    return any(n.op_type == "Scan" and n.name.startswith(SOLVER_CHUNK_PREFIX) for n in model.graph.node)


# ------------------------------------------------------------------------------------------------ other islands
def softmax_nodes(model: onnx.ModelProto) -> dict[str, str]:
    """Every ``Softmax`` (the attention softmaxes of the spectral blocks)."""
    return {n.name: "attention softmax" for n in model.graph.node if n.op_type == "Softmax"}


def _grid_seeds(model: onnx.ModelProto) -> list[Any]:
    return [n for n in model.graph.node if n.op_type == "CumSum"]


def coordinate_grid_nodes(model: onnx.ModelProto) -> dict[str, str]:
    """The coordinate grid: from each ``CumSum`` (row/column indices) up to the ``Concat`` that joins it
    to the features (exclusive): index arithmetic ``(i + row0) / (H_full - 1)``, input-independent and cheap."""
    nodes = _forward_closure(model, _grid_seeds(model), MATRIX_PRODUCTS | {"Concat"})
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
    grid = {n.name for n in _forward_closure(model, _grid_seeds(model), MATRIX_PRODUCTS)}
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


ISLAND_QUERIES: dict[str, Callable[[Any], dict[str, str]]] = {
    "solver": solver_nodes, "softmax": softmax_nodes, "coordinate_grid": coordinate_grid_nodes,
    "bicubic": resize_nodes}
"""How each island of :data:`lso.islands.FP32_ISLANDS` is found in a graph."""

_MISSING = set(ISLAND_NAMES) - set(ISLAND_QUERIES)
if _MISSING:  # a new island in the table must get its graph query here
    raise NotImplementedError(f"lso.export.graph_query has no query for FP32 island(s) {sorted(_MISSING)}")


def island_nodes(model: onnx.ModelProto, names: Iterable[str] | None = None) -> dict[str, str]:
    """``{node name: reason}`` of the islands ``names`` (default: all), queried in the table's order
    (:data:`lso.islands.FP32_ISLANDS`; a node two islands claim keeps the later one's reason)."""
    wanted = set(ISLAND_NAMES if names is None else names)
    unknown = wanted - set(ISLAND_NAMES)
    if unknown:
        raise KeyError(f"no FP32 island(s) {sorted(unknown)}; known: {', '.join(ISLAND_NAMES)}")
    found: dict[str, str] = {}
    for entry in FP32_ISLANDS:
        if entry.name in wanted:
            found.update(ISLAND_QUERIES[entry.name](model))
    return found


# ------------------------------------------------------------------------------------------------ convolutions
# a parameter name -> its block (the named module a block is): spatial_encoder.body.<i> (residual blocks and
# the tail conv), spatial_encoder.head, and the top-level modules of LSO (inc, down1, process1, up1, outc ...).
_BLOCK_PATTERNS = (re.compile(r"^(spatial_encoder\.(?:head|body\.\d+))\."), re.compile(r"^([A-Za-z_]\w*?)\."))


def conv_weight(node: Any, initializers: Mapping[str, Any] | set[str]) -> str | None:
    """The initializer ``node`` reads as its convolution weight, or None (not a Conv, or a computed weight)."""
    if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in initializers:
        return None
    return str(node.input[1])


def conv_weights(model: onnx.ModelProto) -> dict[str, str]:
    """Conv node name -> the initializer it reads as its weight (convolutions with a constant weight only)."""
    inits = {i.name for i in model.graph.initializer}
    return {node.name: weight for node in model.graph.node
            if (weight := conv_weight(node, inits)) is not None}


def block_of(param_name: str) -> str | None:
    """``"spatial_encoder.body.1.body.0.weight"`` -> ``"spatial_encoder.body.1"``; ``"up1.conv..."`` -> ``"up1"``."""
    for pattern in _BLOCK_PATTERNS:
        match = pattern.match(param_name)
        if match:
            return match.group(1)
    return None


def conv_blocks(model: onnx.ModelProto) -> dict[str, str]:
    """Conv node name -> block name, read from the name of the Conv's weight initializer."""
    inits = {i.name for i in model.graph.initializer}
    users = None
    out = {}
    for node in model.graph.node:
        weight = conv_weight(node, inits)
        if weight is None:
            continue
        block = block_of(weight)
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


def quantized_convs(qmodel: onnx.ModelProto) -> set[str]:
    """Conv nodes of a Q/DQ graph whose input and weight both come from ``DequantizeLinear``."""
    prod = producers(qmodel)
    quantized = set()
    for node in qmodel.graph.node:
        if node.op_type != "Conv":
            continue
        srcs = [prod.get(node.input[0]), prod.get(node.input[1])]
        if all(s is not None and s.op_type == "DequantizeLinear" for s in srcs):
            quantized.add(node.name)
    return quantized
