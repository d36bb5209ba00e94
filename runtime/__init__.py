"""lso.runtime: one Runner protocol over PyTorch, ONNX Runtime and TensorRT (see ARCHITECTURE.md).

::

    from lso import runtime
    with runtime.load("model.onnx") as runner:      # .pth/.pth.tar/.pt/.safetensors -> TorchRunner,
        hr_hsi = runner.fuse(hr_msi, lr_hsi)         # .onnx -> OrtRunner, .plan/.engine/.trt -> TrtRunner
    hr_hsi = runtime.fuse_tiled(model, hr_msi, lr_hsi, tile=256)   # exact, memory bounded by the tile

Names are imported lazily: ``import lso.runtime`` imports neither onnxruntime nor tensorrt. The ``lso infer``
library call is :func:`lso.runtime.infer.infer`.
"""
from __future__ import annotations

import importlib
from typing import Any

__all__ = ["load", "fuse_tiled", "Runner", "TorchRunner", "OrtRunner", "TrtRunner", "InputRangeWarning",
           "RunnerStateError", "DeviceUnavailableError"]

_LAZY = {
    "load": "lso.runtime.base",
    "Runner": "lso.runtime.base",
    "RunnerStateError": "lso.runtime.base",
    "DeviceUnavailableError": "lso.runtime.cuda_arrays",
    "InputRangeWarning": "lso.runtime.validation",
    "fuse_tiled": "lso.runtime.tiling",
    "TorchRunner": "lso.runtime.torch_runner",
    "OrtRunner": "lso.runtime.ort_runner",
    "TrtRunner": "lso.runtime.trt_runner",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lso.runtime' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
