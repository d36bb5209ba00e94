"""Shared fixtures, the fixture plugins of the test folders and the gpu/trt skip hook."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

# The fixtures of the test folders live in plain modules next to their tests (a second conftest.py would
# shadow this one) and are registered here, once, as plugins: pytest loads this conftest before collecting,
# so their fixtures are global, test modules take them as arguments without importing them, and a session
# fixture is one instance per session. Their folders go on sys.path so that these modules and the plain
# helpers beside them (rt_fixtures.scene, ex_helpers, cal_util) import by name under any --import-mode.
# Fixture names are unique across the four modules and this file.
for _folder in ("runtime", "export", "calibration", "scaleout"):
    if str(REPO / "tests" / _folder) not in sys.path:
        sys.path.insert(0, str(REPO / "tests" / _folder))
pytest_plugins = ["rt_fixtures", "ex_fixtures", "cal_fixtures", "so_fixtures"]
# data produced by the authors' implementation, carried by the repository (provenance: its README.md)
REFERENCE_DIR = REPO / "tests" / "data" / "reference"
REFERENCE = REFERENCE_DIR / "lso_official_reference.safetensors"
REFERENCE_KEYS = REFERENCE_DIR / "lso_official_state_dict.json"
REFERENCE_TAGS = ("x4_64x64", "x4_48x80", "x4_40x56", "x8_64x64", "x8_48x80", "x8_40x56")
NONDEFAULT_CHECKPOINT = REFERENCE_DIR / "lso_official_nondefault.pth.tar"
NONDEFAULT_VECTORS = REFERENCE_DIR / "lso_official_nondefault_vectors.safetensors"
NONDEFAULT_TAGS = ("x4_48x80", "x8_64x64", "x4_40x56")


def _cuda() -> bool:
    return torch.cuda.is_available()


def _tensorrt() -> bool:
    return importlib.util.find_spec("tensorrt") is not None


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU (none found: torch.cuda.is_available() is False)")
    skip_trt = pytest.mark.skip(reason="needs TensorRT and a CUDA GPU (tensorrt not importable or no GPU)")
    for item in items:
        if "trt" in item.keywords and not (_cuda() and _tensorrt()):
            item.add_marker(skip_trt)
        elif "gpu" in item.keywords and not _cuda():
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def reference():
    """The official reference vectors (weights.* and TAG.*) as a dict of tensors."""
    from safetensors.torch import load_file

    return load_file(str(REFERENCE))


@pytest.fixture(scope="session")
def reference_state_dict(reference):
    return {k[len("weights."):]: v for k, v in reference.items() if k.startswith("weights.")}


@pytest.fixture()
def tiny_model():
    from lso import LSO, LSOConfig

    torch.manual_seed(0)
    return LSO(LSOConfig.tiny()).eval()
