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

SHARED_TABLE = Path(__file__).resolve().parents[3] / "shared" / "trt_onnx_ops.csv"


def _model(nodes, inputs, outputs, initializers=(), opset=18, functions=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], functions=list(functions))


def _x(name="x", elem=TensorProto.FLOAT, shape=(1, 3, 8, 8)):
    return helper.make_tensor_value_info(name, elem, list(shape))


def _resize(**attrs):
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="rs", **attrs)
    return _model([node], [_x()], [_x("y", shape=(1, 3, 16, 16))], [scales])


def test_table_is_the_shipped_copy_of_shared():
    table = load_op_table()
    assert len(table) == 200
    assert table["Conv"].supported and table["Resize"].supported and table["Einsum"].supported
    assert not table["Col2Im"].supported and not table["DFT"].supported
    assert not table["STFT"].fp16 and table["STFT"].fp32
    if SHARED_TABLE.exists():  # the package copy must not drift from shared/
        from importlib import resources

        shipped = resources.files("lso.export").joinpath("trt_onnx_ops.csv").read_text(encoding="utf-8")
        assert shipped == SHARED_TABLE.read_text(encoding="utf-8")
        with open(SHARED_TABLE, encoding="utf-8") as fh:
            assert {r["op_type"] for r in csv.DictReader(fh)} == set(table)


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
