"""The one place that imports optional dependencies.

``require("onnxruntime")`` returns the module or raises :class:`~lso.errors.MissingDependencyError`
naming the pip extra that installs it. Import it inside the function that needs it, never at module
import time, so that ``import lso`` needs only torch and numpy.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from lso.errors import MissingDependencyError

__all__ = ["require", "available", "require_polygraphy"]

# module name -> (pip package, extra of lso-deploy that brings it)
_EXTRAS: dict[str, tuple[str, str]] = {
    "onnx": ("onnx", "onnx"),
    "onnxruntime": ("onnxruntime", "onnx"),
    "onnxslim": ("onnxslim", "onnx"),
    "onnxscript": ("onnxscript", "onnx"),
    "onnxconverter_common": ("onnxconverter-common", "onnx"),
    "safetensors": ("safetensors", "onnx"),
    "polygraphy": ("polygraphy", "onnx"),
    "h5py": ("h5py", "data"),
    "scipy": ("scipy", "data"),
    "skimage": ("scikit-image", "data"),
    "colour": ("colour-science", "data"),
    "matplotlib": ("matplotlib", "data"),
    "tqdm": ("tqdm", "data"),
    "tensorrt": ("tensorrt", "gpu"),
    "cuda": ("cuda-python", "gpu"),
    "cupy": ("cupy-cuda12x", "gpu"),
    "ray": ("ray[data,serve]", "ray"),
    "starlette": ("ray[serve]", "ray"),
    "tritonclient": ("tritonclient[grpc]", "triton"),
    "google": ("protobuf", "triton"),
}


def require(module: str) -> ModuleType:
    """Import ``module`` or raise MissingDependencyError with the install command that fixes it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        pkg, extra = _EXTRAS.get(top, (top, None))
        hint = f"pip install 'lso-deploy[{extra}]'" if extra else f"pip install {pkg}"
        raise MissingDependencyError(
            f"optional dependency '{module}' is not installed ({exc}); install it with: {hint}"
        ) from exc


def available(module: str) -> bool:
    """True if ``module`` can be imported (without raising)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def require_polygraphy(module: str = "polygraphy") -> ModuleType:
    """``require`` for Polygraphy (or one of its modules), set to log through the Python logger ``Polygraphy``
    (without colours) instead of printing on stdout. Polygraphy imports TensorRT only when a TensorRT
    backend runs, so this is safe without a GPU."""
    mod = require(module)
    from polygraphy.logger import G_LOGGER

    G_LOGGER.use_python_logging_system = True
    G_LOGGER.colors = False
    return mod
