"""ONNX Runtime runner: CPU execution provider by default, CUDA when onnxruntime-gpu is installed.

Inputs and outputs go through an ``IOBinding`` bound to the caller's memory by pointer:

- numpy float32 C-contiguous inputs (and CPU torch tensors, which share memory with numpy) are bound
  in place: ONNX Runtime reads the caller's buffer when the graph runs, not a copy made at binding
  time. :meth:`OrtRunner.bind` exposes the two steps, so a caller (or a test) can see it.
- The output is written straight into a caller-provided ``out`` array (or into one array the runner
  allocates), never copied out of ONNX Runtime's own memory.
- Inputs of another float dtype are converted once (a copy) to what the graph takes.

The CUDA path (``device="cuda"``, needs ``onnxruntime-gpu``) binds torch CUDA tensors and
``__cuda_array_interface__`` arrays by device pointer the same way. ONNX Runtime runs on the runner's
own non-blocking stream (the CUDA and TensorRT providers' ``user_compute_stream`` option), ordered
against the caller's stream with events (:mod:`lso.runtime.streams`) instead of a device-wide
synchronize. It cannot be installed on the machines this was written on and is **unverified**; it is
kept small on purpose.

ONNX Runtime's TensorRT execution provider is an option (``tensorrt=True`` or ``providers="tensorrt"``,
needs ``onnxruntime-gpu`` built with it, TensorRT and a GPU; **unverified** here): the provider options
come from :func:`tensorrt_provider_options` (the I/O spec's profile, an engine cache folder, FP16 left to
the graph). A CPU-tuned graph is refused for it, as ``lso build`` refuses it.

Both graph forms run: the 2-input graph (``hr_msi``, ``lr_hsi``) and the tileable 3-input graph
that also takes ``extent`` (``export_onnx(..., tileable=True)``); the latter gets
``(0, 0, H, W)`` when no extent is given.
"""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lso.artifacts import read_sidecar
from lso.config import LSOConfig
from lso.deps import is_tensor, require
from lso.errors import ArtifactError, InputError, MissingDependencyError
from lso.io_spec import EXTENT, HR_HSI, HR_MSI, INPUT_NAMES, LR_HSI, TensorSpec
from lso.runtime.base import Runner, RunnerStateError
from lso.runtime.validation import (
    FuseInputs,
    as_device,
    check_device_values,
    host_array,
    restore_output,
    settle_on_current_stream,
)

if TYPE_CHECKING:
    from lso.runtime.streams import RunnerStream

__all__ = ["OrtRunner", "OrtBinding", "ort_session", "apply_memory_arena", "tensorrt_provider_options",
           "TENSORRT_PROVIDER", "OPTIMIZATION_LEVELS"]

log = logging.getLogger(__name__)

_ORT_TYPES: dict[str, type[np.generic]] = {"tensor(float)": np.float32, "tensor(float16)": np.float16,
                                           "tensor(double)": np.float64, "tensor(int64)": np.int64,
                                           "tensor(int32)": np.int32}


TENSORRT_PROVIDER = "TensorrtExecutionProvider"


def _ort_shapes(shapes: dict) -> str:
    """``{"hr_msi": (1, 3, 32, 32), ...}`` -> ``"hr_msi:1x3x32x32,..."`` (the TensorRT provider's profile format)."""
    return ",".join(f"{name}:{'x'.join(str(int(d)) for d in shape)}" for name, shape in shapes.items())


def tensorrt_provider_options(profile: Any = None, *, device_id: int = 0,
                              engine_cache: str | os.PathLike | None = None,
                              timing_cache: str | os.PathLike | None = None,
                              workspace_bytes: int | None = None, config: LSOConfig | None = None,
                              inputs: Any | None = None) -> dict[str, Any]:
    """Provider options of ONNX Runtime's ``TensorrtExecutionProvider`` for an LSO graph (a pure function).

    Args:
        profile: the :class:`~lso.io_spec.ShapeProfile` to build for (default:
            :func:`lso.io_spec.default_profile` of ``config``); written as explicit
            ``trt_profile_min_shapes``/``opt``/``max`` (``name:DxDxDxD,...``), so the engine is built once for
            the whole range instead of again for each new shape.
        device_id: the CUDA device.
        engine_cache: folder for built engines (``trt_engine_cache_enable`` + ``trt_engine_cache_path``; the
            folder is created). Engines there are tied to the graph, ONNX Runtime, TensorRT and GPU versions:
            empty it when any of them changes.
        timing_cache: folder for TensorRT's timing cache (``trt_timing_cache_enable`` + ``_path``).
        workspace_bytes: ``trt_max_workspace_size`` (default: ONNX Runtime's).
        config: the model configuration the default profile is made for.
        inputs: the graph's input names; profile entries for other names are left out (default: all).

    Precision is the graph's: ``trt_fp16_enable`` and ``trt_int8_enable`` stay off, so TensorRT is not allowed
    to lower FP32 layers (the FP32 islands of an FP16 graph) on its own; FP16 and Q/DQ layers of the graph
    run as the graph types them (strongly typed on TensorRT 11; on TensorRT 10 this depends on the ONNX
    Runtime build, which documents no strongly typed switch: unverified).
    """
    from lso import io_spec

    prof = profile if profile is not None else io_spec.default_profile(config)
    keep = set(inputs) if inputs is not None else None
    options: dict[str, Any] = {"device_id": int(device_id), "trt_fp16_enable": False, "trt_int8_enable": False}
    for key in ("min", "opt", "max"):
        shapes = {n: s for n, s in getattr(prof, key).items() if keep is None or n in keep}
        options[f"trt_profile_{key}_shapes"] = _ort_shapes(shapes)
    if engine_cache is not None:
        options.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(engine_cache))
    if timing_cache is not None:
        options.update(trt_timing_cache_enable=True, trt_timing_cache_path=str(timing_cache))
    if workspace_bytes is not None:
        options["trt_max_workspace_size"] = int(workspace_bytes)
    return options


_ARENA_MODES = ("shared", "session", "off")
_SHARED_ARENA_INITIAL_BYTES = 2**31 - 1  # ORT's OrtArenaCfg takes a C int: 2 GiB - 1 is the largest
_shared_arena_lock = threading.Lock()
_shared_arena: dict[str, bool] = {}


def _arena_mode(value: str | bool) -> str:
    """``memory_arena`` as one of ``"shared"``, ``"session"``, ``"off"`` (``True``/``False``: session/off)."""
    if value is True or value is False:
        return "session" if value else "off"
    if value not in _ARENA_MODES:
        raise InputError(f"memory_arena must be one of {list(_ARENA_MODES)} (or True/False), not {value!r}")
    return str(value)


def _strict_overcommit() -> bool:
    try:
        return Path("/proc/sys/vm/overcommit_memory").read_text().strip() == "2"
    except OSError:
        return False


def _shared_cpu_arena(ort: Any) -> bool:
    """Register the process-wide CPU arena with ONNX Runtime once; True when sessions can use it.

    A registration that fails (an old onnxruntime, or another library registered its own CPU
    allocator first) is logged once and sessions fall back to their own arena. So do machines in
    strict overcommit mode (``vm.overcommit_memory = 2``), where reserving 2 GiB counts against the
    commit limit whether or not it is touched.
    """
    with _shared_arena_lock:
        if "ok" not in _shared_arena:
            if _strict_overcommit():
                log.info("vm.overcommit_memory = 2: not reserving a shared ONNX Runtime arena; sessions use their own")
                _shared_arena["ok"] = False
                return False
            try:
                info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
                config = ort.OrtArenaCfg({"arena_extend_strategy": 0,  # kNextPowerOfTwo
                                          "initial_chunk_size_bytes": _SHARED_ARENA_INITIAL_BYTES})
                ort.create_and_register_allocator(info, config)
                _shared_arena["ok"] = True
            except Exception as exc:  # ORT raises its own types (Fail, InvalidArgument) or AttributeError
                log.warning("ONNX Runtime's shared CPU arena is unavailable (%s: %s); sessions use their own",
                            type(exc).__name__, exc)
                _shared_arena["ok"] = False
        return _shared_arena["ok"]


def apply_memory_arena(options: Any, mode: str | bool = "shared") -> Any:
    """Set a CPU ``onnxruntime.SessionOptions`` to use ``mode``'s arena (see :class:`OrtRunner`); returns it."""
    mode = _arena_mode(mode)
    options.enable_cpu_mem_arena = mode != "off"
    if mode == "shared" and _shared_cpu_arena(require("onnxruntime")):
        options.add_session_config_entry("session.use_env_allocators", "1")
    return options


OPTIMIZATION_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
                       "all": "ORT_ENABLE_ALL"}
"""``optimization=`` of :func:`ort_session` -> ONNX Runtime's ``GraphOptimizationLevel`` member."""


def ort_session(model: Any, *, providers: Any = None, threads: int | None = None, inter_op_threads: int | None = None,
                memory_arena: str | bool | None = None, memory_pattern: bool | None = None,
                optimization: str | None = None, profile_prefix: str | os.PathLike | None = None,
                log_severity: int | None = None, session_options: Any = None) -> Any:
    """An ``onnxruntime.InferenceSession``: the one place this package makes one (runner, export parity check,
    calibration, profiling).

    Every argument left at None keeps ONNX Runtime's own default, so each caller states only what it sets.

    Args:
        model: a path, the serialized bytes, or an ``onnx.ModelProto``.
        providers: ONNX Runtime's providers list (default: ``["CPUExecutionProvider"]``).
        threads: intra-op threads (``intra_op_num_threads``).
        inter_op_threads: inter-op threads.
        memory_arena: ``"shared"``, ``"session"`` or ``"off"`` (see :class:`OrtRunner`; CPU sessions only).
        memory_pattern: ONNX Runtime's memory pattern (``enable_mem_pattern``): after the first run at a shape,
            one planned block holds all of that shape's intermediate tensors. :class:`OrtRunner` turns it off on
            CPU (see there: in an arena that never shrinks, the planned block lands on fresh pages).
        optimization: graph optimisation level, a key of :data:`OPTIMIZATION_LEVELS` (``"disable"``, ``"basic"``,
            ``"extended"``, ``"all"``).
        profile_prefix: turn ONNX Runtime's profiler on, writing ``<prefix>_<date>.json`` (``end_profiling()``).
        log_severity: ``log_severity_level`` (3: errors only).
        session_options: an ``onnxruntime.SessionOptions`` to start from (the settings above are applied to it).

    Raises:
        InputError: an unknown ``optimization`` or ``memory_arena``.
        MissingDependencyError: onnxruntime is not installed.
    """
    ort = require("onnxruntime")
    options = session_options if session_options is not None else ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = int(threads)
    if inter_op_threads is not None:
        options.inter_op_num_threads = int(inter_op_threads)
    if memory_arena is not None:
        apply_memory_arena(options, memory_arena)
    if memory_pattern is not None:
        options.enable_mem_pattern = bool(memory_pattern)
    if optimization is not None:
        if optimization not in OPTIMIZATION_LEVELS:
            raise InputError(f"optimization must be one of {list(OPTIMIZATION_LEVELS)}, not {optimization!r}")
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPTIMIZATION_LEVELS[optimization])
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = os.fspath(profile_prefix)
    if log_severity is not None:
        options.log_severity_level = int(log_severity)
    if hasattr(model, "SerializeToString"):
        model = model.SerializeToString()
    elif not isinstance(model, bytes):
        model = os.fspath(model)
    return ort.InferenceSession(model, sess_options=options,
                                providers=list(providers) if providers is not None else ["CPUExecutionProvider"])


def _graph_input_names(path: Path) -> list[str] | None:
    """The graph's input names (None if onnx is not installed: then the profile's names are all written)."""
    from lso.deps import available

    if not available("onnx"):
        return None
    onnx = require("onnx")
    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits]


class OrtBinding:
    """Inputs and output bound in place; :meth:`run` executes the graph on whatever the bound buffers
    hold at that moment and returns the output (the caller's ``out`` if one was given).

    Made by :meth:`OrtRunner.bind`; valid while the runner is active. Reusable: call :meth:`run`
    again after writing new values into the same input arrays. One binding belongs to one thread (an
    ONNX Runtime ``IOBinding`` is not thread-safe); other threads make their own with :meth:`OrtRunner.bind`.
    """

    def __init__(self, runner: OrtRunner, binding: Any, keep: list, result: Any, inputs: FuseInputs,
                 out: Any, sync_cuda: bool) -> None:
        self._runner = runner
        self._binding = binding
        self._keep = keep  # the bound buffers must outlive the binding
        self._result = result
        self._inputs = inputs
        self._out = out
        self._sync_cuda = sync_cuda

    def run(self) -> Any:
        """Run the graph; returns ``hr_hsi`` in the caller's terms (see :meth:`Runner.fuse`)."""
        return restore_output(self._execute(), self._inputs, self._out)

    def _execute(self) -> Any:
        """Run; the 4-D float32 result (the bound output buffer itself when it is float32)."""
        with self._runner._call():  # keeps the session alive for this call (deactivate waits for it)
            return self._execute_active()

    def _execute_active(self) -> Any:
        rs = self._runner._rs
        if self._sync_cuda and rs is not None:
            self._run_on_stream(rs)
        else:
            if self._sync_cuda:  # the caller's own providers: ORT's stream is unknown, so the whole device
                import torch

                torch.cuda.synchronize(self._inputs.device)
            self._runner._session.run_with_iobinding(self._binding)
        result = self._result
        if isinstance(result, np.ndarray) and result.dtype != np.float32:
            result = result.astype(np.float32)
        elif is_tensor(result) and str(result.dtype) != "torch.float32":
            result = result.float()
        return result

    def _run_on_stream(self, rs: RunnerStream) -> None:
        """Run on the runner's stream: after the caller's (and producers') streams, before the caller's next work."""
        inputs = self._inputs
        with rs.ops.device(inputs.device):
            caller = rs.caller(None, inputs.template)
            rs.begin(caller, inputs.producer_streams)
            if inputs.values_pending:
                with rs.use():
                    self._runner.last_value_check = check_device_values(
                        ((HR_MSI, inputs.hr_msi), (LR_HSI, inputs.lr_hsi)), ops=rs.ops, stream=rs.stream)
            self._runner._session.run_with_iobinding(self._binding)  # on rs: the providers' user_compute_stream
            rs.end(caller)


class OrtRunner(Runner):
    """Runs an ONNX graph with ONNX Runtime.

    Args:
        path: the ``.onnx`` file (its ``.json`` sidecar, when present, is checked: sha256, config).
        device: ``"cpu"`` (default) or ``"cuda"``/``"cuda:N"`` (needs ``onnxruntime-gpu``; unverified).
        threads: intra-op threads (default: ONNX Runtime's choice, one per physical core).
        inter_op_threads: inter-op threads (default: ONNX Runtime's choice).
        providers: explicit ONNX Runtime providers list, overriding ``device``; or ``"tensorrt"`` (same as
            ``tensorrt=True``).
        tensorrt: run with ONNX Runtime's TensorRT execution provider (then CUDA, then CPU for what TensorRT
            does not take) on ``device`` (a CUDA device; ``"cpu"`` means ``cuda:0`` here). Needs a GPU and an
            ``onnxruntime-gpu`` whose ``get_available_providers()`` lists it, else a clear error at activation.
        trt_profile: the :class:`~lso.io_spec.ShapeProfile` the provider builds for (default: the I/O spec's
            default profile for the graph's configuration); checked against TensorRT's tensor size limit.
        trt_engine_cache: engine cache folder of the provider (default: none; every session builds anew).
        session_options: an ``onnxruntime.SessionOptions`` to start from.
        verify: check the artifact's sha256 against its sidecar.
        config: the model's architecture, if the sidecar does not record it (tiling uses it).
        memory_arena: where the CPU graph's intermediate tensors come from (ignored when
            ``session_options`` is given):

            - ``"shared"`` (default): one process-wide ONNX Runtime arena that every ``OrtRunner`` of
              the process uses, reserved as one 2 GiB region (ORT's largest initial chunk) that grows
              by powers of two. Reserving costs nothing: only the pages a run touches are resident,
              and the best-fit allocator reuses the same low pages run after run. With no arena every
              large tensor is a fresh ``mmap`` whose pages fault in and are zeroed on each run; on the
              paper model at 512² x4 (2 cores) that was ~0.45 s of a 4.9 s run. The arena never
              shrinks: the process keeps its high-water mark.
            - ``"session"`` (or ``True``): ONNX Runtime's default per-session arena (grows in
              power-of-two chunks from 1 MiB).
            - ``"off"`` (or ``False``): plain ``malloc``/``free`` per tensor: the slowest.

            On CPU the runner also turns ONNX Runtime's memory pattern off (``enable_mem_pattern``; ORT's
            default is on). With it, the first run at a shape allocates tensor by tensor, and every later run
            takes one planned block for all of that shape's intermediates; in an arena that never shrinks
            that block lands on pages the first run did not touch, so the peak after the second run is about
            the first run's plus the block. Paper model, ``cpu`` graph, 2 threads, AMD EPYC
            (``benchmarks/results/memory_profile.md``, a fresh process each): 1024² x4 peaked at 3.7 GB after
            the first run and 6.5 GB after the second with the pattern, 3.8 GB without it; at 512² both are
            1.08 GB (the block fits the pages already touched). Without the pattern every run allocates
            tensor by tensor from the arena, which reuses the same chunks.
            A caller's own ``session_options`` are used as given.

    Threads: :meth:`fuse` is safe to call from many threads at once (:attr:`concurrent` is True): the
    ``InferenceSession`` is thread-safe and every call makes its own ``IOBinding`` and output buffer;
    nothing mutable is shared between calls. Each call uses ONNX Runtime's intra-op pool, so threads
    add throughput only while the pool has idle cores. An :class:`OrtBinding` must stay on one thread.
    """

    backend = "onnxruntime"
    concurrent = True

    def __init__(self, path: str | os.PathLike, *, device: Any = "cpu", threads: int | None = None,
                 inter_op_threads: int | None = None, providers: list | None = None,
                 session_options: Any = None, verify: bool = True, config: LSOConfig | None = None,
                 memory_arena: str | bool = "shared", tensorrt: bool = False, trt_profile: Any = None,
                 trt_engine_cache: str | os.PathLike | None = None) -> None:
        super().__init__()
        self._path = Path(path)
        if isinstance(providers, str):
            if providers.lower() not in ("tensorrt", TENSORRT_PROVIDER.lower()):
                raise InputError(f"providers={providers!r}: give a list of ONNX Runtime providers or 'tensorrt'")
            tensorrt, providers = True, None
        self._tensorrt = bool(tensorrt)
        self._trt_profile = trt_profile
        self._trt_engine_cache = Path(trt_engine_cache) if trt_engine_cache is not None else None
        if self._tensorrt and as_device(device).type == "cpu":
            device = "cuda"
        self._device = as_device(device)  # the CPU needs no torch
        self._threads = threads
        self._inter_op_threads = inter_op_threads
        self._providers = providers
        self._session_options = session_options
        self._verify = verify
        self._config = config
        self._memory_arena = _arena_mode(memory_arena)
        self._session: Any = None  # an onnxruntime.InferenceSession while active
        self._specs: tuple[TensorSpec, ...] = ()
        self._types: dict[str, type[np.generic] | None] = {}
        self._out_type: type = np.float32
        self._rs: RunnerStream | None = None

    # ----------------------------------------------------------------------------- lifecycle
    def _tensorrt_providers(self, ort: Any) -> list:
        """The TensorRT provider (then CUDA, CPU), gated: a GPU, the provider in this onnxruntime, a graph for it."""
        from lso.export.variants import require_tensorrt_graph
        from lso.runtime.cuda_arrays import require_cuda

        dev = require_cuda(self._device)  # DeviceUnavailableError without a GPU, before ONNX Runtime touches TensorRT
        available = ort.get_available_providers()
        if TENSORRT_PROVIDER not in available:
            raise MissingDependencyError(
                f"tensorrt=True needs ONNX Runtime's TensorRT execution provider, which this onnxruntime "
                f"{ort.__version__} does not have (available: {available}); install onnxruntime-gpu (instead of "
                f"onnxruntime) and TensorRT for its CUDA version, or run without tensorrt=True")
        require_tensorrt_graph(self._path, consumer="OrtRunner(tensorrt=True)")
        from lso import io_spec
        from lso.export.tensor_limits import check_profiles

        profile = self._trt_profile if self._trt_profile is not None else io_spec.default_profile(self._config)
        check_profiles(self._path, [profile])  # a profile past TensorRT's tensor limit: InputError, nothing built
        if self._trt_engine_cache is not None:
            self._trt_engine_cache.mkdir(parents=True, exist_ok=True)
        options = tensorrt_provider_options(profile, device_id=dev.index or 0, engine_cache=self._trt_engine_cache,
                                            inputs=_graph_input_names(self._path))
        return [(TENSORRT_PROVIDER, options), ("CUDAExecutionProvider", {"device_id": dev.index or 0}),
                "CPUExecutionProvider"]

    def _resolve_providers(self, ort: Any) -> list:
        if self._tensorrt:
            return self._tensorrt_providers(ort)
        if self._providers is not None:
            return list(self._providers)
        if self._device.type == "cpu":
            return ["CPUExecutionProvider"]
        if self._device.type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise MissingDependencyError(
                    f"device={self._device} needs ONNX Runtime's CUDA provider, which this onnxruntime does not have "
                    f"(available: {ort.get_available_providers()}); pip install onnxruntime-gpu (instead of "
                    f"onnxruntime), or use device='cpu'")
            return [("CUDAExecutionProvider", {"device_id": self._device.index or 0}), "CPUExecutionProvider"]
        raise InputError(f"OrtRunner runs on 'cpu' or 'cuda', not {self._device}")

    def _activate(self) -> None:
        ort = require("onnxruntime")
        if not self._path.is_file():
            raise ArtifactError(f"{self._path} does not exist (or is not a file)")
        sidecar = read_sidecar(self._path, verify=self._verify)
        if self._config is None and sidecar and isinstance(sidecar.get("config"), dict):
            self._config = LSOConfig.from_dict(sidecar["config"])
        arena = self._memory_arena if self._session_options is None and self._device.type == "cpu" else None
        providers = self._on_own_stream(self._resolve_providers(ort))
        try:
            session = ort_session(self._path, providers=providers, threads=self._threads,
                                  inter_op_threads=self._inter_op_threads, memory_arena=arena,
                                  memory_pattern=False if arena is not None else None,
                                  session_options=self._session_options)
        except Exception as exc:  # ORT raises its own Fail/InvalidProtobuf/InvalidGraph types
            raise ArtifactError(f"ONNX Runtime cannot load {self._path}: {exc}; re-export it "
                                f"(lso export / lso.export.export_onnx)") from exc
        specs: list[TensorSpec] = []
        types: dict[str, type[np.generic] | None] = {}
        try:
            for arg in session.get_inputs():
                specs.append(TensorSpec(arg.name, str(np.dtype(_ORT_TYPES.get(arg.type, np.float32))),
                                        tuple(arg.shape)))
                types[arg.name] = _ORT_TYPES.get(arg.type)
            outputs = session.get_outputs()
            out_names = [o.name for o in outputs]
        except (UnicodeDecodeError, RuntimeError, ValueError) as exc:  # names that are not UTF-8, broken metadata
            raise ArtifactError(f"{self._path}: the graph's inputs/outputs cannot be read ({type(exc).__name__}: "
                                f"{exc}); the file is corrupt: re-export it") from exc
        names = [s.name for s in specs]
        unknown = [n for n in names if n not in (*INPUT_NAMES, EXTENT)]
        if any(n not in names for n in INPUT_NAMES) or unknown:
            raise ArtifactError(f"{self._path.name} takes inputs {names}; an LSO graph takes {list(INPUT_NAMES)} "
                                f"(and optionally '{EXTENT}'): is this an LSO model exported by lso export?")
        if len(outputs) != 1:
            raise ArtifactError(f"{self._path.name} has {len(outputs)} outputs; an LSO graph has one ({HR_HSI})")
        self._out_name = out_names[0]
        self._out_type = _ORT_TYPES.get(outputs[0].type, np.float32)
        self._session, self._specs, self._types = session, tuple(specs), types
        self._cuda = bool({"CUDAExecutionProvider", TENSORRT_PROVIDER} & set(session.get_providers()))
        if not self._cuda:
            self._rs = None
        self.orders_streams = self._rs is not None
        self._weights_sha256 = self._recorded_fingerprint(session, sidecar)
        log.info("ONNX Runtime %s: %s on %s", ort.__version__, self._path.name, session.get_providers())

    def _recorded_fingerprint(self, session: Any, sidecar: dict | None) -> str | None:
        """The weights' fingerprint the graph's metadata (else its sidecar) records; None if neither does."""
        from lso.artifacts import WEIGHTS_FINGERPRINT_KEY, recorded_fingerprint

        try:
            props = dict(session.get_modelmeta().custom_metadata_map or {})
        except (RuntimeError, UnicodeDecodeError, ValueError):
            props = {}
        return recorded_fingerprint(self._path, props.get("lso." + WEIGHTS_FINGERPRINT_KEY), sidecar)

    def _on_own_stream(self, providers: list) -> list:
        """Our CUDA/TensorRT providers run on the runner's own stream (``user_compute_stream``, ORT >= 1.17).

        Providers the caller passed are left as given (their stream is unknown: runs then synchronize the device).
        """
        self._rs = None
        if self._providers is not None:
            return providers
        out = []
        for provider in providers:
            if isinstance(provider, tuple) and provider[0] in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
                if self._rs is None:
                    from lso.runtime.cuda_arrays import require_cuda
                    from lso.runtime.streams import RunnerStream

                    self._rs = RunnerStream(require_cuda(self._device))
                provider = (provider[0], {**provider[1], "user_compute_stream": str(self._rs.handle)})
            out.append(provider)
        return out

    def _deactivate(self) -> None:
        if self._rs is not None:
            self._rs.synchronize()
        self._rs = None
        self.orders_streams = False
        self._session = None

    # ----------------------------------------------------------------------------- description
    @property
    def input_specs(self) -> tuple[TensorSpec, ...]:
        if not self._specs:
            raise RunnerStateError(f"{self!r}: the graph's inputs are known once the runner is active")
        return self._specs

    @property
    def session(self) -> Any:
        """The ``onnxruntime.InferenceSession`` (only while active)."""
        self._require_active()
        return self._session

    def _describe(self) -> str:
        return f"{self._path.name}, device={self._device}"

    # ----------------------------------------------------------------------------- running
    def bind(self, hr_msi: Any, lr_hsi: Any, *, extent: Any = None, out: Any = None,
             check_finite: bool = True) -> OrtBinding:
        """Validate and bind inputs/output in place; :meth:`OrtBinding.run` runs the graph.

        Arguments as :meth:`Runner.fuse`. numpy float32 C-contiguous inputs are bound by pointer: values
        written into them after binding and before :meth:`OrtBinding.run` are what the graph reads.
        """
        inputs, ext, out4 = self._prepare(hr_msi, lr_hsi, extent, out, check_finite)
        if not self.orders_streams:  # fuse() does this itself
            self.last_value_check = settle_on_current_stream(inputs)
        return self._bind(inputs, ext, out4, out)

    def _fuse(self, inputs: FuseInputs, extent: tuple[int, int, int, int] | None, out: Any, **options: Any) -> Any:
        if options:
            raise TypeError(f"OrtRunner.fuse got unexpected options {sorted(options)}")
        # the binding writes into `out` itself; restore_output in Runner.fuse then finds it already there
        return self._bind(inputs, extent, out, None)._execute()

    def _bind(self, inputs: FuseInputs, extent: tuple[int, int, int, int] | None, out4: Any,
              out_arg: Any) -> OrtBinding:
        binding = self._session.io_binding()
        keep: list = []
        on_device = inputs.is_cuda and self._cuda
        for name, tensor in ((HR_MSI, inputs.hr_msi), (LR_HSI, inputs.lr_hsi)):
            keep.append(self._bind_input(binding, name, tensor, self._types[name] or np.float32))
        if EXTENT in self._types:
            _, _, height, width = inputs.output_shape
            ext = np.asarray(extent if extent is not None else (0, 0, height, width), dtype=np.int64)
            keep.append(self._bind_input(binding, EXTENT, ext, np.int64))
        result = self._bind_output(binding, inputs, out4, on_device)
        keep.append(result)
        return OrtBinding(self, binding, keep, result, inputs, out_arg, sync_cuda=on_device)

    def _bind_input(self, binding: Any, name: str, tensor: Any, np_type: type) -> Any:
        if is_tensor(tensor) and tensor.is_cuda and self._cuda:  # unverified path (onnxruntime-gpu)
            dev_t = tensor.detach().to(_torch_dtype(np_type)).contiguous()
            binding.bind_input(name, "cuda", dev_t.device.index or 0, np_type, tuple(dev_t.shape), dev_t.data_ptr())
            return dev_t
        arr = host_array(tensor, np_type)  # no copy for a C-contiguous array (or CPU tensor) of np_type
        binding.bind_input(name, "cpu", 0, np_type, arr.shape, arr.ctypes.data)
        return arr

    def _bind_output(self, binding: Any, inputs: FuseInputs, out4: Any, on_device: bool) -> Any:
        shape = inputs.output_shape
        if out4 is not None and self._out_type == np.float32:
            if isinstance(out4, np.ndarray):
                binding.bind_output(self._out_name, "cpu", 0, np.float32, shape, out4.ctypes.data)
                return out4
            if not out4.is_cuda:
                binding.bind_output(self._out_name, "cpu", 0, np.float32, shape, out4.data_ptr())
                return out4
            if self._cuda:
                binding.bind_output(self._out_name, "cuda", out4.device.index or 0, np.float32, shape, out4.data_ptr())
                return out4
        if on_device:
            import torch

            buf = torch.empty(shape, dtype=_torch_dtype(self._out_type), device=inputs.device)
            binding.bind_output(self._out_name, "cuda", buf.device.index or 0, self._out_type, shape, buf.data_ptr())
            return buf
        arr: np.ndarray = np.empty(shape, dtype=self._out_type)
        binding.bind_output(self._out_name, "cpu", 0, self._out_type, shape, arr.ctypes.data)
        return arr


def _torch_dtype(np_type: type) -> Any:
    import torch

    return torch.from_numpy(np.empty(0, dtype=np_type)).dtype
