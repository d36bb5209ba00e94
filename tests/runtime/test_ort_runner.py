"""OrtRunner: both graph forms, IOBinding in place (proved by behaviour), threads, sidecar, CUDA provider."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lso.artifacts import write_sidecar
from lso.errors import ArtifactError, InputError, MissingDependencyError
from lso.runtime import OrtRunner

from rt_fixtures import reference, scene

pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("graph", ["tiny_onnx", "tiny_onnx_tileable"])
@pytest.mark.parametrize("size", [(32, 48, 4), (30, 45, 3)])
def test_both_graph_forms_match_pytorch(graph, size, request, rt_model):
    hr, lr = scene(*size, batch=2)
    with OrtRunner(request.getfixturevalue(graph), threads=1) as r:
        assert r.tileable == (graph == "tiny_onnx_tileable")
        np.testing.assert_allclose(r.fuse(hr, lr), reference(rt_model, hr, lr), atol=1e-5)


def test_tileable_graph_takes_extent(rt_model, tiny_onnx_tileable):
    hr, lr = scene(32, 32, 4)
    ext = (16, 32, 128, 96)
    with OrtRunner(tiny_onnx_tileable) as r:
        got = r.fuse(hr, lr, extent=ext)
    with torch.no_grad():
        want = rt_model(torch.from_numpy(hr), torch.from_numpy(lr), torch.tensor(ext)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_iobinding_reads_the_callers_buffer_and_writes_into_out(rt_model, tiny_onnx):
    """No copy, shown by behaviour: values written into the caller's input after binding and before running
    are the ones fused, and the output values land in the caller's own buffer."""
    hr, lr = scene(32, 32, 4, seed=1)
    hr_new, _ = scene(32, 32, 4, seed=2)
    out = np.full((1, 31, 32, 32), np.nan, np.float32)
    with OrtRunner(tiny_onnx) as r:
        binding = r.bind(hr, lr, out=out)
        hr[...] = hr_new  # change the caller's array after binding, before running
        result = binding.run()
        assert result is out
        np.testing.assert_allclose(out, reference(rt_model, hr_new, lr), atol=1e-5)
        assert np.abs(out - reference(rt_model, scene(32, 32, 4, seed=1)[0], lr)).max() > 1e-3
        # a binding is reusable: write again, run again, same buffer
        hr[...] = scene(32, 32, 4, seed=3)[0]
        binding.run()
        np.testing.assert_allclose(out, reference(rt_model, hr, lr), atol=1e-5)


def test_torch_cpu_tensors_are_bound_in_place_too(rt_model, tiny_onnx):
    hr, lr = (torch.from_numpy(a) for a in scene(32, 32, 4, seed=4))
    out = torch.empty(1, 31, 32, 32)
    with OrtRunner(tiny_onnx) as r:
        binding = r.bind(hr, lr, out=out)
        hr.mul_(0.5)
        assert binding.run() is out
    np.testing.assert_allclose(out.numpy(), reference(rt_model, hr.numpy(), lr.numpy()), atol=1e-5)


def test_float64_input_is_converted(rt_model, tiny_onnx):
    hr, lr = scene(32, 32, 4)
    with OrtRunner(tiny_onnx) as r:
        out = r.fuse(hr.astype(np.float64), lr.astype(np.float64))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, reference(rt_model, hr, lr), atol=1e-5)


def test_threads_are_set(tiny_onnx):
    with OrtRunner(tiny_onnx, threads=1, inter_op_threads=1) as r:
        assert r.session.get_session_options().intra_op_num_threads == 1


def test_memory_arena_modes(tiny_onnx, rt_model):
    """Default: the process-wide shared arena (env allocator); 'session'/True and 'off'/False as ORT's own."""
    hr, lr = scene(32, 32, 4)
    with OrtRunner(tiny_onnx, threads=1) as runner:
        options = runner.session.get_session_options()
        assert options.enable_cpu_mem_arena is True
        assert options.get_session_config_entry("session.use_env_allocators") == "1"
        np.testing.assert_allclose(runner.fuse(hr, lr), reference(rt_model, hr, lr), atol=1e-5)
    for value, arena in (("session", True), (True, True), ("off", False), (False, False)):
        with OrtRunner(tiny_onnx, threads=1, memory_arena=value) as runner:
            options = runner.session.get_session_options()
            assert options.enable_cpu_mem_arena is arena
            with pytest.raises(RuntimeError, match="does not have configuration"):
                options.get_session_config_entry("session.use_env_allocators")
    with pytest.raises(InputError, match="memory_arena must be one of"):
        OrtRunner(tiny_onnx, memory_arena="big")


def test_memory_pattern_is_off_on_cpu(tiny_onnx, rt_model):
    """The runner's CPU sessions run without ORT's memory pattern (its planned block would land on fresh pages of an
    arena that never shrinks: benchmarks/results/memory_profile.md); a caller's own session options are kept."""
    ort = pytest.importorskip("onnxruntime")
    hr, lr = scene(32, 32, 4)
    for value in ("shared", "session", "off"):
        with OrtRunner(tiny_onnx, threads=1, memory_arena=value) as runner:
            assert runner.session.get_session_options().enable_mem_pattern is False
            for _ in range(2):  # the second run at a shape is the one a memory pattern would change
                np.testing.assert_allclose(runner.fuse(hr, lr), reference(rt_model, hr, lr), atol=1e-5)
    own = ort.SessionOptions()
    own.intra_op_num_threads = 1
    with OrtRunner(tiny_onnx, session_options=own) as runner:
        assert runner.session.get_session_options().enable_mem_pattern is True
    from lso.runtime.ort_runner import ort_session

    assert ort_session(tiny_onnx, memory_pattern=False).get_session_options().enable_mem_pattern is False
    assert ort_session(tiny_onnx).get_session_options().enable_mem_pattern is True  # None: ORT's default


def test_sidecar_sha256_is_checked(tiny_onnx, tmp_path, rt_model):
    path = tmp_path / "m.onnx"
    path.write_bytes(tiny_onnx.read_bytes())
    write_sidecar(path, {"config": rt_model.config.to_dict()})
    with OrtRunner(path) as r:
        assert r.config == rt_model.config  # read from the sidecar
    side = json.loads((tmp_path / "m.onnx.json").read_text())
    side["sha256"] = "0" * 64
    (tmp_path / "m.onnx.json").write_text(json.dumps(side))
    with pytest.raises(ArtifactError, match="does not match its sidecar"):
        OrtRunner(path).activate()
    OrtRunner(path, verify=False).activate().deactivate()


def test_corrupt_or_foreign_graph(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a graph")
    with pytest.raises(ArtifactError, match="cannot load"):
        OrtRunner(bad).activate()
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    other = tmp_path / "other.onnx"
    onnx.save(helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])), other)
    with pytest.raises(ArtifactError, match="an LSO graph takes"):
        OrtRunner(other).activate()


def test_cuda_provider_needs_onnxruntime_gpu(tiny_onnx):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here")
    with pytest.raises(MissingDependencyError, match="onnxruntime-gpu"):
        OrtRunner(tiny_onnx, device="cuda").activate()


@pytest.mark.gpu
def test_cuda_provider_binds_device_tensors(rt_model, tiny_onnx):  # unverified where it was written (no GPU)
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("needs onnxruntime-gpu")
    hr, lr = scene(32, 48, 4)
    with OrtRunner(tiny_onnx, device="cuda") as r:
        out = r.fuse(torch.from_numpy(hr).cuda(), torch.from_numpy(lr).cuda())
        assert out.is_cuda
        np.testing.assert_allclose(out.cpu().numpy(), reference(rt_model, hr, lr), atol=1e-4)


def test_shared_arena_is_not_reserved_under_strict_overcommit(monkeypatch):
    """vm.overcommit_memory = 2 counts a 2 GiB reservation against the commit limit: sessions keep their own arena."""
    ort = pytest.importorskip("onnxruntime")
    import lso.runtime.ort_runner as ort_runner

    monkeypatch.setattr(ort_runner, "_shared_arena", {})
    monkeypatch.setattr(ort_runner, "_strict_overcommit", lambda: True)
    options = ort_runner.apply_memory_arena(ort.SessionOptions(), "shared")
    assert options.enable_cpu_mem_arena is True
    with pytest.raises(RuntimeError, match="does not have configuration"):
        options.get_session_config_entry("session.use_env_allocators")
