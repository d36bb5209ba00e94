"""TrtRunner's run path on a CPU: a fake TensorRT module (its contexts run the PyTorch model on the bound
pointers) and fake CUDA calls that record their order. What is checked: one activation buffer shared by
contexts created without memory, the per-shape context/graph LRU and its counts, tiled runs, the
event/stream order against the caller, the output pool, and validation of device inputs without any
host synchronisation."""
from __future__ import annotations

import contextlib
import ctypes
import sys
import types

import numpy as np
import pytest
import torch

from lso.errors import InputError
from lso.runtime.streams import (
    LEGACY_STREAM,
    PER_THREAD_STREAM,
    CudaOps,
    OutputPool,
    RunnerStream,
    caller_stream,
    wait_for_stream,
)
from lso.runtime.trt_runner import TrtRunner
from lso.runtime.validation import FuseInputs, check_device_values, validate_inputs

from rt_fixtures import FakeEngineIO, reference, scene

CPU = torch.device("cpu")
_CTYPES = {torch.float32: ctypes.c_float, torch.int64: ctypes.c_int64}


# ------------------------------------------------------------------------ fake CUDA
class FakeStream:
    def __init__(self, name: str, handle: int):
        self.name, self.cuda_stream = name, handle

    def __repr__(self):
        return f"<{self.name}>"


class FakeEvent:
    def __init__(self, n: int):
        self.n = n

    def query(self):
        return True


class FakeGraph:
    def __init__(self):
        self.work = []

    def replay(self):
        for run in self.work:
            run()


class FakeOps(CudaOps):
    """Every CUDA call the runner makes, logged in order; streams are names, work runs at once."""

    def __init__(self):
        self.log: list[tuple] = []
        self.events = 0
        self.caller = FakeStream("caller", 0x200)
        self.capturing = None

    def new_stream(self, device):
        return FakeStream("runner", 0x100)

    def current_stream(self, device):
        return self.caller

    def default_stream(self, device):
        return FakeStream("default", 0)

    def external_stream(self, handle, device):
        if handle & 1:  # torch reads an odd handle as one of its own pool ids (seen with 1, cudaStreamLegacy)
            raise RuntimeError(f"invalid StreamId{handle}")
        return FakeStream(f"ext{handle:#x}", handle)

    def new_event(self):
        self.events += 1
        return FakeEvent(self.events)

    def record(self, event, stream):
        self.log.append(("record", event.n, stream.name))

    def wait(self, stream, event):
        self.log.append(("wait", stream.name, event.n))

    def synchronize_event(self, event):
        self.log.append(("sync_event", event.n))

    def synchronize_stream(self, stream):
        self.log.append(("sync_stream", stream.name))

    def record_stream(self, tensor, stream):
        self.log.append(("record_stream", stream.name))

    def device(self, device):
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def use(self, stream):
        self.log.append(("use", stream.name))
        yield

    def new_graph(self):
        return FakeGraph()

    @contextlib.contextmanager
    def capture(self, graph, stream):
        self.log.append(("capture", stream.name))
        self.capturing = graph
        try:
            yield
        finally:
            self.capturing = None

    def replay(self, graph):
        self.log.append(("replay",))
        graph.replay()


# ------------------------------------------------------------------------ fake TensorRT
USER_MANAGED = "USER_MANAGED"
FAKE_TRT = types.SimpleNamespace(ExecutionContextAllocationStrategy=types.SimpleNamespace(USER_MANAGED=USER_MANAGED,
                                                                                         STATIC="STATIC"))


def _view(address: int, shape: tuple, dtype: torch.dtype) -> torch.Tensor:
    n = int(np.prod(shape))
    buf = (_CTYPES[dtype] * n).from_address(address)
    return torch.from_numpy(np.frombuffer(buf, dtype=np.float32 if dtype == torch.float32 else np.int64)
                            .reshape(shape))


class FakeContext:
    def __init__(self, engine, strategy):
        assert strategy == USER_MANAGED, "contexts must be created without device memory of their own"
        self.engine, self.memory, self.shapes, self.addresses = engine, None, {}, {}

    def set_device_memory(self, address, size):
        self.memory = (address, size)

    def set_optimization_profile_async(self, index, stream):
        return True

    def set_input_shape(self, name, shape):
        mn, _, mx = self.engine.tensors[name][3]
        ok = all(a <= s <= b for a, s, b in zip(mn, shape, mx, strict=True))
        self.shapes[name] = tuple(shape)
        return ok

    def update_device_memory_size_for_shapes(self):
        return self.engine.need.get(self.shapes["hr_msi"][2:], self.engine.memory_size)

    def set_tensor_address(self, name, address):
        self.addresses[name] = address

    def execute_async_v3(self, stream):
        assert self.memory is not None and self.memory[1] >= self.engine.memory_size, "no activation memory set"
        ops = self.engine.ops
        ops.log.append(("enqueue", stream))
        snapshot = dict(self.addresses), dict(self.shapes)
        if ops.capturing is not None:
            ops.capturing.work.append(lambda: self._run(*snapshot))
        else:
            self._run(*snapshot)
        return True

    def _run(self, addresses, shapes):
        hr = _view(addresses["hr_msi"], shapes["hr_msi"], torch.float32).clone()
        lr = _view(addresses["lr_hsi"], shapes["lr_hsi"], torch.float32).clone()
        extent = _view(addresses["extent"], (4,), torch.int64).clone()
        b, _, h, w = shapes["hr_msi"]
        out = _view(addresses["hr_hsi"], (b, 31, h, w), torch.float32)
        with torch.no_grad():
            out.copy_(self.engine.model(hr, lr, extent))
        self.engine.runs.append((h, w))


class FakeEngine(FakeEngineIO):
    """A tileable LSO plan: batch 1..2, hr_msi 16..192 px, lr_hsi 4..48 px (x4)."""

    def __init__(self, model, ops, memory_size=1 << 20):
        super().__init__({
            "hr_msi": ("INPUT", "FLOAT", (-1, 3, -1, -1), [(1, 3, 16, 16), (1, 3, 64, 64), (2, 3, 192, 192)]),
            "lr_hsi": ("INPUT", "FLOAT", (-1, 31, -1, -1), [(1, 31, 4, 4), (1, 31, 16, 16), (2, 31, 48, 48)]),
            "extent": ("INPUT", "INT64", (4,), None),
            "hr_hsi": ("OUTPUT", "FLOAT", (-1, 31, -1, -1), None),
        })
        self.model, self.ops, self.memory_size = model, ops, memory_size
        self.num_optimization_profiles = 1
        self.contexts: list[FakeContext] = []
        self.need: dict = {}  # hr (h, w) -> activation bytes update_device_memory_size_for_shapes reports
        self.runs: list = []

    def get_device_memory_size_for_profile_v2(self, index):
        assert index == 0
        return self.memory_size

    def create_execution_context(self, strategy="STATIC"):
        context = FakeContext(self, strategy)
        self.contexts.append(context)
        return context


def _runner(model, *, cuda_graph=False, max_graphs=4):
    ops = FakeOps()
    engine = FakeEngine(model, ops)
    runner = TrtRunner("fake.plan", cuda_graph=cuda_graph, max_graphs=max_graphs, config=model.config)
    runner._setup_engine(FAKE_TRT, engine, CPU, ops=ops)
    runner._active = True
    return runner, engine, ops


# ------------------------------------------------------------------------ memory: contexts and one buffer
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_n_shapes_give_n_contexts_without_memory_sharing_one_buffer(rt_model, cuda_graph):
    runner, engine, _ = _runner(rt_model, cuda_graph=cuda_graph)
    shapes = [(32, 48), (64, 32), (48, 48)]
    for h, w in shapes + shapes[:1]:
        hr, lr = scene(h, w, 4, seed=h + w)
        np.testing.assert_allclose(runner.fuse(hr, lr), reference(rt_model, hr, lr), rtol=0, atol=1e-5)
    assert len(engine.contexts) == 3  # one per input shape, none for a "direct" context
    buffer = runner._activation
    assert buffer.numel() == engine.memory_size
    assert {c.memory for c in engine.contexts} == {(buffer.data_ptr(), engine.memory_size)}
    stats = runner.cache_stats
    assert (stats.hits, stats.misses, stats.evictions, stats.contexts) == (1, 3, 0, 3)
    assert stats.graphs == (3 if cuda_graph else 0) and stats.activation_bytes == engine.memory_size


def test_graph_lru_counts_evictions_and_keeps_the_recent_shape(rt_model):
    runner, _, ops = _runner(rt_model, cuda_graph=True, max_graphs=2)
    a, b, c = (32, 32), (48, 32), (32, 64)
    for h, w in (a, b, a, c, a):  # c evicts b (a was used more recently), then a is a hit
        hr, lr = scene(h, w, 4, seed=h * w)
        np.testing.assert_allclose(runner.fuse(hr, lr), reference(rt_model, hr, lr), rtol=0, atol=1e-5)
    stats = runner.cache_stats
    assert (stats.hits, stats.misses, stats.evictions, stats.graphs, stats.contexts) == (2, 3, 1, 2, 2)
    assert [k[0][1][2:] for k in runner._entries] == [c, a]
    assert sum(1 for e in ops.log if e[0] == "capture") == 3


def test_the_buffer_grows_once_and_graphs_are_dropped(rt_model):
    runner, engine, ops = _runner(rt_model, cuda_graph=True)
    hr, lr = scene(32, 32, 4)
    runner.fuse(hr, lr)
    assert runner.cache_stats.graphs == 1
    engine.need[(64, 64)] = engine.memory_size * 3  # TensorRT asks for more than the profile's size
    hr2, lr2 = scene(64, 64, 4)
    np.testing.assert_allclose(runner.fuse(hr2, lr2), reference(rt_model, hr2, lr2), rtol=0, atol=1e-5)
    stats = runner.cache_stats
    assert stats.buffer_grows == 1 and stats.activation_bytes == engine.memory_size * 3
    assert {c.memory for c in engine.contexts} == {(runner._activation.data_ptr(), engine.memory_size * 3)}
    np.testing.assert_allclose(runner.fuse(hr, lr), reference(rt_model, hr, lr), rtol=0, atol=1e-5)  # recaptured
    assert sum(1 for e in ops.log if e[0] == "capture") == 3


@pytest.mark.slow
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_tiled_run_uses_at_most_two_window_shapes_per_axis_and_stays_exact(rt_model, cuda_graph):
    runner, engine, _ = _runner(rt_model, cuda_graph=cuda_graph)
    hr, lr = scene(200, 216, 4)  # over the 192-px profile, off the alignment grid in both axes
    np.testing.assert_allclose(runner.fuse(hr, lr), reference(rt_model, hr, lr), rtol=0, atol=1e-5)
    windows = set(engine.runs)
    assert len(engine.runs) > 1 and all(h <= 192 and w <= 192 for h, w in windows)
    assert len({h for h, _ in windows}) <= 2 and len({w for _, w in windows}) <= 2
    stats = runner.cache_stats
    assert stats.evictions == 0 and stats.misses == len(windows) <= stats.capacity  # no thrashing


# ------------------------------------------------------------------------ streams and events
def _order(log):
    return [e for e in log if e[0] in ("record", "wait", "enqueue", "sync_event", "replay")]


def test_event_order_caller_runner_caller(rt_model):
    runner, _, ops = _runner(rt_model)
    hr, lr = scene(32, 32, 4)
    ops.log.clear()
    runner.fuse(torch.from_numpy(hr), torch.from_numpy(lr))
    assert _order(ops.log) == [("record", 1, "caller"), ("wait", "runner", 1),  # inputs complete before the enqueue
                               ("enqueue", 0x100),                              # on the runner's own stream
                               ("record", 2, "runner"), ("wait", "caller", 2)]  # the caller waits for the output
    assert ("record_stream", "caller") in ops.log  # the output handed out is marked for the caller's stream


def test_producer_streams_and_an_explicit_stream_are_waited_on(rt_model):
    runner, _, ops = _runner(rt_model)
    hr, lr = (torch.from_numpy(a) for a in scene(32, 32, 4))
    inputs = FuseInputs(hr, lr, 4, True, "device", hr, producer_streams=(0x300, 0x200))
    ops.log.clear()
    runner._fuse(inputs, None, None, stream=FakeStream("mine", 0x400))
    assert _order(ops.log) == [("record", 1, "ext0x400"), ("wait", "runner", 1),
                               ("record", 2, "ext0x300"), ("wait", "runner", 2),
                               ("record", 3, "ext0x200"), ("wait", "runner", 3),
                               ("enqueue", 0x100), ("record", 4, "runner"), ("wait", "ext0x400", 4)]


def test_numpy_inputs_wait_for_their_own_call_only(rt_model):
    runner, _, ops = _runner(rt_model)
    ops.log.clear()
    runner.fuse(*scene(32, 32, 4))
    order = _order(ops.log)
    assert order[-3:] == [("record", 2, "runner"), ("wait", "caller", 2), ("sync_event", 2)]
    assert not [e for e in ops.log if e[0] == "sync_stream"]  # never the whole stream or device


def test_cupy_inputs_use_cupys_current_stream(monkeypatch):
    ops = FakeOps()
    fake_cupy = types.SimpleNamespace(cuda=types.SimpleNamespace(get_current_stream=lambda: types.SimpleNamespace(
        ptr=0x500)))
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy)
    cupy_array = type("ndarray", (), {"__module__": "cupy._core.core"})()
    assert caller_stream(ops, CPU, None, cupy_array).name == "ext0x500"
    assert caller_stream(ops, CPU, None, np.zeros(1)).name == "caller"  # torch's current stream
    null = types.SimpleNamespace(ptr=0)
    assert caller_stream(ops, CPU, null).name == "default"  # CuPy's null stream is the legacy default stream


def test_graph_replays_on_the_runner_stream_in_order(rt_model):
    runner, _, ops = _runner(rt_model, cuda_graph=True)
    hr, lr = (torch.from_numpy(a) for a in scene(32, 32, 4))
    runner.fuse(hr, lr)  # captures
    ops.log.clear()
    runner.fuse(hr, lr)
    assert _order(ops.log) == [("record", 3, "caller"), ("wait", "runner", 3), ("replay",),
                               ("record", 4, "runner"), ("wait", "caller", 4)]


# ------------------------------------------------------------------------ output pool
def test_a_held_output_is_never_overwritten(rt_model):
    runner, _, ops = _runner(rt_model)
    a = [torch.from_numpy(x) for x in scene(32, 32, 4, seed=1)]
    b = [torch.from_numpy(x) for x in scene(32, 32, 4, seed=2)]
    first = runner.fuse(*a)
    kept = first.clone()
    second = runner.fuse(*b)
    assert second.data_ptr() != first.data_ptr()
    assert torch.equal(first, kept)  # the second call wrote elsewhere
    third = runner.fuse(*a)  # both held: a fresh, unpooled tensor
    assert len({first.data_ptr(), second.data_ptr(), third.data_ptr()}) == 3
    ptr = first.data_ptr()
    del first, kept
    ops.log.clear()
    fourth = runner.fuse(*b)
    assert fourth.data_ptr() == ptr  # reused once the caller dropped it, after the caller's stream (begin's event)
    assert _order(ops.log)[:3] == [("record", ops.events - 1, "caller"), ("wait", "runner", ops.events - 1),
                                   ("enqueue", 0x100)]
    other = FakeStream("consumer", 0x600)  # read last on another stream: the reuse waits for that one too
    pool = runner._pool
    slot = next(s for slots in pool._slots.values() for s in slots if s.tensor.data_ptr() == ptr)
    del fourth
    slot.consumer = other
    ops.log.clear()
    runner.fuse(*a)
    assert _order(ops.log)[2:4] == [("record", ops.events - 1, "consumer"), ("wait", "runner", ops.events - 1)]
    stats = runner.cache_stats.outputs
    assert (stats.allocated, stats.unpooled) == (2, 1) and stats.reused >= 1


def test_pool_reuses_when_torch_cannot_count_references(monkeypatch):
    from lso.runtime import streams

    monkeypatch.setattr(streams, "_use_count", lambda t: None)
    pool = OutputPool(FakeOps(), per_shape=1)
    rs = FakeStream("runner", 1)
    t1 = pool.take((2, 3), torch.float32, CPU, rs)
    del t1
    t2 = pool.take((2, 3), torch.float32, CPU, rs)
    assert pool.stats.reused == 0 and pool.stats.unpooled == 1 and t2.shape == (2, 3)  # never reuses blindly


def test_the_legacy_stream_a_cupy_null_stream_array_names_is_torchs_default_stream():
    # CuPy exports 'stream': 1 (cudaStreamLegacy) for arrays on its null stream; torch cannot wrap 1 (seen on an H100)
    ops = FakeOps()
    rs = RunnerStream(CPU, ops)
    rs.begin(ops.caller, (LEGACY_STREAM, 0x300))
    assert _order(ops.log) == [("record", 1, "caller"), ("wait", "runner", 1), ("record", 2, "default"),
                               ("wait", "runner", 2), ("record", 3, "ext0x300"), ("wait", "runner", 3)]
    ops.log.clear()
    rs.begin(ops.default_stream(CPU), (LEGACY_STREAM, 0))  # the caller is the default stream: one wait only
    assert [e for e in ops.log if e[0] == "wait"] == [("wait", "runner", 4)]
    assert caller_stream(ops, CPU, LEGACY_STREAM).name == "default"
    assert caller_stream(ops, CPU, PER_THREAD_STREAM).name == "ext0x2"  # even: torch takes it as an external stream
    ops.log.clear()
    assert wait_for_stream(ops, ops.caller, LEGACY_STREAM, CPU)
    assert not wait_for_stream(ops, ops.default_stream(CPU), LEGACY_STREAM, CPU)  # the same stream: nothing queued
    assert _order(ops.log) == [("record", 5, "default"), ("wait", "caller", 5)]


def test_runner_stream_skips_waiting_on_itself_and_duplicates():
    ops = FakeOps()
    rs = RunnerStream(CPU, ops)
    rs.begin(ops.caller, (0x200, 0x100, 0x300, 0x300))
    assert [e for e in ops.log if e[0] == "wait"] == [("wait", "runner", 1), ("wait", "runner", 2)]


# ------------------------------------------------------------------------ device values, no host sync
_HOST_READS = {"item", "__bool__", "cpu", "tolist", "numpy", "__float__", "__int__", "__index__", "__array__",
               "__len__", "synchronize"}


class DeviceLike(torch.Tensor):
    """A CPU tensor that says it is on a CUDA device and fails on every read that would sync the host."""

    @property
    def is_cuda(self):
        return True

    @classmethod
    def __torch_function__(cls, func, types_, args=(), kwargs=None):
        if getattr(func, "__name__", "") in _HOST_READS:
            raise AssertionError(f"host synchronisation: {func.__name__}")
        return super().__torch_function__(func, types_, args, kwargs or {})


def _device_like(array):
    return torch.from_numpy(array).as_subclass(DeviceLike)


def test_validation_of_device_inputs_never_reads_values():
    hr, lr = scene(32, 32, 4)
    hr[0, 0, 0, :3] = np.nan
    with pytest.raises(AssertionError, match="host synchronisation"):  # the fake does catch a host read
        bool(_device_like(hr).isfinite().all())
    inputs = validate_inputs(_device_like(hr), _device_like(lr), n_msi_bands=3, n_bands=31)
    assert inputs.values_pending and inputs.producer_streams == ()
    check = check_device_values(((("hr_msi"), inputs.hr_msi), ("lr_hsi", inputs.lr_hsi)))  # enqueued, not read
    with pytest.raises(AssertionError, match="tolist"):
        check.result()  # reading it is the one host synchronisation, on request


def test_device_value_check_reports_like_the_host_check():
    hr, lr = scene(32, 32, 4)
    hr[0, 0, 0, :2] = np.nan
    lr[0, 1, 1, 1] = np.inf
    with pytest.raises(InputError, match="hr_msi has 2 NaN and 0 Inf"):
        check_device_values((("hr_msi", torch.from_numpy(hr)), ("lr_hsi", torch.from_numpy(lr)))).result()
    from lso.runtime.validation import InputRangeWarning

    with pytest.warns(InputRangeWarning, match="outside"):
        check_device_values((("hr_msi", torch.from_numpy(scene(32, 32, 4)[0] * 255)),)).result()


def test_runner_with_device_inputs_never_syncs_and_reports_on_request(rt_model):
    runner, _, ops = _runner(rt_model)
    hr, lr = scene(32, 32, 4)
    hr[0, 1, 2, 3] = np.inf
    out = runner.fuse(_device_like(hr), _device_like(lr))  # no AssertionError: nothing read on the host
    assert out.shape == (1, 31, 32, 32)
    assert not [e for e in ops.log if e[0] in ("sync_event", "sync_stream")]
    check = runner.last_value_check
    assert check is not None and check.ready
    with pytest.raises(AssertionError, match="tolist"):
        check.result()
    # the same on plain tensors: the value check is enqueued on the runner's stream after the wait
    ops.log.clear()
    runner._fuse(FuseInputs(torch.from_numpy(hr), torch.from_numpy(lr), 4, True, "torch", None, values_pending=True),
                 None, None)
    order = _order(ops.log)
    n = order[0][1]
    assert order[:3] == [("record", n, "caller"), ("wait", "runner", n), ("record", n + 1, "runner")]
    with pytest.raises(InputError, match="0 NaN and 1 Inf"):
        runner.last_value_check.result()
    assert ("sync_event",) == ops.log[-1][:1]  # result() waited for the check's own event only


# ------------------------------------------------------------------------ ONNX Runtime on CUDA
def test_ort_cuda_runs_on_its_own_stream_ordered_by_events(monkeypatch):
    from lso.runtime import cuda_arrays, ort_runner, streams

    ops = FakeOps()
    # the runner imports RunnerStream when it first needs one (a CPU-only process never loads torch)
    monkeypatch.setattr(streams, "RunnerStream", lambda device: RunnerStream(CPU, ops))
    monkeypatch.setattr(cuda_arrays, "require_cuda", lambda device=None: CPU)
    runner = ort_runner.OrtRunner("m.onnx", device="cuda")
    providers = runner._on_own_stream([("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"])
    assert providers == [("CUDAExecutionProvider", {"device_id": 0, "user_compute_stream": str(0x100)}),
                         "CPUExecutionProvider"]
    given = [("CUDAExecutionProvider", {"device_id": 0})]
    theirs = ort_runner.OrtRunner("m.onnx", device="cuda", providers=given)
    assert theirs._on_own_stream(list(given)) == given and theirs._rs is None  # the caller's providers as given
    runner._session = types.SimpleNamespace(run_with_iobinding=lambda binding: ops.log.append(("enqueue", "ort")))
    hr, lr = (torch.from_numpy(a) for a in scene(32, 32, 4))
    inputs = FuseInputs(hr, lr, 4, True, "device", hr, producer_streams=(0x300,))
    ort_runner.OrtBinding(runner, object(), [], torch.zeros(1), inputs, None, sync_cuda=True)._execute_active()
    assert _order(ops.log) == [("record", 1, "caller"), ("wait", "runner", 1), ("record", 2, "ext0x300"),
                               ("wait", "runner", 2), ("enqueue", "ort"), ("record", 3, "runner"),
                               ("wait", "caller", 3)]


def test_tiled_fusion_of_device_inputs_never_syncs_and_reports_on_request(rt_model):
    from lso.runtime.tiling import fuse_tiled

    runner, engine, ops = _runner(rt_model)
    hr, lr = scene(64, 48, 4)
    lr[0, 2, 3, 4] = np.nan
    out = fuse_tiled(runner, _device_like(hr), _device_like(lr), tile=32)  # no AssertionError: no host read
    assert len(engine.runs) > 1 and out.shape == (1, 31, 64, 48)
    assert not [e for e in ops.log if e[0] in ("sync_event", "sync_stream")]
    with pytest.raises(AssertionError, match="tolist"):
        runner.last_value_check.result()
    hr_t, lr_t = torch.from_numpy(hr), torch.from_numpy(lr)
    with pytest.raises(InputError, match="lr_hsi has 1 NaN"):  # host tensors: checked before any tile, as before
        fuse_tiled(runner, hr_t, lr_t, tile=32)
