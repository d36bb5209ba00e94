"""Pointer extraction from CuPy-like, pycuda-like and Numba-like objects (no GPU needed), streams."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lso.errors import InputError
from lso.runtime.cuda_arrays import (
    DeviceUnavailableError,
    device_pointer,
    parse_cuda_array_interface,
    require_cuda,
    stream_handle,
)


class FakeCupy:
    """What cupy.ndarray exposes: version 3, strides None when C-contiguous, a stream."""

    def __init__(self, shape, dtype="<f4", ptr=0x7F0000001000, strides=None, stream=None, version=3, mask=None):
        self.shape = shape
        self.__cuda_array_interface__ = {"shape": shape, "typestr": dtype, "data": (ptr, False), "strides": strides,
                                         "version": version, "stream": stream}
        if mask is not None:
            self.__cuda_array_interface__["mask"] = mask


class FakeGPUArray:
    """What pycuda.gpuarray.GPUArray exposes: version 3, explicit byte strides, stream None."""

    def __init__(self, shape, dtype=np.float32, ptr=0x7F0000200000):
        self.shape, self.dtype = shape, np.dtype(dtype)
        strides, step = [], self.dtype.itemsize
        for d in reversed(shape):
            strides.append(step)
            step *= d
        self.strides = tuple(reversed(strides))
        self.gpudata = ptr

    @property
    def __cuda_array_interface__(self):
        return {"shape": self.shape, "strides": self.strides, "data": (int(self.gpudata), False),
                "typestr": self.dtype.str, "stream": None, "version": 3}


def test_cupy_like_contiguous():
    info = parse_cuda_array_interface(FakeCupy((1, 3, 64, 64)))
    assert info.ptr == 0x7F0000001000 and info.shape == (1, 3, 64, 64) and info.dtype == np.float32
    assert info.contiguous and info.nbytes == 3 * 64 * 64 * 4 and info.version == 3
    assert device_pointer(FakeCupy((1, 3, 64, 64))) == 0x7F0000001000


def test_pycuda_like_explicit_strides_are_contiguous():
    arr = FakeGPUArray((2, 31, 16, 16), np.float16)
    info = parse_cuda_array_interface(arr)
    assert info.contiguous and info.dtype == np.float16 and info.stream is None
    assert device_pointer(arr) == 0x7F0000200000


def test_numba_like_version_2_without_stream():
    info = parse_cuda_array_interface({"shape": (4,), "typestr": "<i8", "data": (1234, True), "version": 2})
    assert info.readonly and info.dtype == np.int64 and info.stream is None


def test_non_contiguous_rejected_with_a_fix():
    sliced = FakeCupy((1, 3, 64, 64), strides=(3 * 64 * 128 * 4, 64 * 128 * 4, 128 * 4, 4))  # a [..., :64] view
    assert not parse_cuda_array_interface(sliced).contiguous
    with pytest.raises(InputError, match="ascontiguousarray"):
        device_pointer(sliced)


def test_unit_dimensions_ignore_strides():
    odd = FakeCupy((1, 3, 1, 8), strides=(999, 32, 7, 4))
    assert parse_cuda_array_interface(odd).contiguous


@pytest.mark.parametrize("cai, match", [
    ({"shape": (2,), "typestr": "<c8", "data": (1, False), "version": 3}, "not supported"),
    ({"shape": (2,), "data": (1, False)}, "malformed"),
    ({"shape": (2,), "typestr": "<f4", "data": (1, False), "version": 3, "stream": 0}, "disallowed"),
])
def test_bad_interfaces(cai, match):
    with pytest.raises(InputError, match=match):
        parse_cuda_array_interface(cai)


def test_masked_rejected():
    with pytest.raises(InputError, match="masked"):
        parse_cuda_array_interface(FakeCupy((2,), mask=object()))


def test_torch_cpu_tensor_has_no_device_pointer():
    with pytest.raises(InputError, match="CUDA tensor"):
        device_pointer(torch.zeros(2))


class _CupyStream:
    ptr = 0xABC


class _PycudaStream:
    handle = 0xDEF


class _TorchLikeStream:
    cuda_stream = 0x123


@pytest.mark.parametrize("stream, handle", [(None, 0), (7, 7), (_CupyStream(), 0xABC), (_PycudaStream(), 0xDEF),
                                            (_TorchLikeStream(), 0x123)])
def test_stream_handles(stream, handle):
    assert stream_handle(stream) == handle


def test_stream_handle_rejects_garbage():
    with pytest.raises(InputError, match="stream handle"):
        stream_handle("default")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_device_arrays_without_a_gpu_fail_clearly():
    with pytest.raises(DeviceUnavailableError, match="CUDA GPU"):
        require_cuda()
    from lso.runtime.validation import validate_inputs

    with pytest.raises(DeviceUnavailableError):
        validate_inputs(FakeCupy((1, 3, 32, 32)), FakeCupy((1, 31, 8, 8)), n_msi_bands=3, n_bands=31)


@pytest.mark.gpu
def test_cupy_arrays_are_wrapped_without_copy():
    cupy = pytest.importorskip("cupy")
    from lso.runtime.cuda_arrays import as_torch

    x = cupy.arange(12, dtype=cupy.float32).reshape(3, 4)
    t = as_torch(x)
    assert t.data_ptr() == x.data.ptr
    x[0, 0] = 42
    torch.cuda.synchronize()
    assert float(t[0, 0]) == 42.0


def test_producer_streams_are_read_without_a_gpu():
    from lso.runtime.cuda_arrays import producer_streams

    arrays = (FakeCupy((1,), stream=5), FakeCupy((1,), stream=5), FakeCupy((1,), stream=2), FakeGPUArray((2,)),
              torch.zeros(1))
    assert producer_streams(*arrays) == (5, 2)  # v3 'stream' entries, once each; None and tensors name none


@pytest.mark.gpu
def test_cupy_arrays_on_the_null_stream_fuse_like_host_arrays(rt_model):
    # CuPy names cudaStreamLegacy (1) as their producer stream; the first GPU run (H100, torch 2.11, CuPy 14) failed
    # there with "invalid StreamId1" before the legacy stream was mapped to torch's default stream
    import copy

    cupy = pytest.importorskip("cupy")
    from lso.runtime import TorchRunner

    from rt_fixtures import reference, scene

    hr, lr = scene(32, 48, 4)
    assert cupy.asarray(hr).__cuda_array_interface__.get("stream") in (None, 1)
    with TorchRunner(copy.deepcopy(rt_model), device="cuda") as r:
        out = r.fuse(cupy.asarray(hr), cupy.asarray(lr))
    got = cupy.asnumpy(out) if not isinstance(out, torch.Tensor) else out.cpu().numpy()
    np.testing.assert_allclose(got, reference(rt_model, hr, lr), atol=1e-4)


@pytest.mark.gpu
def test_runner_stream_waits_for_a_slow_caller_stream_and_the_caller_for_it():
    from lso.runtime.streams import RunnerStream

    dev = torch.device("cuda", torch.cuda.current_device())
    rs = RunnerStream(dev)
    caller = torch.cuda.Stream(dev)
    x = torch.zeros(1 << 20, device=dev)
    torch.cuda.synchronize()
    with torch.cuda.stream(caller):
        torch.cuda._sleep(100_000_000)  # the caller's stream is busy for a while before it writes x
        x.fill_(1.0)
    rs.begin(caller)
    with rs.use():
        y = x * 2
    rs.end(caller)
    y.record_stream(caller)
    with torch.cuda.stream(caller):
        total = y.sum()
    caller.synchronize()
    assert float(total) == 2 * x.numel()
