"""TensorRT imports and version checks, in one place (no inline version-string compares elsewhere).

TensorRT comes as several Python packages; the first importable one is used:

============================  ================================  =========================================
import name                   pip package                       runtime
============================  ================================  =========================================
``tensorrt``                  ``tensorrt-cu12`` (or -cu13)      full (builder + runtime)
``tensorrt_bindings``         ``tensorrt-cu12-bindings``        full, bindings wheel alone
``tensorrt_lean``             ``tensorrt-lean-cu12``            lean: runs version-compatible plans only
``tensorrt_lean_bindings``    ``tensorrt-lean-cu12-bindings``   lean, bindings wheel alone (+ ``-libs``)
``tensorrt_dispatch``         ``tensorrt-dispatch-cu12``        dispatch: runs version-compatible plans
============================  ================================  =========================================

:data:`API_USED` lists every TensorRT class, method, attribute and enum member the runner touches;
a test checks each against the real TensorRT 11 lean bindings (by ``hasattr`` only: TensorRT is
never called without a GPU). Importing this module never imports TensorRT.
"""
from __future__ import annotations

import importlib.util
import re
from types import ModuleType

from lso._deps import require
from lso.errors import MissingDependencyError

__all__ = ["MODULE_CANDIDATES", "MIN_VERSION", "API_USED", "import_tensorrt", "version_tuple", "is_lean",
           "check_supported", "find_tensorrt"]

MODULE_CANDIDATES = ("tensorrt", "tensorrt_bindings", "tensorrt_lean", "tensorrt_lean_bindings", "tensorrt_dispatch",
                     "tensorrt_dispatch_bindings")
MIN_VERSION = (10, 0)

# class (or "" for the module itself) -> names used on it by trt_runner.py
API_USED: dict[str, tuple[str, ...]] = {
    "": ("Runtime", "ICudaEngine", "IExecutionContext", "ILogger", "TensorIOMode", "DataType", "__version__"),
    "Runtime": ("deserialize_cuda_engine", "engine_host_code_allowed"),
    "ICudaEngine": ("num_io_tensors", "get_tensor_name", "get_tensor_mode", "get_tensor_dtype", "get_tensor_shape",
                    "get_tensor_profile_shape", "is_shape_inference_io", "create_execution_context",
                    "num_optimization_profiles"),
    "IExecutionContext": ("set_input_shape", "set_tensor_address", "execute_async_v3",
                          "set_optimization_profile_async"),
    "ILogger": ("log", "Severity"),
    "ILogger.Severity": ("INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE"),
    "TensorIOMode": ("INPUT", "OUTPUT"),
    "DataType": ("FLOAT", "HALF", "BF16", "INT64", "INT32", "INT8", "UINT8", "BOOL"),
}


def find_tensorrt() -> str | None:
    """The import name of the first installed TensorRT package (without importing it), or None."""
    for name in MODULE_CANDIDATES:
        if importlib.util.find_spec(name) is not None:
            return name
    return None


def import_tensorrt() -> ModuleType:
    """Import TensorRT (see the table above) and check its version; MissingDependencyError if absent/old."""
    name = find_tensorrt()
    if name is None:
        raise MissingDependencyError(
            "TensorRT is not installed; install the runtime for your CUDA version, e.g. pip install tensorrt-cu12 "
            "(full) or pip install tensorrt-lean-cu12 (lean runtime: version-compatible plans only)")
    trt = require(name)
    check_supported(trt)
    return trt


def version_tuple(trt_or_version: ModuleType | str) -> tuple[int, ...]:
    """``"11.4.0.106"`` (or a module with ``__version__``) -> ``(11, 4, 0, 106)``."""
    text = trt_or_version if isinstance(trt_or_version, str) else getattr(trt_or_version, "__version__", "0")
    return tuple(int(p) for p in re.findall(r"\d+", str(text))[:4])


def is_lean(trt: ModuleType) -> bool:
    """True for the lean and dispatch runtimes (they run only version-compatible plans)."""
    return "lean" in trt.__name__ or "dispatch" in trt.__name__


def check_supported(trt: ModuleType) -> None:
    """TensorRT 10 and 11 are supported (the name-based I/O API, ``execute_async_v3``)."""
    if version_tuple(trt)[:2] < MIN_VERSION:
        raise MissingDependencyError(
            f"TensorRT {trt.__version__} is too old: lso-deploy needs TensorRT >= "
            f"{'.'.join(map(str, MIN_VERSION))} (name-based tensor API); pip install -U tensorrt-cu12")
