"""Fixtures of the calibration tests (a plugin registered once by tests/conftest.py; a second conftest.py
would shadow tests/conftest.py). The tiny model is exported once per session. Helpers are in ``cal_util``.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lso import LSO, LSOConfig

_CACHE: dict = {}


@pytest.fixture(scope="session")
def cal_model() -> LSO:
    """Tiny LSO (seed 0) shared by the calibration tests: never modify it."""
    if "model" not in _CACHE:
        torch.manual_seed(0)
        _CACHE["model"] = LSO(LSOConfig.tiny()).eval()
    return _CACHE["model"]


@pytest.fixture(scope="session")
def cal_onnx(cal_model, tmp_path_factory) -> Path:
    """``cal_model`` exported once with export_onnx (no parity table: the export tests cover it)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxconverter_common")
    if "onnx" not in _CACHE:
        from lso.export import export_onnx

        _CACHE["onnx"] = export_onnx(cal_model, tmp_path_factory.mktemp("cal") / "tiny.onnx", check=False)
    return _CACHE["onnx"]


@pytest.fixture(scope="session")
def cal_feeds():
    """Four synthetic training scenes at 32x32, x4 (min_count lowered on purpose for speed)."""
    from lso.calibration import calibration_feeds

    if "feeds" not in _CACHE:
        _CACHE["feeds"] = calibration_feeds(count=4, size=32, min_count=1)
    return _CACHE["feeds"]

