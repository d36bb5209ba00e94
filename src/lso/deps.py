"""The one place that imports optional dependencies (``lso.deps``).

``require("onnxruntime")`` returns the module or raises :class:`~lso.errors.MissingDependencyError`
with the install line that fixes it (:func:`install_hint`). Import it inside the function that needs
it, never at module import time, so that ``import lso`` needs only torch and numpy.

:data:`INSTALL` is the one table of install lines: a module that an extra of ``pyproject.toml`` brings
names that extra (``pip install 'lso-deploy[onnx]'``); anything else names its pip distribution, with
a note where the user has to choose (TensorRT and CuPy are built per CUDA version, so no extra of this
package installs them). ``tests/test_deps.py`` checks every entry against ``pyproject.toml``.
"""
from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from lso.errors import MissingDependencyError

__all__ = ["require", "available", "require_polygraphy", "install_hint", "Install", "INSTALL", "is_tensor"]


@dataclass(frozen=True)
class Install:
    """How a missing module is installed."""

    dist: str  # the pip distribution that provides the module (as pyproject spells it where it lists it)
    extra: str | None = None  # the extra of lso-deploy that brings it; None: not an extra of this package
    note: str = ""  # said after the install line (a choice the user has to make, where it comes from)
    via: str | None = None  # the distribution of the extra that pulls ``dist`` in, when the extra lists not it

    def line(self) -> str:
        cmd = f"pip install 'lso-deploy[{self.extra}]'" if self.extra else f"pip install {self.dist}"
        return f"{cmd} ({self.note})" if self.note else cmd


_TENSORRT = Install("tensorrt-cu12", note="pick the package of your CUDA version: tensorrt-cu12 or tensorrt-cu13; "
                                          "the lean runtime, which runs version-compatible plans only, is "
                                          "tensorrt-lean-cu12 / -cu13")
_CORE = "a core dependency of lso-deploy: reinstall it with pip install lso-deploy"

#: top-level import name -> how to install it (the one table)
INSTALL: dict[str, Install] = {
    "safetensors": Install("safetensors", note=_CORE),
    "onnx": Install("onnx", "onnx"),
    "onnxruntime": Install("onnxruntime", "onnx"),
    "onnxslim": Install("onnxslim", "onnx"),
    "onnxscript": Install("onnxscript", "onnx"),
    "onnxconverter_common": Install("onnxconverter-common", "onnx"),
    "polygraphy": Install("polygraphy", "onnx"),
    "openvino": Install("openvino", "openvino"),
    "h5py": Install("h5py", "data"),
    "scipy": Install("scipy", "data"),
    "skimage": Install("scikit-image", "data"),
    "colour": Install("colour-science", "data"),
    "matplotlib": Install("matplotlib", "data"),
    "tqdm": Install("tqdm", "data"),
    "PIL": Install("Pillow", note="the 'data' extra brings it too, through scikit-image and matplotlib"),
    "cuda": Install("cuda-python", "gpu"),
    "ray": Install("ray", "ray"),
    "starlette": Install("starlette", "ray", via="ray"),
    "tritonclient": Install("tritonclient", "triton"),
    "google": Install("protobuf", "triton", via="tritonclient"),
    "thop": Install("thop", "dev"),
    "hypothesis": Install("hypothesis", "dev"),
    "cupy": Install("cupy-cuda12x", note="pick the build of your CUDA version: cupy-cuda12x or cupy-cuda13x"),
    **{name: _TENSORRT for name in ("tensorrt", "tensorrt_bindings")},
    **{name: Install(f"{stem}-cu12", note=f"pick the package of your CUDA version: {stem}-cu12 or {stem}-cu13")
       for name, stem in (("tensorrt_lean", "tensorrt-lean"), ("tensorrt_lean_bindings", "tensorrt-lean"),
                          ("tensorrt_dispatch", "tensorrt-dispatch"),
                          ("tensorrt_dispatch_bindings", "tensorrt-dispatch"))},
}


def install_hint(module: str) -> str:
    """The install line for ``module`` (or its top-level package): ``pip install 'lso-deploy[onnx]'``, …"""
    top = module.split(".")[0]
    entry = INSTALL.get(top)
    return entry.line() if entry is not None else f"pip install {top}"


def require(module: str) -> ModuleType:
    """Import ``module`` or raise MissingDependencyError with the install command that fixes it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"optional dependency '{module}' is not installed ({exc}); install it with: {install_hint(module)}"
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


def is_tensor(x: Any) -> bool:
    """A torch tensor, checked without importing torch (if torch is not loaded, nothing is one): the paths that
    take numpy or torch keep a numpy-only process free of torch (about 0.19 GB of resident memory)."""
    torch_module = sys.modules.get("torch")
    return torch_module is not None and isinstance(x, torch_module.Tensor)
