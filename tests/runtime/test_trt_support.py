"""lso.runtime.trt_support is the one TensorRT module: nothing else imports TensorRT, the builder does not borrow
the runner's parts, and the CUDA gate comes before TensorRT."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from lso.errors import MissingDependencyError
from lso.runtime import trt_support

REPO = Path(__file__).resolve().parents[2]
PACKAGE_DIRS = ("src/lso", "export", "runtime", "calibration", "benchmarks", "scaleout")


def _imports(path: Path) -> set[str]:
    """Modules a file imports: import statements and literal importlib.import_module / require arguments."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "require")):
            found.add(node.args[0].value)
    return found


def _sources():
    for folder in PACKAGE_DIRS:
        yield from sorted((REPO / folder).rglob("*.py"))


def test_only_trt_support_imports_tensorrt():
    offenders = [str(p.relative_to(REPO)) for p in _sources() if p.name != "trt_support.py"
                 and any(m.split(".")[0] in trt_support.MODULE_CANDIDATES for m in _imports(p))]
    assert offenders == [], f"TensorRT imported outside lso.runtime.trt_support: {offenders}"


def test_builder_does_not_borrow_the_runner():
    for path in sorted((REPO / "export").glob("*.py")):
        bad = {m for m in _imports(path) if m.startswith("lso.runtime.trt_runner") or "_trt_compat" in m}
        assert not bad, f"{path.name} imports {bad}: use lso.runtime.trt_support"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path")
def test_the_cuda_gate_comes_before_tensorrt(monkeypatch):
    from lso.runtime.cuda_arrays import DeviceUnavailableError

    def forbidden():
        raise AssertionError("TensorRT imported without a CUDA device")

    monkeypatch.setattr(trt_support, "import_tensorrt", forbidden)
    with pytest.raises(DeviceUnavailableError, match="CUDA GPU"):
        trt_support.tensorrt_on_device(build=True)


def test_a_lean_runtime_cannot_build():
    import types

    lean = types.ModuleType("tensorrt_lean")
    lean.__version__ = "11.4.0.106"
    with pytest.raises(MissingDependencyError, match="cannot build engines"):
        trt_support.require_builder(lean)
    full = types.ModuleType("tensorrt")
    full.Builder = object
    trt_support.require_builder(full)
