"""The Runner protocol and :func:`load`, which picks the runner from the artifact.

A runner has a lifecycle (after Polygraphy's ``activate``/``deactivate``)::

    runner = load("model.onnx")          # cheap: nothing is read yet
    with runner:                         # __enter__ acquires the session / engine
        hr_hsi = runner.fuse(hr_msi, lr_hsi)
                                         # __exit__ releases it

``fuse`` checks its inputs at the boundary (:mod:`lso.runtime.validation`), accepts numpy arrays,
torch tensors and device arrays, and gives the result back in the caller's terms: numpy in, numpy
out; device tensors stay on the device. One backend per module: ``torch_runner``, ``ort_runner``,
``trt_runner``; this module only knows their names, in the backend registry (:data:`BACKENDS`,
:func:`register_backend`): which module and class run which artifact suffixes, and which options each takes.
:func:`load` is the one way to make a runner from an artifact or a model; callers never test for a runner
class (the options rule of :func:`backend_options` decides what each backend gets).
"""
from __future__ import annotations

import abc
import contextlib
import importlib
import logging
import os
import re
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeAlias

from lso.artifacts import CHECKPOINT_SUFFIXES
from lso.config import LSOConfig
from lso.errors import ArtifactError, DeviceUnavailableError, InputError, LSOError
from lso.io_spec import EXTENT, HR_MSI, LR_HSI, ShapeProfile, TensorSpec, tensor_specs
from lso.runtime.validation import (
    FuseInputs,
    check_out,
    normalize_extent,
    restore_output,
    settle_on_current_stream,
    validate_inputs,
)

if TYPE_CHECKING:
    from typing_extensions import TypeIs

    from lso.model import LSO


def is_lso_module(obj: Any) -> TypeIs[LSO]:
    """An :class:`~lso.model.LSO` instance, checked without importing torch (none exists if lso.model is not loaded)."""
    model = sys.modules.get("lso.model")
    return model is not None and isinstance(obj, model.LSO)


__all__ = ["Runner", "load", "Backend", "BACKENDS", "register_backend", "backend_of", "backend_for",
           "backend_options", "RunnerStateError", "DeviceUnavailableError", "TORCH_SUFFIXES", "ONNX_SUFFIXES",
           "TRT_SUFFIXES", "COMMON_OPTIONS", "OPTION_FLAGS", "parse_runner_option", "check_runner_options",
           "is_lso_module"]

log = logging.getLogger(__name__)

PathLike: TypeAlias = str | os.PathLike


class RunnerStateError(LSOError, RuntimeError):
    """A runner was used outside its ``with`` block (or before :meth:`Runner.activate`)."""


class Runner(abc.ABC):
    """One backend behind one protocol: construct cheaply, acquire on ``__enter__``, ``fuse``, release.

    Subclasses implement ``_activate``, ``_deactivate``, ``input_specs`` and ``_fuse``; validation,
    batch-axis handling, ``extent`` and ``out`` checks and the output's type live here.

    Threads: :meth:`fuse` may be called from any number of threads on one active runner. Runners whose
    backend is safe to call concurrently set :attr:`concurrent` (ONNX Runtime: one ``IOBinding`` per
    call on one thread-safe session; PyTorch eager); the others (TensorRT: one execution context and
    reused output buffers; compiled PyTorch) run one call at a time behind a lock. :meth:`deactivate`
    waits for calls in flight and refuses new ones, so a runner is never released under a running call.
    """

    backend: ClassVar[str] = ""

    #: Memory budget checked before each :meth:`fuse` (bytes or a size string such as ``"4G"``); None =
    #: :func:`lso.memory.default_memory_budget` on the CPU, no check on a GPU (an engine's profile bounds it).
    memory_budget: Any = None

    #: True if :meth:`fuse` may run on several threads at once on one active runner; False if the runner
    #: serialises calls itself (one at a time, behind its lock). Either way calling it from many threads is safe.
    concurrent: bool = False

    #: True for runners that order themselves against the caller's CUDA stream (:mod:`lso.runtime.streams`):
    #: they wait for the inputs' producer streams and check device values on their own stream. Other runners
    #: run on torch's current stream, where :meth:`fuse` does both (:func:`settle_on_current_stream`).
    orders_streams: bool = False

    #: The value check of the last call's device inputs (:class:`~lso.runtime.validation.DeviceValueCheck`;
    #: ``last_value_check.result()`` raises for NaN/Inf), or None when that call had none to check.
    last_value_check: Any = None

    def __init__(self) -> None:
        self._active = False
        # lifecycle vs calls: deactivate waits until no fuse() is in flight; fuse() refuses a closing runner
        self._state = threading.Condition(threading.RLock())
        self._inflight = 0
        self._closing = False
        self._call_lock = threading.RLock()  # held around each call by runners with concurrent = False
        self._weights_sha256: str | None = None  # set by subclasses once known (see weights_fingerprint)
        self._config: LSOConfig | None = None  # set by subclasses once known (see config)

    # ----------------------------------------------------------------------------- lifecycle
    def __enter__(self) -> Runner:
        return self.activate()

    def __exit__(self, exc_type, exc, tb) -> None:
        self.deactivate()

    def activate(self) -> Runner:
        """Acquire the session/engine (idempotent, thread-safe). Returns ``self``."""
        with self._state:
            if not self._active:
                self._activate()
                self._active = True
                log.debug("activated %r", self)
        return self

    def deactivate(self) -> None:
        """Release the session/engine (idempotent); waits for :meth:`fuse` calls in flight to finish."""
        with self._state:
            if self._active:
                self._closing = True  # new calls are refused from here on
                try:
                    self._state.wait_for(lambda: self._inflight == 0)
                    self._deactivate()
                finally:
                    self._active = self._closing = False
                    log.debug("deactivated %r", self)

    @contextlib.contextmanager
    def _call(self) -> Iterator[None]:
        """Keep the runner active for one call; unless :attr:`concurrent`, one call at a time."""
        with self._state:
            if self._closing:
                raise RunnerStateError(f"{type(self).__name__} is being released (deactivate() was called)")
            self._require_active()
            self._inflight += 1
        try:
            if self.concurrent:
                yield
            else:
                with self._call_lock:
                    yield
        finally:
            with self._state:
                self._inflight -= 1
                self._state.notify_all()

    @property
    def is_active(self) -> bool:
        return self._active

    def _require_active(self) -> None:
        if not self._active:
            raise RunnerStateError(f"{type(self).__name__} is not active: use it inside `with runner:` (or call "
                                   f"runner.activate() first)")

    @abc.abstractmethod
    def _activate(self) -> None:
        """Acquire the backend's resources."""

    @abc.abstractmethod
    def _deactivate(self) -> None:
        """Release them."""

    # ----------------------------------------------------------------------------- description
    @property
    def config(self) -> LSOConfig | None:
        """The model's architecture where known (tiling reads the patch size and encoder depth from it)."""
        return self._config

    @property
    @abc.abstractmethod
    def input_specs(self) -> tuple[TensorSpec, ...]:
        """The inputs this runner takes (names, dtypes, shapes; strings are dynamic dimensions)."""

    @property
    def output_specs(self) -> tuple[TensorSpec, ...]:
        return tuple(tensor_specs(self.config)[1])

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.input_specs)

    @property
    def tileable(self) -> bool:
        """True if the model takes the ``extent`` input (exact tiled fusion, :func:`lso.runtime.fuse_tiled`)."""
        return EXTENT in self.input_names

    @property
    def weights_fingerprint(self) -> str | None:
        """The fingerprint of the weights this runner computes with (:func:`lso.checkpoint.weights_fingerprint`).

        Compare it with ``weights_fingerprint("model.safetensors")`` (or ``lso info --checkpoint X``) to check
        that a graph or plan comes from a given checkpoint. A checkpoint's is known once the runner is active; a
        graph's or plan's is what its metadata or sidecar records (checked against the file's sha256 when it
        has a sidecar); None for an artifact that records none (exported before fingerprints, a plain
        ``trtexec`` plan).
        """
        return self._weights_sha256

    @property
    def profile(self) -> ShapeProfile | None:
        """Shapes the runner accepts (a TensorRT optimization profile), or None for any shape."""
        return None

    def _bands(self, name: str, default: int) -> int:
        for spec in self.input_specs:
            if spec.name == name and len(spec.shape) == 4 and isinstance(spec.shape[1], int):
                return spec.shape[1]
        return default

    @property
    def n_msi_bands(self) -> int:
        return self._bands(HR_MSI, (self.config or LSOConfig()).n_msi_bands)

    @property
    def n_bands(self) -> int:
        return self._bands(LR_HSI, (self.config or LSOConfig()).n_bands)

    # ----------------------------------------------------------------------------- running
    def validate(self, hr_msi: Any, lr_hsi: Any, *, check_finite: bool = True) -> FuseInputs:
        """Check inputs as :meth:`fuse` does (see :mod:`lso.runtime.validation`); returns 4-D views.

        The memory estimate of fusing them in one piece is checked against :attr:`memory_budget` (on the
        CPU always; on a GPU only when a budget is set) before any value is read.
        """
        config, budget = None, self.memory_budget
        if budget is not None or self._memory_device() == "cpu":
            config = self.config or LSOConfig(n_bands=self.n_bands, n_msi_bands=self.n_msi_bands)
        return validate_inputs(hr_msi, lr_hsi, n_msi_bands=self.n_msi_bands, n_bands=self.n_bands,
                               check_finite=check_finite, config=config, memory_budget=budget)

    def _memory_device(self) -> str:
        """``"cpu"`` or ``"cuda"``: where the activations live (decides whether the default budget applies)."""
        device = getattr(self, "_device", None)
        return "cuda" if device is not None and "cuda" in str(device) else "cpu"

    def fuse(self, hr_msi: Any, lr_hsi: Any, *, extent: Any = None, out: Any = None, check_finite: bool = True,
             **options: Any) -> Any:
        """Fuse one batch.

        Args:
            hr_msi: ``[B, C_msi, H, W]`` (or ``[C_msi, H, W]``), float16/32/64, values in [0, 1].
            lr_hsi: ``[B, C_hsi, h, w]`` (or ``[C_hsi, h, w]``) with ``H = r*h``, ``W = r*w``.
            extent: optional ``(row0, col0, H_full, W_full)``: where this input sits in a larger image
                (tiled fusion; needs a tileable model). Default: the input is the whole image.
            out: optional float32 C-contiguous buffer of the output's shape; the result is written into
                it (in place where the backend binds outputs) and ``out`` is returned.
            check_finite: read the inputs' values (NaN/Inf rejected, out-of-range warned about). Device
                inputs are checked on the device without a host synchronisation: call
                ``runner.last_value_check.result()`` to raise (see :mod:`lso.runtime.validation`).
            **options: backend-specific (e.g. ``stream=`` for :class:`TrtRunner`).

        Returns:
            ``hr_hsi`` ``[B, C_hsi, H, W]`` float32, in the caller's terms (numpy in, numpy out; device
            tensors stay on their device); without a batch axis if the inputs had none.
        """
        tile = self._profile_tile(hr_msi, lr_hsi, extent)
        if tile is not None:  # larger than the profile: exact tiled fusion with windows inside it
            from lso.runtime.tiling import fuse_tiled

            return fuse_tiled(self, hr_msi, lr_hsi, tile=tile, out=out, check_finite=check_finite)
        with self._call():
            inputs, ext, out4 = self._prepare(hr_msi, lr_hsi, extent, out, check_finite)
            if not self.orders_streams:
                self.last_value_check = settle_on_current_stream(inputs)
            result = self._fuse(inputs, ext, out4, **options)
            return restore_output(result, inputs, out)

    def _profile_tile(self, hr_msi: Any, lr_hsi: Any, extent: Any) -> int | None:
        """The tile core for a whole scene larger than the profile's max spatial shape, else None.

        Applies to tileable runners with a profile (TensorRT engines built with an ``extent`` input) when
        the batch fits the profile: every window (core + exact overlap, border windows extended inward, see
        :func:`lso.runtime.tiling.plan_tiles`) then fits the profile's max HR and LR shapes. Anything else
        goes on to the profile check, which names the fix.
        """
        profile = self.profile
        if profile is None or extent is not None or not self.tileable or HR_MSI not in profile.max:
            return None
        hr_shape, lr_shape = tuple(getattr(hr_msi, "shape", ())), tuple(getattr(lr_hsi, "shape", ()))
        if len(hr_shape) not in (3, 4) or len(lr_shape) != len(hr_shape):
            return None
        batch = hr_shape[0] if len(hr_shape) == 4 else 1
        hr_max, lr_max = profile.max[HR_MSI], profile.max.get(LR_HSI)
        if batch > hr_max[0] or (hr_shape[-2] <= hr_max[2] and hr_shape[-1] <= hr_max[3]):
            return None
        try:
            ratio = int(hr_shape[-2]) // int(lr_shape[-2])
        except (TypeError, ZeroDivisionError):
            return None
        from lso.runtime.tiling import exact_overlap, tile_alignment

        config = self.config or LSOConfig(n_bands=self.n_bands, n_msi_bands=self.n_msi_bands)
        if ratio < 2:
            return None
        align, overlap = tile_alignment(config, ratio), exact_overlap(config, ratio)
        side = min(hr_max[2], hr_max[3], *((lr_max[2] * ratio, lr_max[3] * ratio) if lr_max else ()))
        core = (side - 2 * overlap - (align - 1)) // align * align  # the last window may be align - 1 px longer
        if core < align:
            return None
        log.info("%sx%s is larger than %s's profile (max %sx%s): exact tiled fusion, cores of %d px in windows of "
                 "at most %d px", hr_shape[-2], hr_shape[-1], type(self).__name__, hr_max[2], hr_max[3], core,
                 core + 2 * overlap + align - 1)
        return core

    def _prepare(self, hr_msi: Any, lr_hsi: Any, extent: Any, out: Any,
                 check_finite: bool) -> tuple[FuseInputs, tuple[int, int, int, int] | None, Any]:
        """Everything :meth:`fuse` does before running: validation, extent, profile and ``out`` checks."""
        self._require_active()
        inputs = self.validate(hr_msi, lr_hsi, check_finite=check_finite)
        ext = normalize_extent(extent, inputs)
        if ext is not None and not self.tileable:
            _, _, height, width = inputs.output_shape
            if ext != (0, 0, height, width):
                raise InputError(f"{self!r} takes no '{EXTENT}' input, so it cannot fuse a tile of a larger image; "
                                 f"re-export the model with tileable=True (export_onnx(..., tileable=True))")
            ext = None
        self._check_profile(inputs)
        out4 = check_out(out, inputs) if out is not None else None
        return inputs, ext, out4

    def _check_profile(self, inputs: FuseInputs) -> None:
        profile = self.profile
        if profile is None:
            return
        for name, tensor in ((HR_MSI, inputs.hr_msi), (LR_HSI, inputs.lr_hsi)):
            shape = tuple(int(s) for s in tensor.shape)
            if name in profile.min and not profile.contains(name, shape):
                raise InputError(f"{name} shape {'x'.join(map(str, shape))} is outside the engine's optimization "
                                 f"profile ({profile.describe(name)}); rebuild the engine with a profile that covers "
                                 f"it, or fuse in tiles that fit (lso.runtime.fuse_tiled(runner, ..., tile=...))")

    @abc.abstractmethod
    def _fuse(self, inputs: FuseInputs, extent: tuple[int, int, int, int] | None, out: Any, **options: Any) -> Any:
        """Run on validated 4-D inputs; return ``[B, C_hsi, H, W]`` (numpy or torch), written into ``out``
        when given and the backend can bind it."""

    @property
    def description(self) -> str:
        """What runs, without the active/inactive state: ``OrtRunner(model.onnx, ..., weights 0123abcd4567)``."""
        weights = f", weights {self._weights_sha256[:12]}" if self._weights_sha256 else ""
        return f"{type(self).__name__}({self._describe()}{weights})"

    def __repr__(self) -> str:
        state = "active" if self._active else "inactive"
        return f"{self.description[:-1]}, {state})"

    def _describe(self) -> str:
        return ""


# ------------------------------------------------------------------------------------------- load
TORCH_SUFFIXES = CHECKPOINT_SUFFIXES  # .pth.tar, .pth, .pt, .tar, .ckpt, .safetensors
ONNX_SUFFIXES = (".onnx",)
TRT_SUFFIXES = (".plan", ".engine", ".trt")

#: Options every backend takes (handled by :func:`load` itself, or by every runner's constructor).
COMMON_OPTIONS = frozenset({"device", "memory_budget"})


@dataclass(frozen=True)
class Backend:
    """One entry of the backend registry: where its runner lives, what it runs, which options it takes.

    Attributes:
        name: the name ``load(..., backend=name)`` takes, and the runner's :attr:`Runner.backend`.
        target: ``"module:Class"`` of the runner; the module is imported only when an artifact of this
            backend is loaded (``import lso.runtime`` imports no backend library).
        suffixes: the artifact file name endings it runs (lower case), checked in registration order.
        options: the keyword options its runner takes besides :data:`COMMON_OPTIONS`.
        hints: those of ``options`` that are tuning hints (``threads``): another backend given one ignores
            it (logged at debug level) instead of refusing it. Every other option a backend does not take is
            an :class:`~lso.errors.InputError` naming the backends that take it.
        gpu_only: its runner needs a CUDA device whatever the options (a machine without one cannot even
            open the artifact: the scale-out driver then checks only that the file exists).
    """

    name: str
    target: str
    suffixes: tuple[str, ...]
    options: frozenset[str] = frozenset()
    hints: frozenset[str] = frozenset()
    gpu_only: bool = False

    def runner_class(self) -> type[Any]:
        """The :class:`Runner` subclass (imports its module); called as ``cls(artifact, **options)``."""
        module, cls = self.target.split(":")
        return getattr(importlib.import_module(module), cls)

    def runs(self, name: str) -> bool:
        """Whether a file named ``name`` (lower case) is this backend's artifact."""
        return name.endswith(self.suffixes)


BACKENDS: dict[str, Backend] = {}
"""The backend registry, name -> :class:`Backend`, in registration order (the order suffixes are tried in)."""


def register_backend(name: str, target: str, *, suffixes: tuple[str, ...], options: Iterable[str] = (),
                     hints: Iterable[str] = (), gpu_only: bool = False) -> Backend:
    """Add a backend to the registry (a second registration of ``name`` replaces the first); returns it.

    A new backend is one runner module (a :class:`Runner` subclass whose ``__init__(artifact, *, device=...,
    **options)`` takes the options listed here) plus one registration line below the three shipped ones,
    e.g. for an OpenVINO runner in ``runtime/openvino_runner.py``::

        register_backend("openvino", "lso.runtime.openvino_runner:OpenVinoRunner", suffixes=(".xml",),
                         options={"threads", "verify"}, hints={"threads"})

    :func:`load`, ``lso infer``, ``lso batch``, ``lso serve`` and the scale-out checks then pick it by suffix
    or by ``backend="openvino"``, and pass it only the options it takes.
    """
    opts, hint_set = frozenset(options), frozenset(hints)
    if not hint_set <= opts:
        raise ValueError(f"backend {name!r}: hints {sorted(hint_set - opts)} are not among its options")
    backend = Backend(name, target, tuple(s.lower() for s in suffixes), opts, hint_set, gpu_only)
    BACKENDS[name] = backend
    return backend


register_backend("torch", "lso.runtime.torch_runner:TorchRunner", suffixes=TORCH_SUFFIXES,
                 options={"compile", "fp16", "tf32", "config"})
register_backend("onnxruntime", "lso.runtime.ort_runner:OrtRunner", suffixes=ONNX_SUFFIXES,
                 options={"threads", "inter_op_threads", "providers", "session_options", "verify", "memory_arena",
                          "tensorrt", "trt_profile", "trt_engine_cache"},
                 hints={"threads", "inter_op_threads"})
register_backend("tensorrt", "lso.runtime.trt_runner:TrtRunner", suffixes=TRT_SUFFIXES,
                 options={"stream", "cuda_graph", "max_graphs", "verify", "allow_host_code", "profile_index"},
                 gpu_only=True)
register_backend("openvino", "lso.runtime.openvino_runner:OpenVinoRunner", suffixes=(".xml",),  # .onnx: backend=
                 options={"threads", "streams", "precision", "shapes", "shape_cache", "verify"}, hints={"threads"})


def backend_named(name: str) -> Backend:
    """The registered backend ``name`` (InputError naming the registered ones otherwise)."""
    try:
        return BACKENDS[name]
    except KeyError:
        raise InputError(f"unknown backend {name!r}: choose one of {sorted(BACKENDS)}") from None


def backend_of(artifact: PathLike | LSO, backend: str | None = None) -> Backend:
    """The backend that runs ``artifact``: ``backend`` when given, else the one whose suffix its name ends with.

    An :class:`~lso.model.LSO` module runs on ``"torch"``; ``@demo`` is a checkpoint. No file is read.

    Raises:
        InputError: ``backend`` is not registered.
        ArtifactError: no registered suffix matches the file name.
    """
    from lso.weights import DEMO_CHECKPOINT, is_demo_name

    if backend is not None:
        entry = backend_named(backend)
        if entry.name == "torch" and not is_lso_module(artifact) and not is_demo_name(artifact):
            # PyTorch loads checkpoints only; other backends may run each other's files (OpenVINO an .onnx)
            owner = next((e for e in BACKENDS.values() if e.runs(Path(artifact).name.lower())), None)
            if owner is not None and owner.name != "torch":
                raise InputError(f"the torch backend runs PyTorch checkpoints ({', '.join(entry.suffixes)}), not "
                                 f"{Path(artifact).name}, a file of the {owner.name} backend: leave the backend out "
                                 f"or name {owner.name}")
        return entry
    if is_lso_module(artifact):
        return BACKENDS["torch"]

    name = DEMO_CHECKPOINT if is_demo_name(artifact) else Path(artifact).name.lower()
    for entry in BACKENDS.values():
        if entry.runs(name):
            return entry
    known = ", ".join(s for entry in BACKENDS.values() for s in entry.suffixes)
    raise ArtifactError(f"cannot tell which runtime runs {Path(artifact).name!r}: expected one of {known} "
                        f"(PyTorch checkpoints, ONNX graphs, TensorRT plans)")


def backend_for(path: PathLike) -> type:
    """The Runner class for an artifact, from its file name (no file is read); ``@demo`` is a checkpoint."""
    return backend_of(path).runner_class()


def backend_options(backend: Backend, options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` as ``backend``'s runner takes them: hints of other backends dropped, anything else refused.

    The one rule of :func:`load`: an option ``backend`` takes (or one of :data:`COMMON_OPTIONS`) is passed on; an
    option that is a hint of another backend (``threads`` for a TensorRT plan) is ignored; any other option is an
    :class:`~lso.errors.InputError` naming the backends that take it.
    """
    taken: dict[str, Any] = {}
    for key, value in options.items():
        if key in backend.options or key in COMMON_OPTIONS:
            taken[key] = value
            continue
        others = sorted(b.name for b in BACKENDS.values() if key in b.options)
        if any(key in BACKENDS[b].hints for b in others):
            log.debug("%s ignores the option %s=%r (a hint for %s)", backend.name, key, value, ", ".join(others))
            continue
        where = f"only {', '.join(others)} take(s) it" if others else "no backend takes it"
        raise InputError(f"the {backend.name} backend takes no option {key!r} ({where}); the options it takes: "
                         f"{', '.join(sorted(backend.options | COMMON_OPTIONS))}")
    return taken


#: The options of :func:`load` that commands set with a flag of their own (key -> that flag): ``--runner-option``
#: refuses them and names the flag instead. A command passes the subset it sets explicitly.
OPTION_FLAGS: Mapping[str, str] = {"device": "--device", "threads": "--threads", "backend": "--backend",
                                   "config": "--config", "memory_budget": "--memory-budget"}

_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)(?:[eE][+-]?[0-9]+)?")
_WORDS = {"true": True, "false": False, "none": None}


def parse_runner_option(text: str, *, own_flags: Mapping[str, str] = OPTION_FLAGS) -> tuple[str, Any]:
    """``(key, value)`` of one ``--runner-option KEY=VALUE``: an option passed to :func:`load` by a command.

    VALUE is converted: ``true``/``false`` -> bool, ``none`` -> None (any case), an integer literal -> int
    (``2``, ``-1``), a decimal literal -> float (``0.5``, ``1e-3``); anything else stays a string
    (``precision=bf16``). Whether the backend takes the option is decided later, by :func:`backend_options`.

    Args:
        text: ``KEY=VALUE`` (the first ``=`` splits it; spaces around KEY and VALUE are dropped).
        own_flags: the keys the command sets with a flag of its own (key -> flag), refused here.

    Raises:
        InputError: no ``=`` or an empty key (naming ``--runner-option`` and the expected form), or a key with a
            flag of its own (naming that flag).
    """
    key, sep, raw = str(text).partition("=")
    key = key.strip()
    if not sep or not key:
        raise InputError(f"--runner-option expects KEY=VALUE (e.g. precision=bf16, shapes=dynamic, "
                         f"cuda_graph=true), got {text!r}")
    check_runner_options({key: None}, own_flags=own_flags)
    raw = raw.strip()
    value: Any = raw
    if raw.lower() in _WORDS:
        value = _WORDS[raw.lower()]
    elif _INT.fullmatch(raw):
        value = int(raw)
    elif _FLOAT.fullmatch(raw):
        value = float(raw)
    return key, value


def check_runner_options(options: Mapping[str, Any] | None, *,
                         own_flags: Mapping[str, str] = OPTION_FLAGS) -> dict[str, Any]:
    """``options`` (a command's ``runner_options``, passed to :func:`load`) as a dict, after checking its keys.

    Raises:
        InputError: ``options`` is not a mapping, a key is not a non-empty string, or a key is one the command sets
            with a flag of its own (``own_flags``: key -> flag; the message names the flag to use instead).
    """
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise InputError(f"--runner-option: runner options must be a mapping of option names to values, "
                         f"got {type(options).__name__}")
    for key in options:
        if not isinstance(key, str) or not key:
            raise InputError(f"--runner-option: option names must be non-empty strings, got {key!r}")
        if key in own_flags:
            raise InputError(f"--runner-option {key}=...: {key} has a flag of its own; use {own_flags[key]} instead")
    return dict(options)


def load(artifact_or_model: PathLike | LSO, device: Any = None, *, backend: str | None = None,
         config: LSOConfig | Mapping[str, Any] | None = None, **options: Any) -> Runner:
    """The runner for an artifact (or an :class:`~lso.model.LSO` module), not yet active (use it in a ``with`` block).

    The one way to make a runner. The backend comes from ``backend=`` or else from the file name (the registry,
    :data:`BACKENDS`): ``.pth``, ``.pth.tar``, ``.pt``, ``.safetensors`` and ``@demo`` (the bundled demo
    checkpoint) -> :class:`TorchRunner`; ``.onnx`` -> :class:`OrtRunner`; ``.plan``, ``.engine``, ``.trt`` ->
    :class:`TrtRunner`; an ``LSO`` module -> :class:`TorchRunner` on the module's device.

    Args:
        artifact_or_model: the artifact, or an ``LSO`` module.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ... (default: the backend's own — CPU for PyTorch and
            ONNX Runtime, the current CUDA device for TensorRT, a module's own device).
        backend: a registered backend name (``"torch"``, ``"onnxruntime"``, ``"tensorrt"``) instead of the suffix.
            A graph made by ``lso export --target cpu`` runs by default with the backend and ``threads`` its
            sidecar records (:func:`lso.export.cpu_tuning.tuned_defaults`; a warning on another CPU model);
            ``backend=``/``threads=`` given here win.
        config: for checkpoints, configuration fields (an :class:`LSOConfig` or a dict such as
            ``{"patch_size": 2}``, see :func:`lso.checkpoint.load_checkpoint`): they must agree with what the
            checkpoint records and fill in what it does not. ONNX graphs and plans carry their architecture;
            a config given with one is ignored, with a warning.
        **options: passed to the runner (e.g. ``threads=`` for ONNX Runtime, ``fp16=`` for PyTorch,
            ``cuda_graph=`` for TensorRT); ``memory_budget=`` sets :attr:`Runner.memory_budget`. The rule
            (:func:`backend_options`): ``threads`` and ``inter_op_threads`` are hints, ignored by backends that
            do not take them; any other option the backend does not take is an ``InputError`` naming the
            backends that do.

    Raises:
        ArtifactError: the file is missing or its kind is unknown.
        InputError: an unknown ``backend``, or an option the backend does not take.
    """
    if not is_lso_module(artifact_or_model) and str(artifact_or_model).lower().endswith(ONNX_SUFFIXES):
        from lso.export.cpu_tuning import tuned_defaults  # what lso export --target cpu chose, where the caller did not

        backend, options = tuned_defaults(artifact_or_model, backend, options, device=device)
    entry = backend_of(artifact_or_model, backend)
    if is_lso_module(artifact_or_model):
        if entry.name != "torch":
            raise InputError(f"an LSO module runs on the torch backend, not {entry.name!r}; export it first "
                             f"(lso.export.export_onnx) to run it elsewhere")
        target: Any = artifact_or_model
        if device is None:
            device = next(artifact_or_model.parameters()).device
    else:
        from lso.weights import resolve_checkpoint

        target = path = resolve_checkpoint(artifact_or_model)
        if not path.is_file():
            raise ArtifactError(f"{path} does not exist (or is not a file)")
        if config is not None and "config" not in entry.options:
            log.warning("a configuration applies to checkpoints only; %s carries its own architecture, so the "
                        "one given is ignored", path.name)
            config = None
    if config is not None:
        options["config"] = config
    if device is not None:
        options["device"] = device
    options = backend_options(entry, options)
    budget = options.pop("memory_budget", None)
    runner = entry.runner_class()(target, **options)
    if budget is not None:
        runner.memory_budget = budget
    return runner
