"""Every install line of lso.deps names a real extra of pyproject.toml or an explicit pip distribution."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from lso.deps import INSTALL, install_hint, require
from lso.errors import MissingDependencyError

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
PYPROJECT = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
EXTRAS = PYPROJECT["project"]["optional-dependencies"]
CORE = PYPROJECT["project"]["dependencies"]


def _names(requirements: list[str]) -> set[str]:
    """Distribution names of requirement strings, normalised (``ray[data,serve]==2.60.0`` -> ``ray``)."""
    return {re.split(r"[\[<>=!~;\s]", req, maxsplit=1)[0].lower().replace("_", "-") for req in requirements}


@pytest.mark.parametrize("module", sorted(INSTALL))
def test_install_line_names_a_real_extra_or_a_distribution(module):
    entry = INSTALL[module]
    line = entry.line()
    if entry.extra is not None:
        assert entry.extra in EXTRAS, f"{module}: no extra {entry.extra!r} in pyproject.toml"
        assert f"pip install 'lso-deploy[{entry.extra}]'" in line
        listed = _names(EXTRAS[entry.extra])
        assert (entry.via or entry.dist).lower() in listed, f"{module}: the {entry.extra!r} extra lists {listed}"
    else:
        assert line.startswith(f"pip install {entry.dist}")
        assert not any(entry.dist.lower() in _names(reqs) for reqs in EXTRAS.values()), (
            f"{module}: {entry.dist} is in an extra of lso-deploy: name the extra")
        if entry.dist.lower() in _names(CORE):
            assert "core dependency" in line
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", entry.dist), entry.dist  # a pip name, not an import name


def test_the_known_pitfalls():
    assert install_hint("PIL.Image").startswith("pip install Pillow")
    assert "lso-deploy[" not in install_hint("safetensors.torch")
    for module in ("tensorrt", "tensorrt_lean_bindings", "cupy"):
        line = install_hint(module)
        assert "lso-deploy[" not in line and "CUDA version" in line, line
    assert install_hint("tensorrt").startswith("pip install tensorrt-cu12")
    assert install_hint("cupy").startswith("pip install cupy-cuda12x")
    assert install_hint("onnxruntime.quantization") == "pip install 'lso-deploy[onnx]'"


def test_require_names_the_install_line():
    with pytest.raises(MissingDependencyError, match="pip install"):
        require("lso_no_such_module_xyz")
