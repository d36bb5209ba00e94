"""Stream ordering between a CUDA runner and its caller: events only, never a host synchronisation.

Every CUDA runner owns a non-blocking stream (:class:`RunnerStream`) and orders itself against the
caller's stream with events, per call:

1. ``begin``: an event is recorded on the caller's stream (and on each producer stream a device input
   names in its ``__cuda_array_interface__``, CUDA Array Interface v3), and the runner's stream waits
   on it: whatever the caller enqueued to make the inputs is complete before the runner's work starts.
2. the runner enqueues its work on its own stream;
3. ``end``: an event is recorded on the runner's stream and the caller's stream waits on it: anything
   the caller enqueues after the call sees the outputs complete.

The caller's stream is, in this order: the ``stream=`` argument (a torch, CuPy or pycuda stream or a
raw ``cudaStream_t``), CuPy's current stream (``cupy.cuda.get_current_stream()``) when the inputs are
CuPy arrays, else torch's current stream (``torch.cuda.current_stream()``).

Output buffers handed to the caller come from an :class:`OutputPool`: bounded per shape, and a buffer
is reused only once no tensor outside the pool refers to its memory; the reuse is then ordered after
the stream that last consumed it (an event), and every tensor handed out is marked with
``Tensor.record_stream(caller)`` so that the caching allocator never gives its memory to the runner's
stream while the caller's stream may still read it.

All CUDA calls go through one small object (:class:`CudaOps`), so that tests on a CPU replace it with a
fake that records the order of the calls. Nothing here has run on a GPU yet.
"""
from __future__ import annotations

import collections
import contextlib
import logging
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from lso.runtime.cuda_arrays import stream_handle

__all__ = ["CudaOps", "RunnerStream", "OutputPool", "caller_stream", "is_cupy_array", "wait_for_stream"]

log = logging.getLogger(__name__)

# CUDA's special stream handles (cudaStreamLegacy, cudaStreamPerThread). CuPy's arrays on its null stream name
# cudaStreamLegacy as their __cuda_array_interface__ 'stream' (the specification forbids 0). torch cannot wrap
# handle 1 in an ExternalStream: it reads an odd id as one of its own pool streams and fails with "invalid StreamId1"
# (seen on torch 2.11 + CuPy 14, H100); torch's default stream is that same legacy stream, so it stands in for it.
# Handle 2 is even, which torch takes as an external stream, as it is.
LEGACY_STREAM, PER_THREAD_STREAM = 1, 2


class CudaOps:
    """The CUDA stream, event and graph calls the runners make, through ``torch.cuda``.

    ``torch.cuda.Stream`` streams come from torch's pool, created with ``cudaStreamNonBlocking``: they
    never synchronise implicitly with the legacy default stream.
    """

    def new_stream(self, device: torch.device) -> Any:
        return torch.cuda.Stream(device)

    def current_stream(self, device: torch.device) -> Any:
        return torch.cuda.current_stream(device)

    def default_stream(self, device: torch.device) -> Any:
        return torch.cuda.default_stream(device)

    def external_stream(self, handle: int, device: torch.device) -> Any:
        return torch.cuda.ExternalStream(handle, device=device)

    def handle(self, stream: Any) -> int:
        return int(stream.cuda_stream)

    def new_event(self) -> Any:
        return torch.cuda.Event()

    def record(self, event: Any, stream: Any) -> None:
        event.record(stream)

    def wait(self, stream: Any, event: Any) -> None:
        stream.wait_event(event)

    def synchronize_event(self, event: Any) -> None:
        event.synchronize()

    def synchronize_stream(self, stream: Any) -> None:
        stream.synchronize()

    def record_stream(self, tensor: torch.Tensor, stream: Any) -> None:
        tensor.record_stream(stream)

    def device(self, device: torch.device) -> contextlib.AbstractContextManager:
        return torch.cuda.device(device)

    def use(self, stream: Any) -> contextlib.AbstractContextManager:
        """Make ``stream`` torch's current stream (allocations and copies inside are ordered on it)."""
        return torch.cuda.stream(stream)

    def new_graph(self) -> Any:
        return torch.cuda.CUDAGraph()

    def capture(self, graph: Any, stream: Any) -> contextlib.AbstractContextManager:
        return torch.cuda.graph(graph, stream=stream, capture_error_mode="thread_local")

    def replay(self, graph: Any) -> None:
        graph.replay()  # on torch's current stream


def is_cupy_array(obj: Any) -> bool:
    """A CuPy array (checked by its type's module, without importing CuPy)."""
    return type(obj).__module__.split(".")[0] == "cupy"


def _wrap(ops: CudaOps, stream: Any, device: torch.device) -> Any:
    """A stream object ``ops`` can record on and wait for: ``stream`` as it is if it is torch's, else its handle
    wrapped (0 and cudaStreamLegacy are torch's default stream, see :data:`LEGACY_STREAM`)."""
    if isinstance(stream, torch.cuda.Stream):
        return stream
    handle = stream_handle(stream)
    return ops.default_stream(device) if handle in (0, LEGACY_STREAM) else ops.external_stream(handle, device)


def wait_for_stream(ops: CudaOps, consumer: Any, producer: Any, device: torch.device) -> bool:
    """Make ``consumer`` wait for the work queued so far on ``producer`` (a stream or a ``cudaStream_t``).

    Returns False, enqueueing nothing, when the two are the same stream.
    """
    source = _wrap(ops, producer, device)
    if ops.handle(source) == ops.handle(consumer):
        return False
    event = ops.new_event()
    ops.record(event, source)
    ops.wait(consumer, event)
    return True


def caller_stream(ops: CudaOps, device: torch.device, stream: Any = None, template: Any = None) -> Any:
    """The caller's stream: ``stream`` if given, CuPy's current stream for CuPy inputs, else torch's current."""
    if stream is not None:
        return _wrap(ops, stream, device)
    if template is not None and is_cupy_array(template) and "cupy" in sys.modules:
        return _wrap(ops, sys.modules["cupy"].cuda.get_current_stream(), device)
    return ops.current_stream(device)


class RunnerStream:
    """A runner's own non-blocking stream and the events that order it against its callers.

    Args:
        device: the CUDA device.
        ops: the CUDA calls (default :class:`CudaOps`; tests pass a fake).
    """

    def __init__(self, device: torch.device, ops: CudaOps | None = None) -> None:
        self.ops = ops or CudaOps()
        self.device = device
        self.stream = self.ops.new_stream(device)

    @property
    def handle(self) -> int:
        """The ``cudaStream_t`` of the runner's stream (what TensorRT and ONNX Runtime enqueue on)."""
        return self.ops.handle(self.stream)

    def caller(self, stream: Any = None, template: Any = None) -> Any:
        """The caller's stream for one call (see :func:`caller_stream`)."""
        return caller_stream(self.ops, self.device, stream, template)

    def begin(self, caller: Any, producers: Iterable[int] = ()) -> None:
        """Make the runner's stream wait for work queued so far on ``caller`` and on the producer streams."""
        ops = self.ops
        event = ops.new_event()
        ops.record(event, caller)
        ops.wait(self.stream, event)
        seen = {ops.handle(caller), self.handle}
        for handle in producers:
            producer = _wrap(ops, handle, self.device)
            if ops.handle(producer) in seen:
                continue
            seen.add(ops.handle(producer))
            wait_for_stream(ops, self.stream, producer, self.device)

    def end(self, caller: Any) -> Any:
        """Make ``caller`` wait for the runner's work so far; returns the event (host code may wait on it)."""
        event = self.ops.new_event()
        self.ops.record(event, self.stream)
        self.ops.wait(caller, event)
        return event

    def use(self) -> contextlib.AbstractContextManager:
        """The runner's stream as torch's current stream."""
        return self.ops.use(self.stream)

    def synchronize(self) -> None:
        self.ops.synchronize_stream(self.stream)


# ------------------------------------------------------------------------------------------ output pool
def _use_count(tensor: torch.Tensor) -> int | None:
    """How many tensors (and storage objects) refer to ``tensor``'s memory; None where torch cannot say."""
    counter = getattr(torch._C, "_storage_Use_Count", None)
    if counter is None:
        return None
    try:
        return int(counter(tensor.untyped_storage()._cdata))
    except (AttributeError, RuntimeError, TypeError):
        return None


@dataclass
class _Slot:
    tensor: torch.Tensor
    baseline: int | None
    consumer: Any = None

    def held_outside(self) -> bool:
        count = _use_count(self.tensor)
        return count is None or self.baseline is None or count > self.baseline


@dataclass(frozen=True)
class PoolStats:
    """Output buffers: ``allocated`` pooled, ``reused``, ``unpooled`` (all of a shape's buffers were held)."""

    allocated: int
    reused: int
    unpooled: int
    shapes: int


class OutputPool:
    """Output buffers per shape, reused only when no tensor outside the pool refers to them.

    A buffer is handed out with :meth:`hand_out` (its consumer stream recorded, ``record_stream`` set);
    :meth:`take` gives a buffer back for reuse only when the caller has dropped every tensor viewing
    it, and orders the reuse after its consumer stream with an event. When all ``per_shape`` buffers of
    a shape are still held, a fresh unpooled tensor is returned (the caching allocator recycles it).
    At most ``max_shapes`` shapes are kept (least recently used dropped).

    Where torch cannot count the references to a storage (``torch._C._storage_Use_Count`` missing),
    buffers are never reused: each call gets a fresh tensor.
    """

    def __init__(self, ops: CudaOps, *, per_shape: int = 2, max_shapes: int = 8) -> None:
        self._ops = ops
        self._per_shape = max(1, int(per_shape))
        self._max_shapes = max(1, int(max_shapes))
        self._slots: collections.OrderedDict[tuple, list[_Slot]] = collections.OrderedDict()
        self._allocated = self._reused = self._unpooled = 0

    def take(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, stream: Any,
             ordered_after: tuple = ()) -> torch.Tensor:
        """A buffer of ``shape`` that nobody else reads, safe to write on ``stream`` (the runner's).

        ``ordered_after``: streams ``stream`` has already waited for in this call (the caller's): a buffer
        last read there needs no further event.
        """
        key = (tuple(int(s) for s in shape), dtype, str(device))
        slots = self._slots.setdefault(key, [])
        self._slots.move_to_end(key)
        for slot in slots:
            if not slot.held_outside():
                if slot.consumer is not None and not self._same(slot.consumer, ordered_after):
                    # its last reader: the runner's writes start after it
                    event = self._ops.new_event()
                    self._ops.record(event, slot.consumer)
                    self._ops.wait(stream, event)
                    slot.consumer = None
                self._reused += 1
                return slot.tensor
        tensor = torch.empty(key[0], dtype=dtype, device=device)
        if len(slots) < self._per_shape:
            slots.append(_Slot(tensor, _use_count(tensor)))
            self._allocated += 1
        else:
            self._unpooled += 1
            log.debug("all %d output buffers of shape %s are still held: a fresh one", self._per_shape, key[0])
        while len(self._slots) > self._max_shapes:
            self._slots.popitem(last=False)
        return tensor

    def hand_out(self, tensor: torch.Tensor, consumer: Any, runner_stream: Any) -> torch.Tensor:
        """What to give a caller that reads ``tensor`` on ``consumer``.

        A pooled buffer is handed out as a view (a tensor of its own over the same memory, so that the
        pool sees whether the caller still holds it); any other tensor as it is.
        """
        own = self._same(consumer, (runner_stream,))
        if not own:
            self._ops.record_stream(tensor, consumer)
        for slots in self._slots.values():
            for slot in slots:
                if slot.tensor is tensor:
                    slot.consumer = None if own else consumer
                    return tensor.view(tensor.shape)
        return tensor

    def _same(self, stream: Any, streams: tuple) -> bool:
        """``stream`` is one of ``streams`` (by handle: torch makes a new object per current_stream() call)."""
        handle = self._ops.handle(stream)
        return any(self._ops.handle(s) == handle for s in streams)

    def clear(self) -> None:
        self._slots.clear()

    @property
    def stats(self) -> PoolStats:
        return PoolStats(self._allocated, self._reused, self._unpooled, len(self._slots))

    def __iter__(self) -> Iterator[torch.Tensor]:
        return (slot.tensor for slots in self._slots.values() for slot in slots)
