"""TensorRT runner: zero-copy execution of a plan on the caller's CUDA stream, optional CUDA graphs.

- Loads a plan built by :func:`lso.export.build_engine` or by plain ``trtexec``. With a sidecar
  (``model.plan.json``) it checks the plan's sha256, TensorRT version and GPU compute capability
  before TensorRT sees the bytes, and refuses a mismatch saying how to rebuild; a plan without one
  is loaded with a warning and TensorRT's own checks.
- Name-based API of TensorRT 10/11: ``set_input_shape``, ``set_tensor_address``,
  ``execute_async_v3`` on the caller's stream (the current torch stream by default, or
  ``fuse(..., stream=...)``: a torch/CuPy/pycuda stream or a raw handle).
- Inputs and outputs: torch CUDA tensors, CuPy arrays, pycuda ``GPUArray``s, anything with
  ``__cuda_array_interface__`` or DLPack, bound by pointer where dtype and layout already match
  the engine (otherwise converted once on the device). numpy inputs are copied to the device and the
  output back. Output buffers are allocated once per shape and reused: the tensor returned without
  ``out=`` belongs to the runner and is overwritten by the next call with the same shape (pass
  ``out=`` or clone it to keep it).
- ``cuda_graph=True``: one CUDA graph per input shape (captured with ``torch.cuda.CUDAGraph`` on a
  dedicated execution context after one warm-up run; up to ``max_graphs`` kept, least recently
  used dropped). A graph bakes in buffer addresses, so inputs are copied device-to-device into the
  graph's static buffers before each replay (a few hundred microseconds at 512x512) and each graph's
  context holds its own activation memory (the engine's ``device_memory_size`` each).
- Streams and graphs go through ``torch.cuda``; no cuda-python or pycuda dependency.
- Every TensorRT call sits behind :func:`lso.runtime.cuda_arrays.require_cuda`.
- TensorRT types that must be subclassed (the logger) are built by factory functions, and
  TensorRT's log goes to the Python logger ``lso.runtime.tensorrt`` (:func:`make_logger`). No
  output allocator is needed: output shapes follow from input shapes.

The GPU paths of this module have not been run on a GPU by its author; the sidecar checks, the
profile logic, the logger adapter and the names used against the TensorRT 11 bindings are tested.
"""
from __future__ import annotations

import collections
import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Optional

import torch

from lso._io import read_sidecar, sidecar_path
from lso.config import LSOConfig
from lso.errors import ArtifactError, InputError, LSOError
from lso.io_spec import EXTENT, HR_MSI, INPUT_NAMES, LR_HSI, ShapeProfile, TensorSpec
from lso.runtime._trt_compat import import_tensorrt, is_lean, version_tuple
from lso.runtime.base import Runner, RunnerStateError
from lso.runtime.cuda_arrays import require_cuda, stream_handle
from lso.runtime.validation import FuseInputs

__all__ = ["TrtRunner", "make_logger", "check_plan_sidecar", "read_plan", "IOTensor", "engine_io", "profile_from_io",
           "TORCH_DTYPES", "SIDECAR_KEYS"]

log = logging.getLogger(__name__)
TRT_LOGGER_NAME = "lso.runtime.tensorrt"

# TensorRT DataType member name -> torch dtype
TORCH_DTYPES: dict[str, torch.dtype] = {
    "FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16, "INT64": torch.int64,
    "INT32": torch.int32, "INT8": torch.int8, "UINT8": torch.uint8, "BOOL": torch.bool,
}

# sidecar keys read for plans (aliases accepted); lso.export's engine builder writes the first of each
SIDECAR_KEYS = {
    "tensorrt_version": ("tensorrt_version", "tensorrt"),
    "compute_capability": ("compute_capability", "gpu_compute_capability"),
    "version_compatible": ("version_compatible",),
    "hardware_compatibility": ("hardware_compatibility", "hardware_compatibility_level"),
}

_SEVERITY_LEVELS = {"INTERNAL_ERROR": logging.CRITICAL, "ERROR": logging.ERROR, "WARNING": logging.WARNING,
                    "INFO": logging.INFO, "VERBOSE": logging.DEBUG}


# --------------------------------------------------------------------------------------- logger
def make_logger(trt: ModuleType, name: str = TRT_LOGGER_NAME) -> Any:
    """A ``trt.ILogger`` that forwards TensorRT's messages to the Python logger ``name``.

    Severity maps INTERNAL_ERROR -> CRITICAL, ERROR, WARNING, INFO -> same, VERBOSE -> DEBUG. The
    subclass is defined here, inside the factory, so importing this module never imports TensorRT.
    """
    py_log = logging.getLogger(name)

    class _PythonLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            level = _SEVERITY_LEVELS.get(getattr(severity, "name", str(severity).rsplit(".", 1)[-1]), logging.INFO)
            py_log.log(level, "%s", msg)

    return _PythonLogger()


# --------------------------------------------------------------------------------------- sidecar
def _first(info: dict, key: str) -> Any:
    for alias in SIDECAR_KEYS[key]:
        if info.get(alias) is not None:
            return info[alias]
        nested = info.get("versions") or {}
        if isinstance(nested, dict) and nested.get(alias) is not None:
            return nested[alias]
    return None


def _parse_cc(value: Any) -> Optional[tuple[int, int]]:
    if value is None:
        return None
    if isinstance(value, (list, tuple)) and len(value) >= 2:
        return int(value[0]), int(value[1])
    digits = re.findall(r"\d+", str(value))
    if len(digits) >= 2:
        return int(digits[0]), int(digits[1])
    if len(digits) == 1 and len(digits[0]) >= 2:  # "sm_89", "89"
        return int(digits[0][:-1]), int(digits[0][-1])
    return None


def check_plan_sidecar(info: dict, *, trt_version: str, compute_capability: tuple[int, int], path: Any = "plan",
                       lean: bool = False) -> None:
    """Refuse a plan whose recorded TensorRT version or compute capability does not fit this machine.

    Rules (TensorRT's own): a plan runs only on the TensorRT version that built it (major.minor.patch)
    unless built version-compatible, in which case any runtime of the same or a later version runs
    it; and only on GPUs of the compute capability it was built for, unless built hardware-compatible
    (``ampere_plus``: any compute capability >= 8.0). The lean and dispatch runtimes run only
    version-compatible plans.

    Args:
        info: the sidecar (see :data:`SIDECAR_KEYS` for the keys read).
        trt_version: the running TensorRT's version string.
        compute_capability: the GPU's ``(major, minor)``.
        path: the plan, for messages.
        lean: the running TensorRT is a lean/dispatch runtime.

    Raises:
        ArtifactError: saying what differs and how to rebuild.
    """
    rebuild = (f"rebuild it here from its ONNX graph (lso build <model.onnx> --out {Path(str(path)).name}, or "
               f"trtexec --onnx=<model.onnx> --saveEngine={Path(str(path)).name})")
    built = _first(info, "tensorrt_version")
    vc = bool(_first(info, "version_compatible"))
    hw = str(_first(info, "hardware_compatibility") or "none").lower().replace("-", "_")
    if lean and not vc:
        raise ArtifactError(f"{path} was not built version-compatible, and the TensorRT lean/dispatch runtime "
                            f"({trt_version}) runs only version-compatible plans: rebuild with --version-compatible, "
                            f"or install the full runtime (pip install tensorrt-cu12)")
    if built is not None:
        have, want = version_tuple(str(trt_version))[:3], version_tuple(str(built))[:3]
        if vc:
            if want > have:
                raise ArtifactError(f"{path} was built by TensorRT {built}, newer than this TensorRT {trt_version}: "
                                    f"upgrade TensorRT, or {rebuild}")
        elif want != have:
            raise ArtifactError(f"{path} was built by TensorRT {built} but this is TensorRT {trt_version}; plans run "
                                f"only on the version that built them: {rebuild} (or build it --version-compatible)")
    cc_built = _parse_cc(_first(info, "compute_capability"))
    cc_here = (int(compute_capability[0]), int(compute_capability[1]))
    if cc_built is not None:
        fmt = "{}.{}".format
        if hw in ("ampere_plus", "ampereplus"):
            if cc_here < (8, 0):
                raise ArtifactError(f"{path} was built hardware-compatible for Ampere and newer (compute capability "
                                    f">= 8.0), but this GPU is {fmt(*cc_here)}: {rebuild}")
        elif cc_built != cc_here:
            raise ArtifactError(f"{path} was built for GPUs of compute capability {fmt(*cc_built)}, but this GPU is "
                                f"{fmt(*cc_here)}: {rebuild} (or build it --hardware-compatibility ampere_plus)")


# --------------------------------------------------------------------------------------- plan file
def read_plan(path: Any, *, verify: bool = True) -> tuple[bytes, Optional[dict]]:
    """The plan's bytes and its sidecar, checked before TensorRT (or a GPU) is touched.

    The file must exist and not be empty; with a sidecar and ``verify``, the sha256 of the very bytes
    returned (read once: no window between check and use) must match the recorded one, so a truncated,
    bit-flipped or replaced plan is refused here with :class:`ArtifactError` naming the file. A plan
    without a sidecar (plain ``trtexec``) is left to TensorRT's own checks.
    """
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path} does not exist (or is not a file)")
    sidecar = read_sidecar(path, verify=False)
    try:
        plan = path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"cannot read {path}: {exc}") from exc
    if not plan:
        raise ArtifactError(f"{path} is empty (0 bytes): an interrupted build or copy; rebuild it (lso build)")
    if verify and sidecar is not None:
        if not (isinstance(sidecar.get("sha256"), str) and sidecar["sha256"]):
            raise ArtifactError(f"sidecar {sidecar_path(path).name} records no sha256 of {path.name}, so it cannot "
                                f"vouch for the plan: rebuild it (lso build), or delete the sidecar")
        actual = hashlib.sha256(plan).hexdigest()
        if actual != sidecar["sha256"]:
            raise ArtifactError(f"{path} does not match its sidecar {sidecar_path(path).name}: sha256 {actual[:12]}… "
                                f"!= recorded {str(sidecar['sha256'])[:12]}… ({len(plan)} bytes); the plan was "
                                f"truncated, modified or corrupted — rebuild it (lso build) or copy it again")
    return plan, sidecar


# --------------------------------------------------------------------------------------- engine I/O
@dataclass(frozen=True)
class IOTensor:
    """One engine I/O tensor as TensorRT describes it (``-1`` marks a dynamic dimension).

    Attributes:
        name: tensor name.
        is_input: input (True) or output.
        dtype: TensorRT ``DataType`` member name (``"FLOAT"``, ``"HALF"``, ...).
        shape: engine shape.
        profile: ``(min, opt, max)`` shapes of a dynamic input in the selected profile, else None.
        host: a shape-inference input that lives in host memory.
    """

    name: str
    is_input: bool
    dtype: str
    shape: tuple[int, ...]
    profile: Optional[tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = None
    host: bool = False

    @property
    def torch_dtype(self) -> torch.dtype:
        try:
            return TORCH_DTYPES[self.dtype]
        except KeyError:
            raise ArtifactError(f"engine tensor {self.name!r} has TensorRT type {self.dtype}, which the runner does "
                                f"not handle (expected one of {sorted(TORCH_DTYPES)})") from None


def _enum_name(value: Any) -> str:
    return getattr(value, "name", str(value).rsplit(".", 1)[-1])


def engine_io(engine: Any, profile_index: int = 0) -> list[IOTensor]:
    """Describe every I/O tensor of ``engine`` (a ``trt.ICudaEngine`` or anything with its methods)."""
    tensors = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        is_input = _enum_name(engine.get_tensor_mode(name)) == "INPUT"
        shape = tuple(int(d) for d in engine.get_tensor_shape(name))
        profile = None
        if is_input and any(d < 0 for d in shape):
            mn, opt, mx = engine.get_tensor_profile_shape(name, profile_index)
            profile = (tuple(int(d) for d in mn), tuple(int(d) for d in opt), tuple(int(d) for d in mx))
        host = bool(engine.is_shape_inference_io(name)) if is_input else False
        tensors.append(IOTensor(name, is_input, _enum_name(engine.get_tensor_dtype(name)), shape, profile, host))
    return tensors


def profile_from_io(tensors: list[IOTensor]) -> Optional[ShapeProfile]:
    """The optimization profile of the dynamic inputs, as an :class:`~lso.io_spec.ShapeProfile`."""
    dyn = [t for t in tensors if t.profile is not None]
    if not dyn:
        return None
    return ShapeProfile(min={t.name: t.profile[0] for t in dyn}, opt={t.name: t.profile[1] for t in dyn},
                        max={t.name: t.profile[2] for t in dyn})


def check_engine_io(tensors: list[IOTensor], path: Any) -> None:
    """An LSO plan takes ``hr_msi``, ``lr_hsi`` (and optionally ``extent``) and has one output."""
    inputs = [t.name for t in tensors if t.is_input]
    outputs = [t.name for t in tensors if not t.is_input]
    unknown = [n for n in inputs if n not in (*INPUT_NAMES, EXTENT)]
    if any(n not in inputs for n in INPUT_NAMES) or unknown or len(outputs) != 1:
        raise ArtifactError(f"{path} has inputs {inputs} and outputs {outputs}; an LSO plan takes {list(INPUT_NAMES)} "
                            f"(optionally '{EXTENT}') and has one output: was it built from an lso export graph?")


# --------------------------------------------------------------------------------------- runner
@dataclass
class _Graph:
    context: Any
    graph: Any
    feeds: dict[str, torch.Tensor]
    out: torch.Tensor


class TrtRunner(Runner):
    """Runs a TensorRT plan (``.plan``/``.engine``/``.trt``) on one CUDA device.

    Args:
        path: the plan.
        device: CUDA device (index, ``"cuda:N"``; default: the current one).
        stream: default CUDA stream for :meth:`fuse` (default: torch's current stream at each call).
        cuda_graph: capture and replay one CUDA graph per input shape.
        max_graphs: graphs (and their execution contexts) kept at once.
        verify: check the plan's sha256 against its sidecar.
        allow_host_code: let TensorRT load code embedded in the plan (version-compatible plans need it;
            default: True when the sidecar, whose sha256 matched, says the plan is version-compatible).
        profile_index: optimization profile to use.
        config: the model's architecture when the sidecar does not record it (tiling uses it).

    Threads: one execution context, reused output buffers and CUDA graphs are shared by all calls, so
    calls run one at a time (:attr:`concurrent` is False; the runner's lock enforces it). For parallel
    streams, use one runner per thread.
    """

    backend = "tensorrt"
    concurrent = False

    def __init__(self, path: str | os.PathLike, *, device: Any = None, stream: Any = None, cuda_graph: bool = False,
                 max_graphs: int = 2, verify: bool = True, allow_host_code: Optional[bool] = None,
                 profile_index: int = 0, config: Optional[LSOConfig] = None) -> None:
        super().__init__()
        self._path = Path(path)
        self._device_arg = device
        self._stream_arg = stream
        self._cuda_graph = cuda_graph
        self._max_graphs = max(1, int(max_graphs))
        self._verify = verify
        self._allow_host_code = allow_host_code
        self._profile_index = profile_index
        self._config = config
        self._io: list[IOTensor] = []
        self._reset()

    def _reset(self) -> None:
        self._dev: Optional[torch.device] = None
        self._logger = self._trt_runtime = self._engine = self._context = None
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._outputs: dict[tuple[int, ...], torch.Tensor] = {}
        self._extent_buf: Optional[torch.Tensor] = None
        self._graphs: "collections.OrderedDict[tuple, _Graph]" = collections.OrderedDict()
        self._keep: tuple = ()

    # ----------------------------------------------------------------------------- lifecycle
    def _memory_device(self) -> str:
        return "cuda"

    def _activate(self) -> None:
        plan, sidecar = read_plan(self._path, verify=self._verify)  # file checks first: no GPU or TensorRT needed
        recorded = (sidecar or {}).get("weights_sha256")  # lso build copies it from the graph
        self._weights_sha256 = recorded if isinstance(recorded, str) and recorded else None
        dev = require_cuda(self._device_arg)  # before anything touches TensorRT
        trt = import_tensorrt()
        if sidecar is None:
            log.warning("%s has no sidecar (a plain trtexec plan?): loading it with TensorRT's own version and "
                        "hardware checks only", self._path)
        else:
            check_plan_sidecar(sidecar, trt_version=trt.__version__,
                               compute_capability=torch.cuda.get_device_capability(dev), path=self._path,
                               lean=is_lean(trt))
            if self._config is None and isinstance(sidecar.get("config"), dict):
                self._config = LSOConfig.from_dict(sidecar["config"])
        allow_host_code = self._allow_host_code
        if allow_host_code is None:
            allow_host_code = bool(sidecar and sidecar.get("version_compatible"))
        with torch.cuda.device(dev):
            logger = make_logger(trt)
            trt_runtime = trt.Runtime(logger)
            if allow_host_code:
                trt_runtime.engine_host_code_allowed = True
            engine = trt_runtime.deserialize_cuda_engine(plan)
            del plan
            if engine is None:
                raise ArtifactError(
                    f"TensorRT {trt.__version__} could not deserialize {self._path} (its messages are logged under "
                    f"'{TRT_LOGGER_NAME}'; run with -v): a plan runs only on the TensorRT version and GPU that built "
                    f"it — rebuild it here (lso build / trtexec --saveEngine); a version-compatible plan also needs "
                    f"allow_host_code=True")
            if not 0 <= self._profile_index < engine.num_optimization_profiles:
                raise InputError(f"profile_index {self._profile_index} does not exist: {self._path.name} has "
                                 f"{engine.num_optimization_profiles} optimization profile(s)")
            context = self._new_context(engine, dev)
        self._io = engine_io(engine, self._profile_index)
        check_engine_io(self._io, self._path)
        self._dev, self._logger, self._trt_runtime = dev, logger, trt_runtime
        self._engine, self._context = engine, context
        log.info("TensorRT %s: %s on %s (%s)", trt.__version__, self._path.name, torch.cuda.get_device_name(dev),
                 "CUDA graphs" if self._cuda_graph else "direct")

    def _new_context(self, engine: Any, dev: torch.device) -> Any:
        context = engine.create_execution_context()
        if context is None:
            raise LSOError(f"TensorRT could not create an execution context for {self._path.name} (out of GPU memory? "
                           f"the engine needs its profile's maximum activations)")
        if self._profile_index:
            stream = torch.cuda.current_stream(dev)
            context.set_optimization_profile_async(self._profile_index, stream.cuda_stream)
            stream.synchronize()
        return context

    def _deactivate(self) -> None:
        if self._dev is not None:
            torch.cuda.synchronize(self._dev)
        # release in reverse order of creation: graphs and contexts, engine, runtime, logger last
        self._graphs.clear()
        self._keep = ()
        self._context = None
        self._engine = None
        self._trt_runtime = None
        self._reset()

    # ----------------------------------------------------------------------------- description
    @property
    def config(self) -> Optional[LSOConfig]:
        return self._config

    @property
    def input_specs(self) -> tuple[TensorSpec, ...]:
        if not self._io:
            raise RunnerStateError(f"{self!r}: the plan's inputs are known once the runner is active")
        return tuple(TensorSpec(t.name, str(t.torch_dtype).replace("torch.", ""),
                                tuple(d if d >= 0 else "dynamic" for d in t.shape)) for t in self._io if t.is_input)

    @property
    def output_specs(self) -> tuple[TensorSpec, ...]:
        return tuple(TensorSpec(t.name, str(t.torch_dtype).replace("torch.", ""),
                                tuple(d if d >= 0 else "dynamic" for d in t.shape)) for t in self._io if not t.is_input)

    @property
    def profile(self) -> Optional[ShapeProfile]:
        return profile_from_io(self._io)

    @property
    def engine(self) -> Any:
        """The ``ICudaEngine`` (only while active)."""
        self._require_active()
        return self._engine

    def _describe(self) -> str:
        return f"{self._path.name}, device={self._dev or self._device_arg or 'cuda'}"

    # ----------------------------------------------------------------------------- running
    def _stream(self, stream: Any) -> torch.cuda.Stream:
        stream = stream if stream is not None else self._stream_arg
        if stream is None:
            return torch.cuda.current_stream(self._dev)
        if isinstance(stream, torch.cuda.Stream):
            return stream
        return torch.cuda.ExternalStream(stream_handle(stream), device=self._dev)

    def _io_tensor(self, name: str) -> IOTensor:
        return next(t for t in self._io if t.name == name)

    def _feed(self, tensor: torch.Tensor, name: str) -> torch.Tensor:
        """``tensor`` as the engine takes it: in place when device, dtype and layout already match."""
        spec = self._io_tensor(name)
        if tensor.is_cuda and tensor.device != self._dev:
            raise InputError(f"{name} is on {tensor.device} but the engine runs on {self._dev}: move it, or load the "
                             f"runner with device='{tensor.device}'")
        return tensor.to(device=self._dev, dtype=spec.torch_dtype).contiguous()

    def _extent(self, extent: tuple[int, int, int, int]) -> torch.Tensor:
        spec = self._io_tensor(EXTENT)
        host = torch.tensor(extent, dtype=spec.torch_dtype)
        if spec.host:
            return host
        if self._extent_buf is None:
            self._extent_buf = torch.empty(4, dtype=spec.torch_dtype, device=self._dev)
        self._extent_buf.copy_(host)
        return self._extent_buf

    def _fuse(self, inputs: FuseInputs, extent: Optional[tuple[int, int, int, int]], out: Any,
              stream: Any = None) -> Any:
        with torch.cuda.device(self._dev):
            cuda_stream = self._stream(stream)
            with torch.cuda.stream(cuda_stream):  # allocations and copies below are ordered on the caller's stream
                feeds = {HR_MSI: self._feed(inputs.hr_msi, HR_MSI), LR_HSI: self._feed(inputs.lr_hsi, LR_HSI)}
                if any(t.name == EXTENT for t in self._io):
                    _, _, height, width = inputs.output_shape
                    feeds[EXTENT] = self._extent(extent or (0, 0, height, width))
                out_name = next(t.name for t in self._io if not t.is_input)
                out_dtype = self._io_tensor(out_name).torch_dtype
                target = out if (isinstance(out, torch.Tensor) and out.is_cuda and out.device == self._dev
                                 and out_dtype == torch.float32) else None
                if self._cuda_graph:
                    result = self._run_graph(feeds, out_name, out_dtype, target, cuda_stream)
                else:
                    result = self._run_direct(feeds, out_name, out_dtype, target, cuda_stream)
                if result.dtype != torch.float32:
                    result = result.float()
            if inputs.kind == "numpy" or (out is not None and target is None):
                cuda_stream.synchronize()
            return result

    def _bind(self, context: Any, feeds: dict[str, torch.Tensor], shapes: dict[str, tuple[int, ...]]) -> None:
        for name, tensor in feeds.items():
            shape = tuple(tensor.shape)
            dynamic = any(d < 0 for d in self._io_tensor(name).shape)
            if dynamic and shapes.get(name) != shape:
                if not context.set_input_shape(name, shape):
                    prof = self.profile
                    where = f" ({prof.describe(name)})" if prof is not None and name in prof.min else ""
                    raise InputError(f"TensorRT rejected {name} shape {'x'.join(map(str, shape))}{where}")
                shapes[name] = shape
            context.set_tensor_address(name, tensor.data_ptr())

    def _output_shape(self, feeds: dict[str, torch.Tensor]) -> tuple[int, int, int, int]:
        b, _, h, w = feeds[HR_MSI].shape
        return (int(b), int(feeds[LR_HSI].shape[1]), int(h), int(w))

    def _run_direct(self, feeds: dict[str, torch.Tensor], out_name: str, out_dtype: torch.dtype,
                    target: Optional[torch.Tensor], cuda_stream: torch.cuda.Stream) -> torch.Tensor:
        context = self._context
        self._bind(context, feeds, self._shapes)
        shape = self._output_shape(feeds)
        if target is None:
            target = self._outputs.get(shape)
            if target is None or target.dtype != out_dtype:
                target = torch.empty(shape, dtype=out_dtype, device=self._dev)  # allocated once per shape, reused
                self._outputs[shape] = target
        context.set_tensor_address(out_name, target.data_ptr())
        if not context.execute_async_v3(cuda_stream.cuda_stream):
            raise LSOError(f"TensorRT execution of {self._path.name} failed (see the '{TRT_LOGGER_NAME}' log)")
        self._keep = tuple(feeds.values())  # converted inputs stay alive until the next call
        return target

    def _run_graph(self, feeds: dict[str, torch.Tensor], out_name: str, out_dtype: torch.dtype,
                   target: Optional[torch.Tensor], cuda_stream: torch.cuda.Stream) -> torch.Tensor:
        key = tuple((name, tuple(t.shape), t.dtype) for name, t in feeds.items())
        entry = self._graphs.get(key)
        if entry is None:
            entry = self._capture(feeds, out_name, out_dtype, cuda_stream)
            self._graphs[key] = entry
            while len(self._graphs) > self._max_graphs:
                self._graphs.popitem(last=False)
        else:
            self._graphs.move_to_end(key)
        for name, tensor in feeds.items():
            entry.feeds[name].copy_(tensor, non_blocking=True)
        entry.graph.replay()  # on the current (caller's) stream
        if target is not None:
            target.copy_(entry.out, non_blocking=True)
            return target
        return entry.out

    def _capture(self, feeds: dict[str, torch.Tensor], out_name: str, out_dtype: torch.dtype,
                 cuda_stream: torch.cuda.Stream) -> _Graph:
        context = self._new_context(self._engine, self._dev)
        static = {name: torch.empty_like(t) for name, t in feeds.items()}
        out = torch.empty(self._output_shape(feeds), dtype=out_dtype, device=self._dev)
        self._bind(context, static, {})
        context.set_tensor_address(out_name, out.data_ptr())
        side = torch.cuda.Stream(self._dev)
        side.wait_stream(cuda_stream)
        with torch.cuda.stream(side):
            # one run before capture lets TensorRT finish its shape-dependent setup outside the graph
            if not context.execute_async_v3(side.cuda_stream):
                raise LSOError(f"TensorRT warm-up run of {self._path.name} failed before CUDA graph capture")
        side.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=side, capture_error_mode="thread_local"):
            if not context.execute_async_v3(side.cuda_stream):
                raise LSOError(f"TensorRT run of {self._path.name} failed during CUDA graph capture")
        cuda_stream.wait_stream(side)
        log.debug("captured a CUDA graph for %s", {n: tuple(t.shape) for n, t in feeds.items()})
        return _Graph(context, graph, static, out)
