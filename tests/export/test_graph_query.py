"""lso.export.graph_query: the one place that answers graph questions, and the one island table it follows.

The reference rules below are the node-matching rules the passes used before they asked graph_query
(the FP16 islands, the INT8 exclusions, the solver chains of chunk_solver); on the tiny model's plain and
tileable exports, graph_query must give exactly the same node sets (so the FP16, INT8, chunked and aligned
graphs stay byte-for-byte what they were).
"""
from __future__ import annotations

import ast
from collections import defaultdict, deque
from pathlib import Path

import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxconverter_common")

from lso.export import graph_query as Q  # noqa: E402
from lso.islands import FP32_ISLANDS, ISLAND_NAMES, PATHS, islands_for  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
_MATMULS = {"MatMul", "Einsum", "Conv", "Gemm"}
_ELEMENTWISE = {"Sigmoid", "Sin", "Cos", "Mul", "Add", "Sub", "Div", "Neg", "Expand", "Shape", "Gather", "Slice",
                "Split", "Squeeze", "Unsqueeze", "Concat", "Cast", "ConstantOfShape", "Identity"}


# ------------------------------------------------------------------------------------ the reference rules
def _users(model):
    users = defaultdict(list)
    for node in model.graph.node:
        for name in node.input:
            if name:
                users[name].append(node)
    return users


def _closure(model, start_op, stop):
    users, seen, queue = _users(model), {}, deque(n for n in model.graph.node if n.op_type == start_op)
    while queue:
        node = queue.popleft()
        if node.name in seen or node.op_type in stop:
            continue
        seen[node.name] = node
        for out in node.output:
            queue.extend(users.get(out, ()))
    return seen


def _ref_solver(model):
    nodes, users = _closure(model, "Sigmoid", _MATMULS), _users(model)
    prod = {o: n for n in model.graph.node for o in n.output if o}
    for node in list(nodes.values()):
        for name in node.input:
            src = prod.get(name)
            if src is not None and src.name not in nodes and src.op_type in ("Expand", "ConstantOfShape") \
                    and all(u.name in nodes for u in users.get(name, ())):
                nodes[src.name] = src
    return set(nodes)


def _ref_grid(model):
    nodes = _closure(model, "CumSum", _MATMULS | {"Concat"})
    prod = {o: n for n in model.graph.node for o in n.output if o}
    casts = {prod[i].name for n in nodes.values() for i in n.input if i in prod and prod[i].op_type == "Cast"}
    return set(nodes) | casts


def _ref_bicubic(model):
    grid = set(_closure(model, "CumSum", _MATMULS))
    prod = {o: n for n in model.graph.node for o in n.output if o}
    out = set()
    for node in model.graph.node:
        sources = [prod.get(i) for i in node.input]
        if node.op_type == "MatMul" and any(s is not None and s.name in grid for s in sources):
            out.add(node.name)
            out |= {s.name for s in sources if s is not None and s.op_type in ("Pad", "MatMul") and s.name not in grid}
    return out


def _ref_chains(model):
    nodes = list(model.graph.node)
    users, prod = _users(model), {o: n for n in nodes for o in n.output if o}
    chains = []
    for sigmoid in (n for n in nodes if n.op_type == "Sigmoid"):
        z = sigmoid.input[0]
        while z in prod and prod[z].op_type == "Cast":
            z = prod[z].input[0]
        members, front, produced = set(), [z], {z}
        while front:
            for node in users.get(front.pop(), ()):
                if node.name in members or node.op_type not in _ELEMENTWISE:
                    continue
                members.add(node.name)
                front += [o for o in node.output if o and o not in produced]
                produced |= set(node.output)
        chains.append((z, members))
    return chains


@pytest.fixture(params=["plain", "tileable"])
def graph(request):
    name = "tiny_onnx" if request.param == "plain" else "tiny_onnx_tileable"
    return onnx.load(str(request.getfixturevalue(name)))


def test_island_queries_are_the_reference_rules(graph):
    softmax = {n.name for n in graph.graph.node if n.op_type == "Softmax"}
    assert set(Q.solver_nodes(graph)) == _ref_solver(graph)
    assert set(Q.softmax_nodes(graph)) == softmax
    assert set(Q.coordinate_grid_nodes(graph)) == _ref_grid(graph)
    assert set(Q.resize_nodes(graph)) == _ref_bicubic(graph)
    for name, ref in (("solver", _ref_solver), ("coordinate_grid", _ref_grid), ("bicubic", _ref_bicubic)):
        assert set(Q.island_nodes(graph, [name])) == ref(graph) and ref(graph), name


def test_fp16_islands_and_int8_exclusions_are_unchanged(graph):
    """The node sets the FP16 graph keeps in FP32 and the INT8 graphs exclude from quantisation."""
    from lso.calibration import fp16 as F
    from lso.calibration import int8 as I

    float16 = pytest.importorskip("onnxconverter_common.float16")
    default_ops = set(float16.DEFAULT_OP_BLOCK_LIST)
    softmax = {n.name for n in graph.graph.node if n.op_type == "Softmax"}
    by_default = {n.name for n in graph.graph.node if n.op_type in default_ops}
    islands = F.fp32_islands(graph)
    assert set(islands) == by_default | _ref_solver(graph) | softmax | _ref_grid(graph) | _ref_bicubic(graph)
    assert set(F.fp32_islands(graph, softmax=False, grid=False)) == by_default | _ref_solver(graph)
    blocks = Q.block_order(graph)
    excluded = I.float_nodes(graph, blocks[:2])
    in_blocks = {k for k, b in Q.conv_blocks(graph).items() if b in blocks[:2]}
    assert set(excluded) == _ref_solver(graph) | softmax | in_blocks


def test_solver_chains_are_the_chunking_rule(graph):
    nodes = list(graph.graph.node)
    chains = Q.solver_chains(graph)
    ref = _ref_chains(graph)
    assert len(chains) == len(ref) == 3  # the tiny model's three spectral blocks
    for chain, (z, members) in zip(chains, ref, strict=True):
        assert chain.z == z and {nodes[i].name for i in chain.members} == members
        assert nodes[chain.seed].op_type == "Sigmoid" and len(chain.leaving) == 1


def test_conv_weights_and_blocks(graph):
    inits = {i.name for i in graph.graph.initializer}
    weights = Q.conv_weights(graph)
    assert weights == {n.name: n.input[1] for n in graph.graph.node if n.op_type == "Conv" and n.input[1] in inits}
    blocks = Q.conv_blocks(graph)
    assert set(blocks) <= set(weights) and "inc" in blocks.values() and "outc" in blocks.values()


def test_every_island_of_the_table_has_a_query_and_a_path():
    assert set(Q.ISLAND_QUERIES) == set(ISLAND_NAMES)
    assert {i.name for i in islands_for("fp16")} == set(ISLAND_NAMES)
    assert [i.name for i in islands_for("int8")] == ["solver", "softmax"]
    assert {i.name for i in islands_for("bf16")} == set(ISLAND_NAMES)  # OpenVINO's BF16 mode keeps all four
    assert all(i.why and set(i.paths) <= set(PATHS) for i in FP32_ISLANDS)
    with pytest.raises(KeyError):
        islands_for("fp8")
    with pytest.raises(KeyError):
        Q.island_nodes(onnx.ModelProto(), ["no_such_island"])


def test_island_seeds_are_matched_in_graph_query_only():
    """No pass matches the islands' seed operators itself: ``<x>.op_type == "Sigmoid"`` and the like appear
    in lso.export.graph_query only (the lint's CumSum restriction compares a plain name, not a node)."""
    seeds = {"Sigmoid", "Softmax", "CumSum"}
    offenders = []
    for folder in ("export", "calibration", "runtime", "benchmarks", "scaleout", "src/lso"):
        for path in (REPO / folder).rglob("*.py"):
            if path.name == "graph_query.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(node, ast.Compare):
                    continue
                sides = [node.left, *node.comparators]
                on_op_type = any(isinstance(s, ast.Attribute) and s.attr == "op_type" for s in sides)
                names = {s.value for s in ast.walk(node) if isinstance(s, ast.Constant) and isinstance(s.value, str)}
                if on_op_type and names & seeds:
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not offenders, offenders
