"""Fixtures and helpers of the runtime tests.

The fixtures are a plugin registered once by tests/conftest.py (a second conftest.py would shadow
tests/conftest.py), so test modules take them as arguments without importing them; test modules import only
the plain helpers (``scene``, ``reference``, ``FakeEngineIO``, ...) from here.
"""
from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from lso import LSO, LSOConfig
from lso.io_spec import HR_HSI, dynamic_axes, tensor_specs


@pytest.fixture(scope="session")
def rt_model() -> LSO:
    """Tiny LSO (seed 0), shared by the runtime tests: never modify it."""
    torch.manual_seed(0)
    return LSO(LSOConfig.tiny()).eval()


def _export(model: LSO, out: Path, tileable: bool) -> Path:
    """Export with lso.export.export_onnx when it exists, else torch.onnx.export (TorchScript path: ~1 s)."""
    export = importlib.import_module("lso.export")
    if hasattr(export, "export_onnx"):
        return Path(export.export_onnx(model, out, tileable=tileable, check=False))
    inputs = [s.name for s in tensor_specs(model.config, tileable=tileable)[0]]
    args = [torch.rand(1, 3, 32, 48), torch.rand(1, 31, 8, 12)]
    if tileable:
        args.append(torch.tensor([0, 0, 32, 48], dtype=torch.int64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, tuple(args), str(out), input_names=inputs, output_names=[HR_HSI],
                          dynamic_axes=dynamic_axes(tileable=tileable), opset_version=18, dynamo=False)
    return out


def build_plan(onnx_path: Path, out: Path) -> Path:
    """A TensorRT plan of ``onnx_path`` (lso.export.build_engine when it exists, else the builder API).

    Profile: batch 1..2, hr_msi 16..256 px, lr_hsi 4..64 px. Needs the full ``tensorrt`` package and a GPU
    (only called from tests marked ``trt``).
    """
    shapes = {"min": {"hr_msi": (1, 3, 16, 16), "lr_hsi": (1, 31, 4, 4)},
              "opt": {"hr_msi": (1, 3, 64, 64), "lr_hsi": (1, 31, 16, 16)},
              "max": {"hr_msi": (2, 3, 256, 256), "lr_hsi": (2, 31, 64, 64)}}
    if importlib.util.find_spec("lso.export.engine_builder") is not None:
        from lso.export.engine_builder import build_engine
        from lso.io_spec import ShapeProfile

        return Path(build_engine(onnx_path, out, profiles=[ShapeProfile(**shapes)]))
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        raise RuntimeError("; ".join(str(parser.get_error(i)) for i in range(parser.num_errors)))
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    for name in ("hr_msi", "lr_hsi"):
        profile.set_shape(name, shapes["min"][name], shapes["opt"][name], shapes["max"][name])
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError("TensorRT could not build the tiny plan")
    out.write_bytes(bytes(plan))
    return out


@pytest.fixture(scope="session")
def tiny_plan(tiny_onnx_tileable, tmp_path_factory) -> Path:
    """The tileable tiny graph as a TensorRT plan (GPU + TensorRT only)."""
    return build_plan(tiny_onnx_tileable, tmp_path_factory.mktemp("plan") / "tiny.plan")


# Session fixtures of a plugin: each graph is exported once per session (exporting takes ~10 s).
@pytest.fixture(scope="session")
def tiny_onnx(rt_model, tmp_path_factory) -> Path:
    """The tiny model as a 2-input ONNX graph (hr_msi, lr_hsi)."""
    pytest.importorskip("onnxruntime")
    return _export(rt_model, tmp_path_factory.mktemp("onnx") / "tiny.onnx", tileable=False)


@pytest.fixture(scope="session")
def tiny_onnx_tileable(rt_model, tmp_path_factory) -> Path:
    """The tiny model as a tileable 3-input ONNX graph (hr_msi, lr_hsi, extent)."""
    pytest.importorskip("onnxruntime")
    return _export(rt_model, tmp_path_factory.mktemp("onnx") / "tiny_tileable.onnx", tileable=True)


def scene(height: int, width: int, ratio: int, *, batch: int = 1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random ``(hr_msi, lr_hsi)`` float32 in [0, 1]."""
    rng = np.random.default_rng(seed)
    hr = rng.random((batch, 3, height, width), dtype=np.float32)
    lr = rng.random((batch, 31, height // ratio, width // ratio), dtype=np.float32)
    return hr, lr


def reference(model: LSO, hr: np.ndarray, lr: np.ndarray) -> np.ndarray:
    """Whole-image PyTorch fusion (the oracle)."""
    with torch.no_grad():
        return model(torch.from_numpy(hr), torch.from_numpy(lr)).numpy()


class TrtEnum:
    """A TensorRT enum value as the runner reads it (``.name``)."""

    def __init__(self, name: str) -> None:
        self.name = name


class FakeEngineIO:
    """The ICudaEngine I/O methods ``engine_io`` uses, over ``{name: (mode, dtype, shape, (min, opt, max))}``."""

    def __init__(self, tensors: dict, names=None) -> None:
        self.tensors = tensors
        self.names = list(names if names is not None else tensors)
        self.num_io_tensors = len(self.names)

    def get_tensor_name(self, i):
        return self.names[i]

    def get_tensor_mode(self, name):
        return TrtEnum(self.tensors[name][0])

    def get_tensor_dtype(self, name):
        return TrtEnum(self.tensors[name][1])

    def get_tensor_shape(self, name):
        return self.tensors[name][2]

    def get_tensor_profile_shape(self, name, index):
        assert index == 0
        return self.tensors[name][3]

    def is_shape_inference_io(self, name):
        return False
