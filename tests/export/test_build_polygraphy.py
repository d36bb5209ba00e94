"""The engine builder over Polygraphy's TensorRT loaders, checked on CPU with a fake ``tensorrt`` module.

The fake stands in for TensorRT 10 or 11 (``sys.modules["tensorrt"]``); Polygraphy's real loaders
(``network_from_onnx_path``, ``CreateConfig``, ``Profile``, ``engine_bytes_from_network``,
``engine_from_bytes``) run against it, so the whole path of ``build_engine`` up to TensorRT runs here: the
calls it makes, the flags it sets (and never sets), the profiles, the timing cache, the plan and its sidecar.
"""
from __future__ import annotations

import contextlib
import enum
import importlib.machinery
import json
import sys
import types
from pathlib import Path

import pytest
import torch

pytest.importorskip("polygraphy")
pytest.importorskip("onnx")

from lso import io_spec
from lso.errors import ExportError
from lso.export import engine_builder as BE
from lso.export import profiles as PR


def _fake_tensorrt(version: str, calls: list, *, parse_ok: bool = True, layer_type: str = "Half",
                   shape_tensor_input: bool = False) -> types.ModuleType:
    """A ``tensorrt`` module with what the builder and Polygraphy touch; every call is appended to ``calls``."""
    trt = types.ModuleType("tensorrt")
    trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
    trt.__version__ = version
    trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", {"STRONGLY_TYPED": 1})
    flags = ["TF32", "VERSION_COMPATIBLE", "REFIT", "SPARSE_WEIGHTS"]
    if version.startswith("10."):
        flags += ["FP16", "INT8", "BF16", "FP8"]  # removed in TensorRT 11
    trt.BuilderFlag = enum.IntEnum("BuilderFlag", {f: i for i, f in enumerate(flags)})
    trt.MemoryPoolType = enum.IntEnum("MemoryPoolType", {"WORKSPACE": 0})
    trt.ProfilingVerbosity = enum.IntEnum("ProfilingVerbosity", {"LAYER_NAMES_ONLY": 0, "NONE": 1, "DETAILED": 2})
    trt.HardwareCompatibilityLevel = enum.IntEnum("HardwareCompatibilityLevel", {
        "NONE": 0, "AMPERE_PLUS": 1, "SAME_COMPUTE_CAPABILITY": 2})
    trt.LayerInformationFormat = enum.IntEnum("LayerInformationFormat", {"ONELINE": 0, "JSON": 1})
    trt.DeviceType = enum.IntEnum("DeviceType", {"GPU": 0, "DLA": 1})
    trt.OnnxParserFlag = enum.IntEnum("OnnxParserFlag", {"NATIVE_INSTANCENORM": 0})
    trt.LayerType = enum.IntEnum("LayerType", {"SHAPE": 0, "QUANTIZE": 1, "DEQUANTIZE": 2})

    class ILogger:
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

        def __init__(self):
            pass

    trt.ILogger = ILogger
    trt.Logger = ILogger
    trt.init_libnvinfer_plugins = lambda logger, namespace: True

    class Tensor:
        def __init__(self, name, shape):
            self.name, self.shape, self.dtype, self.is_shape_tensor = name, shape, "FLOAT", False

    class Network:
        def __init__(self, flags):
            self.flags = flags
            self.num_inputs = 0
            self.inputs: list = []

        def get_input(self, i):
            return self.inputs[i]

        def get_flag(self, flag):
            return bool(self.flags & (1 << int(flag)))

        def __iter__(self):
            return iter(())

    class OnnxParser:
        def __init__(self, network, logger):
            self.network, self.num_errors = network, 0
            self.flags = 0

        def parse_from_file(self, path):
            calls.append(("parse_from_file", path))
            if not parse_ok:
                self.num_errors = 1
                return False
            self.network.inputs = [Tensor("hr_msi", (-1, 3, -1, -1)), Tensor("lr_hsi", (-1, 31, -1, -1))]
            if shape_tensor_input:
                self.network.inputs.append(Tensor("extent", (4,)))
                self.network.inputs[-1].is_shape_tensor = True
            self.network.num_inputs = len(self.network.inputs)
            return True

        def get_error(self, i):
            return "fake parser error: unsupported node"

    class TimingCache:
        def __init__(self, data):
            self.data = bytes(data)

        def serialize(self):
            return self.data + b"+new"

        def combine(self, other, ignore_mismatch):
            return True

    class Profile:
        def set_shape(self, name, lo, opt, hi):
            calls.append(("set_shape", name, tuple(lo), tuple(opt), tuple(hi)))

    class Config:
        def __init__(self):
            self._flags: set = {trt.BuilderFlag.TF32}  # TensorRT's default: TF32 on
            self.profiles: list = []
            self.DLA_core, self.default_device_type, self.int8_calibrator = -1, trt.DeviceType.GPU, None
            self._cache = None

        def set_flag(self, flag):
            calls.append(("set_flag", flag.name))
            self._flags.add(flag)

        def clear_flag(self, flag):
            calls.append(("clear_flag", flag.name))
            self._flags.discard(flag)

        def get_flag(self, flag):
            return flag in self._flags

        def set_memory_pool_limit(self, pool, size):
            calls.append(("set_memory_pool_limit", pool.name, size))

        def get_memory_pool_limit(self, pool):
            return 0

        def __setattr__(self, name, value):
            if name in ("builder_optimization_level", "hardware_compatibility_level", "profiling_verbosity"):
                calls.append((name, getattr(value, "name", value)))
            object.__setattr__(self, name, value)

        def create_timing_cache(self, data):
            calls.append(("create_timing_cache", bytes(data)))
            return TimingCache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            self._cache = cache

        def get_timing_cache(self):
            return self._cache

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)

        @property
        def num_optimization_profiles(self):
            return len(self.profiles)

    class Builder:
        def __init__(self, logger):
            calls.append(("Builder",))

        def create_network(self, flags=0):
            calls.append(("create_network", flags))
            return Network(flags)

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            calls.append(("build_serialized_network", len(config.profiles)))
            return b"FAKE-PLAN"

    class Inspector:
        def get_engine_information(self, fmt):
            calls.append(("get_engine_information", fmt.name))
            return json.dumps({"Layers": [{"Name": "conv", "Inputs": [{"Format/Datatype": layer_type}],
                                           "Outputs": [{"DataType": layer_type}]}]})

    class Engine:
        def create_engine_inspector(self):
            return Inspector()

    class Runtime:
        def __init__(self, logger):
            pass

        def __setattr__(self, name, value):
            calls.append(("runtime." + name, value))
            object.__setattr__(self, name, value)

        def deserialize_cuda_engine(self, buf):
            calls.append(("deserialize_cuda_engine", bytes(buf)))
            return Engine()

    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, OnnxParser, Runtime
    return trt


def _forget_fake(fake) -> None:
    """Polygraphy caches the module behind its lazy ``trt`` names and its TensorRT logger: drop the fake's."""
    for name, module in list(sys.modules.items()):
        if not name.startswith("polygraphy"):
            continue
        for value in list(vars(module).values()):
            if type(value).__name__ == "LazyModule":
                with contextlib.suppress(Exception):
                    if object.__getattribute__(value, "module") is fake:
                        object.__setattr__(value, "module", None)
    util = sys.modules.get("polygraphy.backend.trt.util")
    if util is not None:
        util.TRT_LOGGER = None


@pytest.fixture
def fake_trt(monkeypatch):
    """``make(version, **kw)`` installs a fake TensorRT (and a fake GPU for the builder); returns the call log."""
    import lso.runtime.cuda_arrays as cuda_arrays

    installed = []

    def make(version: str = "11.4.0.106", **kwargs) -> list:
        calls: list = []
        fake = _fake_tensorrt(version, calls, **kwargs)
        installed.append(fake)
        monkeypatch.setitem(sys.modules, "tensorrt", fake)
        monkeypatch.setattr(cuda_arrays, "require_cuda", lambda device=None: torch.device("cuda", 0))
        monkeypatch.setattr(BE, "_device_context", lambda dev: contextlib.nullcontext())
        monkeypatch.setattr(BE, "_gpu", lambda index: {"gpu": "Fake GPU", "compute_capability": "9.0",
                                                        "device": index})
        return calls

    yield make
    for fake in installed:
        _forget_fake(fake)


@pytest.fixture(scope="module")
def tiny_graphs(tmp_path_factory):
    """The tiny model's portable FP32 graph and its FP16 conversion."""
    from lso import LSO, LSOConfig
    from lso.calibration import calibration_feeds, convert_fp16
    from lso.export import export_onnx

    work = tmp_path_factory.mktemp("pg-build")
    torch.manual_seed(0)
    fp32 = export_onnx(LSO(LSOConfig.tiny()).eval(), work / "tiny.onnx", check=False)
    fp16 = convert_fp16(fp32, work / "tiny.fp16.onnx", feeds=calibration_feeds(count=1, size=32, min_count=1))
    return {"fp32": Path(fp32), "fp16": Path(fp16)}


SMALL = io_spec.default_profile(hr=((16, 16), (64, 64), (128, 128)), lr=((4, 4), (16, 16), (32, 32)))


@pytest.mark.parametrize("version, strongly_typed_bit", [("10.13.0.35", True), ("11.4.0.106", False)])
def test_build_goes_through_polygraphy_loaders(fake_trt, tiny_graphs, tmp_path, version, strongly_typed_bit):
    calls = fake_trt(version)
    cache = tmp_path / "t.cache"
    cache.write_bytes(b"old-cache")
    out = BE.build_engine(tiny_graphs["fp16"], tmp_path / "tiny.fp16.plan", profiles=[SMALL], timing_cache=cache,
                          workspace_gib=0.5, optimization_level=5, version_compatible=True,
                          hardware_compatibility="ampere_plus")
    assert out.read_bytes() == b"FAKE-PLAN"
    names = [c[0] for c in calls]
    # the network: strongly typed on 10 (flag bit 1 << STRONGLY_TYPED), nothing on 11 (always strongly typed)
    assert ("create_network", 2 if strongly_typed_bit else 0) in calls
    assert ("parse_from_file", str(tiny_graphs["fp16"])) in calls
    # the config: profile, pool, level, compatibility, verbosity, timing cache; no precision flag set
    assert ("set_shape", "hr_msi", (1, 3, 16, 16), (1, 3, 64, 64), (4, 3, 128, 128)) in calls
    assert ("set_shape", "lr_hsi", (1, 31, 4, 4), (1, 31, 16, 16), (4, 31, 32, 32)) in calls
    assert ("set_memory_pool_limit", "WORKSPACE", 1 << 29) in calls
    assert ("builder_optimization_level", 5) in calls and ("hardware_compatibility_level", "AMPERE_PLUS") in calls
    assert ("profiling_verbosity", "DETAILED") in calls and ("set_flag", "VERSION_COMPATIBLE") in calls
    assert ("clear_flag", "TF32") in calls
    assert not [c for c in calls if c[0] == "set_flag" and c[1] in ("FP16", "INT8", "BF16", "FP8", "TF32")]
    assert ("create_timing_cache", b"old-cache") in calls and cache.read_bytes() == b"old-cache+new"
    assert not Path(str(cache) + ".lock").exists()  # the cache was handed over as bytes, no lock file left
    # built once, deserialized (host code allowed: version-compatible plans) and inspected
    assert names.count("build_serialized_network") == 1 and ("runtime.engine_host_code_allowed", True) in calls
    assert ("deserialize_cuda_engine", b"FAKE-PLAN") in calls and ("get_engine_information", "JSON") in calls
    assert names.index("parse_from_file") < names.index("build_serialized_network") < names.index(
        "deserialize_cuda_engine")
    side = json.loads(out.with_name(out.name + ".json").read_text())
    assert side["tensorrt_version"] == version and side["precision"] == "fp16" and side["layers"]["fp16"] == 1
    assert side["gpu"] == "Fake GPU" and side["tf32"] is False and side["version_compatible"]
    assert "--noTF32" in side["trtexec_equivalent"]
    assert ("--stronglyTyped" in side["trtexec_equivalent"]) == strongly_typed_bit


def test_fp16_graph_built_without_fp16_layers_is_refused(fake_trt, tiny_graphs, tmp_path):
    fake_trt("11.4.0.106", layer_type="Float")
    with pytest.raises(ExportError, match="no FP16 layer"):
        BE.build_engine(tiny_graphs["fp16"], tmp_path / "m.plan", profiles=[SMALL])
    assert not (tmp_path / "m.plan").exists()


def test_parser_failure_is_an_export_error(fake_trt, tiny_graphs, tmp_path):
    fake_trt("11.4.0.106", parse_ok=False)
    with pytest.raises(ExportError, match="ONNX parser rejected"):
        BE.build_engine(tiny_graphs["fp32"], tmp_path / "m.plan", profiles=[SMALL])
    assert not (tmp_path / "m.plan").exists()


def test_shape_tensor_input_without_values_is_refused(fake_trt, tiny_graphs, tmp_path):
    """Polygraphy would pin an unprofiled shape-tensor input to 1s; the builder refuses before building."""
    calls = fake_trt("11.4.0.106", shape_tensor_input=True)
    with pytest.raises(ExportError, match="shape tensors"):
        BE.build_engine(tiny_graphs["fp32"], tmp_path / "m.plan", profiles=[SMALL])
    assert "build_serialized_network" not in [c[0] for c in calls] and not (tmp_path / "m.plan").exists()


def test_checks_before_polygraphy_still_come_first(fake_trt, tiny_graphs, tmp_path):
    """An oversized profile is refused by our tensor-limit check before TensorRT (or Polygraphy) is touched."""
    from lso.errors import InputError

    calls = fake_trt("11.4.0.106")
    with pytest.raises(InputError, match="limit"):
        BE.build_engine(tiny_graphs["fp32"], tmp_path / "m.plan", max_shapes={"hr_msi": (64, 3, 4096, 4096),
                                                                              "lr_hsi": (64, 31, 1024, 1024)})
    assert calls == []


def test_polygraphy_profiles_keep_only_graph_inputs():
    opts = PR.BuildOptions(profiles=[SMALL])
    (profile,) = BE.polygraphy_profiles(opts, inputs=["hr_msi"])
    assert list(profile) == ["hr_msi"] and tuple(profile["hr_msi"].max) == (4, 3, 128, 128)


def test_tensorrt_names_used_exist_in_the_tensorrt_11_bindings():
    """Every TensorRT name the build passes (or has Polygraphy call) exists in the real TensorRT 11 bindings where
    they carry it (the lean bindings: enums, Runtime, ICudaEngine; hasattr only, nothing is called)."""
    import importlib

    trt = None
    for name in ("tensorrt", "tensorrt_bindings", "tensorrt_lean_bindings", "tensorrt_lean"):
        try:
            trt = importlib.import_module(name)
            break
        except ImportError:
            continue
    if trt is None:
        pytest.skip("no TensorRT bindings installed")
    checked = 0
    for owner, names in BE.BUILD_API_USED.items():
        obj = getattr(trt, owner, None)
        if obj is None:
            assert owner in ("Builder", "NetworkDefinitionCreationFlag", "ITensor") and "lean" in trt.__name__
            continue
        missing = [n for n in names if not hasattr(obj, n)]
        assert not missing, f"{trt.__name__} {trt.__version__}: {owner} lacks {missing}"
        checked += len(names)
    assert checked >= 8
    if hasattr(trt, "BuilderFlag") and trt.__version__.startswith("11."):
        assert not hasattr(trt.BuilderFlag, "FP16")  # removed in 11: the builder never sets precision flags
