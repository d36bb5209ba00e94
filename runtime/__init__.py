"""lso.runtime: one Runner protocol over PyTorch, ONNX Runtime and TensorRT (docs/architecture.md).

::

    from lso import runtime
    with runtime.load("model.onnx") as runner:      # .pth/.pth.tar/.pt/.safetensors -> TorchRunner,
        hr_hsi = runner.fuse(hr_msi, lr_hsi)         # .onnx -> OrtRunner, .plan/.engine/.trt -> TrtRunner
    hr_hsi = runtime.fuse_tiled(model, hr_msi, lr_hsi, tile=256)   # exact, memory bounded by the tile

``runtime.ort_session(model, threads=...)`` is the one factory of ONNX Runtime sessions (the runner, the export's
parity check, calibration and profiling use it). Names are imported lazily: ``import lso.runtime`` imports neither
onnxruntime nor tensorrt. The ``lso infer`` library call is :func:`lso.runtime.infer.infer`.
"""
from __future__ import annotations

from lso._lazy import lazy_attributes

__all__ = ["load", "fuse_tiled", "Runner", "TorchRunner", "OrtRunner", "TrtRunner", "OpenVinoRunner",
           "InputRangeWarning", "RunnerStateError", "DeviceUnavailableError", "ort_session"]

_LAZY = {
    "load": "lso.runtime.base",
    "Runner": "lso.runtime.base",
    "RunnerStateError": "lso.runtime.base",
    "DeviceUnavailableError": "lso.errors",
    "InputRangeWarning": "lso.runtime.validation",
    "fuse_tiled": "lso.runtime.tiling",
    "TorchRunner": "lso.runtime.torch_runner",
    "OrtRunner": "lso.runtime.ort_runner",
    "ort_session": "lso.runtime.ort_runner",
    "TrtRunner": "lso.runtime.trt_runner",
    "OpenVinoRunner": "lso.runtime.openvino_runner",
}


__getattr__, __dir__ = lazy_attributes('lso.runtime', _LAZY, globals())
