"""Graph passes: op counts change as intended and the numbers do not (ReferenceEvaluator as oracle)."""
from __future__ import annotations

import numpy as np
import pytest

from lso.errors import ExportError

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

from lso.export import passes  # noqa: E402


def _graph_model():
    """y = (x + (c1 * c2)) with a dead branch and an unused initializer, nodes listed out of order."""
    c1 = numpy_helper.from_array(np.full((1, 4), 2.0, np.float32), "c1")
    c2 = numpy_helper.from_array(np.full((1, 4), 3.0, np.float32), "c2")
    unused = numpy_helper.from_array(np.zeros(7, np.float32), "unused")
    nodes = [
        helper.make_node("Add", ["x", "c"], ["y"], name="add"),  # uses c before it is produced
        helper.make_node("Mul", ["c1", "c2"], ["c"], name="mul"),
        helper.make_node("Relu", ["x"], ["dead"], name="dead_relu"),
        helper.make_node("Neg", ["dead"], ["dead2"], name="dead_neg"),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], [c1, c2, unused])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _run(model, x):
    return ReferenceEvaluator(model).run(None, {"x": x})[0]


X = np.arange(12, dtype=np.float32).reshape(3, 4)


def test_cleanup_drops_dead_code_sorts_and_keeps_values():
    model = passes.cleanup(_graph_model())
    assert [n.name for n in model.graph.node] == ["mul", "add"]
    assert sorted(i.name for i in model.graph.initializer) == ["c1", "c2"]
    onnx.checker.check_model(model)
    np.testing.assert_array_equal(_run(model, X), X + 6.0)


def test_toposort_detects_a_cycle():
    nodes = [helper.make_node("Relu", ["b"], ["a"], name="r1"), helper.make_node("Relu", ["a"], ["b"], name="r2")]
    graph = helper.make_graph(nodes, "g", [], [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1])])
    with pytest.raises(ExportError, match="cycle"):
        passes.toposort(helper.make_model(graph))


def test_simplify_folds_constants():
    pytest.importorskip("onnxslim")
    before = passes.cleanup(_graph_model())
    after = passes.simplify(_graph_model())
    assert passes.op_counts(before) == {"Mul": 1, "Add": 1}
    assert passes.op_counts(after) == {"Add": 1}  # c1 * c2 folded into one constant
    np.testing.assert_array_equal(_run(after, X), _run(before, X))


def test_name_dynamic_axes_renames_everywhere_and_refuses_baked_sizes():
    model = _graph_model()
    model.graph.value_info.append(helper.make_tensor_value_info("c", TensorProto.FLOAT, ["n", 4]))
    renamed = passes.name_dynamic_axes(model, {"x": {0: "batch"}, "y": {0: "batch"}})
    dims = [v.type.tensor_type.shape.dim[0].dim_param for v in (renamed.graph.input[0], renamed.graph.output[0])]
    assert dims == ["batch", "batch"]
    with pytest.raises(ExportError, match="fixed to 4"):
        passes.name_dynamic_axes(_graph_model(), {"x": {1: "width"}})
    with pytest.raises(ExportError, match="share one symbol"):
        passes.name_dynamic_axes(_graph_model(), {"x": {0: "batch"}, "y": {0: "height"}})


def test_annotate_sets_metadata_and_keeps_values():
    model = passes.annotate(_graph_model(), {"lso.config": "{}", "lso.tileable": "false"}, doc="LSO")
    assert {p.key: p.value for p in model.metadata_props} == {"lso.config": "{}", "lso.tileable": "false"}
    assert model.doc_string == "LSO"
    np.testing.assert_array_equal(_run(model, X), X + 6.0)


def test_tensor_dims_lists_initializers_and_intermediates():
    dims = passes.tensor_dims(passes.cleanup(_graph_model()))
    assert dims["c1"] == (1, 4) and dims["x"] == ("n", 4)


def test_chunk_solver_runs_the_same_nodes_in_scan(ex_onnx, tmp_path):
    """Every solver chain moves into a Scan; outputs are bit-identical, also when N is not a multiple of the chunk."""
    ort = pytest.importorskip("onnxruntime")
    model = onnx.load(str(ex_onnx))
    sigmoids = sum(n.op_type == "Sigmoid" for n in model.graph.node)
    assert sigmoids == 3
    chunked = passes.chunk_solver(onnx.load(str(ex_onnx)), chunk=3)
    onnx.checker.check_model(chunked)
    counts = passes.op_counts(chunked)
    assert counts["Scan"] == 3 and "Sigmoid" not in counts and "Sin" not in counts
    path = tmp_path / "chunked.onnx"
    onnx.save(chunked, str(path))
    rng = np.random.default_rng(0)
    plain = ort.InferenceSession(str(ex_onnx), providers=["CPUExecutionProvider"])
    scan = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for size, ratio in ((32, 4), (44, 4), (36, 3)):  # 64, 121 and 81 level-1 patches (chunks of 3)
        feeds = {"hr_msi": rng.random((1, 3, size, size), dtype=np.float32),
                 "lr_hsi": rng.random((1, 31, size // ratio, size // ratio), dtype=np.float32)}
        np.testing.assert_array_equal(scan.run(None, feeds)[0], plain.run(None, feeds)[0])


def test_chunk_solver_rejects_a_bad_chunk(ex_onnx):
    with pytest.raises(ExportError, match="positive"):
        passes.chunk_solver(onnx.load(str(ex_onnx)), chunk=0)


def test_chunk_solver_leaves_graphs_without_a_solver_alone():
    model = passes.chunk_solver(_graph_model())
    assert passes.op_counts(model) == {"Mul": 1, "Add": 1}


def test_align_conv_channels_pads_with_zeros_and_keeps_outputs(ex_onnx, tmp_path):
    """Concat-fed convolutions get zero input channels, odd mid channels zero outputs; results do not change."""
    ort = pytest.importorskip("onnxruntime")

    def conv_channels(model):
        inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        return [inits[n.input[1]].shape[:2] for n in model.graph.node if n.op_type == "Conv"]

    before = conv_channels(onnx.load(str(ex_onnx)))
    aligned = passes.align_conv_channels(onnx.load(str(ex_onnx)), multiple=16)
    onnx.checker.check_model(aligned)
    after = conv_channels(aligned)
    assert len(after) == len(before)
    assert any(i % 16 for _, i in before)  # the tiny model has unaligned convolutions (34, 18, 35 inputs; 17 mid)
    changed = [(b, a) for b, a in zip(before, after, strict=True) if b != a]
    assert changed and all(a[0] >= b[0] and a[1] >= b[1] and a[1] % 16 == 0 for b, a in changed)
    assert passes.op_counts(aligned)["ConstantOfShape"] >= 3  # head, inc and decoder concats padded
    path = tmp_path / "aligned.onnx"
    onnx.save(aligned, str(path))
    plain = ort.InferenceSession(str(ex_onnx), providers=["CPUExecutionProvider"])
    padded = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for size, ratio in ((32, 4), (36, 3)):
        feeds = {"hr_msi": rng.random((2, 3, size, size + 4), dtype=np.float32),
                 "lr_hsi": rng.random((2, 31, size // ratio, (size + 4) // ratio), dtype=np.float32)}
        np.testing.assert_allclose(padded.run(None, feeds)[0], plain.run(None, feeds)[0], atol=1e-5, rtol=0)
    with pytest.raises(ExportError, match="positive"):
        passes.align_conv_channels(onnx.load(str(ex_onnx)), multiple=0)


def test_save_chunked_writes_a_chunked_copy_next_to_the_graph(ex_onnx, tmp_path):
    src = tmp_path / "m.onnx"
    src.write_bytes(ex_onnx.read_bytes())
    assert passes.save_chunked(src, 0) == str(src)  # 0: the graph as it is
    out = passes.save_chunked(src, 3)
    assert out == str(tmp_path / "m.chunk3.onnx")
    assert passes.op_counts(onnx.load(out))["Scan"] == 3
    assert passes.op_counts(onnx.load(str(src))).get("Scan") is None  # the source is untouched
