"""TrtRunner: everything testable without TensorRT or a GPU, the names used checked against the real
TensorRT 11 lean bindings (import and ``hasattr`` only), and end-to-end tests marked ``trt``."""
from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import re
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from lso.artifacts import write_sidecar
from lso.errors import ArtifactError, InputError
from lso.runtime import trt_runner
from lso.runtime import trt_support as _trt_compat
from lso.runtime.trt_runner import (
    IOTensor,
    TrtRunner,
    check_engine_io,
    check_plan_sidecar,
    engine_io,
    make_logger,
    profile_from_io,
)
from lso.runtime.trt_support import API_FALLBACKS, API_USED, version_tuple

from rt_fixtures import FakeEngineIO, reference, scene

LEAN_MODULES = ("tensorrt_lean_bindings", "tensorrt_lean")


# ------------------------------------------------------------------------ names against TensorRT 11
def _lean():
    for name in LEAN_MODULES:
        if importlib.util.find_spec(name) is not None:
            return importlib.import_module(name)  # import only: no TensorRT function is called
    pytest.skip("TensorRT lean bindings not installed: pip install tensorrt-lean-cu12-bindings tensorrt-lean-cu12-libs")


def test_every_tensorrt_name_used_exists_in_the_lean_bindings():
    trt = _lean()
    assert version_tuple(trt)[0] >= 11, trt.__version__
    missing = []
    for owner, names in API_USED.items():
        obj = trt
        for part in filter(None, owner.split(".")):
            obj = getattr(obj, part)
        missing += [f"{owner or 'tensorrt'}.{n}" for n in names if not hasattr(obj, n)]
    assert not missing, missing


def test_runner_source_uses_only_listed_names():
    source = Path(trt_runner.__file__).read_text() + Path(_trt_compat.__file__).read_text()
    listed = {n for names in API_USED.values() for n in names}
    fallbacks = {n for names in API_FALLBACKS.values() for n in names}
    used = set()
    for obj in ("trt", "engine", "context", "trt_runtime", "self._engine", "entry.context",
                "trt.ExecutionContextAllocationStrategy"):
        used |= set(re.findall(rf"(?<![\w.]){re.escape(obj)}\.(\w+)", source))
    used = {n for n in used if not n.startswith("__") or n in listed}  # module dunders (trt.__name__)
    assert used and used <= listed | fallbacks, sorted(used - listed - fallbacks)
    for needed in ("set_input_shape", "set_tensor_address", "execute_async_v3", "deserialize_cuda_engine",
                   "get_tensor_profile_shape", "get_tensor_mode", "get_tensor_dtype", "num_io_tensors",
                   "create_execution_context", "USER_MANAGED", "get_device_memory_size_for_profile_v2",
                   "set_device_memory", "update_device_memory_size_for_shapes"):
        assert needed in used, needed


def test_device_memory_names_of_tensorrt_11_and_the_10_0_fallbacks():
    """TensorRT 11 has the 10.1+ names and the strategy enum; the 10.0 spellings are used only where those are
    missing: device_memory_size is gone from 11, device_memory stays a write-only property."""
    trt = _lean()
    assert trt.ExecutionContextAllocationStrategy.USER_MANAGED.name == "USER_MANAGED"
    assert not hasattr(trt.ICudaEngine, "device_memory_size")
    assert not hasattr(trt.ICudaEngine, "create_execution_context_without_device_memory")
    assert not hasattr(trt.ICudaEngine, "get_device_memory_size_for_profile")
    assert "strategy" in trt.ICudaEngine.create_execution_context.__doc__
    assert "memory" in trt.IExecutionContext.set_device_memory.__doc__
    prop = trt.IExecutionContext.device_memory
    assert prop.fset is not None and prop.fget is None


class _Ctx10:
    """A TensorRT 10.0 context: no set_device_memory, no update_device_memory_size_for_shapes."""

    device_memory = None


def test_compat_helpers_pick_the_spelling_of_each_version():
    class Engine11:
        def get_device_memory_size_for_profile_v2(self, i):
            return 1000 + i

    engine10 = types.SimpleNamespace(device_memory_size=777)
    assert _trt_compat.activation_bytes(Engine11(), 1) == 1001 and _trt_compat.activation_bytes(engine10, 0) == 777
    calls = []
    ctx11 = types.SimpleNamespace(set_device_memory=lambda p, n: calls.append((p, n)),
                                  update_device_memory_size_for_shapes=lambda: 5)
    _trt_compat.set_context_memory(ctx11, 0x1000, 64)
    assert calls == [(0x1000, 64)] and _trt_compat.memory_for_shapes(ctx11) == 5
    ctx10 = _Ctx10()
    _trt_compat.set_context_memory(ctx10, 0x2000, 64)
    assert ctx10.device_memory == 0x2000 and _trt_compat.memory_for_shapes(ctx10) is None


def test_importing_the_runner_does_not_import_tensorrt():
    import subprocess
    import sys

    code = "import sys, lso.runtime.trt_runner; assert not [m for m in sys.modules if m.startswith('tensorrt')]"
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------ logger adapter
class _FakeILogger:
    def __init__(self):
        self.initialised = True


def test_logger_routes_severities_into_python_logging(caplog):
    logger = make_logger(types.SimpleNamespace(ILogger=_FakeILogger), name="lso.test.trt")
    assert isinstance(logger, _FakeILogger) and logger.initialised
    with caplog.at_level(logging.DEBUG, logger="lso.test.trt"):
        for sev in ("INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE"):
            logger.log(types.SimpleNamespace(name=sev), f"msg {sev}")
    levels = {r.getMessage(): r.levelno for r in caplog.records}
    assert levels == {"msg INTERNAL_ERROR": logging.CRITICAL, "msg ERROR": logging.ERROR,
                      "msg WARNING": logging.WARNING, "msg INFO": logging.INFO, "msg VERBOSE": logging.DEBUG}


# ------------------------------------------------------------------------ sidecar checks
HERE = dict(trt_version="11.4.0.106", compute_capability=(9, 0))


@pytest.mark.parametrize("info, lean", [
    ({"tensorrt_version": "11.4.0.106", "compute_capability": "9.0"}, False),
    ({"tensorrt_version": "11.4.0.2", "compute_capability": [9, 0]}, False),         # build number ignored
    ({"versions": {"tensorrt": "11.4.0"}, "compute_capability": "sm_90"}, False),    # nested / sm_ form
    ({"tensorrt_version": "10.13.0", "version_compatible": True, "compute_capability": "9.0"}, False),
    ({"tensorrt_version": "11.4.0", "version_compatible": True, "compute_capability": "9.0"}, True),
    ({"tensorrt_version": "11.4.0", "compute_capability": "8.6", "hardware_compatibility": "ampere_plus"}, False),
    ({}, False),                                                                       # nothing recorded
])
def test_sidecar_accepted(info, lean):
    check_plan_sidecar(info, **HERE, lean=lean)


@pytest.mark.parametrize("info, lean, fragments", [
    ({"tensorrt_version": "10.13.0.35", "compute_capability": "9.0"}, False, ("10.13.0.35", "rebuild")),
    ({"tensorrt_version": "11.5.0", "version_compatible": True}, False, ("newer", "upgrade")),
    ({"tensorrt_version": "11.4.0", "compute_capability": "8.9"}, False, ("8.9", "9.0", "rebuild")),
    ({"tensorrt_version": "11.4.0", "compute_capability": "9.0"}, True, ("version-compatible", "lean")),
])
def test_sidecar_mismatch_refused_with_how_to_rebuild(info, lean, fragments):
    with pytest.raises(ArtifactError) as err:
        check_plan_sidecar(info, **HERE, path="model.plan", lean=lean)
    for fragment in fragments:
        assert fragment in str(err.value)


def test_ampere_plus_refused_on_older_gpus():
    with pytest.raises(ArtifactError, match=">= 8.0"):
        check_plan_sidecar({"compute_capability": "8.6", "hardware_compatibility": "AMPERE_PLUS"},
                           trt_version="11.4.0", compute_capability=(7, 5))


# ------------------------------------------------------------------------ engine I/O and profiles
class FakeEngine(FakeEngineIO):
    """The ICudaEngine methods engine_io uses, for a tileable LSO plan."""

    def __init__(self, names=("hr_msi", "lr_hsi", "extent", "hr_hsi")):
        super().__init__({
            "hr_msi": ("INPUT", "FLOAT", (-1, 3, -1, -1), [(1, 3, 32, 32), (1, 3, 512, 512), (4, 3, 2048, 2048)]),
            "lr_hsi": ("INPUT", "FLOAT", (-1, 31, -1, -1), [(1, 31, 1, 1), (1, 31, 128, 128), (4, 31, 512, 512)]),
            "extent": ("INPUT", "INT64", (4,), None),
            "hr_hsi": ("OUTPUT", "FLOAT", (-1, 31, -1, -1), None),
            "other": ("INPUT", "FLOAT", (1,), None),
        }, names)


def test_engine_io_and_profile():
    io = engine_io(FakeEngine())
    assert [(t.name, t.is_input, t.dtype) for t in io] == [("hr_msi", True, "FLOAT"), ("lr_hsi", True, "FLOAT"),
                                                           ("extent", True, "INT64"), ("hr_hsi", False, "FLOAT")]
    assert io[2].profile is None and io[2].torch_dtype == torch.int64
    prof = profile_from_io(io)
    assert prof.max["hr_msi"] == (4, 3, 2048, 2048) and prof.min["lr_hsi"] == (1, 31, 1, 1)
    assert prof.contains("hr_msi", (2, 3, 256, 256)) and not prof.contains("hr_msi", (1, 3, 4096, 4096))
    check_engine_io(io, "model.plan")


def test_foreign_engine_refused():
    with pytest.raises(ArtifactError, match="an LSO plan takes"):
        check_engine_io(engine_io(FakeEngine(("hr_msi", "other", "hr_hsi"))), "model.plan")


def test_unsupported_tensor_type_named():
    with pytest.raises(ArtifactError, match="FP8"):
        _ = IOTensor("hr_msi", True, "FP8", (1,)).torch_dtype


def _fake_active_runner() -> TrtRunner:
    """A TrtRunner that knows its engine's I/O but never touched TensorRT (as after activation)."""
    runner = TrtRunner("model.plan")
    runner._io = engine_io(FakeEngine())
    runner._active = True
    return runner


def test_shapes_outside_the_profile_are_rejected_with_the_profile():
    runner = _fake_active_runner()
    assert runner.tileable and runner.n_bands == 31 and runner.input_specs[0].shape == ("dynamic", 3, "dynamic",
                                                                                        "dynamic")
    hr, lr = np.zeros((1, 3, 16, 16), np.float32), np.zeros((1, 31, 4, 4), np.float32)
    with pytest.raises(InputError) as err:
        runner.fuse(hr, lr)  # rejected before any TensorRT call
    assert "hr_msi shape 1x3x16x16" in str(err.value)
    assert "min 1x3x32x32, opt 1x3x512x512, max 4x3x2048x2048" in str(err.value)
    assert "fuse_tiled" in str(err.value)
    with pytest.raises(InputError, match="max 4x3x2048x2048"):
        runner.fuse(np.zeros((5, 3, 32, 32), np.float32), np.zeros((5, 31, 8, 8), np.float32))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_activation_without_a_gpu_stops_before_tensorrt(tmp_path):
    from lso.runtime import DeviceUnavailableError

    plan = tmp_path / "model.plan"
    plan.write_bytes(b"\x00" * 16)
    with pytest.raises(DeviceUnavailableError, match="CUDA GPU"):
        TrtRunner(plan).activate()


# ------------------------------------------------------------------------ on a GPU with TensorRT
@pytest.mark.trt
def test_trt_matches_pytorch_and_keeps_device_tensors(rt_model, tiny_plan):
    hr, lr = scene(32, 48, 4, batch=2)
    want = reference(rt_model, hr, lr)
    with TrtRunner(tiny_plan) as r:
        np.testing.assert_allclose(r.fuse(hr, lr), want, atol=1e-3)  # numpy in, numpy out
        hr_d, lr_d = torch.from_numpy(hr).cuda(), torch.from_numpy(lr).cuda()
        out = r.fuse(hr_d, lr_d)
        assert out.is_cuda
        first_ptr = out.data_ptr()
        held = r.fuse(hr_d, lr_d)
        assert held.data_ptr() != first_ptr  # a held output is never overwritten
        del out
        assert r.fuse(hr_d, lr_d).data_ptr() == first_ptr  # reused once dropped
        mine = torch.empty(2, 31, 32, 48, device="cuda")
        assert r.fuse(hr_d, lr_d, out=mine) is mine  # written in place into the caller's buffer
        stream = torch.cuda.Stream()
        with torch.cuda.stream(stream):
            got = r.fuse(hr_d, lr_d, stream=stream)
        stream.synchronize()
        np.testing.assert_allclose(got.cpu().numpy(), want, atol=1e-3)
        with pytest.raises(InputError, match="max 2x3x256x256"):
            r.fuse(np.zeros((1, 3, 512, 512), np.float32), np.zeros((1, 31, 128, 128), np.float32))


@pytest.mark.trt
def test_trt_cuda_graphs_per_shape(rt_model, tiny_plan):
    with TrtRunner(tiny_plan, cuda_graph=True) as r:
        for h, w in ((32, 48), (64, 32), (32, 48)):
            hr, lr = scene(h, w, 4, seed=h + w)
            np.testing.assert_allclose(r.fuse(hr, lr), reference(rt_model, hr, lr), atol=1e-3)
        stats = r.cache_stats
        assert (stats.graphs, stats.contexts, stats.hits, stats.misses) == (2, 2, 1, 2)
        assert stats.activation_bytes > 0 and stats.buffer_grows == 0


@pytest.mark.trt
def test_trt_cuda_array_interface_inputs(rt_model, tiny_plan):
    cupy = pytest.importorskip("cupy")
    hr, lr = scene(32, 32, 4)
    with TrtRunner(tiny_plan) as r:
        out = r.fuse(cupy.asarray(hr), cupy.asarray(lr))
        assert isinstance(out, cupy.ndarray)
        np.testing.assert_allclose(cupy.asnumpy(out), reference(rt_model, hr, lr), atol=1e-3)


@pytest.mark.trt
def test_trt_sidecar_mismatch_refused(tiny_plan, tmp_path):
    plan = tmp_path / "m.plan"
    plan.write_bytes(tiny_plan.read_bytes())
    write_sidecar(plan, {"tensorrt_version": "9.0.0", "compute_capability": "1.0"})
    with pytest.raises(ArtifactError, match="rebuild"):
        TrtRunner(plan).activate()
    side = json.loads((tmp_path / "m.plan.json").read_text())
    assert side["sha256"]


@pytest.mark.trt
def test_trt_orders_itself_after_a_slow_producer_stream(rt_model, tiny_plan):
    """The producer writes the inputs on its own stream after a long sleep; the runner must wait for it."""
    hr, lr = scene(64, 64, 4, seed=3)
    want = reference(rt_model, hr, lr)
    with TrtRunner(tiny_plan) as r:
        producer = torch.cuda.Stream()
        hr_d = torch.zeros(hr.shape, device="cuda")
        lr_d = torch.zeros(lr.shape, device="cuda")
        torch.cuda.synchronize()
        with torch.cuda.stream(producer):
            torch.cuda._sleep(200_000_000)  # ~0.1 s of GPU time before the inputs are written
            hr_d.copy_(torch.from_numpy(hr), non_blocking=False)
            lr_d.copy_(torch.from_numpy(lr), non_blocking=False)
            got = r.fuse(hr_d, lr_d, stream=producer, check_finite=True)
            r.last_value_check.result()  # finite inputs: no error
        producer.synchronize()
        np.testing.assert_allclose(got.cpu().numpy(), want, atol=1e-3)
        assert r.cache_stats.contexts == 1


@pytest.mark.trt
def test_trt_device_nan_is_reported_on_request(tiny_plan):
    hr, lr = scene(32, 32, 4)
    hr[0, 0, 0, 0] = np.nan
    with TrtRunner(tiny_plan) as r:
        r.fuse(torch.from_numpy(hr).cuda(), torch.from_numpy(lr).cuda())  # no host synchronisation, no error
        with pytest.raises(InputError, match="1 NaN"):
            r.last_value_check.result()


@pytest.mark.trt
def test_trt_cupy_inputs_on_a_cupy_stream(rt_model, tiny_plan):
    """CuPy's current stream is the caller's: inputs written there are complete before the run, and the
    output is complete for that stream."""
    cupy = pytest.importorskip("cupy")
    hr, lr = scene(64, 64, 4, seed=5)
    with TrtRunner(tiny_plan) as r:
        stream = cupy.cuda.Stream(non_blocking=True)
        with stream:
            hr_c, lr_c = cupy.empty(hr.shape, cupy.float32), cupy.empty(lr.shape, cupy.float32)
            hr_c.set(hr, stream=stream)
            lr_c.set(lr, stream=stream)
            out = r.fuse(hr_c, lr_c)
            got = cupy.asnumpy(out, stream=stream)
        stream.synchronize()
        assert isinstance(out, cupy.ndarray)
        np.testing.assert_allclose(got, reference(rt_model, hr, lr), atol=1e-3)
