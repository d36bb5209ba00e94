"""TensorRT support: imports, the TensorRT 10/11 differences and the CUDA gate, in one place.

The one module that both the engine builder (:mod:`lso.export.engine_builder`, :mod:`lso.export.trtexec`)
and the TensorRT runner (:mod:`lso.runtime.trt_runner`) read for what depends on the TensorRT version
(no inline version-string compares elsewhere): which package provides TensorRT, whether it is new
enough, the runner's activation-memory calls (table below), and the builder's per-version decisions
(:class:`BuilderCompat`: strongly typed network flag, trtexec flags, inspector schema, hardware
compatibility levels). :func:`tensorrt_on_device` is the gate in front of every TensorRT call: a CUDA
device first (:func:`lso.runtime.cuda_arrays.require_cuda`), then TensorRT, so that without a GPU or
without TensorRT the error comes before any TensorRT object exists.

TensorRT comes as several Python packages; the first importable one is used:

==============================  ===================================  ========================================
import name                     pip package                          runtime
==============================  ===================================  ========================================
``tensorrt``                    ``tensorrt-cu12`` (or -cu13)         full (builder + runtime)
``tensorrt_bindings``           ``tensorrt-cu12-bindings``           full, bindings wheel alone
``tensorrt_lean``               ``tensorrt-lean-cu12``               lean: runs version-compatible plans only
``tensorrt_lean_bindings``      ``tensorrt-lean-cu12-bindings``      lean, bindings wheel alone (+ ``-libs``)
``tensorrt_dispatch``           ``tensorrt-dispatch-cu12``           dispatch: runs version-compatible plans
``tensorrt_dispatch_bindings``  ``tensorrt-dispatch-cu12-bindings``  dispatch, bindings wheel alone
==============================  ===================================  ========================================

Every package exists for CUDA 12 and 13 (``-cu12``/``-cu13``; ``-cu11`` for older releases), as the
bindings wheel, its ``-libs`` wheel, or the meta package that pulls both. :data:`TRT_DISTRIBUTIONS` is
the one list of them (read by ``lso info`` and by ``lso build --print-trtexec`` to know the version);
:func:`installed_tensorrt` reads the installed ones from package metadata, importing nothing.

:data:`API_USED` lists every TensorRT class, method, attribute and enum member the runner and this
module touch; a test checks each against the real TensorRT 11 lean bindings (by ``hasattr`` only: TensorRT is
never called without a GPU). :data:`API_FALLBACKS` lists the TensorRT 10.0 spellings used only where
the newer name is missing. Importing this module never imports TensorRT.

Activation memory (the runner allocates it; contexts have none of their own):

=====================================  ==========================================  ==========================
what                                   TensorRT 10.1+ and 11                        TensorRT 10.0
=====================================  ==========================================  ==========================
context without device memory          ``engine.create_execution_context(``        same
                                       ``ExecutionContextAllocationStrategy.``
                                       ``USER_MANAGED)``
bytes for a profile's max shapes       ``get_device_memory_size_for_profile_v2``   ``device_memory_size``
give a context the memory              ``context.set_device_memory(ptr, size)``    ``context.device_memory = ptr``
bytes for the shapes now set           ``update_device_memory_size_for_shapes()``  (none: the profile's size)
=====================================  ==========================================  ==========================

``create_execution_context_without_device_memory`` and ``device_memory_size`` are deprecated in
TensorRT 10 and gone from 11 (checked against the 11.4 lean bindings and NVIDIA/TensorRT
``python/src/infer/pyCore.cpp`` of 10.x).
"""
from __future__ import annotations

import importlib.util
import logging
import re
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Any, Protocol

from lso.deps import require
from lso.errors import InputError, MissingDependencyError

log = logging.getLogger(__name__)

__all__ = ["MODULE_CANDIDATES", "MIN_VERSION", "API_USED", "import_tensorrt", "version_tuple", "is_lean",
           "check_supported", "find_tensorrt", "TRT_DISTRIBUTIONS", "TrtDistribution", "InstalledTensorRT",
           "installed_tensorrt", "FLAVOURS", "describe_tensorrt", "API_FALLBACKS", "create_context_without_memory",
           "activation_bytes", "set_context_memory", "memory_for_shapes", "BuilderCompat", "builder_compat",
           "detect_trt_major", "HARDWARE_COMPATIBILITY", "HARDWARE_LEVELS", "require_builder", "tensorrt_on_device",
           "gpu_info", "polygraphy_trt"]

MODULE_CANDIDATES = ("tensorrt", "tensorrt_bindings", "tensorrt_lean", "tensorrt_lean_bindings", "tensorrt_dispatch",
                     "tensorrt_dispatch_bindings")
MIN_VERSION = (10, 0)
FLAVOURS = ("full", "lean", "dispatch")


@dataclass(frozen=True)
class TrtDistribution:
    """One pip distribution of TensorRT's Python API."""

    name: str  # pip name, e.g. "tensorrt-lean-cu13-bindings"
    flavour: str  # "full" (builder + runtime), "lean" or "dispatch" (run version-compatible plans only)
    cuda_major: int | None  # 11/12/13; None for the unsuffixed meta packages (read from their requirements)
    module: str | None  # the import name it provides; None for the -libs wheels (shared libraries only)


def _distributions() -> tuple[TrtDistribution, ...]:
    out = []
    for flavour, stem, module in (("full", "tensorrt", "tensorrt"), ("lean", "tensorrt-lean", "tensorrt_lean"),
                                  ("dispatch", "tensorrt-dispatch", "tensorrt_dispatch")):
        out.append(TrtDistribution(stem, flavour, None, module))
        for cuda in (13, 12, 11):
            out += [TrtDistribution(f"{stem}-cu{cuda}", flavour, cuda, module),
                    TrtDistribution(f"{stem}-cu{cuda}-bindings", flavour, cuda, f"{module}_bindings"),
                    TrtDistribution(f"{stem}-cu{cuda}-libs", flavour, cuda, None)]
    return tuple(out)


#: Every TensorRT distribution lso-deploy knows, full first, newest CUDA first (the one list; see above).
TRT_DISTRIBUTIONS: tuple[TrtDistribution, ...] = _distributions()

# class (or "" for the module itself) -> names used on it by trt_runner.py and this module
API_USED: dict[str, tuple[str, ...]] = {
    "": ("Runtime", "ICudaEngine", "IExecutionContext", "ILogger", "TensorIOMode", "DataType",
         "ExecutionContextAllocationStrategy", "__version__"),
    "Runtime": ("deserialize_cuda_engine", "engine_host_code_allowed"),
    "ICudaEngine": ("num_io_tensors", "get_tensor_name", "get_tensor_mode", "get_tensor_dtype", "get_tensor_shape",
                    "get_tensor_profile_shape", "is_shape_inference_io", "create_execution_context",
                    "num_optimization_profiles", "get_device_memory_size_for_profile_v2", "device_memory_size_v2"),
    "IExecutionContext": ("set_input_shape", "set_tensor_address", "execute_async_v3",
                          "set_optimization_profile_async", "set_device_memory",
                          "update_device_memory_size_for_shapes"),
    "ExecutionContextAllocationStrategy": ("USER_MANAGED",),
    "ILogger": ("log", "Severity"),
    "ILogger.Severity": ("INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE"),
    "TensorIOMode": ("INPUT", "OUTPUT"),
    "DataType": ("FLOAT", "HALF", "BF16", "INT64", "INT32", "INT8", "UINT8", "BOOL"),
}

# class -> TensorRT 10.0 names used only where the API_USED one is missing (absent from TensorRT 11)
API_FALLBACKS: dict[str, tuple[str, ...]] = {
    "ICudaEngine": ("device_memory_size",),
    "IExecutionContext": ("device_memory",),
}


def find_tensorrt() -> str | None:
    """The import name of the first installed TensorRT package (without importing it), or None."""
    for name in MODULE_CANDIDATES:
        if importlib.util.find_spec(name) is not None:
            return name
    return None


@dataclass(frozen=True)
class InstalledTensorRT:
    """An installed TensorRT distribution, read from package metadata."""

    flavour: str
    version: str
    cuda_major: int | None
    distribution: str
    module: str | None
    importable: bool  # the import name is found (a -libs wheel alone is not importable)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cuda_from_requirements(dist: str) -> int | None:
    """CUDA major of an unsuffixed meta package (``tensorrt`` requires ``tensorrt_cu12``...), else None."""
    from importlib.metadata import PackageNotFoundError, requires

    try:
        reqs = requires(dist) or []
    except PackageNotFoundError:
        return None
    for req in reqs:
        found = re.search(r"cu(1[1-9])", req.split(";")[0])
        if found:
            return int(found.group(1))
    return None


def installed_tensorrt() -> list[InstalledTensorRT]:
    """The installed TensorRT distributions (:data:`TRT_DISTRIBUTIONS` order), from package metadata only:
    nothing is imported, so this is safe without a GPU."""
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for dist in TRT_DISTRIBUTIONS:
        try:
            ver = version(dist.name)
        except PackageNotFoundError:
            continue
        cuda = dist.cuda_major if dist.cuda_major is not None else _cuda_from_requirements(dist.name)
        importable = dist.module is not None and importlib.util.find_spec(dist.module) is not None
        found.append(InstalledTensorRT(dist.flavour, ver, cuda, dist.name, dist.module, importable))
    return found


def describe_tensorrt() -> dict[str, Any]:
    """What ``lso info`` reports: the TensorRT that :func:`import_tensorrt` would use (flavour, version, CUDA
    major, import name; ``installed: False`` if none) and every TensorRT distribution installed. Reads package
    metadata only: TensorRT is not imported (``lso info`` runs without a GPU)."""
    found = installed_tensorrt()
    module = find_tensorrt()
    usable = [d for d in found if d.importable]
    primary = next((d for d in usable if d.module == module), usable[0] if usable else None)
    if primary is None:
        return {"installed": False, "module": module, "distributions": [d.to_dict() for d in found]}
    cuda = primary.cuda_major
    if cuda is None:  # an unsuffixed meta package without requirements: ask its siblings
        cuda = next((d.cuda_major for d in found if d.flavour == primary.flavour and d.cuda_major), None)
    return {"installed": True, "flavour": primary.flavour, "version": primary.version, "cuda_major": cuda,
            "module": primary.module, "can_build": primary.flavour == "full",
            "distributions": [d.to_dict() for d in found]}


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


def require_builder(trt: ModuleType) -> None:
    """MissingDependencyError unless ``trt`` can build engines (the lean and dispatch runtimes cannot)."""
    if not hasattr(trt, "Builder"):
        raise MissingDependencyError(f"the installed TensorRT ({trt.__name__} {trt.__version__}) is a runtime-only "
                                     f"(lean/dispatch) package and cannot build engines: pip install tensorrt-cu12")


# --------------------------------------------------------------------------------------- the CUDA gate
def tensorrt_on_device(device: Any = None, *, build: bool = False) -> tuple[Any, ModuleType]:
    """``(torch.device, tensorrt module)``: the CUDA device checked first, then TensorRT imported and checked.

    Raises:
        DeviceUnavailableError: no usable CUDA device (before TensorRT is imported).
        MissingDependencyError: no TensorRT, one older than :data:`MIN_VERSION`, or (``build=True``) a
            runtime-only TensorRT.
    """
    from lso.runtime import cuda_arrays

    dev = cuda_arrays.require_cuda(device)  # TensorRT called without a CUDA device may crash the process
    trt = import_tensorrt()
    if build:
        require_builder(trt)
    return dev, trt


def gpu_info(device: Any) -> dict[str, Any]:
    """``{"gpu": name, "compute_capability": "9.0", "device": index}`` of a CUDA device (as plan sidecars record)."""
    import torch

    index = device.index if isinstance(device, torch.device) else int(device)
    major, minor = torch.cuda.get_device_capability(index)
    return {"gpu": torch.cuda.get_device_name(index), "compute_capability": f"{major}.{minor}", "device": index}


def polygraphy_trt(trt: ModuleType) -> ModuleType:
    """``polygraphy.backend.trt`` (NVIDIA's TensorRT loaders), made to use ``trt`` and to log through Python logging.

    Polygraphy imports TensorRT lazily under the name ``tensorrt``; a TensorRT installed as the bindings wheel
    alone (``tensorrt_bindings``) is registered under that name so Polygraphy finds the module in use.
    """
    import sys

    from lso.deps import require_polygraphy

    if trt.__name__ != "tensorrt" and importlib.util.find_spec("tensorrt") is None:
        log.info("registering %s as 'tensorrt' for Polygraphy", trt.__name__)
        sys.modules["tensorrt"] = trt
    return require_polygraphy("polygraphy.backend.trt")


# --------------------------------------------------------------------------------------- the builder
HARDWARE_COMPATIBILITY = ("none", "ampere_plus", "same_compute_capability")
#: hardware compatibility level -> the member of TensorRT's ``HardwareCompatibilityLevel``
HARDWARE_LEVELS = {"ampere_plus": "AMPERE_PLUS", "same_compute_capability": "SAME_COMPUTE_CAPABILITY"}


class _HasHardwareCompatibility(Protocol):
    hardware_compatibility: str


@dataclass(frozen=True)
class BuilderCompat:
    """What the builder does differently per TensorRT major version (the one place that decides it)."""

    major: int
    strongly_typed_flag: bool  # set NetworkDefinitionCreationFlag.STRONGLY_TYPED (10: yes; 11: always on, ignored)
    trtexec_strongly_typed: bool  # emit --stronglyTyped (10: yes; 11: deprecated no-op)
    inspector_schema: str  # "format_datatype" (10: "Format/Datatype" strings) or "split" (11: "DataType" field)
    hardware_levels: tuple[str, ...] = ("none", "ampere_plus")  # 11 adds same_compute_capability

    @classmethod
    def for_major(cls, major: int) -> BuilderCompat:
        if major < 10:
            raise MissingDependencyError(f"TensorRT {major}.x is too old: engines need TensorRT 10 or 11 (strongly "
                                         "typed networks, name-based I/O); pip install -U tensorrt-cu12")
        if major == 10:
            return cls(10, strongly_typed_flag=True, trtexec_strongly_typed=True, inspector_schema="format_datatype")
        return cls(major, strongly_typed_flag=False, trtexec_strongly_typed=False, inspector_schema="split",
                   hardware_levels=HARDWARE_COMPATIBILITY)

    def check(self, options: _HasHardwareCompatibility) -> None:
        """Options (a :class:`lso.export.profiles.BuildOptions`) this TensorRT version cannot honour -> InputError."""
        if options.hardware_compatibility not in self.hardware_levels:
            raise InputError(f"hardware compatibility {options.hardware_compatibility!r} needs TensorRT 11 (TensorRT "
                             f"{self.major} knows {', '.join(self.hardware_levels)})")


def builder_compat(trt_or_version: ModuleType | str) -> BuilderCompat:
    """:class:`BuilderCompat` for a TensorRT module or version string."""
    return BuilderCompat.for_major(version_tuple(trt_or_version)[0])


def detect_trt_major(default: int | None = 11) -> int | None:
    """Major version of the installed TensorRT, read from package metadata (nothing imported), else ``default``.

    Any flavour counts (full first; :data:`TRT_DISTRIBUTIONS`, the one list).
    """
    for found in installed_tensorrt():
        major = version_tuple(found.version)[:1]
        if major:
            return major[0]
    return default


# --------------------------------------------------------------------------------------- activation memory
def create_context_without_memory(trt: ModuleType, engine: Any) -> Any:
    """An execution context with no activation memory of its own (the caller sets it), or None on failure."""
    return engine.create_execution_context(trt.ExecutionContextAllocationStrategy.USER_MANAGED)


def activation_bytes(engine: Any, profile_index: int) -> int:
    """Activation memory a context needs at the max shapes of ``profile_index``.

    The larger of the profile's size and the engine's (``device_memory_size_v2``, the max over its profiles):
    the Python docs of ``set_device_memory`` ask for at least the engine's size, the C++ docs for at least the
    profile's; for the single-profile plans ``lso build`` makes the two are the same.
    """
    if hasattr(engine, "get_device_memory_size_for_profile_v2"):  # 10.1+, 11
        return max(int(engine.get_device_memory_size_for_profile_v2(profile_index)),
                   int(getattr(engine, "device_memory_size_v2", 0)))
    return int(engine.device_memory_size)  # 10.0: the max over all profiles


def set_context_memory(context: Any, address: int, size: int) -> None:
    """Point ``context`` at ``size`` bytes of activation memory at ``address`` (256-byte aligned)."""
    if hasattr(context, "set_device_memory"):  # 10.1+, 11
        context.set_device_memory(int(address), int(size))
    else:  # 10.0
        context.device_memory = int(address)


def memory_for_shapes(context: Any) -> int | None:
    """Activation bytes for the input shapes set on ``context`` now; None where TensorRT cannot say (10.0)."""
    if not hasattr(context, "update_device_memory_size_for_shapes"):
        return None
    return int(context.update_device_memory_size_for_shapes())
