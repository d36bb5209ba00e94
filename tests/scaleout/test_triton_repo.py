"""``lso triton-repo``: every generated config.pbtxt parsed with Triton's own ModelConfig protobuf and checked
against the I/O spec; version folder layout; plan profile checks; errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from lso.artifacts import read_sidecar, write_sidecar
from lso.cli import main
from lso.config import LSOConfig
from lso.errors import ArtifactError, InputError
from lso.io_spec import EXTENT, INPUT_NAMES, OUTPUT_NAMES, tensor_specs
from lso.scaleout.triton_repo import TritonRepoOptions, model_config_text, parse_model_config, write_triton_repo

pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")


def _parse(path: Path):
    return parse_model_config(Path(path).read_text())


def _spec_dims(spec, batched: bool) -> list[int]:
    shape = spec.shape[1:] if batched else spec.shape
    return [d if isinstance(d, int) else -1 for d in shape]


def _check_against_spec(cfg, config: LSOConfig, *, tileable: bool) -> None:
    inputs, outputs = tensor_specs(config, tileable=tileable)
    batched = cfg.max_batch_size > 0
    assert [i.name for i in cfg.input] == [s.name for s in inputs]
    assert [o.name for o in cfg.output] == [s.name for s in outputs] == list(OUTPUT_NAMES)
    for got, spec in zip(list(cfg.input) + list(cfg.output), inputs + outputs, strict=True):
        want_type = pb2.TYPE_INT64 if spec.dtype == "int64" else pb2.TYPE_FP32
        assert got.data_type == want_type, spec.name
        assert list(got.dims) == _spec_dims(spec, batched), spec.name


def test_onnx_model_config_parses_and_matches_the_spec(tiny_onnx, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    models = write_triton_repo(TritonRepoOptions(out=tmp_path / "repo", onnx=tiny_onnx, max_batch_size=4,
                                                 max_queue_delay_us=250, preferred_batch_sizes=(2, 4), instances=2,
                                                 gpus=(0, 1)))
    assert [m.name for m in models] == ["lso_onnx"]
    folder = tmp_path / "repo" / "lso_onnx"
    cfg = _parse(folder / "config.pbtxt")
    assert cfg.name == folder.name == "lso_onnx"
    assert cfg.platform == "onnxruntime_onnx" and cfg.backend == "onnxruntime"
    assert cfg.max_batch_size == 4
    _check_against_spec(cfg, LSOConfig.tiny(), tileable=False)
    assert [list(i.dims) for i in cfg.input] == [[3, -1, -1], [31, -1, -1]]
    assert cfg.HasField("dynamic_batching")
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 250
    assert list(cfg.dynamic_batching.preferred_batch_size) == [2, 4]
    (group,) = cfg.instance_group
    assert group.kind == pb2.ModelInstanceGroup.KIND_GPU and group.count == 2 and list(group.gpus) == [0, 1]
    # version folder: <model>/1/model.onnx, a byte copy, with its sidecar (sha256 still verifies)
    copied = folder / "1" / cfg.default_model_filename
    assert copied == folder / "1" / "model.onnx" and copied.read_bytes() == Path(tiny_onnx).read_bytes()
    assert read_sidecar(copied)["sha256"]
    # the config agrees with the graph Triton will load: names, and rank = dims + the batch axis
    session = ort.InferenceSession(str(copied), providers=["CPUExecutionProvider"])
    graph = {a.name: len(a.shape) for a in session.get_inputs()}
    assert {i.name: len(i.dims) + 1 for i in cfg.input} == graph
    assert not [p for p in folder.rglob("*.tmp")]


def test_tileable_graph_gets_no_batching_and_an_int64_extent(tiny_onnx_tileable, tmp_path):
    (model,) = write_triton_repo(TritonRepoOptions(out=tmp_path, onnx=tiny_onnx_tileable, max_batch_size=4,
                                                   preferred_batch_sizes=(2,), onnx_instance_kind="cpu"))
    cfg = _parse(model.config_path)
    assert model.tileable and cfg.max_batch_size == 0
    _check_against_spec(cfg, LSOConfig.tiny(), tileable=True)
    assert [i.name for i in cfg.input] == [*INPUT_NAMES, EXTENT]
    assert list(cfg.input[0].dims) == [-1, 3, -1, -1] and list(cfg.input[2].dims) == [4]
    assert not cfg.HasField("dynamic_batching")
    assert cfg.instance_group[0].kind == pb2.ModelInstanceGroup.KIND_CPU


def test_config_follows_the_io_spec_not_constants():
    cfg = parse_model_config(model_config_text("m_onnx", "onnx", config=LSOConfig(n_bands=8, n_msi_bands=4)))
    assert [list(i.dims) for i in cfg.input] == [[4, -1, -1], [8, -1, -1]]
    assert list(cfg.output[0].dims) == [8, -1, -1]


def _fake_plan(path: Path, max_batch: int) -> Path:
    path.write_bytes(b"not really a TensorRT plan")  # the writer copies bytes; Triton would load them
    profile = {"min": {"hr_msi": [1, 3, 32, 32], "lr_hsi": [1, 31, 8, 8]},
               "opt": {"hr_msi": [1, 3, 256, 256], "lr_hsi": [1, 31, 64, 64]},
               "max": {"hr_msi": [max_batch, 3, 1024, 1024], "lr_hsi": [max_batch, 31, 256, 256]}}
    write_sidecar(path, {"format": "tensorrt-plan", "profiles": [profile], "config": LSOConfig.tiny().to_dict()})
    return path


def test_plan_and_onnx_side_by_side_with_the_profile_checked(tiny_onnx, tmp_path):
    plan = _fake_plan(tmp_path / "tiny.plan", max_batch=2)
    with pytest.raises(InputError, match="max batch 2"):
        write_triton_repo(TritonRepoOptions(out=tmp_path / "repo", plan=plan, max_batch_size=4))
    models = write_triton_repo(TritonRepoOptions(out=tmp_path / "repo", onnx=tiny_onnx, plan=plan, max_batch_size=2,
                                                 onnx_instance_kind="cpu"))
    assert [m.name for m in models] == ["lso_onnx", "lso_trt"]
    cfg = _parse(tmp_path / "repo" / "lso_trt" / "config.pbtxt")
    assert cfg.platform == "tensorrt_plan" and cfg.backend == "tensorrt" and cfg.max_batch_size == 2
    assert cfg.instance_group[0].kind == pb2.ModelInstanceGroup.KIND_GPU  # plans run on GPUs only
    _check_against_spec(cfg, LSOConfig.tiny(), tileable=False)
    assert (tmp_path / "repo" / "lso_trt" / "1" / "model.plan").read_bytes() == plan.read_bytes()
    with pytest.raises(InputError, match="GPUs only"):
        model_config_text("x_trt", "trt", instance_kind="cpu")


def test_plan_profile_past_the_tensor_limit_is_refused(tiny_onnx, tmp_path, monkeypatch):
    from lso.export import tensor_limits

    plan = _fake_plan(tmp_path / "tiny.plan", max_batch=2)
    # the tiny graph's widest tensor is [B, 40, H, W]: 2 x 40 x 1024 x 1024 elements at this plan's max shapes
    monkeypatch.setattr(tensor_limits, "TRT_MAX_ELEMENTS", 2 * 40 * 1024 * 1024 - 1)
    with pytest.raises(InputError, match="over TensorRT's limit"):
        write_triton_repo(TritonRepoOptions(out=tmp_path / "repo", onnx=tiny_onnx, plan=plan, max_batch_size=2,
                                            onnx_instance_kind="cpu"))
    monkeypatch.setattr(tensor_limits, "TRT_MAX_ELEMENTS", 2 * 40 * 1024 * 1024)
    assert len(write_triton_repo(TritonRepoOptions(out=tmp_path / "repo", onnx=tiny_onnx, plan=plan, max_batch_size=2,
                                                   onnx_instance_kind="cpu"))) == 2


def test_versions_are_added_and_never_silently_replaced(tiny_onnx, tmp_path):
    repo = tmp_path / "repo"
    write_triton_repo(TritonRepoOptions(out=repo, onnx=tiny_onnx))
    with pytest.raises(ArtifactError, match="--overwrite"):
        write_triton_repo(TritonRepoOptions(out=repo, onnx=tiny_onnx))
    write_triton_repo(TritonRepoOptions(out=repo, onnx=tiny_onnx, version=2))
    write_triton_repo(TritonRepoOptions(out=repo, onnx=tiny_onnx, version=2, overwrite=True))
    assert sorted(p.name for p in (repo / "lso_onnx").iterdir()) == ["1", "2", "config.pbtxt"]


def test_errors_name_the_problem(tiny_onnx, tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 8, 8])
    other = tmp_path / "other.onnx"
    onnx.save(helper.make_model(helper.make_graph([helper.make_node("Identity", ["images"], ["logits"])], "g", [x],
                                                  [y])), str(other))
    with pytest.raises(ArtifactError, match="LSO graph"):
        write_triton_repo(TritonRepoOptions(out=tmp_path / "r1", onnx=other))
    (tmp_path / "corrupt.onnx").write_bytes(b"\x00garbage")
    with pytest.raises(ArtifactError, match="not a readable ONNX"):
        write_triton_repo(TritonRepoOptions(out=tmp_path / "r2", onnx=tmp_path / "corrupt.onnx"))
    with pytest.raises(InputError, match="--onnx"):
        write_triton_repo(TritonRepoOptions(out=tmp_path / "r3"))
    with pytest.raises(InputError, match="outside 1..max_batch_size"):
        write_triton_repo(TritonRepoOptions(out=tmp_path / "r4", onnx=tiny_onnx, max_batch_size=2,
                                            preferred_batch_sizes=(4,)))
    with pytest.raises(InputError, match="letters, digits"):
        write_triton_repo(TritonRepoOptions(out=tmp_path / "r5", onnx=tiny_onnx, name="a b"))


def test_cli_writes_the_repo_and_prints_the_server_command(tiny_onnx, tmp_path, capsys):
    rc = main(["triton-repo", str(tmp_path / "repo"), "--onnx", str(tiny_onnx), "--max-batch-size", "2",
               "--preferred-batch-size", "2", "--onnx-instance-kind", "cpu", "--instances", "3"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "tritonserver --model-repository=" in out
    cfg = _parse(tmp_path / "repo" / "lso_onnx" / "config.pbtxt")
    assert cfg.max_batch_size == 2 and cfg.instance_group[0].count == 3
    assert main(["triton-repo", str(tmp_path / "repo"), "--onnx", str(tiny_onnx)]) == 1  # exists: clear error
    assert "--overwrite" in capsys.readouterr().err
    assert json.loads((tmp_path / "repo" / "lso_onnx" / "1" / "model.onnx.json").read_text())["sha256"]
