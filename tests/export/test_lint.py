"""The TensorRT operator lint: table, unsupported operators, documented restrictions, subgraphs, domains."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from lso.errors import ExportError

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from lso.export.lint import TRT_OPSETS, check_trt_support, lint_model, load_op_table, main  # noqa: E402

EXPORT_DIR = Path(__file__).resolve().parents[2] / "export"  # the repository's copy is the source of truth


def _model(nodes, inputs, outputs, initializers=(), opset=18, functions=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], functions=list(functions))


def _x(name="x", elem=TensorProto.FLOAT, shape=(1, 3, 8, 8)):
    return helper.make_tensor_value_info(name, elem, list(shape))


def _resize(**attrs):
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="rs", **attrs)
    return _model([node], [_x()], [_x("y", shape=(1, 3, 16, 16))], [scales])


def test_shipped_table_parses_and_matches_its_description():
    table = load_op_table()
    assert len(table) == 200
    assert table["Conv"].supported and table["Resize"].supported and table["Einsum"].supported
    assert not table["Col2Im"].supported and not table["DFT"].supported
    assert not table["STFT"].fp16 and table["STFT"].fp32
    from importlib import resources

    text = resources.files("lso.export").joinpath("trt_onnx_ops.csv").read_text(encoding="utf-8")
    assert text == (EXPORT_DIR / "trt_onnx_ops.csv").read_text(encoding="utf-8")  # installed = repository copy
    rows = list(csv.DictReader(text.splitlines()))
    assert list(rows[0]) == ["op_type", "supported", "fp32", "fp16", "int8", "notes"]
    names = [r["op_type"] for r in rows]
    assert len(names) == len(set(names)) == len(table)
    for row in rows:
        assert row["supported"] in ("Y", "N"), row
        types = {row[k] for k in ("fp32", "fp16", "int8")}
        assert types <= ({"Y", "N"} if row["supported"] == "Y" else {""}), row
    # the row counts its description states ("200 rows: 158 Y, 42 N")
    described = (EXPORT_DIR / "trt_onnx_ops.md").read_text(encoding="utf-8")
    n_yes = sum(r["supported"] == "Y" for r in rows)
    assert f"{len(rows)} rows: {n_yes} Y, {len(rows) - n_yes} N" in described


def _op_types(graph) -> set[str]:
    """Operator types of a graph's default-domain nodes, subgraphs (Scan, If, Loop bodies) included."""
    ops = set()
    for node in graph.node:
        if node.domain in ("", "ai.onnx"):
            ops.add(node.op_type)
        for attr in node.attribute:
            for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
                ops |= _op_types(sub)
    return ops


def test_table_covers_every_operator_the_exporter_emits(ex_onnx):
    from lso.export import passes

    table = load_op_table()
    model = onnx.load(str(ex_onnx))
    cpu_graph = passes.chunk_solver(passes.align_conv_channels(onnx.load(str(ex_onnx)), multiple=16), chunk=4)
    emitted = _op_types(model.graph) | _op_types(cpu_graph.graph)
    assert {"Conv", "Sin", "Cos", "Softmax", "Scan"} <= emitted  # the walk reached the solver and the Scan body
    assert sorted(op for op in emitted if op not in table) == []
    assert sorted(op for op in emitted if not table[op].supported) == []
    assert lint_model(model) == []


def test_clean_graph_has_no_issue():
    assert lint_model(_resize(mode="cubic", cubic_coeff_a=-0.75, coordinate_transformation_mode="half_pixel")) == []


def test_unsupported_operator_is_named_and_fails_unless_allowed():
    size = numpy_helper.from_array(np.array([4, 4], np.int64), "size")
    block = numpy_helper.from_array(np.array([1, 1], np.int64), "block")
    node = helper.make_node("Col2Im", ["x", "size", "block"], ["y"], name="fold_back")
    model = _model([node], [_x("x", shape=(1, 3, 16))], [_x("y", shape=(1, 3, 4, 4))], [size, block])
    issues = lint_model(model)
    assert [(i.node, i.op_type) for i in issues] == [("fold_back", "Col2Im")]
    with pytest.raises(ExportError, match="(?s)fold_back.*Col2Im.*--allow-unsupported"):
        check_trt_support(model)
    assert check_trt_support(model, allow_unsupported=True) == issues


@pytest.mark.parametrize("attrs,problem", [
    ({"mode": "cubic", "antialias": 1}, "antialias"),
    ({"mode": "linear", "coordinate_transformation_mode": "half_pixel_symmetric"}, "coordinate_transformation_mode"),
    ({"mode": "linear", "keep_aspect_ratio_policy": "not_larger"}, "keep_aspect_ratio_policy"),
])
def test_resize_restrictions(attrs, problem):
    issues = lint_model(_resize(**attrs))
    assert len(issues) == 1 and problem in issues[0].reason and issues[0].node == "rs"


def test_cumsum_axis_must_be_constant():
    axis_in = helper.make_tensor_value_info("axis", TensorProto.INT64, [])
    node = helper.make_node("CumSum", ["x", "axis"], ["y"], name="cs")
    issues = lint_model(_model([node], [_x(), axis_in], [_x("y")]))
    assert len(issues) == 1 and "build-time constant" in issues[0].reason
    const = helper.make_node("Constant", [], ["axis"], value=numpy_helper.from_array(np.array(2, np.int64)))
    assert lint_model(_model([const, node], [_x()], [_x("y")])) == []


def test_float16_where_the_table_lists_fp32_only():
    frame = numpy_helper.from_array(np.array(4, np.int64), "step")
    node = helper.make_node("STFT", ["x", "step"], ["y"], name="stft")
    model = _model([node], [_x("x", TensorProto.FLOAT16, (1, 64, 1))], [_x("y", TensorProto.FLOAT16, (1, 16, 33, 2))],
                   [frame])
    issues = lint_model(model)
    assert any("float16" in i.reason for i in issues)


def test_custom_domain_subgraph_and_opset():
    custom = helper.make_node("MyPlugin", ["x"], ["y"], name="plugin", domain="com.example")
    assert "plugin" in lint_model(_model([custom], [_x()], [_x("y")]))[0].reason
    # a node inside an If branch is found
    inner = helper.make_graph([helper.make_node("Col2Im", ["x", "x", "x"], ["z"], name="deep")], "then", [],
                              [_x("z")])
    cond = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    branch = helper.make_node("If", ["c"], ["y"], name="if", then_branch=inner, else_branch=inner)
    assert {i.node for i in lint_model(_model([branch], [_x(), cond], [_x("y")]))} == {"deep"}
    # opsets outside 9..24
    ident = helper.make_node("Identity", ["x"], ["y"], name="id")
    assert TRT_OPSETS.stop - 1 == 24
    issues = lint_model(_model([ident], [_x()], [_x("y")], opset=8))
    assert [i.op_type for i in issues] == ["opset"]


def test_model_local_function_bodies_are_walked():
    body = [helper.make_node("Col2Im", ["a", "a", "a"], ["b"], name="in_function")]
    fn = helper.make_function("local", "Fold", ["a"], ["b"], body, [helper.make_opsetid("", 18)])
    call = helper.make_node("Fold", ["x"], ["y"], name="call", domain="local")
    model = _model([call], [_x()], [_x("y")], functions=[fn])
    model.opset_import.append(helper.make_opsetid("local", 1))
    assert [i.node for i in lint_model(model)] == ["in_function"]


def test_command_line(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    onnx.save(_resize(mode="linear", antialias=1), str(path))
    assert main([str(path)]) == 1
    assert "antialias" in capsys.readouterr().out
