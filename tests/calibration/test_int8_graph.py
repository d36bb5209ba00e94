"""INT8 Q/DQ graphs: zero points and types per flavour, what is (not) quantized, one shared calibration,
float blocks, the sensitivity ordering and the choice of float blocks."""
from __future__ import annotations

import json

import numpy as np
import pytest

from cal_util import feed, load

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import numpy_helper  # noqa: E402

from lso.calibration import graph as G  # noqa: E402
from lso.calibration import int8 as Q  # noqa: E402
from lso.calibration.accuracy import ort_reference  # noqa: E402
from lso.calibration.feeds import Scene  # noqa: E402
from lso.errors import InputError  # noqa: E402

INT8, UINT8, INT32 = 3, 2, 6


@pytest.fixture(scope="module")
def int8_pair(cal_onnx, cal_feeds, tmp_path_factory):
    """Both flavours from one calibration cache."""
    work = tmp_path_factory.mktemp("int8")
    cache = work / "calibration.json"
    trt = Q.quantize_int8(cal_onnx, work / "tiny.int8.onnx", feeds=cal_feeds, flavour="tensorrt",
                          calibration_cache=cache)
    cpu = Q.quantize_int8(cal_onnx, work / "tiny.int8.cpu.onnx", flavour="cpu", calibration_cache=cache)
    return trt, cpu


def _sidecar(path):
    return json.loads(path.with_name(path.name + ".json").read_text())


def _zero_points(model):
    inits = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
            yield node, numpy_helper.to_array(inits[node.input[2]]), inits[node.input[2]].data_type


def test_tensorrt_flavour_is_symmetric_int8_with_zero_points_0(int8_pair):
    model = load(int8_pair[0])
    zps = list(_zero_points(model))
    assert zps, "no Q/DQ nodes"
    for node, zp, dtype in zps:
        assert dtype == INT8 and not zp.any(), node.name
    from lso.export.lint import lint_model

    assert lint_model(model) == []  # TensorRT's ONNX parser table: Q/DQ zero points 0, every op supported


def test_tensorrt_flavour_quantizes_only_conv_inputs_and_weights(int8_pair):
    model = load(int8_pair[0])
    users = G.consumers(model)
    inits = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear":
            assert all(u.op_type == "Conv" for u in users[node.output[0]]), node.name
            assert inits.get(node.input[0]) is None or inits[node.input[0]].data_type == INT8  # no int32 bias DQ
    prod = G.producers(model)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    for conv in convs:
        w_dq = prod[conv.input[1]]
        assert w_dq.op_type == "DequantizeLinear"
        scale = numpy_helper.to_array(inits[w_dq.input[1]])
        axis = next((a.i for a in w_dq.attribute if a.name == "axis"), 1)
        assert axis == 0 and scale.shape == (inits[w_dq.input[0]].dims[0],)  # per output channel
        assert len(conv.input) < 3 or conv.input[2] in inits  # float bias
    for node in model.graph.node:  # solver and softmax untouched
        if node.op_type in ("Sigmoid", "Sin", "Cos", "Softmax", "Einsum"):
            assert all(prod.get(i) is None or prod[i].op_type != "DequantizeLinear" for i in node.input), node.name


def test_cpu_flavour_is_asymmetric_uint8(int8_pair):
    model = load(int8_pair[1])
    act = [(zp, t) for node, zp, t in _zero_points(model) if t not in (INT8, INT32)]  # int32: bias
    assert act and all(t == UINT8 for _, t in act)
    assert any(zp.any() for zp, _ in act)  # asymmetric: zero points are not all 0
    inits = {i.name: i for i in model.graph.initializer}
    assert any(n.op_type == "DequantizeLinear" and inits.get(n.input[0]) is not None
               and inits[n.input[0]].data_type == INT32 for n in model.graph.node)  # int32 bias -> QLinearConv


def test_flavours_share_one_calibration(int8_pair):
    trt, cpu = (_sidecar(p) for p in int8_pair)
    assert trt["calibration"]["cache_sha256"] == cpu["calibration"]["cache_sha256"]
    assert trt["calibration"]["computed_here"] and not cpu["calibration"]["computed_here"]
    assert trt["flavour"] == "tensorrt" and cpu["flavour"] == "cpu" and trt["precision"] == "int8"
    assert trt["summary"]["conv_mac_fraction_int8"] == 1.0 and trt["summary"]["zero_points_all_zero"]
    assert not cpu["summary"]["zero_points_all_zero"]


def test_int8_graphs_run_close_to_fp32(cal_onnx, int8_pair):
    ref = G.ort_session(load(cal_onnx)).run(None, feed())[0]
    for path in int8_pair:
        out = G.ort_session(load(path)).run(None, feed())[0]
        assert np.isfinite(out).all() and np.abs(out - ref).mean() < 0.05


def test_float_blocks_stay_float(cal_onnx, cal_feeds, tmp_path):
    out = Q.quantize_int8(cal_onnx, tmp_path / "q.onnx", feeds=cal_feeds, float_blocks=["outc", "inc"])
    model = load(out)
    blocks = G.conv_blocks(load(cal_onnx))
    prod = G.producers(model)
    for conv in (n for n in model.graph.node if n.op_type == "Conv"):
        quantized = prod.get(conv.input[0]) is not None and prod[conv.input[0]].op_type == "DequantizeLinear"
        assert quantized == (blocks[conv.name] not in ("outc", "inc")), conv.name
    side = _sidecar(out)
    assert side["float_blocks"] == ["outc", "inc"] and 0 < side["summary"]["conv_mac_fraction_int8"] < 1
    with pytest.raises(InputError, match="unknown block"):
        Q.quantize_int8(cal_onnx, tmp_path / "r.onnx", feeds=cal_feeds, float_blocks=["nope"])


def _outlier_graph(cal_onnx, out, block="up1.conv.double_conv", scale=300.0):
    """The same function, but one channel between the two convs of ``up1`` is ``scale`` times larger:
    per-tensor INT8 quantization of that activation then loses every other channel."""
    model = load(cal_onnx)
    inits = {i.name: i for i in model.graph.initializer}
    arrays = {k: numpy_helper.to_array(inits[f"{block}.{k}"]).copy() for k in ("0.weight", "0.bias", "2.weight")}
    arrays["0.weight"][0] *= scale
    arrays["0.bias"][0] *= scale  # LeakyReLU(s x) = s LeakyReLU(x) for s > 0
    arrays["2.weight"][:, 0] /= scale
    for key, value in arrays.items():
        inits[f"{block}.{key}"].CopyFrom(numpy_helper.from_array(value, f"{block}.{key}"))
    onnx.save(model, str(out))
    return out


def test_sensitivity_ranks_the_damaged_block_first(cal_onnx, cal_feeds, tmp_path):
    path = _outlier_graph(cal_onnx, tmp_path / "outlier.onnx")
    ref_plain = ort_reference(cal_onnx, [Scene("x", np.zeros(1), feed()["hr_msi"][0], feed()["lr_hsi"][0])])
    ref_outlier = ort_reference(path, [Scene("x", np.zeros(1), feed()["hr_msi"][0], feed()["lr_hsi"][0])])
    np.testing.assert_allclose(ref_outlier[0], ref_plain[0], atol=1e-4)  # same function in FP32
    rng = np.random.default_rng(0)
    scenes = []
    for i, f in enumerate(list(cal_feeds)[:2]):
        hr, lr = f["hr_msi"][0], f["lr_hsi"][0]
        scenes.append(Scene(f"s{i}", np.zeros((31, 32, 32), np.float32), hr, lr))
    reference = ort_reference(path, scenes)
    # ground truth close to the FP32 output, so ΔPSNR measures what quantization costs
    scenes = [Scene(s.name, np.clip(r + rng.normal(0, 0.01, r.shape), 0, 1).astype(np.float32), s.hr_msi, s.lr_hsi)
              for s, r in zip(scenes, reference, strict=True)]
    ranking = Q.sensitivity_sweep(path, scenes, reference, calibration_cache=tmp_path / "cal.json", feeds=cal_feeds)
    assert [r["block"] for r in ranking][0] == "up1"
    assert ranking[0]["dpsnr"] > 10 * max(abs(r["dpsnr"]) for r in ranking[1:])
    assert {r["block"] for r in ranking} == set(G.block_order(load(path)))
    curve = Q.float_block_curve(path, ranking, scenes, reference, calibration_cache=tmp_path / "cal.json", ks=[0, 1],
                                latency_feed=feed(), latency_repeats=1)
    assert curve[1].float_blocks == ["up1"] and curve[1].dpsnr < curve[0].dpsnr
    assert curve[0].int8_mac_fraction == 1.0 > curve[1].int8_mac_fraction
    assert curve[1].latency_s["tensorrt"] > 0


def test_choose_float_blocks():
    def point(k, dpsnr, frac):
        return Q.CurvePoint(k=k, float_blocks=[f"b{i}" for i in range(k)], dpsnr=dpsnr, dsam=0.0, fidelity_psnr=40.0,
                            int8_mac_fraction=frac)

    pts = [point(0, 0.9, 1.0), point(1, 0.6, 0.95), point(2, 0.4, 0.85), point(3, 0.1, 0.6)]
    chosen, met = Q.choose_float_blocks(pts, target_dpsnr=0.5, min_int8_macs=0.75)
    assert met and chosen.k == 2
    chosen, met = Q.choose_float_blocks(pts, target_dpsnr=0.05, min_int8_macs=0.75)
    assert not met and chosen.k == 2  # best ΔPSNR among points with enough INT8 MACs
    chosen, met = Q.choose_float_blocks(pts, target_dpsnr=1.0, min_int8_macs=0.75, margin=0.5)
    assert met and chosen.k == 2  # validation ΔPSNR must stay within half the budget
