"""Input validation, table-driven: every case against every runner available here."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from lso.errors import InputError
from lso.runtime.validation import RANGE_HIGH, RANGE_LOW, InputRangeWarning, check_shapes, scan_values


def _ok(h=32, w=48, r=4, b=1):
    rng = np.random.default_rng(1)
    return rng.random((b, 3, h, w), dtype=np.float32), rng.random((b, 31, h // r, w // r), dtype=np.float32)


def _with(arr, index, value):
    arr = arr.copy()
    arr[index] = value
    return arr


def _case_nan():
    hr, lr = _ok()
    hr = _with(hr, (0, 0, 0, slice(0, 2)), np.nan)
    return hr, lr


def _case_inf():
    hr, lr = _ok()
    return hr, _with(lr, (0, 3, 1, 1), -np.inf)


# name -> (builder, expected): expected is "ok", ("error", fragments...) or ("warn", fragment)
CASES = {
    "float32 4-D": (lambda: _ok(), "ok"),
    "float32 3-D (batch axis added and removed)": (lambda: tuple(a[0] for a in _ok()), "ok3"),
    "float16": (lambda: tuple(a.astype(np.float16) for a in _ok()), "ok"),
    "float64": (lambda: tuple(a.astype(np.float64) for a in _ok()), "ok"),
    "batch 2": (lambda: _ok(b=2), "ok"),
    "ratio 3, not a multiple of 4": (lambda: _ok(30, 45, 3), "ok"),
    "torch tensors": (lambda: tuple(torch.from_numpy(a) for a in _ok()), "ok_torch"),
    "uint8 rejected": (lambda: tuple((a * 255).astype(np.uint8) for a in _ok()),
                       ("error", "hr_msi", "uint8", "integer")),
    "int64 torch rejected": (lambda: (torch.zeros(1, 3, 32, 48, dtype=torch.int64), torch.zeros(1, 31, 8, 12)),
                             ("error", "int64", "integer")),
    "bool rejected": (lambda: (np.zeros((1, 3, 32, 48), bool), _ok()[1]), ("error", "bool")),
    "bfloat16 rejected": (lambda: tuple(torch.from_numpy(a).bfloat16() for a in _ok()), ("error", "bfloat16")),
    "hr bands 4": (lambda: (np.zeros((1, 4, 32, 48), np.float32), _ok()[1]),
                   ("error", "hr_msi", "4 bands", "expects 3")),
    "lr bands 30": (lambda: (_ok()[0], np.zeros((1, 30, 8, 12), np.float32)), ("error", "lr_hsi", "30 bands", "31")),
    "hr and lr swapped": (lambda: (np.zeros((1, 31, 32, 48), np.float32), np.zeros((1, 3, 8, 12), np.float32)),
                          ("error", "swapped")),
    "ratio 2.5": (lambda: (np.zeros((1, 3, 20, 20), np.float32), np.zeros((1, 31, 8, 8), np.float32)),
                  ("error", "integer multiple")),
    "ratio differs per axis": (lambda: (np.zeros((1, 3, 32, 48), np.float32), np.zeros((1, 31, 8, 8), np.float32)),
                               ("error", "same r")),
    "ratio 1": (lambda: (np.zeros((1, 3, 8, 8), np.float32), np.zeros((1, 31, 8, 8), np.float32)), ("error", ">= 2")),
    "batch mismatch": (lambda: (_ok(b=2)[0], _ok(b=1)[1]), ("error", "batch sizes differ")),
    "NaN in hr_msi": (_case_nan, ("error", "hr_msi", "2 NaN", "0 Inf")),
    "Inf in lr_hsi": (_case_inf, ("error", "lr_hsi", "0 NaN", "1 Inf")),
    "2-D rejected": (lambda: (np.zeros((32, 48), np.float32), _ok()[1]), ("error", "2-D", "hr_msi")),
    "5-D rejected": (lambda: (np.zeros((1, 1, 3, 32, 48), np.float32), _ok()[1]), ("error", "5 dimensions")),
    "channels-last rejected with a hint": (lambda: (np.zeros((32, 48, 3), np.float32),
                                                    np.zeros((8, 12, 31), np.float32)),
                                           ("error", "channels-last", "moveaxis")),
    "values x255 warned": (lambda: (_ok()[0] * 255, _ok()[1]), ("warn", "hr_msi", "outside [-0.5, 1.5]", "255")),
    "slight overshoot accepted silently": (lambda: (np.clip(_ok()[0] * 1.3 - 0.1, -0.1, 1.2), _ok()[1]), "ok"),
}

RUNNERS = ["torch", "onnx", "onnx_tileable", pytest.param("tensorrt", marks=pytest.mark.trt)]


@pytest.fixture(scope="module", params=RUNNERS)
def runner(request, rt_model):
    from lso.runtime import OrtRunner, TorchRunner, TrtRunner

    if request.param == "torch":
        r = TorchRunner(rt_model)
    elif request.param == "tensorrt":
        r = TrtRunner(request.getfixturevalue("tiny_plan"))
    else:
        path = request.getfixturevalue("tiny_onnx" if request.param == "onnx" else "tiny_onnx_tileable")
        r = OrtRunner(path)
    with r:
        yield r


@pytest.mark.parametrize("case", list(CASES))
def test_validation_case(runner, case):
    build, expected = CASES[case]
    hr, lr = build()
    if isinstance(expected, str):
        with warnings.catch_warnings():
            warnings.simplefilter("error", InputRangeWarning)
            out = runner.fuse(hr, lr)
        shape = tuple(hr.shape)
        assert tuple(out.shape) == (*shape[:-3], 31, *shape[-2:])
        assert isinstance(out, torch.Tensor) == (expected == "ok_torch")
        assert out.dtype in (np.float32, torch.float32)
        assert np.isfinite(np.asarray(out)).all()
    elif expected[0] == "error":
        with pytest.raises(InputError) as info:
            runner.fuse(hr, lr)
        for fragment in expected[1:]:
            assert fragment in str(info.value), (fragment, str(info.value))
    else:
        with pytest.warns(InputRangeWarning) as record:
            runner.fuse(hr, lr)
        message = str(record[0].message)
        for fragment in expected[1:]:
            assert fragment in message, (fragment, message)


def test_range_bound_is_documented():
    assert (RANGE_LOW, RANGE_HIGH) == (-0.5, 1.5)
    import lso.runtime.validation as v

    assert "[-0.5, 1.5]" in v.__doc__


def test_check_finite_false_skips_value_pass(runner):
    hr, lr = _case_nan()
    runner.fuse(hr, lr, check_finite=False)  # no error: the values were not read


def test_single_band_2d_accepted_where_one_band_expected():
    hr4, lr4, ratio, batched = check_shapes((32, 48), (31, 8, 12), n_msi_bands=1, n_bands=31)
    assert hr4 == (1, 1, 32, 48) and ratio == 4 and not batched


def test_scan_values_counts_over_chunks(tmp_path):
    arr = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=(3, 600, 40))
    arr[:] = 0.5
    arr[0, 5, 3] = np.nan
    arr[2, 590, 1] = np.inf
    arr[1, 300, 0] = np.nan
    with pytest.raises(InputError, match="2 NaN and 1 Inf"):
        scan_values(arr, "hr_msi", rows_per_chunk=100)
    arr[:] = 0.5
    arr[0, 10, :] = 300.0
    with pytest.warns(InputRangeWarning, match="40 of 72000"):
        scan_values(arr, "hr_msi", rows_per_chunk=100)
