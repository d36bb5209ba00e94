"""Fixtures of the export tests.

A plugin registered once by tests/conftest.py (so the session fixtures run once; a second conftest.py
would shadow tests/conftest.py). Plain helpers are in ``ex_helpers``.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lso import LSO, LSOConfig

from ex_helpers import SMALL_CASES


@pytest.fixture(scope="session")
def ex_model() -> LSO:
    """Tiny LSO (seed 0) shared by the export tests: never modify it."""
    torch.manual_seed(0)
    return LSO(LSOConfig.tiny()).eval()


@pytest.fixture(scope="session")
def ex_onnx(ex_model, tmp_path_factory) -> Path:
    """``ex_model`` exported once with export_onnx (default options, small parity table)."""
    pytest.importorskip("onnxruntime")
    from lso.export import ParityCase, export_onnx

    out = tmp_path_factory.mktemp("export") / "tiny.onnx"
    return export_onnx(ex_model, out, cases=[ParityCase.parse(c) for c in SMALL_CASES])
