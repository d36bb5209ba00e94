"""Graph variants (portable / tensorrt / cpu): recorded by the export and the passes, read back from metadata,
sidecar or structure, and refused by every consumer that targets TensorRT."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from lso.errors import ExportError, InputError
from lso.export import variants as V

onnx = pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def cpu_onnx(ex_onnx, tmp_path_factory):
    """``ex_onnx`` with the solver chunked (a CPU-only pass), saved beside a copy of its sidecar."""
    from lso.export import passes

    out = tmp_path_factory.mktemp("variants") / "tiny.cpu.onnx"
    onnx.save(passes.chunk_solver(onnx.load(str(ex_onnx)), 16), str(out))
    return out


def test_export_records_the_portable_variant(ex_onnx):
    assert V.read_variant(ex_onnx) == V.GraphVariant("portable", (), "metadata")
    side = json.loads(ex_onnx.with_name(ex_onnx.name + ".json").read_text())
    assert side["variant"] == "portable" and side["passes"] == []


def test_cpu_passes_mark_the_graph_and_keep_each_other(ex_onnx):
    from lso.export import passes

    proto = passes.align_conv_channels(onnx.load(str(ex_onnx)), 16)
    assert V.read_variant(proto).passes == ("align_conv_channels:16",)
    proto = passes.chunk_solver(proto, 32)
    variant = V.read_variant(proto)
    assert variant.name == "cpu" and variant.passes == ("align_conv_channels:16", "chunk_solver:32")


def test_structure_tells_a_graph_without_metadata(cpu_onnx, tmp_path):
    proto = onnx.load(str(cpu_onnx))
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    assert V.read_variant(bare) == V.GraphVariant("cpu", ("chunk_solver",), "structure")


def test_int8_cpu_flavour_is_recognised_by_its_uint8_zero_points(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    def graph(zp_dtype):
        inits = [numpy_helper.from_array(np.array(0.1, np.float32), "s"),
                 numpy_helper.from_array(np.array(0, zp_dtype), "z")]
        nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
                 helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
        g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], inits)
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])

    assert V.read_variant(graph(np.uint8)).passes == ("int8_cpu_flavour",)
    assert V.read_variant(graph(np.int8)).name == "portable"


def test_tensorrt_target_refuses_cpu_passes(ex_model, tmp_path):
    from lso.export import export_onnx

    with pytest.raises(ExportError, match="target 'tensorrt'"):
        export_onnx(ex_model, tmp_path / "m.onnx", target="tensorrt", solver_chunk=64, check=False)
    with pytest.raises(ExportError, match="target must be one of"):
        export_onnx(ex_model, tmp_path / "m.onnx", target="gpu", check=False)
    assert not (tmp_path / "m.onnx").exists()


def test_tensorrt_consumers_refuse_a_cpu_graph(cpu_onnx, tmp_path, monkeypatch, capsys):
    import lso.runtime.cuda_arrays as cuda_arrays
    from lso.cli import main
    from lso.export import engine_builder as BE
    from lso.export.lint import main as lint_main

    def forbidden(*a, **k):
        raise AssertionError("a CPU-tuned graph went on to the build")

    monkeypatch.setattr(cuda_arrays, "require_cuda", forbidden)
    with pytest.raises(InputError, match="--target tensorrt"):
        BE.build_engine(cpu_onnx, tmp_path / "m.plan")
    small = "hr_msi:1x3x64x64,lr_hsi:1x31x16x16"
    args = ["build", str(cpu_onnx), "--print-trtexec", "--trt-version", "10", "--opt-shapes", small,
            "--max-shapes", small]
    assert main(args) == 1
    assert "CPU-tuned graph" in capsys.readouterr().err
    assert main(args + ["--allow-cpu-graph"]) == 0  # the explicit override
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("trtexec ")
    assert lint_main([str(cpu_onnx)]) == 1
    assert "CPU-tuned graph" in capsys.readouterr().out
    assert lint_main([str(cpu_onnx), "--allow-cpu-graph"]) == 0


def test_triton_repo_refuses_a_plan_built_from_a_cpu_graph(cpu_onnx, ex_onnx, tmp_path):
    from lso.artifacts import write_sidecar
    from lso.scaleout.triton_repo import TritonRepoOptions, write_triton_repo

    for i, (source, recorded) in enumerate([(cpu_onnx, None), (ex_onnx, "cpu")]):
        plan = tmp_path / f"m{i}.plan"
        plan.write_bytes(b"plan bytes")
        src = {"path": str(source), **({"variant": recorded} if recorded else {})}
        write_sidecar(plan, {"format": "tensorrt-plan", "source": src, "profiles": []})
        with pytest.raises(InputError, match="CPU-tuned graph"):
            write_triton_repo(TritonRepoOptions(out=tmp_path / "repo", plan=plan))
        assert not (tmp_path / "repo" / "lso_trt").exists()
    shutil.rmtree(tmp_path / "repo", ignore_errors=True)
    plan = tmp_path / "ok.plan"
    plan.write_bytes(b"plan bytes")
    write_sidecar(plan, {"format": "tensorrt-plan", "source": {"path": str(ex_onnx)}, "profiles": []})
    assert [m.name for m in write_triton_repo(TritonRepoOptions(out=tmp_path / "repo", plan=plan))] == ["lso_trt"]
