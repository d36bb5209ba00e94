"""Input validation at the runtime boundary: every runner checks its inputs here before running.

What is checked, in this order, with an :class:`~lso.errors.InputError` that says what was found
and how to fix it:

1. Type: numpy arrays (and anything ``np.asarray`` accepts), torch tensors, and device arrays
   (``__cuda_array_interface__``: CuPy, pycuda, Numba, ...; ``__dlpack__``). Device arrays are
   wrapped as torch tensors without a copy. Host arrays stay numpy arrays (views): this module, and the
   ONNX Runtime and OpenVINO runners on the CPU, import torch only when a torch tensor or a device array
   comes in (a CPU-only serving process then never loads torch: about 0.19 GB of resident memory).
2. Rank: ``[B, C, H, W]``; ``[C, H, W]`` gets a batch axis (removed again from the output); a 2-D
   ``[H, W]`` array is accepted only where the model expects one band, otherwise rejected. An array
   that looks channels-last (``[H, W, C]``) is rejected with a hint to transpose it.
3. Band counts (``hr_msi`` has ``n_msi_bands``, ``lr_hsi`` has ``n_bands``), equal batch sizes, the
   same device.
4. Ratio: ``H/h`` and ``W/w`` equal integers >= 2 (:func:`lso.io_spec.infer_ratio`).
5. dtype: float16, float32 and float64 are accepted (runners cast to what their model takes);
   integers, booleans, complex and bfloat16 are rejected with the reason.
6. Memory (when the model's config is given, as runners do): the estimated working memory of fusing
   the input in one piece must fit the memory budget (:mod:`lso.memory`); a huge shape is refused
   here, before any value is read or any buffer allocated, with the estimate in the message.
7. Values: NaN/Inf are rejected, naming the input and the counts. Values far outside [0, 1] are
   warned about (:class:`InputRangeWarning`), not rejected: the bound is ``[RANGE_LOW, RANGE_HIGH]``
   = ``[-0.5, 1.5]``, loose enough for reflectance that overshoots a little (specular highlights,
   noise, calibration offsets) and tight enough to catch unscaled 8/12/16-bit data. Files and server
   requests are checked before they get here, with one policy that makes such values an error
   (:mod:`lso.data.value_range`); this warning is for arrays handed to a runner directly.

Validation never copies a numpy array or tensor that is already 4-D (or 3-D: a view adds the
batch axis); dtype conversion is left to the runner.

Device inputs (CUDA tensors, CuPy and other ``__cuda_array_interface__`` arrays) are checked on the
host only for what the host knows (type, shape, dtype, device); validation never reads their values
and never synchronises the host with the device. Their values are checked on the device
(:func:`check_device_values`) after the runner's stream has waited for the producer, and the result
is read only when asked: ``runner.last_value_check.result()`` raises the same :class:`InputError`
(or warns the same :class:`InputRangeWarning`) as for host inputs. A call that waits on the host
anyway (device inputs with a host ``out=``) reads it before returning.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from lso.data.value_range import RANGE_HIGH, RANGE_LOW, InputRangeWarning  # one bound, one class for all checks
from lso.deps import is_tensor
from lso.errors import InputError
from lso.io_spec import HR_MSI, LR_HSI, infer_ratio

if TYPE_CHECKING:
    import torch

__all__ = ["FuseInputs", "InputRangeWarning", "RANGE_LOW", "RANGE_HIGH", "ACCEPTED_DTYPES", "validate_inputs",
           "check_shapes", "check_dtype", "check_values", "scan_values", "normalize_extent", "as_tensor",
           "restore_output", "check_out", "check_memory", "DeviceValueCheck", "check_device_values",
           "settle_on_current_stream", "host_array", "as_device", "CPU_DEVICE"]

ACCEPTED_DTYPES = ("float16", "float32", "float64")
"""The accepted element types (numpy names; torch's are ``torch.<name>``)."""
_NUMPY_FLOATS = (np.float16, np.float32, np.float64)


@dataclass(frozen=True)
class _HostDevice:
    """The CPU as runners name it without torch: ``type``, ``index`` and ``str`` as ``torch.device("cpu")``."""

    type: str = "cpu"
    index: None = None

    def __str__(self) -> str:
        return "cpu"


CPU_DEVICE = _HostDevice()


def as_device(device: Any) -> Any:
    """``torch.device(device)``; the CPU (``None``, ``"cpu"``) as :data:`CPU_DEVICE`, which needs no torch."""
    if device is None or (isinstance(device, str) and device.strip().lower() == "cpu") or device is CPU_DEVICE:
        return CPU_DEVICE
    import torch

    return torch.device(device)


def host_array(x: Any, np_type: type[np.generic] = np.float32) -> np.ndarray:
    """A C-contiguous numpy array of ``np_type`` over a host array's or CPU tensor's memory where it already is
    one (no copy), else a converted copy."""
    arr = x.detach().cpu().numpy() if is_tensor(x) else np.asarray(x)  # a CPU tensor shares its numpy view
    if arr.dtype != np_type:
        arr = arr.astype(np_type)
    return np.ascontiguousarray(arr)


@dataclass
class FuseInputs:
    """Validated inputs: 4-D views of the caller's memory and what to give back.

    Attributes:
        hr_msi: ``[B, C_msi, H, W]`` view of the caller's array (dtype unchanged): a numpy array for host
            arrays (``kind == "numpy"``), a torch tensor for tensors and device arrays.
        lr_hsi: ``[B, C_hsi, h, w]`` likewise.
        ratio: ``H / h``.
        batched: False if the caller gave ``[C, H, W]`` arrays (the output drops the batch axis).
        kind: ``"numpy"``, ``"torch"`` or ``"device"`` (a ``__cuda_array_interface__``/DLPack object).
        template: the caller's ``hr_msi`` object (decides the type of the output).
        producer_streams: ``cudaStream_t`` handles that ``__cuda_array_interface__`` inputs name (v3
            ``stream``): work on them must be waited for before the values are read. Nothing has waited yet.
        values_pending: device values still to be checked (:func:`check_device_values`).
    """

    hr_msi: Any
    lr_hsi: Any
    ratio: int
    batched: bool
    kind: str
    template: Any
    producer_streams: tuple[int, ...] = ()
    values_pending: bool = False

    @property
    def output_shape(self) -> tuple[int, int, int, int]:
        """``(B, C_hsi, H, W)``."""
        b, _, h, w = self.hr_msi.shape
        return (int(b), int(self.lr_hsi.shape[1]), int(h), int(w))

    @property
    def device(self) -> Any:
        """The inputs' ``torch.device``; :data:`CPU_DEVICE` for numpy arrays (no torch needed)."""
        return self.hr_msi.device if is_tensor(self.hr_msi) else CPU_DEVICE

    @property
    def is_cuda(self) -> bool:
        return is_tensor(self.hr_msi) and bool(self.hr_msi.is_cuda)

    def torch_views(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(hr_msi, lr_hsi)`` as torch tensors, for torch-based runners (numpy arrays are viewed, not copied)."""
        def view(x: Any) -> torch.Tensor:
            return x if is_tensor(x) else _numpy_to_tensor(x)

        return view(self.hr_msi), view(self.lr_hsi)


# ------------------------------------------------------------------------------------------ types
def _describe(x: Any) -> str:
    return f"{type(x).__module__}.{type(x).__qualname__}"


def as_tensor(x: Any, name: str) -> tuple[torch.Tensor, str]:
    """``(tensor, kind)``: a torch view of ``x`` without copying where possible.

    numpy arrays share memory (``torch.from_numpy``); device arrays are wrapped through
    ``__cuda_array_interface__`` or DLPack. Other array-likes (lists, h5py datasets) go through
    ``np.asarray`` (which reads them).
    """
    if is_tensor(x):
        return x, "torch"
    if hasattr(x, "__cuda_array_interface__"):
        from lso.runtime.cuda_arrays import as_torch

        return as_torch(x, wait=False), "device"  # the runner waits for its producer stream
    if not isinstance(x, np.ndarray) and hasattr(x, "__dlpack__") and hasattr(x, "__dlpack_device__"):
        import torch

        try:
            return torch.from_dlpack(x), "device"
        except (RuntimeError, TypeError, BufferError) as exc:
            raise InputError(f"{name}: cannot read {_describe(x)} through DLPack ({exc}); pass a numpy array "
                             f"or a torch tensor") from exc
    arr = x if isinstance(x, np.ndarray) else np.asarray(x)
    _check_numpy_dtype(arr, name)
    return _numpy_to_tensor(arr), "numpy"


def _raw(x: Any, name: str) -> tuple[Any, str]:
    """``x`` as a numpy array (no copy for arrays) or via :func:`as_tensor` for tensors and device arrays."""
    if is_tensor(x) or hasattr(x, "__cuda_array_interface__") or (
            not isinstance(x, np.ndarray) and hasattr(x, "__dlpack__") and hasattr(x, "__dlpack_device__")):
        return as_tensor(x, name)
    try:
        arr = x if isinstance(x, np.ndarray) else np.asarray(x)
    except (TypeError, ValueError) as exc:  # ragged lists, objects numpy cannot read
        raise InputError(f"{name}: cannot be read as an array ({_describe(x)}: {exc}); pass a numpy array or a "
                         f"torch tensor") from exc
    _check_numpy_dtype(arr, name)
    return arr, "numpy"


def _native(arr: np.ndarray) -> np.ndarray:
    """``arr`` itself, or a copy only for non-native byte order or negative strides (after the size checks)."""
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if any(s < 0 for s in arr.strides):
        arr = np.ascontiguousarray(arr)
    return arr


def _numpy_to_tensor(arr: np.ndarray) -> torch.Tensor:
    """A torch view of ``arr`` (see :func:`_native` for the rare copy)."""
    import torch

    with warnings.catch_warnings():  # read-only arrays are fine: runners never write to inputs
        warnings.filterwarnings("ignore", message=".*not writable.*")
        return torch.from_numpy(_native(arr))


def _dtype_reason(dtype_name: str, is_int: bool, is_bool: bool, is_complex: bool) -> str:
    if is_bool:
        return "boolean masks are not images"
    if is_int:
        return ("integer images carry a sensor-specific scale (255 for 8-bit, 4095 for 12-bit, 65535 for 16-bit) "
                "that cannot be guessed, and the model expects reflectance in [0, 1]; convert it yourself, e.g. "
                "x.astype(np.float32) / 65535")
    if is_complex:
        return "complex values are not reflectances"
    return "only float16, float32 and float64 are accepted; convert with .astype(np.float32) / .float()"


def _check_numpy_dtype(arr: np.ndarray, name: str) -> None:
    dt = arr.dtype
    if dt.type in _NUMPY_FLOATS:
        return
    reason = _dtype_reason(str(dt), np.issubdtype(dt, np.integer), dt == np.bool_,
                           np.issubdtype(dt, np.complexfloating))
    raise InputError(f"{name} has dtype {dt}: rejected ({reason})")


def _check_torch_dtype(t: torch.Tensor, name: str) -> None:
    import torch

    dt = t.dtype
    if str(dt).replace("torch.", "") in ACCEPTED_DTYPES:
        return
    reason = _dtype_reason(str(dt), not dt.is_floating_point and not dt.is_complex and dt != torch.bool,
                           dt == torch.bool, dt.is_complex)
    raise InputError(f"{name} has dtype {str(dt).replace('torch.', '')}: rejected ({reason})")


def check_dtype(x: Any, name: str) -> None:
    """Reject anything but float16/32/64 (numpy arrays, torch tensors, or anything with a numpy ``dtype``)."""
    if is_tensor(x):
        _check_torch_dtype(x, name)
    else:
        _check_numpy_dtype(np.empty(0, dtype=x.dtype), name)


# ------------------------------------------------------------------------------------------ shapes
def _to_4d(shape: tuple[int, ...], name: str, bands: int) -> tuple[tuple[int, int, int, int], bool]:
    """The 4-D shape for ``shape`` and whether the caller gave a batch axis."""
    nd = len(shape)
    dims = "x".join(map(str, shape))
    if nd == 4:
        return (shape[0], shape[1], shape[2], shape[3]), True
    if nd == 3:
        if shape[0] != bands and shape[-1] == bands:
            raise InputError(f"{name} has shape {dims}, which looks channels-last (H, W, C); the layout is "
                             f"(C, H, W) with C = {bands}: transpose it, e.g. np.moveaxis(x, -1, 0)")
        return (1, shape[0], shape[1], shape[2]), False
    if nd == 2:
        if bands == 1:
            return (1, 1, shape[0], shape[1]), False
        raise InputError(f"{name} is 2-D ({dims}): expected [{bands}, H, W] or [B, {bands}, H, W] — one band "
                         f"alone cannot be fused, this model needs {bands} bands")
    raise InputError(f"{name} has {nd} dimensions ({dims or 'a scalar'}): expected [B, {bands}, H, W] or "
                     f"[{bands}, H, W]")


def check_shapes(hr_shape: tuple[int, ...], lr_shape: tuple[int, ...], *, n_msi_bands: int,
                 n_bands: int) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int], int, bool]:
    """Shape-only checks (rank, bands, batch, ratio); no values read.

    Returns:
        ``(hr_shape_4d, lr_shape_4d, ratio, batched)``.
    """
    hr4, hr_batched = _to_4d(tuple(int(s) for s in hr_shape), HR_MSI, n_msi_bands)
    lr4, lr_batched = _to_4d(tuple(int(s) for s in lr_shape), LR_HSI, n_bands)
    for name, s4, bands, what in ((HR_MSI, hr4, n_msi_bands, "high-resolution MSI/RGB"),
                                  (LR_HSI, lr4, n_bands, "low-resolution HSI")):
        if s4[1] != bands:
            hint = ""
            if s4[-1] == bands:
                hint = " (the last axis has that many: channels-last? transpose to [B, C, H, W])"
            elif name == HR_MSI and s4[1] == n_bands:
                hint = " (this looks like the hyperspectral input: were hr_msi and lr_hsi swapped?)"
            raise InputError(f"{name} ({what}) has {s4[1]} bands (shape {'x'.join(map(str, s4))}); this model "
                             f"expects {bands}{hint}")
    if hr4[0] == 0:
        raise InputError("empty batch: hr_msi has batch size 0")
    if hr4[0] != lr4[0]:
        raise InputError(f"batch sizes differ: hr_msi has {hr4[0]}, lr_hsi has {lr4[0]}")
    ratio = infer_ratio(hr4, lr4)
    return hr4, lr4, ratio, hr_batched or lr_batched


# ------------------------------------------------------------------------------------------ values
def _count_bad(t: torch.Tensor) -> tuple[int, int]:
    import torch

    if bool(torch.isfinite(t).all()):
        return 0, 0
    return int(torch.isnan(t).sum()), int(torch.isinf(t).sum())


def check_values(t: Any, name: str, *, stacklevel: int = 3) -> None:
    """Reject NaN/Inf (with counts); warn about values outside ``[RANGE_LOW, RANGE_HIGH]`` (a torch tensor, or a
    host array through :func:`scan_values`)."""
    if not is_tensor(t):
        scan_values(t, name, stacklevel=stacklevel + 1)
        return
    import torch

    if t.numel() == 0:
        return
    n_nan, n_inf = _count_bad(t)
    _raise_non_finite(name, n_nan, n_inf, t.numel())
    lo_t, hi_t = torch.aminmax(t if t.dtype != torch.float16 or t.is_cuda else t.float())
    lo, hi = float(lo_t), float(hi_t)
    if lo < RANGE_LOW or hi > RANGE_HIGH:
        n_out = int(((t < RANGE_LOW) | (t > RANGE_HIGH)).sum())
        _warn_range(name, n_out, t.numel(), lo, hi, stacklevel + 1)


def _raise_non_finite(name: str, n_nan: int, n_inf: int, total: int) -> None:
    if n_nan or n_inf:
        raise InputError(f"{name} has {n_nan} NaN and {n_inf} Inf values (of {total}): non-finite inputs are "
                         f"rejected; fill or mask them first (e.g. np.nan_to_num(x, nan=0.0))")


def _warn_range(name: str, n_out: int, total: int, lo: float, hi: float, stacklevel: int) -> None:
    hint = " (unscaled integer data? divide by the sensor's maximum, e.g. 255 or 65535)" if hi > 2.0 else ""
    warnings.warn(f"{name}: {n_out} of {total} values lie outside [{RANGE_LOW}, {RANGE_HIGH}] (min {lo:.4g}, max "
                  f"{hi:.4g}); the model expects reflectance in [0, 1]{hint}", InputRangeWarning,
                  stacklevel=stacklevel)


def scan_values(array: Any, name: str, *, rows_per_chunk: int = 256, stacklevel: int = 3) -> None:
    """:func:`check_values` over a large host array (numpy, memmap, h5py dataset) in row chunks.

    Reads ``array[..., i:i+rows_per_chunk, :]`` one chunk at a time, so memory stays bounded by the
    chunk; counts are for the whole array.
    """
    height = int(array.shape[-2])
    total = int(np.prod(array.shape)) if len(array.shape) else 0
    n_nan = n_inf = n_out = 0
    lo, hi = math.inf, -math.inf
    for r0 in range(0, height, rows_per_chunk):
        chunk = np.asarray(array[..., r0:r0 + rows_per_chunk, :])
        if chunk.dtype == np.float16:
            chunk = chunk.astype(np.float32)
        finite = np.isfinite(chunk)
        if not finite.all():
            n_nan += int(np.isnan(chunk).sum())
            n_inf += int(np.isinf(chunk).sum())
            continue
        lo, hi = min(lo, float(chunk.min())), max(hi, float(chunk.max()))
        n_out += int(np.count_nonzero((chunk < RANGE_LOW) | (chunk > RANGE_HIGH)))
    _raise_non_finite(name, n_nan, n_inf, total)
    if n_out:
        _warn_range(name, n_out, total, lo, hi, stacklevel)


# ------------------------------------------------------------------------------------------ entry
def check_memory(hr4: tuple[int, int, int, int], config: Any, *, memory_budget: Any = None) -> None:
    """Refuse (InputError) fusing ``hr4`` in one piece when the estimate exceeds the memory budget.

    The estimate is :func:`lso.memory.fusion_bytes` plus the float32 output; see :mod:`lso.memory` for
    the budget's default. Called before any value is read or any buffer allocated.
    """
    from lso.memory import array_bytes, check_bytes, fusion_bytes

    b, _, height, width = hr4
    need = fusion_bytes(config, b, height, width) + array_bytes((b, config.n_bands, height, width), 4)
    check_bytes(need, f"fusing {HR_MSI} {'x'.join(map(str, hr4))} in one piece",
                memory_budget=memory_budget,
                fix="fuse it in tiles (lso.runtime.fuse_tiled(runner, ..., memory_budget=...) picks a tile that "
                    "fits; lso infer --tile)")


def validate_inputs(hr_msi: Any, lr_hsi: Any, *, n_msi_bands: int, n_bands: int,
                    check_finite: bool = True, config: Any = None, memory_budget: Any = None) -> FuseInputs:
    """Check ``hr_msi`` and ``lr_hsi`` (see the module docstring) and return 4-D views of them.

    Args:
        hr_msi: ``[B, n_msi_bands, H, W]`` or ``[n_msi_bands, H, W]``.
        lr_hsi: ``[B, n_bands, h, w]`` or ``[n_bands, h, w]`` with ``H = r*h``, ``W = r*w``.
        n_msi_bands, n_bands: band counts the model expects.
        check_finite: read the values (NaN/Inf, range); False skips that pass (shapes and dtypes are
            always checked).
        config: the model's :class:`~lso.config.LSOConfig`; when given, the memory the fusion would need
            is estimated and checked against ``memory_budget`` (:func:`check_memory`) before any value
            is read.
        memory_budget: bytes or a size string (``"4G"``); default :func:`lso.memory.default_memory_budget`.

    Raises:
        InputError: wrong type, rank, bands, batch, ratio, dtype, device, size over the memory budget, or
            non-finite values.
    """
    hr, kind = _raw(hr_msi, HR_MSI)
    lr, _ = _raw(lr_hsi, LR_HSI)
    for t, name in ((hr, HR_MSI), (lr, LR_HSI)):
        if is_tensor(t):
            _check_torch_dtype(t, name)
    hr4, lr4, ratio, batched = check_shapes(tuple(hr.shape), tuple(lr.shape), n_msi_bands=n_msi_bands,
                                            n_bands=n_bands)
    if config is not None:  # before anything is copied or read
        check_memory(hr4, config, memory_budget=memory_budget)
    if is_tensor(hr) or is_tensor(lr):  # a tensor or a device array: both as torch tensors
        hr = hr if is_tensor(hr) else _numpy_to_tensor(hr)
        lr = lr if is_tensor(lr) else _numpy_to_tensor(lr)
        if hr.device != lr.device:
            raise InputError(f"hr_msi is on {hr.device} but lr_hsi is on {lr.device}: put both on the same device")
        on_device = hr.is_cuda or lr.is_cuda
        from lso.runtime.cuda_arrays import producer_streams

        streams = producer_streams(hr_msi, lr_hsi)
    else:  # host arrays stay numpy: no torch
        hr, lr = _native(hr), _native(lr)
        on_device, streams = False, ()
    hr, lr = hr.reshape(hr4), lr.reshape(lr4)

    if check_finite and not on_device:
        check_values(hr, HR_MSI, stacklevel=4)
        check_values(lr, LR_HSI, stacklevel=4)
    return FuseInputs(hr, lr, ratio, batched, kind, hr_msi, streams, values_pending=check_finite and on_device)


# ------------------------------------------------------------------------------------------ device values
class DeviceValueCheck:
    """NaN/Inf counts and the value range of device inputs, computed on the device, read when asked.

    Made by :func:`check_device_values`; nothing is read from the device until :meth:`result` (or
    :attr:`ready`). Runners keep the last one as ``runner.last_value_check``.
    """

    def __init__(self, stats: torch.Tensor, names: tuple[str, ...], numels: tuple[int, ...], event: Any = None,
                 ops: Any = None) -> None:
        self._stats = stats  # [n_inputs, 5]: n_nan, n_inf, n_out_of_range, min, max (float64, on the device)
        self._names, self._numels = names, numels
        self._event, self._ops = event, ops
        self._checked = False

    @property
    def ready(self) -> bool:
        """True once the device has computed the statistics (never blocks)."""
        return self._event is None or bool(self._event.query())

    def result(self, *, stacklevel: int = 2) -> None:
        """Wait for the statistics (a host synchronisation on this check alone) and report them.

        Raises:
            InputError: an input had NaN/Inf values (the same message as for host inputs).

        Warns:
            InputRangeWarning: values far outside ``[RANGE_LOW, RANGE_HIGH]``.
        """
        if self._event is not None and self._ops is not None:
            self._ops.synchronize_event(self._event)
        rows = self._stats.tolist()
        for name, total, (n_nan, n_inf, n_out, lo, hi) in zip(self._names, self._numels, rows, strict=True):
            _raise_non_finite(name, int(n_nan), int(n_inf), total)
            if n_out and not self._checked:
                _warn_range(name, int(n_out), total, lo, hi, stacklevel + 1)
        self._checked = True


def check_device_values(tensors: tuple[tuple[str, torch.Tensor], ...], *, ops: Any = None,
                        stream: Any = None) -> DeviceValueCheck:
    """Enqueue the value checks of device ``tensors`` on torch's current stream; no host synchronisation.

    Args:
        tensors: ``(name, tensor)`` pairs.
        ops: the CUDA calls (:class:`lso.runtime.streams.CudaOps`); with ``stream``, an event recorded
            there after the statistics lets :meth:`DeviceValueCheck.result` wait for them alone.
        stream: the stream the statistics are computed on (the current one).
    """
    import torch

    rows = []
    for _, t in tensors:
        x = t if t.dtype != torch.float16 else t.float()
        if x.numel() == 0:
            rows.append(torch.zeros(5, dtype=torch.float64, device=x.device))
            continue
        finite = torch.isfinite(x)
        n_nan, n_inf = torch.isnan(x).sum(), (~finite).sum() - torch.isnan(x).sum()
        safe = torch.where(finite, x, torch.zeros((), dtype=x.dtype, device=x.device))
        lo, hi = torch.aminmax(safe)
        n_out = ((safe < RANGE_LOW) | (safe > RANGE_HIGH)).sum()
        rows.append(torch.stack([n_nan.double(), n_inf.double(), n_out.double(), lo.double(), hi.double()]))
    stats = torch.stack(rows)
    event = None
    if ops is not None and stream is not None:
        event = ops.new_event()
        ops.record(event, stream)
    return DeviceValueCheck(stats, tuple(n for n, _ in tensors), tuple(int(t.numel()) for _, t in tensors), event,
                            ops)


def settle_on_current_stream(inputs: FuseInputs) -> DeviceValueCheck | None:
    """For runners that run on torch's current stream: wait there for the producers, enqueue the value checks.

    Returns the pending :class:`DeviceValueCheck` (None when no device values were to be checked).
    """
    if inputs.producer_streams:
        from lso.runtime.cuda_arrays import wait_for_producer

        for handle in inputs.producer_streams:
            wait_for_producer(handle, inputs.device)
        inputs.producer_streams = ()
    if not inputs.values_pending:
        return None
    inputs.values_pending = False
    return check_device_values(((HR_MSI, inputs.hr_msi), (LR_HSI, inputs.lr_hsi)))


def normalize_extent(extent: Any, inputs: FuseInputs) -> tuple[int, int, int, int] | None:
    """``(row0, col0, H_full, W_full)`` as ints, checked against the input's size (None stays None)."""
    if extent is None:
        return None
    if is_tensor(extent):
        extent = extent.detach().cpu().tolist()
    try:
        flat = np.asarray(extent).reshape(-1).tolist()
        if any(isinstance(v, float) and not v.is_integer() for v in flat):
            raise ValueError("not whole numbers")
        values = [int(v) for v in flat]
    except (TypeError, ValueError, OverflowError) as exc:
        raise InputError(f"extent must be 4 integers (row0, col0, H_full, W_full), got {extent!r} ({exc})") from None
    if len(values) != 4:
        raise InputError(f"extent must have 4 values (row0, col0, H_full, W_full), got {len(values)}")
    row0, col0, h_full, w_full = values
    _, _, height, width = inputs.output_shape
    if (row0 < 0 or col0 < 0 or row0 + height > h_full or col0 + width > w_full or h_full < 2 or w_full < 2
            or max(h_full, w_full) >= 2**62):
        raise InputError(f"extent {tuple(values)} does not contain this {height}x{width} input: need 0 <= row0, "
                         f"row0 + H <= H_full, likewise for columns, and H_full, W_full >= 2")
    return row0, col0, h_full, w_full


# ------------------------------------------------------------------------------------------ output
def check_out(out: Any, inputs: FuseInputs) -> Any:
    """Check a caller-provided output buffer; return a 4-D view of it (numpy array or torch tensor)."""
    shape4 = inputs.output_shape
    expected = shape4 if inputs.batched else shape4[1:]
    view: np.ndarray | torch.Tensor
    if isinstance(out, np.ndarray):
        view = out
    elif is_tensor(out):
        view = out
    elif hasattr(out, "__cuda_array_interface__"):
        from lso.runtime.cuda_arrays import as_torch

        view = as_torch(out)
    else:
        raise InputError(f"out must be a numpy array, a torch tensor or a device array, got {_describe(out)}")
    shape = tuple(int(s) for s in view.shape)
    if shape not in (expected, shape4):
        raise InputError(f"out has shape {'x'.join(map(str, shape))}; expected {'x'.join(map(str, expected))}")
    dtype_ok = view.dtype == np.float32 if isinstance(view, np.ndarray) else str(view.dtype) == "torch.float32"
    if not dtype_ok:
        raise InputError(f"out has dtype {view.dtype}; outputs are float32")
    contiguous = view.flags.c_contiguous if isinstance(view, np.ndarray) else view.is_contiguous()
    if not contiguous:
        raise InputError("out must be C-contiguous (results are written into it in place)")
    if isinstance(view, np.ndarray) and not view.flags.writeable:
        raise InputError("out is read-only")
    return view.reshape(shape4)


def _write_into(dst: Any, src: Any) -> None:
    if dst is src:
        return
    if isinstance(dst, np.ndarray):
        if is_tensor(src):
            src = src.detach().cpu().float().numpy()
        if not np.shares_memory(dst, src):
            np.copyto(dst, src.reshape(dst.shape), casting="same_kind")
        return
    import torch

    src_t = torch.from_numpy(np.ascontiguousarray(src)) if isinstance(src, np.ndarray) else src
    if src_t.data_ptr() != dst.data_ptr():
        dst.copy_(src_t.reshape(dst.shape))


def restore_output(result: Any, inputs: FuseInputs, out: Any = None) -> Any:
    """Give the result back in the caller's terms.

    numpy in -> numpy out; torch in -> torch out on the input's device; a device array in -> a CuPy
    array for CuPy input, else a torch CUDA tensor (which itself exposes ``__cuda_array_interface__``
    and DLPack). With ``out``, the result is written into it (if the runner did not already) and
    ``out`` itself is returned. A batch axis added by validation is removed again.
    """
    if out is not None:
        _write_into(check_out(out, inputs), result)
        return out
    if inputs.kind == "numpy":
        if is_tensor(result):
            result = result.detach().to("cpu").numpy()
    else:
        if isinstance(result, np.ndarray):
            import torch

            result = torch.from_numpy(result)
        result = result.to(inputs.device)
        if inputs.kind == "device" and type(inputs.template).__module__.split(".")[0] == "cupy":
            from lso.deps import require

            result = require("cupy").asarray(result)  # zero-copy through __cuda_array_interface__
    return result if inputs.batched else result[0]
