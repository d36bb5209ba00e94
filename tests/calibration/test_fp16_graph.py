"""FP16 mixed-precision graph: FP32 islands at node level, FP32 I/O, MAC share, sidecar, and the CPU
emulation that really rounds every FP16 tensor (ONNX Runtime's CPU provider does not)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from cal_util import feed, load

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxconverter_common")

from lso.calibration import fp16 as F  # noqa: E402
from lso.calibration import graph as G  # noqa: E402
from lso.errors import InputError  # noqa: E402

FLOAT, FLOAT16 = 1, 10
ISLAND_OPS = ("Sigmoid", "Sin", "Cos", "Softmax", "CumSum")


def _types(model):
    return G.tensor_types(model)


@pytest.fixture(scope="module")
def fp16_path(cal_onnx, cal_feeds, tmp_path_factory):
    out = tmp_path_factory.mktemp("fp16") / "tiny.fp16.onnx"
    return F.convert_fp16(cal_onnx, out, feeds=cal_feeds)


def test_islands_cover_solver_softmax_and_grid(cal_onnx):
    model = load(cal_onnx)
    islands = F.fp32_islands(model)
    for node in model.graph.node:
        if node.op_type in ISLAND_OPS:
            assert node.name in islands, node.op_type
        if node.op_type == "Conv":
            assert node.name not in islands
    reasons = {v.split(":")[0] for v in islands.values()}
    assert {"solver", "attention softmax"} <= reasons
    # the recurrence (Mul/Add/Sub chains after the Sin/Cos) is in the solver island, not just the trig ops
    solver = G.solver_nodes(model)
    ops = {n.op_type for n in model.graph.node if n.name in solver}
    assert {"Sigmoid", "Sin", "Cos", "Mul", "Add", "Sub"} <= ops


def test_mixed_graph_node_precision(cal_onnx, fp16_path):
    model16 = load(fp16_path)
    types = _types(model16)
    assert [i.type.tensor_type.elem_type for i in model16.graph.input] == [FLOAT, FLOAT]  # callers never change
    assert [o.type.tensor_type.elem_type for o in model16.graph.output] == [FLOAT]
    for node in model16.graph.node:
        if node.op_type == "Conv":
            assert types[node.input[0]] == FLOAT16 and types[node.output[0]] == FLOAT16, node.name
        if node.op_type in ISLAND_OPS:
            assert types[node.output[0]] == FLOAT, node.name
    assert any(i.data_type == FLOAT16 for i in model16.graph.initializer)
    out = ort.InferenceSession(str(fp16_path), providers=["CPUExecutionProvider"]).run(None, feed())[0]
    assert out.dtype == np.float32 and np.isfinite(out).all()
    from lso.export.lint import lint_model

    assert lint_model(model16) == []  # every node parseable by TensorRT in the float type it runs in


def test_sidecar_lists_fp32_nodes_and_reasons(cal_onnx, fp16_path):
    side = json.loads(fp16_path.with_name(fp16_path.name + ".json").read_text())
    assert side["precision"] == "fp16" and side["io_dtype"] == "float32"
    assert side["summary"]["conv_mac_fraction_fp16"] >= 0.9
    assert side["source"]["sha256"] and side["calibration"]["count"] == 4
    reasons = side["fp32_reasons"]
    assert reasons.get("solver", 0) > 0 and reasons.get("attention softmax", 0) > 0
    model = load(cal_onnx)
    sigmoids = {n.name for n in model.graph.node if n.op_type == "Sigmoid"}
    listed = {e["node"]: e for e in side["fp32_nodes"]}
    assert sigmoids <= set(listed) and all(listed[s]["reason"].startswith("solver") for s in sigmoids)
    assert side["converter"]["tool"] == "onnxconverter-common"


def test_naive_graph_puts_the_solver_in_fp16(cal_onnx, tmp_path):
    out = F.convert_fp16(cal_onnx, tmp_path / "naive.onnx", mode="naive")
    model16 = load(out)
    types = _types(model16)
    for node in model16.graph.node:
        if node.op_type in ("Sigmoid", "Sin", "Cos", "Softmax"):
            assert types[node.output[0]] == FLOAT16, node.name
    assert json.loads(out.with_name(out.name + ".json").read_text())["precision"] == "fp16-naive"


def test_out_of_range_activations_stay_fp32(cal_onnx):
    model = load(cal_onnx)
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    islands = F.fp32_islands(model, absmax={conv.output[0]: 1e5}, safe_range=4096)
    readers = [n for n in model.graph.node if conv.output[0] in n.input]
    assert "activation range" in islands[conv.name]
    assert all(r.name in islands for r in readers)
    model16 = F.to_mixed_fp16(model, islands)
    types = _types(model16)
    kept = next(n for n in model16.graph.node if n.name == conv.name)
    assert types[kept.input[0]] == FLOAT and types[kept.output[0]] == FLOAT


def test_activation_absmax_matches_a_direct_run(cal_onnx):
    model = load(cal_onnx)
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    f = feed()
    absmax = G.activation_absmax(model, [f], names=[conv.output[0]])
    direct = G.ort_session(G._with_outputs(model, [conv.output[0]])).run([conv.output[0]], f)[0]
    assert absmax[conv.output[0]] == pytest.approx(float(np.abs(direct).max()), rel=1e-6)


def test_refuses_a_graph_that_is_already_fp16(fp16_path, tmp_path):
    with pytest.raises(InputError):
        F.convert_fp16(fp16_path, tmp_path / "again.onnx")


# ----------------------------------------------------------------------------------- measuring on CPU
def _chain():
    """y = ((x * 1.5) + 1000) - 1000: rounding a+1000 to FP16 (spacing 0.5 near 1000) is visible in y."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Mul", ["x", "c"], ["a"], name="mul"),
             helper.make_node("Add", ["a", "d"], ["b"], name="add"),
             helper.make_node("Sub", ["b", "d"], ["y"], name="sub")]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])],
                              [numpy_helper.from_array(np.array([1.5], np.float32), "c"),
                               numpy_helper.from_array(np.array([1000.0], np.float32), "d")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _x():
    return np.random.default_rng(0).random(1000).astype(np.float16)


def _fp16_chain(x16):
    return (((x16 * np.float16(1.5)) + np.float16(1000)) - np.float16(1000)).astype(np.float32)


def test_emulation_rounds_every_intermediate_to_fp16():
    model16 = F.to_mixed_fp16(_chain(), ())
    emulated = F.emulate_fp16(model16)
    x16 = _x()
    y = G.ort_session(emulated).run(None, {"x": x16.astype(np.float32)})[0]
    np.testing.assert_array_equal(y, _fp16_chain(x16))  # bit-exact FP16 arithmetic, step by step
    exact = (x16.astype(np.float32) * 1.5 + 1000) - 1000
    assert np.abs(y - exact).max() > 0.1  # and visibly not FP32


def test_onnxruntime_cpu_does_not_round_fp16_intermediates():
    """Why the emulation exists: ORT's CPU provider runs chains of FP16 ops in FP32 (it removes the cast pairs)."""
    model16 = F.to_mixed_fp16(_chain(), ())
    x16 = _x()
    y = G.ort_session(model16).run(None, {"x": x16.astype(np.float32)})[0]
    if np.array_equal(y, _fp16_chain(x16)):
        pytest.skip(f"onnxruntime {ort.__version__} now rounds FP16 intermediates on CPU: the docs can be simplified")
    exact = (x16.astype(np.float32) * 1.5 + 1000) - 1000
    # ORT's result is as close to FP32 arithmetic as the final FP16 output allows; real FP16 steps are far off
    assert np.abs(y - exact).max() < 1e-3 < 0.1 < np.abs(_fp16_chain(x16) - exact).max()


def test_emulated_lso_graph_rounds_convs_and_keeps_islands_fp32(cal_onnx, fp16_path):
    model16 = load(fp16_path)
    emulated = F.emulate_fp16(model16)
    conv = next(n for n in model16.graph.node if n.op_type == "Conv")
    sin = next(n for n in model16.graph.node if n.op_type == "Sin")
    names = [conv.output[0], sin.output[0]]
    session = G.ort_session(G._with_outputs(emulated, names))
    conv_out, sin_out = session.run(names, feed())
    np.testing.assert_array_equal(conv_out, conv_out.astype(np.float16).astype(np.float32))
    assert not np.array_equal(sin_out, sin_out.astype(np.float16).astype(np.float32))  # FP32 island
    ref = G.ort_session(load(cal_onnx)).run(None, feed())[0]
    out = G.ort_session(emulated).run(None, feed())[0]
    assert 0 < np.abs(out - ref).max() < 2e-2


def test_raw_converter_output_needs_the_value_info_repair(cal_onnx):
    """onnxconverter-common leaves stale value_info (its issue #320); to_mixed_fp16 drops it."""
    from onnxconverter_common import float16

    model = load(cal_onnx)
    raw = float16.convert_float_to_float16(onnx.shape_inference.infer_shapes(model), keep_io_types=True,
                                           node_block_list=list(F.fp32_islands(model)))
    try:
        G.ort_session(raw)
    except Exception:
        pass
    else:
        pytest.skip("this onnxconverter-common version's output loads as it is")
    G.ort_session(F.to_mixed_fp16(model, F.fp32_islands(model)))


def test_no_fp16_round_trips_inside_the_fp32_islands(fp16_path):
    """The converter leaves Cast(FLOAT16) -> Cast(FLOAT) between FP32 nodes whose tensor has several readers;
    to_mixed_fp16 bypasses them, so no island intermediate is rounded to FP16."""
    model16 = load(fp16_path)
    side = json.loads(fp16_path.with_name(fp16_path.name + ".json").read_text())
    islands = {e["node"] for e in side["fp32_nodes"]}
    prod, users = G.producers(model16), G.consumers(model16)

    def to(node):
        return next(a.i for a in node.attribute if a.name == "to")

    for node in model16.graph.node:
        if node.op_type == "Cast" and to(node) == FLOAT16 and prod.get(node.input[0]) is not None:
            if prod[node.input[0]].name in islands:
                for reader in users.get(node.output[0], []):
                    assert not (reader.op_type == "Cast" and to(reader) == FLOAT), node.name
    solver_mul = next(n for n in model16.graph.node if n.name in islands and n.op_type == "Mul"
                      and len(users.get(n.output[0], [])) > 1)
    out = G.ort_session(G._with_outputs(F.emulate_fp16(model16), [solver_mul.output[0]])).run(
        [solver_mul.output[0]], feed())[0]
    assert not np.array_equal(out, out.astype(np.float16).astype(np.float32))  # FP32 values, not FP16
