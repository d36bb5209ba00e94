"""Fuzz targets: bytes in, and the only allowed outcomes are a result or one of our errors.

Each target takes the fuzzer's bytes and drives one input surface of lso-deploy:

- ``readers``: the first byte picks a reader, the rest is the file's content (HDF5 ours/community,
  Harvard ``.mat`` v5/v7.3, ``.npy``, ``.npz``, PNG, PyTorch checkpoints, safetensors, sidecars, ONNX
  graphs, TensorRT plans before TensorRT).
- ``validation``: the bytes choose shapes (huge ones included), dtypes, array kinds, NaN/Inf, extents
  and output buffers for the runners' input validation; small valid inputs are then fused by the tiny
  PyTorch model, whole and in tiles under a fuzzed memory budget.
- ``cli``: the bytes become an ``argv`` for the ``lso`` parser; a parsed ``lso infer`` is turned into
  its options and checked as the command would (``SystemExit`` from argparse is a valid outcome).

An outcome other than a return or :class:`lso.errors.LSOError` (``SystemExit`` for the parser) is
re-raised: the fuzzer records it as a finding. Memory: the harnesses (``run_atheris.py``, the
hypothesis tests) set ``LSO_MEMORY_BUDGET`` to :data:`FUZZ_MEMORY_BUDGET` so that any allocation the
budget should have refused shows up as an RSS overrun (``-rss_limit_mb``), and hangs as timeouts
(``-timeout``). Warnings (e.g. ``InputRangeWarning``) are outcomes, not findings.

Used by ``fuzz/run_atheris.py`` (coverage-guided, atheris) and importable without atheris.
"""
from __future__ import annotations

import atexit
import contextlib
import io
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lso.errors import LSOError

FUZZ_MEMORY_BUDGET = "256M"
"""The harnesses set ``LSO_MEMORY_BUDGET`` to this (well below libFuzzer's ``-rss_limit_mb``)."""

_WORK = Path(tempfile.mkdtemp(prefix="lso-fuzz-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
atexit.register(shutil.rmtree, _WORK, ignore_errors=True)


class Provider:
    """A small stand-in for ``atheris.FuzzedDataProvider`` (the same bytes give the same choices)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def int_in(self, lo: int, hi: int) -> int:
        span = hi - lo + 1
        nbytes = max(1, (span.bit_length() + 7) // 8)
        value = int.from_bytes(bytes(self.byte() for _ in range(nbytes)), "little")
        return lo + value % span

    def pick(self, options):
        return options[self.int_in(0, len(options) - 1)]

    def rest(self) -> bytes:
        out, self.pos = self.data[self.pos:], len(self.data)
        return out


# ---------------------------------------------------------------------------------------------- readers
def _read_scene(path: Path) -> None:
    from lso.data import read_scene

    read_scene(path)


def _read_arrays(path: Path) -> None:
    """One file of a pair (``lso infer HR LR``): every array it holds, each checked before it is read."""
    from lso.data import read_arrays

    read_arrays(path)


def _h5_dataset(path: Path) -> None:
    from lso.data.readers import H5Dataset

    with H5Dataset(path) as ds:
        if len(ds):
            ds[0]
            ds[-1]


def _harvard(path: Path) -> None:
    from lso.data.readers import read_harvard_mat

    read_harvard_mat(path)


def _checkpoint(path: Path) -> None:
    from lso.checkpoint import load_checkpoint

    load_checkpoint(path)


def _sidecar(path: Path) -> None:
    from lso.artifacts import read_sidecar, sidecar_path

    artifact = path.with_suffix("")
    artifact.write_bytes(b"artifact")
    try:
        sidecar_path(artifact).write_bytes(path.read_bytes())
        read_sidecar(artifact)
    finally:
        sidecar_path(artifact).unlink(missing_ok=True)
        artifact.unlink(missing_ok=True)


def _onnx(path: Path) -> None:
    from lso.runtime.ort_runner import OrtRunner

    with OrtRunner(path, threads=1):
        pass


def _plan(path: Path) -> None:
    from lso.runtime.trt_runner import read_plan

    read_plan(path)


def _band_png(path: Path) -> None:
    from lso.data.readers import read_band_png
    from lso.deps import require

    read_band_png(path, require("skimage.io"))


# (suffix, reader); the first byte of the input picks one, modulo the length
READERS: list[tuple[str, Callable[[Path], None]]] = [
    (".h5", _read_scene), (".h5", _h5_dataset), (".mat", _harvard), (".mat", _read_scene), (".npy", _read_arrays),
    (".npz", _read_scene), (".png", _read_arrays), (".pth", _checkpoint), (".safetensors", _checkpoint),
    (".json", _sidecar), (".onnx", _onnx), (".plan", _plan), (".png", _band_png),
]


def _quiet(fn: Callable[[bytes], None]) -> Callable[[bytes], None]:
    def run(data: bytes) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn(data)

    run.__name__ = fn.__name__
    return run


@_quiet
def readers(data: bytes) -> None:
    if not data:
        return
    suffix, reader = READERS[data[0] % len(READERS)]
    path = _WORK / f"input{suffix}"
    path.write_bytes(data[1:])
    try:
        reader(path)
    except LSOError:
        pass
    finally:
        path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------- validation
_DIMS = (0, 1, 2, 3, 4, 5, 7, 8, 12, 16, 31, 32, 33, 48, 64, 10**6, 2**31, 2**40)
_DTYPES = ("float32", "float16", "float64", "bfloat16", "int8", "uint16", "int64", "bool", "complex64", "object",
           ">f4", "float32")


def _shape(p: Provider) -> tuple[int, ...]:
    ndim = p.pick((0, 1, 2, 3, 4, 4, 4, 5))
    return tuple(p.pick(_DIMS) if p.byte() % 4 == 0 else p.int_in(0, 70) for _ in range(ndim))


def _array(p: Provider, shape: tuple[int, ...], dtype: str):
    import torch

    kind = p.pick(("numpy", "numpy", "torch", "list", "noncontig", "readonly"))
    fill = p.pick((0.5, 0.0, 1.0, float("nan"), float("inf"), -float("inf"), 1e30, -3.0, 255.0))
    n = int(np.prod(shape, dtype=object)) if shape else 1
    np_dtype = "float32" if dtype == "bfloat16" else dtype
    small = n <= 200_000 and max(shape, default=0) <= 100_000
    if not small:  # huge: a zero-stride view, no memory behind it
        arr = np.broadcast_to(np.asarray(fill if np_dtype != "object" else None, dtype=np_dtype), shape)
    else:
        rng = np.random.default_rng(p.byte())
        arr = rng.random(shape).astype(np_dtype) if np_dtype != "object" else np.empty(shape, dtype=object)
        if n and p.byte() % 3 == 0 and arr.dtype.kind in "fc":
            arr.reshape(-1)[p.int_in(0, n - 1)] = fill
    if kind == "torch" and arr.dtype.kind in "fiub" and arr.dtype.isnative:
        tdtype = torch.bfloat16 if dtype == "bfloat16" else torch.from_numpy(np.empty(0, arr.dtype)).dtype
        if small:
            return torch.from_numpy(np.ascontiguousarray(arr)).to(tdtype)
        return torch.tensor(0.5).to(tdtype).expand(*shape)  # zero-stride: no memory behind it
    if kind == "list" and small and n <= 4096:
        return arr.tolist()
    if kind == "noncontig" and arr.ndim >= 2 and small:
        return np.swapaxes(arr, -1, -2)
    if kind == "readonly" and small:
        arr = np.array(arr)
        arr.flags.writeable = False
    return arr


_TINY = None


def _tiny_runner():
    global _TINY
    if _TINY is None:
        import torch

        from lso import LSO, LSOConfig
        from lso.runtime import TorchRunner

        torch.manual_seed(0)
        _TINY = TorchRunner(LSO(LSOConfig.tiny()).eval()).activate()
    return _TINY


@_quiet
def validation(data: bytes) -> None:
    from lso import LSOConfig
    from lso.runtime.tiling import fuse_tiled
    from lso.runtime.validation import check_out, normalize_extent, validate_inputs

    p = Provider(data)
    try:
        hr_shape, lr_shape = _shape(p), _shape(p)
        if p.byte() % 2:  # a consistent pair more often than chance would give
            b, h, w, r = p.int_in(1, 2), p.int_in(1, 12), p.int_in(1, 12), p.int_in(1, 8)
            hr_shape, lr_shape = (b, 3, h * r, w * r), (b, 31, h, w)
            if p.byte() % 5 == 0:
                hr_shape, lr_shape = hr_shape[1:], lr_shape[1:]
        hr = _array(p, hr_shape, p.pick(_DTYPES))
        lr = _array(p, lr_shape, p.pick(_DTYPES))
    except (ValueError, TypeError, OverflowError, MemoryError, RuntimeError):
        return  # the harness could not build these arrays: not an input the package ever sees
    extent = p.pick((None, (0, 0, 64, 64), (0, 0, 2**70, 1), (float("nan"), 0, 1, 1), "abcd", (1, 2, 3),
                     [[0, 0], [8, 8]]))
    # budgets up to 1G: a budget raised past the harness's RSS limit would allow what it asks for
    budget = p.pick((None, "1M", "64M", "1G", 10**5, 0, -5, "x", "12 parsecs", float("nan"), True))
    try:
        inputs = validate_inputs(hr, lr, n_msi_bands=3, n_bands=31, check_finite=bool(p.byte() % 4),
                                 config=LSOConfig.tiny(), memory_budget=budget)
        normalize_extent(extent, inputs)
        out_kind = p.byte() % 4
        if out_kind == 1:
            check_out(np.empty(inputs.output_shape, dtype=p.pick(("float32", "float64"))), inputs)
        elif out_kind == 2:
            check_out(np.empty((1, 2, 3), dtype=np.float32), inputs)
        h, w = inputs.output_shape[2:]
        if h * w <= 96 * 96 and inputs.output_shape[0] <= 2:
            runner = _tiny_runner()
            if p.byte() % 2:
                runner.fuse(hr, lr)
            else:
                fuse_tiled(runner, hr, lr, tile=p.pick((None, 1, 16, 17, 64, 0, -1, 2.5)),
                           overlap=p.pick((None, 0, 3, 16, 48)), memory_budget=p.pick((None, "2M", "20M", "1G")))
    except LSOError:
        pass


# ---------------------------------------------------------------------------------------------- cli
_VOCAB = ("infer", "export", "build", "calibrate", "train", "eval", "demo", "info", "triton-repo", "batch", "serve",
          "--tile", "--overlap", "--memory-budget", "--ratio", "--index", "--threads", "--layout", "--lr-from",
          "--device", "-o", "--out", "--envi", "--no-preview", "--help", "-v", "model.onnx", "scene.h5", "a.npy",
          "b.png", "-1", "0", "16", "1e9", "4G", "nan", "--", "=", "hwc", "file", "cuda:0", "\x00", "-")
_PARSER = None


@_quiet
def cli(data: bytes) -> None:
    from lso import cli as lso_cli

    global _PARSER
    if _PARSER is None:
        _PARSER = lso_cli.build_parser()
    p = Provider(data)
    argv: list[str] = []
    for _ in range(p.int_in(0, 12)):
        if p.byte() % 3:
            argv.append(p.pick(_VOCAB))
        else:
            n = p.int_in(0, 12)
            argv.append(bytes(p.byte() for _ in range(n)).decode("utf-8", "replace"))
    if p.byte() % 2 and argv:
        argv[0] = "infer"
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            args = _PARSER.parse_args(argv)
    except SystemExit:
        return
    if getattr(args, "command", None) == "infer":
        try:
            lso_cli._infer_options(args).check()
        except LSOError:
            pass


TARGETS: dict[str, Callable[[bytes], None]] = {"readers": readers, "validation": validation, "cli": cli}
