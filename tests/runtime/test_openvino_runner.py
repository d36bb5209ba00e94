"""OpenVinoRunner: the runner suite (protocol, validation, in-place outputs, tiling, threads), FP32 parity on the
export's case table, the precision check, the BF16 FP32-island marks (and ΔPSNR where the CPU has BF16), INT8."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from lso import runtime
from lso.artifacts import write_sidecar
from lso.errors import ArtifactError, InputError
from lso.runtime.base import RunnerStateError, backend_of

from rt_fixtures import reference, scene

ov = pytest.importorskip("openvino", reason="openvino is not installed (pip install 'lso-deploy[openvino]'); no "
                                            "wheel for this platform")
pytest.importorskip("onnxruntime")

from lso.runtime import openvino_runner as OVR  # noqa: E402
from lso.runtime.openvino_runner import OpenVinoRunner  # noqa: E402

BF16, BF16_WHY = OVR.cpu_bf16_support()
needs_bf16 = pytest.mark.skipif(not BF16, reason=f"this CPU has no native BF16: {BF16_WHY}")


def _load(path, **options):
    return runtime.load(path, backend="openvino", threads=1, **options)


# ------------------------------------------------------------------------------------------------ protocol
def test_registry_picks_it_by_backend_and_ir_suffix(tiny_onnx):
    assert backend_of("m.xml").name == "openvino"
    assert backend_of("m.onnx").name == "onnxruntime"  # ONNX Runtime stays the .onnx default
    runner = _load(tiny_onnx, precision="fp32", streams=1)
    assert isinstance(runner, OpenVinoRunner) and runner.backend == "openvino" and not runner.is_active
    with pytest.raises(InputError, match="takes no option 'fp16'.*torch"):
        _load(tiny_onnx, fp16=True)
    assert isinstance(runtime.load(tiny_onnx, backend="openvino", inter_op_threads=2), OpenVinoRunner)  # a hint
    with pytest.raises(InputError, match="precision must be one of"):
        _load(tiny_onnx, precision="fp16")
    with pytest.raises(InputError, match="runs on the CPU"):
        _load(tiny_onnx, device="cuda")
    with pytest.raises(InputError, match="threads must be an integer"):
        OpenVinoRunner(tiny_onnx, threads=0)


@pytest.mark.parametrize("graph", ["tiny_onnx", "tiny_onnx_tileable"])
@pytest.mark.parametrize("size", [(32, 48, 4), (30, 45, 3)])
def test_both_graph_forms_match_pytorch(graph, size, request, rt_model):
    hr, lr = scene(*size, batch=2)
    with _load(request.getfixturevalue(graph)) as r:
        assert r.tileable == (graph == "tiny_onnx_tileable")
        assert r.config == rt_model.config  # from the graph's metadata
        assert [s.name for s in r.input_specs][:2] == ["hr_msi", "lr_hsi"]
        np.testing.assert_allclose(r.fuse(hr, lr), reference(rt_model, hr, lr), atol=1e-5)
        np.testing.assert_allclose(r.fuse(hr[0], lr[0]), reference(rt_model, hr, lr)[0], atol=1e-5)  # no batch axis


def test_lifecycle_and_validation(tiny_onnx, tiny_onnx_tileable, rt_model):
    runner = _load(tiny_onnx)
    hr, lr = scene(32, 32, 4)
    with pytest.raises(RunnerStateError):
        runner.fuse(hr, lr)
    with runner:
        with pytest.raises(InputError, match="bands"):
            runner.fuse(hr[:, :2], lr)
        with pytest.raises(InputError):
            runner.fuse(hr, lr[:, :, :7])  # not a ratio
        with pytest.raises(InputError, match="extent"):
            runner.fuse(hr, lr, extent=(8, 0, 64, 32))
        with pytest.raises(InputError):
            runner.fuse(hr, lr, out=np.empty((1, 31, 16, 16), np.float32))
        bad = hr.copy()
        bad[0, 0, 0, 0] = np.nan
        with pytest.raises(InputError):
            runner.fuse(bad, lr)
        out64 = runner.fuse(hr.astype(np.float64), lr.astype(np.float64))  # converted once
        assert out64.dtype == np.float32
        np.testing.assert_allclose(out64, reference(rt_model, hr, lr), atol=1e-5)
    assert not runner.is_active


def test_tileable_graph_takes_extent(rt_model, tiny_onnx_tileable):
    hr, lr = scene(32, 32, 4)
    ext = (16, 32, 128, 96)
    with _load(tiny_onnx_tileable) as r:
        got = r.fuse(hr, lr, extent=ext)
    with torch.no_grad():
        want = rt_model(torch.from_numpy(hr), torch.from_numpy(lr), torch.tensor(ext)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_outputs_are_written_in_place_and_inputs_read_in_place(rt_model, tiny_onnx):
    hr, lr = scene(32, 32, 4, seed=1)
    out = np.full((1, 31, 32, 32), np.nan, np.float32)
    with _load(tiny_onnx) as r:
        assert r.fuse(hr, lr, out=out) is out
        request = r.infer_request
        assert np.shares_memory(request.get_output_tensor(0).data, out)  # OpenVINO wrote into the caller's array
        assert np.shares_memory(request.get_tensor("hr_msi").data, hr)  # and read the caller's input
        np.testing.assert_allclose(out, reference(rt_model, hr, lr), atol=1e-5)
        t_out = torch.empty(1, 31, 32, 32)
        hr_t, lr_t = torch.from_numpy(hr), torch.from_numpy(lr)
        assert r.fuse(hr_t, lr_t, out=t_out) is t_out
        assert request.get_output_tensor(0).data.ctypes.data == t_out.data_ptr()
        np.testing.assert_allclose(t_out.numpy(), out, atol=0)
        got = r.fuse(hr_t, lr_t)  # torch in, torch out
        assert isinstance(got, torch.Tensor) and torch.equal(got, t_out)


def test_fuse_tiled_and_the_tiling_policy(rt_model, tiny_onnx_tileable):
    from lso.runtime.tiling import decide_tiling, fuse_tiled

    hr, lr = scene(64, 48, 4, seed=3)
    with _load(tiny_onnx_tileable) as r:
        whole = r.fuse(hr, lr)
        tiled = fuse_tiled(r, hr, lr, tile=16)
        decision = decide_tiling(r, hr.shape, auto_tile=16, auto_tile_pixels=1000)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)
    np.testing.assert_allclose(whole, reference(rt_model, hr, lr), atol=1e-5)
    assert decision.tile == 16


def test_threads_streams_and_the_latency_hint(tiny_onnx):
    props = pytest.importorskip("openvino.properties")
    with OpenVinoRunner(tiny_onnx, threads=1, streams=1) as r:
        assert r.compiled_model.get_property(props.inference_num_threads) == 1
        assert r.compiled_model.get_property(props.num_streams) == 1
        assert r.settings["threads"] == 1 and r.settings["streams"] == 1
        assert r.settings["performance_hint"] == "LATENCY"
    with OpenVinoRunner(tiny_onnx) as r:  # OpenVINO's own thread count
        assert r.settings["threads"] >= 0


def test_static_shapes_compile_per_shape_and_keep_the_last_few(rt_model, tiny_onnx):
    """The default compiles the graph for each input shape (OpenVINO plans its memory only for static shapes),
    keeps ``shape_cache`` of them, reuses a kept shape without compiling again, and matches PyTorch at each."""
    shapes = [(32, 32, 4), (48, 32, 4), (32, 32, 4), (64, 64, 8), (48, 32, 4)]
    with _load(tiny_onnx, shape_cache=2) as r:
        assert r.settings["shapes"] == "static" and r.settings["shape_cache"] == 2
        compiled_before = r._compiles  # the probe shape compiled at activation (its precision checked)
        for index, (h, w, ratio) in enumerate(shapes):
            hr, lr = scene(h, w, ratio, seed=index)
            np.testing.assert_allclose(r.fuse(hr, lr), reference(rt_model, hr, lr), atol=1e-5)
            port = r.compiled_model.inputs[0]
            assert port.get_partial_shape().is_static and tuple(port.get_shape()) == hr.shape
            assert len(r._cache) <= 2
        # 32x32 (new), 48x32 (new), 32x32 (kept), 64x64 (new: drops the least recent, 48x32), 48x32 (new again)
        assert r._compiles - compiled_before == 4


def test_dynamic_shapes_compile_once(rt_model, tiny_onnx):
    with _load(tiny_onnx, shapes="dynamic") as r:
        assert r.settings["shapes"] == "dynamic" and not r.compiled_model.inputs[0].get_partial_shape().is_static
        for index, (h, w, ratio) in enumerate([(32, 32, 4), (48, 64, 8)]):
            hr, lr = scene(h, w, ratio, seed=index)
            np.testing.assert_allclose(r.fuse(hr, lr), reference(rt_model, hr, lr), atol=1e-5)
        assert r._compiles == 1


@pytest.mark.parametrize("options, message", [({"shapes": "fixed"}, "shapes must be one of"),
                                              ({"shape_cache": 0}, "shape_cache must be an integer >= 1")])
def test_bad_shape_options_are_refused(tiny_onnx, options, message):
    with pytest.raises(InputError, match=message):
        OpenVinoRunner(tiny_onnx, **options)


def test_concurrent_calls_are_serialised(rt_model, tiny_onnx):
    from concurrent.futures import ThreadPoolExecutor

    inputs = [scene(32, 32, 4, seed=s) for s in range(4)]
    with _load(tiny_onnx) as r:
        assert not r.concurrent
        with ThreadPoolExecutor(4) as pool:
            outs = list(pool.map(lambda a: r.fuse(*a), inputs))
    for (hr, lr), out in zip(inputs, outs, strict=True):
        np.testing.assert_allclose(out, reference(rt_model, hr, lr), atol=1e-5)


# ------------------------------------------------------------------------------------------------ FP32 for real
def test_fp32_parity_on_the_export_case_table(rt_model, tiny_onnx_tileable):
    """Every case of the export's parity table (and its tile case) within the export tolerance of PyTorch FP32."""
    from lso.export.parity import DEFAULT_ATOL, DEFAULT_CASES, TILE_CASE

    with _load(tiny_onnx_tileable, precision="fp32") as r:
        assert OVR.effective_precision(r.compiled_model) == "f32"
        for index, case in enumerate((*DEFAULT_CASES, TILE_CASE)):
            rng = np.random.default_rng([0, index])
            h, w = case.lr_size
            hr = rng.random((case.batch, 3, case.height, case.width), dtype=np.float32)
            lr = rng.random((case.batch, 31, h, w), dtype=np.float32)
            ext = case.extent or (0, 0, case.height, case.width)
            with torch.no_grad():
                want = rt_model(torch.from_numpy(hr), torch.from_numpy(lr), torch.tensor(ext)).numpy()
            got = r.fuse(hr, lr, extent=case.extent)
            assert np.abs(got - want).max() <= DEFAULT_ATOL, case.name


def test_a_precision_other_than_the_one_asked_is_refused(tiny_onnx, monkeypatch):
    """The hint is checked on the compiled model, not assumed: a plugin that ignores it fails activation."""
    monkeypatch.setattr(OVR, "effective_precision", lambda compiled: "bf16")
    with pytest.raises(ArtifactError, match="inference precision bf16, not the f32 asked for"):
        _load(tiny_onnx, precision="fp32").activate()


def test_default_precision_warns_when_it_is_not_fp32(tiny_onnx, monkeypatch, caplog):
    monkeypatch.setattr(OVR, "effective_precision", lambda compiled: "bf16")
    with caplog.at_level(logging.WARNING, logger=OVR.__name__), _load(tiny_onnx, precision="default") as r:
        assert r.settings["inference_precision"] == "bf16"
    assert "not FP32" in caplog.text


def test_bf16_needs_a_cpu_with_bf16(tiny_onnx, monkeypatch):
    monkeypatch.setattr(OVR, "cpu_bf16_support", lambda core=None: (False, "no avx512_bf16 here"))
    with pytest.raises(InputError, match="native BF16.*no avx512_bf16 here"):
        _load(tiny_onnx, precision="bf16").activate()


# ------------------------------------------------------------------------------------------------ BF16 islands
def _island_names(path):
    import onnx

    from lso.export.graph_query import island_nodes
    from lso.islands import islands_for

    return set(island_nodes(onnx.load(str(path)), [i.name for i in islands_for("bf16")]))


def test_island_marks_on_the_openvino_model(tiny_onnx_tileable, tmp_path):
    """Graph level (any CPU): every node of every island carries OpenVINO's DisablePrecisionConversion mark, and
    nothing else does."""
    xml, marked = OVR.mark_fp32_islands(tiny_onnx_tileable, tmp_path / "tiny.xml")
    model = OVR.openvino_core().read_model(str(xml))
    marks = OVR.island_marks(model)
    islands = _island_names(tiny_onnx_tileable)
    assert set(marks) == islands and marked == len(islands) > 0
    kinds = {op.get_type_name() for op in model.get_ordered_ops() if op.get_friendly_name() in marks}
    assert {"Sin", "Cos", "Softmax", "CumSum", "MatMul"} <= kinds  # solver, softmax, grid, bicubic
    rt_value = next(op for op in model.get_ordered_ops() if op.get_friendly_name() in marks).get_rt_info()
    assert OVR.ISLAND_MARK in rt_value.keys()
    with pytest.raises(InputError, match=r"\.xml"):
        OVR.mark_fp32_islands(tiny_onnx_tileable, tmp_path / "tiny.ir")


def test_chunked_solver_loops_are_marked_with_their_bodies(rt_model, tiny_onnx_tileable, tmp_path):
    from pathlib import Path

    from lso.export.passes import save_chunked

    copy = tmp_path / "tiny.onnx"
    copy.write_bytes(tiny_onnx_tileable.read_bytes())
    path = Path(save_chunked(copy, 8))  # the solver in Scan loops, as lso export --solver-chunk writes it
    xml, _ = OVR.mark_fp32_islands(path, tmp_path / "chunked.xml")
    model = OVR.openvino_core().read_model(str(xml))
    loops = [op for op in model.get_ordered_ops() if op.get_type_name() in ("TensorIterator", "Loop")]
    assert loops
    for loop in loops:
        assert OVR.ISLAND_MARK in loop.get_rt_info().keys()
        body = loop.get_function()
        assert all(OVR.ISLAND_MARK in op.get_rt_info().keys() for op in body.get_ordered_ops())
    hr, lr = scene(32, 32, 4)
    with _load(path) as r:
        np.testing.assert_allclose(r.fuse(hr, lr), reference(rt_model, hr, lr), atol=1e-5)


def test_bf16_typing_keeps_the_islands_and_the_output_fp32(tiny_onnx_tileable, tmp_path):
    """Graph level (any CPU): to_bf16 types the convolutions BF16 and leaves every island operation, the operation
    that makes the output, and the graph's inputs and output FP32."""
    xml, _ = OVR.mark_fp32_islands(tiny_onnx_tileable, tmp_path / "tiny.xml")
    model = OVR.openvino_core().read_model(str(xml))
    islands = set(OVR.island_marks(model))
    counts = OVR.to_bf16(model, islands)
    assert counts["bf16_ops"] > 0 and counts["converts"] > 0
    f32, bf16 = ov.Type.f32, ov.Type.bf16
    ops = model.get_ordered_ops()
    convs = [op for op in ops if op.get_type_name() == "Convolution"]
    assert convs and all(op.get_output_element_type(0) == bf16 for op in convs)
    kept = [op for op in ops if op.get_friendly_name() in islands]
    assert kept and all(op.get_output_element_type(i) != bf16 for op in kept for i in range(op.get_output_size()))
    last = model.get_results()[0].input(0).get_source_output().get_node()
    assert last.get_type_name() == "Add" and last.get_output_element_type(0) == f32  # lms + out: FP32
    floats = [p for p in model.inputs if p.get_any_name() != "extent"]  # the tileable graph's extent: int64
    assert floats and all(p.get_element_type() == f32 for p in floats) and model.outputs[0].get_element_type() == f32


def test_bf16_compiled_model_is_checked(tiny_onnx, monkeypatch):
    """The runner refuses a compiled BF16 model without BF16 convolutions, or with an island operation in BF16."""
    monkeypatch.setattr(OVR, "cpu_bf16_support", lambda core=None: (True, "assumed"))
    fake = {"by_type": {"Convolution f32": 3}, "bf16_ops": 0, "island_ops_in_bf16": []}
    monkeypatch.setattr(OVR, "runtime_precisions", lambda compiled, islands=(): fake)
    with pytest.raises(ArtifactError, match="without BF16 convolutions"):
        _load(tiny_onnx, precision="bf16").activate()
    fake.update({"by_type": {"Convolution bf16": 3}, "bf16_ops": 4, "island_ops_in_bf16": ["node_sub_10"]})
    with pytest.raises(ArtifactError, match="island operations.*node_sub_10"):
        _load(tiny_onnx, precision="bf16").activate()


@needs_bf16
def test_no_island_operation_runs_bf16(tiny_onnx_tileable):
    """On a BF16 CPU, the compiled model's own record: BF16 convolutions, no island operation in BF16."""
    with _load(tiny_onnx_tileable, precision="bf16") as r:
        ran = OVR.runtime_precisions(r.compiled_model, set(_island_names(tiny_onnx_tileable)))
    assert ran["by_type"].get("Convolution bf16", 0) > 0 and ran["island_ops_in_bf16"] == []


@needs_bf16
def test_bf16_with_islands_a_small_fraction_of_the_all_bf16_loss(rt_model, tiny_onnx_tileable):
    """Where BF16 runs, on a tiny scene: ΔPSNR/ΔSAM against a ground truth 0.01 (RMS) from the FP32 output (the
    INT8 tests' device). The tiny model is untrained, so its BF16 convolutions cost more than the paper model's
    (the demo checkpoint's figures: benchmarks/results/bf16_sensitivity.md)."""
    from lso.metrics import evaluate

    hr, lr = scene(48, 48, 4, seed=5)
    outs = {}
    for precision in ("fp32", "bf16", "default"):  # OpenVINO's default as a user meets it: open dimensions (static
        # shapes fold the coordinate grid and the bicubic matrices into FP32 constants, hiding part of its damage)
        with _load(tiny_onnx_tileable, precision=precision, shapes="dynamic" if precision == "default" else None) as r:
            outs[precision] = r.fuse(hr, lr)[0]
            if precision == "bf16":  # BF16 by the model's types, the f32 hint: the plugin enforces nothing
                assert r.settings["inference_precision"] == "f32" and r.settings["fp32_island_ops"] > 0
                assert r.settings["shapes"] == "dynamic"  # static shapes fuse island ops into BF16 snippets
                assert r.settings["bf16_runtime_ops"] > 0
    gt = np.clip(outs["fp32"] + np.random.default_rng(1).normal(0, 0.01, outs["fp32"].shape), 0, 1)
    base = evaluate(gt, outs["fp32"], 4)
    loss = {p: (base["psnr"] - evaluate(gt, outs[p], 4)["psnr"], evaluate(gt, outs[p], 4)["sam"] - base["sam"])
            for p in ("bf16", "default")}
    (dpsnr, dsam), (all_dpsnr, all_dsam) = loss["bf16"], loss["default"]
    assert dpsnr <= 0.25 and dsam <= 0.02, loss
    assert dpsnr <= all_dpsnr / 10 and dsam <= all_dsam / 10, loss  # the islands carry most of the BF16 damage


@needs_bf16
def test_an_ir_without_island_marks_is_refused_for_bf16(tiny_onnx, tmp_path):
    core = OVR.openvino_core()
    plain = tmp_path / "plain.xml"
    ov.serialize(core.read_model(str(tiny_onnx)), str(plain))
    with pytest.raises(InputError, match="no FP32 island marks"):
        runtime.load(plain, precision="bf16").activate()
    xml, _ = OVR.mark_fp32_islands(tiny_onnx, tmp_path / "marked.xml")
    with runtime.load(xml, precision="bf16", threads=1) as r:  # .xml: OpenVINO by its suffix
        assert r.settings["fp32_island_ops"] > 0 and r.settings["bf16_runtime_ops"] > 0


# ------------------------------------------------------------------------------------------------ INT8, artifacts
def test_int8_qdq_graphs_run(cal_onnx, cal_feeds, tmp_path):
    import onnx

    from lso.calibration import int8 as Q
    from lso.runtime.ort_runner import ort_session

    cache = tmp_path / "calibration.json"
    paths = [Q.quantize_int8(cal_onnx, tmp_path / "tiny.int8.onnx", feeds=cal_feeds, flavour="tensorrt",
                             calibration_cache=cache),
             Q.quantize_int8(cal_onnx, tmp_path / "tiny.int8.cpu.onnx", flavour="cpu", calibration_cache=cache)]
    hr, lr = scene(32, 32, 4, seed=2)
    with _load(cal_onnx) as r:
        fp32 = r.fuse(hr, lr)
    for path in paths:
        with _load(path) as r:
            got = r.fuse(hr, lr)
        ort = ort_session(onnx.load(str(path))).run(None, {"hr_msi": hr, "lr_hsi": lr})[0]
        assert np.isfinite(got).all() and np.abs(got - fp32).mean() < 0.05, path.name  # the INT8 tests' bound
        if "cpu" in path.name:  # the CPU flavour: as close to FP32 as ONNX Runtime runs it
            assert np.abs(got - fp32).mean() <= 2 * np.abs(ort - fp32).mean(), path.name
        # the tensorrt flavour (symmetric INT8 activations) runs too, but measured ~10x further from FP32 than
        # ONNX Runtime's run of it (mean |Δ| 0.012 against 0.0012 on this tiny model): OpenVINO's own INT8 path


def test_sidecar_fingerprint_and_corrupt_or_foreign_graphs(tiny_onnx, tmp_path, rt_model):
    from lso.checkpoint import weights_fingerprint

    path = tmp_path / "m.onnx"
    path.write_bytes(tiny_onnx.read_bytes())
    write_sidecar(path, {"config": rt_model.config.to_dict()})
    with _load(path) as r:
        assert r.config == rt_model.config
        assert r.weights_fingerprint == weights_fingerprint(rt_model)
    side = json.loads((tmp_path / "m.onnx.json").read_text())
    side["sha256"] = "0" * 64
    (tmp_path / "m.onnx.json").write_text(json.dumps(side))
    with pytest.raises(ArtifactError, match="does not match its sidecar"):
        _load(path).activate()
    _load(path, verify=False).activate().deactivate()

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a graph")
    with pytest.raises(ArtifactError, match="OpenVINO cannot read"):
        _load(bad).activate()
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    other = tmp_path / "other.onnx"
    onnx.save(helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])), other)
    with pytest.raises(ArtifactError, match="an LSO graph takes"):
        _load(other).activate()
    ckpt = tmp_path / "m.safetensors"
    ckpt.write_bytes(b"x")
    with pytest.raises(ArtifactError, match="runs ONNX graphs"):
        _load(ckpt).activate()
