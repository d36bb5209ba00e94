"""TensorRT runner: zero-copy execution of a plan on its own CUDA stream, ordered against the caller's.

- Loads a plan built by :func:`lso.export.build_engine` or by plain ``trtexec``. With a sidecar
  (``model.plan.json``) it checks the plan's sha256, TensorRT version and GPU compute capability
  before TensorRT sees the bytes, and refuses a mismatch saying how to rebuild; a plan without one
  is loaded with a warning and TensorRT's own checks.
- Name-based API of TensorRT 10/11: ``set_input_shape``, ``set_tensor_address``,
  ``execute_async_v3`` on the runner's own non-blocking stream, ordered against the caller's stream
  with events (:mod:`lso.runtime.streams`): the caller's stream is ``fuse(..., stream=...)`` (a
  torch/CuPy/pycuda stream or a raw handle), else CuPy's current stream for CuPy inputs, else torch's
  current stream. Producer streams named by ``__cuda_array_interface__`` inputs are waited on too.
- Inputs and outputs: torch CUDA tensors, CuPy arrays, pycuda ``GPUArray``s, anything with
  ``__cuda_array_interface__`` or DLPack, bound by pointer where dtype and layout already match
  the engine (otherwise converted once on the device). numpy inputs are copied to the device and the
  output back. Output tensors returned without ``out=`` come from a bounded per-shape pool: a buffer is
  reused only after the caller has dropped every tensor over it, so a result is never overwritten
  while it is held.
- Device memory: one activation buffer per runner, sized for the profile's max shapes and shared by
  one execution context per cached input shape (each created without memory of its own); NVIDIA's
  advice for CUDA graphs with changing shapes (NVIDIA/TensorRT#3798).
- ``cuda_graph=True``: one CUDA graph per cached input shape (captured on the runner's stream after
  one warm-up run; up to ``max_graphs`` kept, least recently used dropped, counted in
  :attr:`TrtRunner.cache_stats`). A graph bakes in buffer addresses, so inputs are copied
  device-to-device into the graph's static buffers before each replay and the output out of it.
- Device inputs' values (NaN/Inf, range) are checked on the device without a host synchronisation
  and read on request (``runner.last_value_check.result()``); see :mod:`lso.runtime.validation`.
- Streams and graphs go through ``torch.cuda``; no cuda-python or pycuda dependency.
- Every TensorRT call sits behind :func:`lso.runtime.cuda_arrays.require_cuda`.
- TensorRT types that must be subclassed (the logger) are built by factory functions, and
  TensorRT's log goes to the Python logger ``lso.runtime.tensorrt`` (:func:`make_logger`). No
  output allocator is needed: output shapes follow from input shapes.

The GPU paths of this module have not been run on a GPU by its author; the sidecar checks, the
profile logic, the logger adapter and the names used against the TensorRT 11 bindings are tested, and
the run path (contexts, activation buffer, graph cache, stream/event order, output pool, tiling) is
tested on a CPU with a fake TensorRT module and fake CUDA calls (``tests/runtime/test_trt_runner.py``).
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
from typing import Any

import torch

from lso.artifacts import read_sidecar, sidecar_path
from lso.config import LSOConfig
from lso.errors import ArtifactError, InputError, LSOError
from lso.io_spec import EXTENT, HR_MSI, INPUT_NAMES, LR_HSI, ShapeProfile, TensorSpec
from lso.runtime.base import Runner, RunnerStateError
from lso.runtime.cuda_arrays import require_cuda
from lso.runtime.streams import CudaOps, OutputPool, PoolStats, RunnerStream
from lso.runtime.trt_support import (
    activation_bytes,
    create_context_without_memory,
    import_tensorrt,
    is_lean,
    memory_for_shapes,
    set_context_memory,
    version_tuple,
)
from lso.runtime.validation import FuseInputs, check_device_values

__all__ = ["TrtRunner", "CacheStats", "make_logger", "check_plan_sidecar", "read_plan", "IOTensor", "engine_io",
           "profile_from_io", "TORCH_DTYPES", "SIDECAR_KEYS"]

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

    base: Any = trt.ILogger  # a class of the module passed in: mypy cannot know it

    class _PythonLogger(base):
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


def _parse_cc(value: Any) -> tuple[int, int] | None:
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
def read_plan(path: Any, *, verify: bool = True) -> tuple[bytes, dict | None]:
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
    profile: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None = None
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


def profile_from_io(tensors: list[IOTensor]) -> ShapeProfile | None:
    """The optimization profile of the dynamic inputs, as an :class:`~lso.io_spec.ShapeProfile`."""
    dyn = [(t.name, t.profile) for t in tensors if t.profile is not None]
    if not dyn:
        return None
    return ShapeProfile(min={name: p[0] for name, p in dyn}, opt={name: p[1] for name, p in dyn},
                        max={name: p[2] for name, p in dyn})


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
class _ShapeEntry:
    """One cached input shape: its execution context (no activation memory of its own), and with CUDA
    graphs its graph, the graph's static inputs and output, and the event after its last run."""

    context: Any
    graph: Any = None
    feeds: dict[str, torch.Tensor] | None = None
    out: torch.Tensor | None = None
    done: Any = None


@dataclass(frozen=True)
class CacheStats:
    """The runner's per-shape cache (:attr:`TrtRunner.cache_stats`).

    Attributes:
        hits: calls whose input shapes had a context (and graph) already.
        misses: calls that created one.
        evictions: contexts (and graphs) dropped, least recently used first, to stay within ``capacity``.
        contexts: contexts held now (one per cached input shape, none with memory of its own).
        graphs: CUDA graphs held now.
        capacity: ``max_graphs``: the most input shapes cached at once.
        activation_bytes: the one activation buffer, shared by every context.
        buffer_grows: times that buffer had to grow (every graph was dropped each time).
        outputs: output buffers of the pool (``allocated``, ``reused``, ``unpooled``).
    """

    hits: int
    misses: int
    evictions: int
    contexts: int
    graphs: int
    capacity: int
    activation_bytes: int
    buffer_grows: int
    outputs: PoolStats


class TrtRunner(Runner):
    """Runs a TensorRT plan (``.plan``/``.engine``/``.trt``) on one CUDA device.

    Args:
        path: the plan.
        device: CUDA device (index, ``"cuda:N"``; default: the current one).
        stream: the caller's stream for :meth:`fuse` when a call names none (default: CuPy's current
            stream for CuPy inputs, else torch's current stream at each call).
        cuda_graph: capture and replay one CUDA graph per input shape.
        max_graphs: input shapes cached at once, each with its execution context (and graph); the least
            recently used is dropped beyond it. The default, 4, holds the at most 2 x 2 window shapes of
            a tiled run (:func:`lso.runtime.tiling.plan_tiles`).
        verify: check the plan's sha256 against its sidecar.
        allow_host_code: let TensorRT load code embedded in the plan (version-compatible plans need it;
            default: True when the sidecar, whose sha256 matched, says the plan is version-compatible).
        profile_index: optimization profile to use.
        config: the model's architecture when the sidecar does not record it (tiling uses it).

    Memory: one activation buffer per runner, allocated by the runner at the profile's max size
    (``get_device_memory_size_for_profile_v2``), shared by one execution context per cached input shape,
    each created without memory of its own (``ExecutionContextAllocationStrategy.USER_MANAGED``). Runs on
    that buffer are serialised: one call at a time, all on the runner's stream. Should a shape ever need
    more than the buffer (``update_device_memory_size_for_shapes``), the buffer grows and every CUDA graph
    is dropped (they bake its address in). :attr:`cache_stats` counts hits, misses and evictions.

    Streams: the runner enqueues on its own non-blocking stream, ordered against the caller's stream
    with events (:mod:`lso.runtime.streams`): the inputs are complete before the enqueue, and the
    caller's stream waits for the output. Output tensors it returns come from a bounded per-shape pool
    and are never overwritten while the caller holds them.

    Threads: the execution contexts, the activation buffer and CUDA graphs are shared by all calls, so
    calls run one at a time (:attr:`concurrent` is False; the runner's lock enforces it). For parallel
    streams, use one runner per thread.
    """

    backend = "tensorrt"
    concurrent = False
    orders_streams = True

    def __init__(self, path: str | os.PathLike, *, device: Any = None, stream: Any = None, cuda_graph: bool = False,
                 max_graphs: int = 4, verify: bool = True, allow_host_code: bool | None = None,
                 profile_index: int = 0, config: LSOConfig | None = None) -> None:
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
        self._dev: torch.device | None = None
        self._trt: ModuleType | None = None
        self._logger = self._trt_runtime = self._engine = None
        self._rs: RunnerStream | None = None
        self._pool: OutputPool | None = None
        self._activation: torch.Tensor | None = None
        self._activation_size = 0
        self._entries: collections.OrderedDict[tuple, _ShapeEntry] = collections.OrderedDict()
        self._hits = self._misses = self._evictions = self._grows = 0
        self._extent_buf: torch.Tensor | None = None
        self._keep: tuple = ()
        self.last_value_check = None

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
            self._logger, self._trt_runtime = logger, trt_runtime
            self._setup_engine(trt, engine, dev)
        log.info("TensorRT %s: %s on %s (%s, %s of activation memory)", trt.__version__, self._path.name,
                 torch.cuda.get_device_name(dev), "CUDA graphs" if self._cuda_graph else "direct",
                 f"{self._activation_size / 2**20:.1f} MiB")

    def _setup_engine(self, trt: ModuleType, engine: Any, dev: torch.device, ops: CudaOps | None = None) -> None:
        """Everything after deserialisation: I/O, the runner's stream, the one activation buffer, the pools."""
        if not 0 <= self._profile_index < engine.num_optimization_profiles:
            raise InputError(f"profile_index {self._profile_index} does not exist: {self._path.name} has "
                             f"{engine.num_optimization_profiles} optimization profile(s)")
        io = engine_io(engine, self._profile_index)
        check_engine_io(io, self._path)
        rs = RunnerStream(dev, ops)
        size = max(activation_bytes(engine, self._profile_index), 256)
        with rs.use():  # allocated on the runner's stream: freeing it is ordered after the runner's work
            activation = torch.empty(size, dtype=torch.uint8, device=dev)
        self._io, self._dev, self._trt, self._engine, self._rs = io, dev, trt, engine, rs
        self._activation, self._activation_size = activation, size
        self._pool = OutputPool(rs.ops, per_shape=2, max_shapes=2 * self._max_graphs)

    def _deactivate(self) -> None:
        if self._rs is not None:
            self._rs.synchronize()  # the runner's own stream, not the whole device
        # release in reverse order of creation: graphs and contexts, buffers, engine, runtime, logger last
        self._entries.clear()
        self._keep = ()
        if self._pool is not None:
            self._pool.clear()
        self._activation = None
        self._engine = None
        self._trt_runtime = None
        self._reset()

    # ----------------------------------------------------------------------------- description
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
    def profile(self) -> ShapeProfile | None:
        return profile_from_io(self._io)

    @property
    def engine(self) -> Any:
        """The ``ICudaEngine`` (only while active)."""
        self._require_active()
        return self._engine

    @property
    def cache_stats(self) -> CacheStats:
        """Hits, misses and evictions of the per-shape contexts and graphs, the activation buffer, the output pool."""
        return CacheStats(self._hits, self._misses, self._evictions, len(self._entries),
                          sum(e.graph is not None for e in self._entries.values()), self._max_graphs,
                          self._activation_size if self._activation is not None else 0, self._grows,
                          self._pool.stats if self._pool is not None else PoolStats(0, 0, 0, 0))

    def _describe(self) -> str:
        return f"{self._path.name}, device={self._dev or self._device_arg or 'cuda'}"

    # ----------------------------------------------------------------------------- running
    def _live(self) -> tuple[RunnerStream, OutputPool, torch.device]:
        """The runner's stream, output pool and device (set by ``_setup_engine``, so only while active)."""
        rs, pool, dev = self._rs, self._pool, self._dev
        if rs is None or pool is None or dev is None:
            raise RunnerStateError(f"{self!r}: the engine is not set up")
        return rs, pool, dev

    def _activation_ptr(self) -> int:
        """The address of the shared activation buffer (only while active)."""
        if self._activation is None:
            raise RunnerStateError(f"{self!r}: the engine is not set up")
        return self._activation.data_ptr()

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
        self._extent_buf.copy_(host)  # on the runner's stream, after the previous call's reads of it
        return self._extent_buf

    def _fuse(self, inputs: FuseInputs, extent: tuple[int, int, int, int] | None, out: Any,
              stream: Any = None, **options: Any) -> Any:
        if options:
            raise TypeError(f"TrtRunner.fuse got unexpected options {sorted(options)}")
        rs, pool, dev = self._live()
        ops = rs.ops
        with ops.device(dev):
            caller = rs.caller(stream if stream is not None else self._stream_arg, inputs.template)
            rs.begin(caller, inputs.producer_streams)  # inputs made on the caller's (and producers') streams
            check = None
            with rs.use():  # everything below is enqueued on the runner's stream
                if inputs.values_pending:
                    check = check_device_values(((HR_MSI, inputs.hr_msi), (LR_HSI, inputs.lr_hsi)), ops=ops,
                                                stream=rs.stream)
                hr, lr = inputs.torch_views()
                feeds = {HR_MSI: self._feed(hr, HR_MSI), LR_HSI: self._feed(lr, LR_HSI)}
                if any(t.name == EXTENT for t in self._io):
                    _, _, height, width = inputs.output_shape
                    feeds[EXTENT] = self._extent(extent or (0, 0, height, width))
                out_name = next(t.name for t in self._io if not t.is_input)
                out_dtype = self._io_tensor(out_name).torch_dtype
                target = out if (isinstance(out, torch.Tensor) and out.is_cuda and out.device == self._dev
                                 and out_dtype == torch.float32) else None
                entry = self._entry(feeds)
                if self._cuda_graph:
                    result = self._run_graph(entry, feeds, out_name, out_dtype, target, caller)
                else:
                    result = self._run_direct(entry, feeds, out_name, out_dtype, target, caller)
                if result.dtype != torch.float32:
                    result = result.float()
            done = rs.end(caller)  # the caller's stream waits for the output
            entry.done = done
            self.last_value_check = check
            if result is not target:
                result = pool.hand_out(result, caller, rs.stream)
            if inputs.kind == "numpy" or (out is not None and target is None):
                ops.synchronize_event(done)  # the host reads the result next: wait for this call alone
                if check is not None:
                    check.result(stacklevel=5)
            return result

    def _entry(self, feeds: dict[str, torch.Tensor]) -> _ShapeEntry:
        """The context (and graph) for these input shapes: cached, else made (dropping the least recently used)."""
        key = tuple((name, tuple(t.shape), t.dtype) for name, t in feeds.items())
        entry = self._entries.get(key)
        if entry is not None:
            self._hits += 1
            self._entries.move_to_end(key)
            return entry
        self._misses += 1
        while len(self._entries) >= self._max_graphs:
            self._evict()
        context = self._new_context()
        self._set_shapes(context, feeds)
        need = memory_for_shapes(context)  # after the profile and every input shape, as TensorRT asks
        entry = _ShapeEntry(context)
        self._entries[key] = entry
        if need is not None and need > self._activation_size:
            self._grow(need)
        else:  # set again once the shapes are known (trtexec's order: shapes, size for shapes, memory)
            set_context_memory(context, self._activation_ptr(), self._activation_size)
        return entry

    def _evict(self) -> None:
        _, old = self._entries.popitem(last=False)
        if old.done is not None:  # TensorRT contexts and CUDA graphs must not be destroyed while in flight
            self._live()[0].ops.synchronize_event(old.done)
        self._evictions += 1
        log.debug("dropped the least recently used input shape (%d cached at most)", self._max_graphs)

    def _new_context(self) -> Any:
        rs, _, _ = self._live()
        if self._trt is None:
            raise RunnerStateError(f"{self!r}: the engine is not set up")
        context = create_context_without_memory(self._trt, self._engine)
        if context is None:
            raise LSOError(f"TensorRT could not create an execution context for {self._path.name} (see the "
                           f"'{TRT_LOGGER_NAME}' log)")
        set_context_memory(context, self._activation_ptr(), self._activation_size)
        # enqueued on the runner's stream, before any run of this context
        if self._profile_index and not context.set_optimization_profile_async(self._profile_index, rs.handle):
            raise LSOError(f"TensorRT could not select optimization profile {self._profile_index} of "
                               f"{self._path.name}")
        return context

    def _grow(self, need: int) -> None:
        """A bigger activation buffer for every context; CUDA graphs baked the old address in, so they go."""
        log.warning("TensorRT asks for %d bytes of activation memory, more than the profile's %d: growing the "
                    "shared buffer and dropping every CUDA graph", need, self._activation_size)
        rs, _, dev = self._live()
        rs.synchronize()  # nothing in flight uses the old buffer or a graph any more
        for entry in self._entries.values():
            entry.graph = entry.feeds = entry.out = None
        self._activation = None
        with rs.use():
            activation = torch.empty(need, dtype=torch.uint8, device=dev)
        self._activation, self._activation_size = activation, need
        self._grows += 1
        for entry in self._entries.values():
            set_context_memory(entry.context, activation.data_ptr(), need)

    def _set_shapes(self, context: Any, feeds: dict[str, torch.Tensor]) -> None:
        for name, tensor in feeds.items():
            shape = tuple(tensor.shape)
            if any(d < 0 for d in self._io_tensor(name).shape) and not context.set_input_shape(name, shape):
                prof = self.profile
                where = f" ({prof.describe(name)})" if prof is not None and name in prof.min else ""
                raise InputError(f"TensorRT rejected {name} shape {'x'.join(map(str, shape))}{where}")

    def _output_shape(self, feeds: dict[str, torch.Tensor]) -> tuple[int, int, int, int]:
        b, _, h, w = feeds[HR_MSI].shape
        return (int(b), int(feeds[LR_HSI].shape[1]), int(h), int(w))

    def _execute(self, context: Any, what: str) -> None:
        if not context.execute_async_v3(self._live()[0].handle):
            raise LSOError(f"TensorRT {what} of {self._path.name} failed (see the '{TRT_LOGGER_NAME}' log)")

    def _run_direct(self, entry: _ShapeEntry, feeds: dict[str, torch.Tensor], out_name: str, out_dtype: torch.dtype,
                    target: torch.Tensor | None, caller: Any) -> torch.Tensor:
        context = entry.context
        for name, tensor in feeds.items():
            context.set_tensor_address(name, tensor.data_ptr())
        if target is None:
            rs, pool, dev = self._live()
            target = pool.take(self._output_shape(feeds), out_dtype, dev, rs.stream, (caller,))
        context.set_tensor_address(out_name, target.data_ptr())
        self._execute(context, "execution")
        self._keep = tuple(feeds.values())  # converted inputs stay alive until the next call
        return target

    def _run_graph(self, entry: _ShapeEntry, feeds: dict[str, torch.Tensor], out_name: str, out_dtype: torch.dtype,
                   target: torch.Tensor | None, caller: Any) -> torch.Tensor:
        if entry.graph is None:
            self._capture(entry, feeds, out_name, out_dtype)
        static, graph_out = entry.feeds, entry.out
        assert static is not None and graph_out is not None  # _capture sets the graph and its buffers together
        rs, pool, dev = self._live()
        for name, tensor in feeds.items():
            static[name].copy_(tensor, non_blocking=True)
        rs.ops.replay(entry.graph)  # on the runner's stream (the current one)
        result = target if target is not None else pool.take(tuple(graph_out.shape), out_dtype, dev, rs.stream,
                                                             (caller,))
        result.copy_(graph_out, non_blocking=True)  # the graph's output is overwritten by its next replay
        return result

    def _capture(self, entry: _ShapeEntry, feeds: dict[str, torch.Tensor], out_name: str,
                 out_dtype: torch.dtype) -> None:
        rs, _, _ = self._live()
        ops, context = rs.ops, entry.context
        static = {name: torch.empty_like(t).copy_(t) for name, t in feeds.items()}
        out = torch.empty(self._output_shape(feeds), dtype=out_dtype, device=self._dev)
        for name, tensor in static.items():
            context.set_tensor_address(name, tensor.data_ptr())
        context.set_tensor_address(out_name, out.data_ptr())
        # one run before capture lets TensorRT finish its shape-dependent setup outside the graph
        self._execute(context, "warm-up run before CUDA graph capture")
        graph = ops.new_graph()
        with ops.capture(graph, rs.stream):
            self._execute(context, "run during CUDA graph capture")
        entry.graph, entry.feeds, entry.out = graph, static, out
        log.debug("captured a CUDA graph for %s", {n: tuple(t.shape) for n, t in feeds.items()})
