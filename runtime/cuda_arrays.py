"""Device memory handed to us by callers: torch CUDA tensors, ``__cuda_array_interface__`` and DLPack.

Runners take device arrays as they are: a pointer is read from the object and bound in place, never
copied to the host. Supported producers:

- torch tensors (``data_ptr()``);
- anything exposing ``__cuda_array_interface__`` (versions 0-3): CuPy arrays, pycuda ``GPUArray``
  (it exports version 3 with explicit strides and ``stream: None``), Numba device arrays, RAPIDS
  buffers;
- anything exposing ``__dlpack__`` (JAX, TensorFlow, ...), through ``torch.from_dlpack``.

The parser (:func:`parse_cuda_array_interface`) is pure Python so it is tested without a GPU.
Streams: :func:`stream_handle` reads a ``cudaStream_t`` from a torch, CuPy or pycuda stream or an
int. A version-3 interface that names a producer ``stream`` is waited on before our work, as the
interface's specification asks of consumers: by the runner's own stream for runners that order
themselves (:func:`producer_streams`, :mod:`lso.runtime.streams`), else by torch's current stream
(:func:`wait_for_producer`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lso.errors import DeviceUnavailableError, InputError

__all__ = ["DeviceArray", "DeviceUnavailableError", "parse_cuda_array_interface", "device_pointer", "as_torch",
           "stream_handle", "wait_for_producer", "require_cuda", "producer_streams"]


def require_cuda(device: Any = None) -> torch.device:
    """The CUDA device to use (``None``, an index, ``"cuda:1"`` or a ``torch.device``), or raise.

    Every TensorRT and CUDA call in the runtime sits behind this check: TensorRT functions called
    without a CUDA device may crash the process instead of raising.
    """
    if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
        build = "a CPU-only torch build" if torch.version.cuda is None else f"torch CUDA {torch.version.cuda}"
        raise DeviceUnavailableError(
            f"a CUDA GPU is needed but none is usable here ({build}, torch.cuda.is_available() is False); run on "
            f"a machine with an NVIDIA GPU and a CUDA build of torch, or use TorchRunner/OrtRunner on CPU")
    if device is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    elif isinstance(device, int):
        dev = torch.device("cuda", device)
    else:
        dev = torch.device(device)
        if dev.type != "cuda":
            raise DeviceUnavailableError(f"device {device!r} is not a CUDA device")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    if dev.index >= torch.cuda.device_count():
        raise DeviceUnavailableError(f"CUDA device {dev.index} does not exist ({torch.cuda.device_count()} visible)")
    return dev


@dataclass(frozen=True)
class DeviceArray:
    """What ``__cuda_array_interface__`` says about an array.

    Attributes:
        ptr: device address of element 0.
        shape: array shape.
        dtype: numpy dtype of the elements.
        strides: byte strides, or None for C-contiguous.
        readonly: the producer forbids writes.
        stream: producer stream to synchronise with (v3), or None.
        version: interface version.
    """

    ptr: int
    shape: tuple[int, ...]
    dtype: np.dtype
    strides: tuple[int, ...] | None
    readonly: bool
    stream: int | None
    version: int

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    @property
    def contiguous(self) -> bool:
        """C-contiguous (strides absent, or equal to the dense row-major strides)."""
        if self.strides is None:
            return True
        expected, step = [], self.dtype.itemsize
        for dim in reversed(self.shape):
            expected.append(step)
            step *= dim
        return all(s == e for s, e, d in zip(self.strides, reversed(expected), self.shape, strict=True) if d != 1)


_TYPESTR = re.compile(r"^[<>|=]?[fiub]\d+$")


def parse_cuda_array_interface(obj: Any) -> DeviceArray:
    """Read ``obj.__cuda_array_interface__`` (or a dict in that form) without touching the GPU.

    Raises:
        InputError: not an interface, a masked array, or an unsupported element type.
    """
    cai = obj if isinstance(obj, dict) else getattr(obj, "__cuda_array_interface__", None)
    if not isinstance(cai, dict):
        raise InputError(f"{type(obj).__qualname__} has no __cuda_array_interface__")
    try:
        shape = tuple(int(s) for s in cai["shape"])
        typestr = str(cai["typestr"])
        ptr, readonly = cai["data"]
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"malformed __cuda_array_interface__ on {type(obj).__qualname__}: {exc}") from exc
    if cai.get("mask") is not None:
        raise InputError("masked device arrays are not supported: fill the masked values and pass a plain array")
    if not _TYPESTR.match(typestr):
        raise InputError(f"device array element type {typestr!r} is not supported (expected floats or integers)")
    strides = cai.get("strides")
    stream = cai.get("stream")
    if stream == 0:
        raise InputError("__cuda_array_interface__ 'stream' 0 is disallowed by the specification (ambiguous)")
    return DeviceArray(ptr=int(ptr or 0), shape=shape, dtype=np.dtype(typestr),
                       strides=tuple(int(s) for s in strides) if strides is not None else None,
                       readonly=bool(readonly), stream=int(stream) if stream is not None else None,
                       version=int(cai.get("version", 0)))


def device_pointer(obj: Any, *, contiguous: bool = True) -> int:
    """The device address of ``obj``'s first element (torch CUDA tensor or interface object).

    Args:
        obj: the array.
        contiguous: require a dense C-contiguous layout (TensorRT and ORT bind flat buffers).
    """
    if isinstance(obj, torch.Tensor):
        if not obj.is_cuda:
            raise InputError("expected a CUDA tensor, got one on the CPU")
        if contiguous and not obj.is_contiguous():
            raise InputError("device tensor is not contiguous: call .contiguous() first")
        return int(obj.data_ptr())
    info = parse_cuda_array_interface(obj)
    if contiguous and not info.contiguous:
        raise InputError(f"device array with strides {info.strides} is not C-contiguous: make it contiguous first "
                         f"(cupy.ascontiguousarray(x), x.copy())")
    return info.ptr


def as_torch(obj: Any, device: Any = None, *, wait: bool = True) -> torch.Tensor:
    """A torch CUDA tensor sharing memory with ``obj`` (interface or DLPack object; no copy).

    Args:
        obj: the array.
        device: the CUDA device (default: the current one).
        wait: make torch's current stream wait for the producer stream the interface names. Runners that
            order themselves against the caller pass False and wait on their own stream
            (:func:`producer_streams`, :class:`lso.runtime.streams.RunnerStream`).
    """
    if isinstance(obj, torch.Tensor):
        return obj
    if hasattr(obj, "__cuda_array_interface__"):
        info = parse_cuda_array_interface(obj)
        dev = require_cuda(device)
        tensor = torch.as_tensor(obj, device=dev)
        if wait and info.stream is not None:
            wait_for_producer(info.stream, dev)
        return tensor
    if hasattr(obj, "__dlpack__"):
        return torch.from_dlpack(obj)
    raise InputError(f"{type(obj).__qualname__} is not a device array (no __cuda_array_interface__ or __dlpack__)")


def producer_streams(*objs: Any) -> tuple[int, ...]:
    """The producer streams (CUDA Array Interface v3 ``stream``) of the interface objects among ``objs``."""
    found: list[int] = []
    for obj in objs:
        if not isinstance(obj, torch.Tensor) and hasattr(obj, "__cuda_array_interface__"):
            stream = parse_cuda_array_interface(obj).stream
            if stream is not None and stream not in found:
                found.append(stream)
    return tuple(found)


def stream_handle(stream: Any) -> int:
    """``cudaStream_t`` as an int from a torch stream, a CuPy stream (``.ptr``), a pycuda stream
    (``.handle``), a cuda-python ``CUstream`` (``int()``-able) or an int. ``None`` is the default stream 0."""
    if stream is None:
        return 0
    if isinstance(stream, int):
        return stream
    for attr in ("cuda_stream", "ptr", "handle"):
        value = getattr(stream, attr, None)
        if isinstance(value, int):
            return value
    try:
        return int(stream)
    except (TypeError, ValueError):
        raise InputError(f"cannot read a CUDA stream handle from {type(stream).__qualname__}: pass a "
                         f"torch.cuda.Stream, a CuPy/pycuda stream or an int") from None


def wait_for_producer(producer_stream: int, device: torch.device, consumer: torch.cuda.Stream | None = None) -> None:
    """Make ``consumer`` (default: the current torch stream) wait for work queued on ``producer_stream``.

    cudaStreamLegacy (1, what CuPy names for its null stream) is waited on as torch's default stream, which is that
    same stream (see :data:`lso.runtime.streams.LEGACY_STREAM`).
    """
    from lso.runtime.streams import CudaOps, wait_for_stream  # streams imports this module

    wait_for_stream(CudaOps(), consumer or torch.cuda.current_stream(device), producer_stream, device)
