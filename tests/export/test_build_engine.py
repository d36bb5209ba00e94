"""Engine builder: trtexec lines checked against per-version flag lists, profiles, inspector parsing,
the precision check, the sidecar, and the no-GPU error; real builds are marked ``trt``."""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lso import io_spec
from lso.errors import ArtifactError, ExportError, InputError, MissingDependencyError
from lso.export import engine_builder as BE
from lso.export import plan_io as PL
from lso.export import profiles as PR
from lso.export import trtexec as TX
from lso.runtime import trt_support as TS

REPO = Path(__file__).resolve().parents[2]
FLAGS = json.loads((Path(__file__).parent / "data" / "trtexec_flags.json").read_text())
OPTION_SETS = [
    {},
    {"timing_cache": "cache/trt.cache", "optimization_level": 5, "workspace_gib": 0.5},
    {"version_compatible": True, "hardware_compatibility": "ampere_plus", "device": 1},
    {"opt_shapes": {"hr_msi": (2, 3, 256, 256), "lr_hsi": (2, 31, 64, 64)}},
]


def _opts(**kwargs) -> PR.BuildOptions:
    overrides = {k: kwargs.pop(k) for k in ("min_shapes", "opt_shapes", "max_shapes") if k in kwargs}
    profiles = kwargs.pop("profiles", None)
    return PR.BuildOptions(profiles=PR.resolve_profiles(profiles, **overrides), **kwargs)


def _flag_names(cmd: list[str]) -> list[str]:
    assert cmd[0] == "trtexec"
    return [arg.split("=", 1)[0] for arg in cmd[1:]]


def test_flag_lists_name_their_sources():
    assert FLAGS["11"]["source"]["repo"] == "NVIDIA/TensorRT" and len(FLAGS["11"]["source"]["commit"]) == 40
    assert FLAGS["10"]["source"]["repo"] and FLAGS["10"]["version"].startswith("10.")
    assert "--fp16" in FLAGS["10"]["flags"] and "--fp16" not in FLAGS["11"]["flags"]
    assert (REPO / "tests" / "export" / "data" / "README.md").is_file()


@pytest.mark.parametrize("major", [10, 11])
@pytest.mark.parametrize("kwargs", OPTION_SETS)
def test_trtexec_flags_exist_in_that_version(major, kwargs):
    cmd = TX.trtexec_command("model.fp16.onnx", "model.plan", _opts(**kwargs), trt_major=major)
    known, deprecated = set(FLAGS[str(major)]["flags"]), set(FLAGS[str(major)]["deprecated"])
    for name in _flag_names(cmd):
        assert name in known, f"{name} is not a TensorRT {major} trtexec flag"
        assert name not in deprecated, f"{name} is deprecated in TensorRT {major}"
    names = _flag_names(cmd)
    assert ("--stronglyTyped" in names) == (major == 10)  # 10: opt in; 11: always on (flag is a no-op)
    assert not {"--fp16", "--int8", "--best", "--bf16", "--calib"} & set(names)  # precision is in the graph


def test_trtexec_line_carries_the_profile_and_options():
    opts = _opts(timing_cache="t.cache", optimization_level=4, workspace_gib=2, version_compatible=True,
                 hardware_compatibility="ampere+")
    cmd = TX.trtexec_command("m.onnx", "m.plan", opts, trt_major=11)
    prof = io_spec.default_profile()
    assert f"--optShapes=hr_msi:{'x'.join(map(str, prof.opt['hr_msi']))},lr_hsi:1x31x128x128" in cmd
    assert "--maxShapes=hr_msi:4x3x1024x1024,lr_hsi:4x31x512x512" in cmd
    assert {"--memPoolSize=workspace:2048", "--builderOptimizationLevel=4", "--timingCacheFile=t.cache",
            "--versionCompatible", "--hardwareCompatibilityLevel=ampere+", "--saveEngine=m.plan"} <= set(cmd)


def test_two_profiles_are_numbered():
    base = io_spec.default_profile()
    small = io_spec.default_profile(hr=((32, 32), (64, 64), (128, 128)), lr=((8, 8), (16, 16), (32, 32)))
    cmd = TX.trtexec_command("m.onnx", "m.plan", _opts(profiles=[base, small]), trt_major=10)
    names = _flag_names(cmd)
    assert [a for a in cmd if a.startswith("--profile=")] == ["--profile=0", "--profile=1"]
    assert names.count("--minShapes") == 2 and set(names) <= set(FLAGS["10"]["flags"])


def test_same_compute_capability_needs_tensorrt_11():
    opts = _opts(hardware_compatibility="same_compute_capability")
    assert "--hardwareCompatibilityLevel=sameComputeCapability" in TX.trtexec_command("m", "p", opts, trt_major=11)
    with pytest.raises(InputError, match="TensorRT 11"):
        TX.trtexec_command("m", "p", opts, trt_major=10)
    with pytest.raises(MissingDependencyError):
        TS.BuilderCompat.for_major(8)


def test_compat_decisions_live_in_one_place():
    ten, eleven = TS.builder_compat("10.13.0.35"), TS.builder_compat("11.4.0.106")
    assert ten.strongly_typed_flag and not eleven.strongly_typed_flag
    assert ten.trtexec_strongly_typed and not eleven.trtexec_strongly_typed


@pytest.mark.parametrize("kwargs, match", [
    (dict(min_shapes={"hr_msi": (1, 3, 4096, 4096)}), "min <= opt <= max"),
    (dict(opt_shapes={"nope": (1, 3, 8, 8)}), "unknown input"),
    (dict(max_shapes={"lr_hsi": (4, 30, 512, 512)}), "one C"),
])
def test_bad_profiles_are_input_errors(kwargs, match):
    with pytest.raises(InputError, match=match):
        PR.resolve_profiles(**kwargs)


def test_shape_spec_parsing():
    assert PR.parse_shape_spec("hr_msi:1x3x64x64, lr_hsi:1x31x16x16") == {"hr_msi": (1, 3, 64, 64),
                                                                          "lr_hsi": (1, 31, 16, 16)}
    with pytest.raises(InputError):
        PR.parse_shape_spec("hr_msi=1x3")
    with pytest.raises(InputError):
        PR.BuildOptions(profiles=PR.resolve_profiles(), optimization_level=7)


# ----------------------------------------------------------------------------------- inspection
def _layer(name, dtype10=None, dtype11=None):
    if dtype10 is not None:
        io = {"Name": f"{name}_out", "Dimensions": [1, 64, 32, 32], "Format/Datatype": dtype10}
    else:
        io = {"Name": f"{name}_out", "Dimensions": [1, 64, 32, 32], "Format": "kLINEAR", "DataType": dtype11}
    return {"Name": name, "LayerType": "CaskConvolution", "Inputs": [dict(io)], "Outputs": [dict(io)]}


TRT10_FP16 = {"Layers": [_layer("conv1", "Channel major FP16 format where channel % 8 == 0 (kHWC8)"),
                         _layer("sin", "Row major linear FP32 format (kLINEAR)")], "Bindings": ["hr_msi", "lr_hsi"]}
TRT11_INT8 = {"Layers": [_layer("conv1", dtype11="Int8"), _layer("add", dtype11="Half"),
                         _layer("sin", dtype11="Float")], "I/O Tensors": []}


def test_layer_precisions_reads_both_inspector_schemas():
    ten = BE.layer_precisions(json.dumps(TRT10_FP16))
    assert (ten["layers"], ten["fp16"], ten["int8"], ten["fp32_only"]) == (2, 1, 0, 1)
    eleven = BE.layer_precisions(TRT11_INT8)
    assert (eleven["int8"], eleven["fp16"], eleven["fp32_only"]) == (1, 1, 1)
    assert eleven["int8_layers"] == ["conv1"]
    names_only = BE.layer_precisions({"Layers": ["conv1", "sin"]})
    assert names_only["unknown"] == 2


def test_precision_check_refuses_a_silent_downgrade():
    fp32_engine = BE.layer_precisions({"Layers": [_layer("conv1", dtype11="Float")]})
    with pytest.raises(ExportError, match="no FP16 layer"):
        BE.check_layer_precisions(fp32_engine, "fp16", "m.fp16.onnx")
    with pytest.raises(ExportError, match="no INT8 layer"):
        BE.check_layer_precisions(BE.layer_precisions(TRT10_FP16), "int8", "m.int8.onnx")
    BE.check_layer_precisions(BE.layer_precisions(TRT10_FP16), "fp16", "m.fp16.onnx")
    BE.check_layer_precisions(fp32_engine, "fp32", "m.onnx")


# ----------------------------------------------------------------------------------- graphs and sidecar
def _graph(path: Path, kind: str) -> Path:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((4, 3, 1, 1), np.float32), "w")
    inits = [w]
    if kind == "int8":
        inits += [numpy_helper.from_array(np.array(0.1, np.float32), "s"),
                  numpy_helper.from_array(np.array(0, np.int8), "z")]
        nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
                 helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"]),
                 helper.make_node("Conv", ["dq", "w"], ["y"])]
    elif kind == "fp16":
        inits = [numpy_helper.from_array(np.ones((4, 3, 1, 1), np.float16), "w")]
        nodes = [helper.make_node("Cast", ["x"], ["xh"], to=TensorProto.FLOAT16),
                 helper.make_node("Conv", ["xh", "w"], ["yh"]),
                 helper.make_node("Cast", ["yh"], ["y"], to=TensorProto.FLOAT)]
    else:
        nodes = [helper.make_node("Conv", ["x", "w"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


@pytest.mark.parametrize("kind", ["fp32", "fp16", "int8"])
def test_graph_precision_is_read_from_the_graph(tmp_path, kind):
    assert BE.graph_precision(_graph(tmp_path / f"{kind}.onnx", kind)) == kind


def test_plan_sidecar_contents_fit_the_runtime_checks(tmp_path):
    from lso.artifacts import write_sidecar
    from lso.runtime.trt_runner import check_plan_sidecar

    onnx_path = _graph(tmp_path / "m.fp16.onnx", "fp16")
    opts = _opts(timing_cache=str(tmp_path / "t.cache"), version_compatible=True)
    info = PL.plan_sidecar(onnx_path, tmp_path / "m.plan", opts, precision="fp16", tensorrt_version="11.4.0.106",
                           gpu={"gpu": "NVIDIA H100", "compute_capability": "9.0", "device": 0},
                           layers=BE.layer_precisions(TRT10_FP16), build_seconds=12.3)
    assert info["precision"] == "fp16" and info["tensorrt_version"] == "11.4.0.106"
    assert info["gpu"] == "NVIDIA H100" and info["compute_capability"] == "9.0"
    assert info["profiles"][0]["opt"]["hr_msi"] == [1, 3, 512, 512]
    assert len(info["source"]["sha256"]) == 64 and info["layers"]["fp16"] == 1
    line = info["trtexec_equivalent"]
    assert line.startswith("trtexec --onnx=") and "--stronglyTyped" not in line  # built by TensorRT 11
    plan = tmp_path / "m.plan"
    plan.write_bytes(b"plan bytes")
    write_sidecar(plan, info)
    side = json.loads((tmp_path / "m.plan.json").read_text())
    check_plan_sidecar(side, trt_version="11.4.0.106", compute_capability=(9, 0), path=plan)
    with pytest.raises(ArtifactError):
        check_plan_sidecar(side, trt_version="11.4.0.106", compute_capability=(8, 9), path=plan)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path")
def test_no_gpu_fails_before_any_tensorrt_object(tmp_path, monkeypatch):
    import lso.runtime.trt_support as compat

    def forbidden():
        raise AssertionError("TensorRT was imported although no GPU is present")

    monkeypatch.setattr(compat, "import_tensorrt", forbidden)
    with pytest.raises(MissingDependencyError, match="CUDA GPU"):
        BE.build_engine(_graph(tmp_path / "m.onnx", "fp32"), tmp_path / "m.plan")
    assert not (tmp_path / "m.plan").exists()


def test_missing_onnx_is_an_artifact_error(tmp_path):
    with pytest.raises(ArtifactError):
        BE.build_engine(tmp_path / "nope.onnx")


def test_cli_prints_trtexec_without_a_gpu(tmp_path, capsys):
    from lso.cli import main

    onnx_path = _graph(tmp_path / "m.int8.onnx", "int8")
    assert main(["build", str(onnx_path), "--print-trtexec", "--trt-version", "10", "--opt-shapes",
                 "hr_msi:1x3x256x256,lr_hsi:1x31x64x64", "--timing-cache", "t.cache"]) == 0
    line = capsys.readouterr().out.strip()
    cmd = shlex.split(line)
    assert cmd[:2] == ["trtexec", f"--onnx={onnx_path}"] and "--stronglyTyped" in cmd
    assert "--optShapes=hr_msi:1x3x256x256,lr_hsi:1x31x64x64" in cmd
    assert f"--saveEngine={tmp_path / 'm.int8.plan'}" in cmd


def test_script_runs_as_a_file():
    """The script is a thin wrapper over ``lso build``: the same options, help and defaults."""
    out = subprocess.run([sys.executable, str(REPO / "export" / "build_engine.py"), "--help"], capture_output=True,
                         text=True, check=True).stdout
    assert "--print-trtexec" in out and "strongly typed" in out
    assert out.startswith("usage: python export/build_engine.py")
    from lso.cli import build_parser, command_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["build"]
    script = command_parser("build", "python export/build_engine.py")
    assert ({a.dest: (a.option_strings, a.default) for a in script._actions if a.dest not in ("help", "verbose")}
            == {a.dest: (a.option_strings, a.default) for a in sub._actions if a.dest != "help"})


def test_module_is_callable_as_lso_export_build_engine(tmp_path):
    import lso.export

    assert callable(lso.export.build_engine)
    with pytest.raises(ArtifactError):
        lso.export.build_engine(tmp_path / "nope.onnx")


# ----------------------------------------------------------------------------------- on a GPU
@pytest.mark.trt
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_build_tiny_engine(precision, tmp_path):
    """Export the tiny model, convert it, build it with a small profile, inspect the sidecar and run it."""
    pytest.importorskip("polygraphy", reason="the builder runs Polygraphy's TensorRT loaders")
    from lso import LSO, LSOConfig
    from lso.calibration import calibration_feeds, convert_fp16, quantize_int8
    from lso.export import export_onnx
    from lso.runtime import TrtRunner

    torch.manual_seed(0)
    model = LSO(LSOConfig.tiny()).eval()
    fp32 = export_onnx(model, tmp_path / "tiny.onnx", check=False)
    feeds = calibration_feeds(count=2, size=32, min_count=1)
    graph = (convert_fp16(fp32, tmp_path / "tiny.fp16.onnx", feeds=feeds) if precision == "fp16" else
             quantize_int8(fp32, tmp_path / "tiny.int8.onnx", feeds=feeds))
    small = io_spec.default_profile(hr=((16, 16), (64, 64), (128, 128)), lr=((4, 4), (16, 16), (32, 32)))
    plan = BE.build_engine(graph, tmp_path / f"tiny.{precision}.plan", profiles=[small],
                           timing_cache=tmp_path / "t.cache")
    side = json.loads(plan.with_name(plan.name + ".json").read_text())
    assert side["precision"] == precision and side["layers"][precision] > 0
    assert (tmp_path / "t.cache").stat().st_size > 0
    hr = torch.rand(1, 3, 64, 64)
    lr = torch.rand(1, 31, 16, 16)
    with TrtRunner(plan) as runner:
        out = runner.fuse(hr.cuda(), lr.cuda()).cpu()
    with torch.no_grad():
        ref = model(hr, lr)
    assert torch.isfinite(out).all() and (out - ref).abs().max() < 0.1
