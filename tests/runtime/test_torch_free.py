"""A process that runs exported graphs on the CPU never imports torch (about 0.19 GB of resident memory):
``lso.runtime.load`` of an ``.onnx`` on ONNX Runtime or OpenVINO, ``fuse`` of numpy arrays, ``fuse_tiled`` on the
tileable graph. Checked in a fresh interpreter where importing torch fails, so any import of it, at any depth, is
an error the test sees."""
from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest

from rt_fixtures import reference, scene

NO_TORCH = r"""
import builtins, sys
import numpy as np

real_import = builtins.__import__

def no_torch(name, *args, **kwargs):
    if name == "torch" or name.startswith("torch."):
        raise ImportError("torch imported in a CPU-only graph process")
    return real_import(name, *args, **kwargs)

builtins.__import__ = no_torch
"""

SCRIPT = NO_TORCH + r"""
from lso.runtime import fuse_tiled, load

path, tiled, backend, hr_file, lr_file, out_file = sys.argv[1:7]
hr, lr = np.load(hr_file), np.load(lr_file)
with load(path, backend=backend, threads=1) as runner:
    out = runner.fuse(hr, lr)
    if tiled == "1":
        tiles = fuse_tiled(runner, hr, lr, tile=16)
        assert np.array_equal(tiles, out) or np.abs(tiles - out).max() < 1e-5, np.abs(tiles - out).max()
np.save(out_file, out)
assert "torch" not in sys.modules
print("torch-free")
"""


def _backends() -> list:
    found = [pytest.param("onnxruntime")]
    reason = "OpenVINO is not installed (the openvino extra)"
    found.append(pytest.param("openvino", marks=pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                                                      reason=reason)))
    return found


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("tileable", [False, True], ids=["plain", "tileable"])
def test_cpu_graph_runs_never_import_torch(backend, tileable, tiny_onnx, tiny_onnx_tileable, rt_model, tmp_path):
    hr, lr = scene(32, 48, 4)
    np.save(tmp_path / "hr.npy", hr)
    np.save(tmp_path / "lr.npy", lr)
    path = tiny_onnx_tileable if tileable else tiny_onnx
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(path), "1" if tileable else "0", backend,
                           str(tmp_path / "hr.npy"), str(tmp_path / "lr.npy"), str(tmp_path / "out.npy")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "torch-free" in proc.stdout
    # the torch-free path computes what PyTorch does
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), reference(rt_model, hr, lr), atol=1e-4)


def test_lso_infer_of_a_graph_never_imports_torch(tiny_onnx, rt_model, tmp_path):
    hr, lr = scene(32, 32, 4)
    np.savez(tmp_path / "scene.npz", hr_msi=hr[0], lr_hsi=lr[0])
    script = NO_TORCH + (f"from lso.cli import main\nrc = main(['infer', {str(tiny_onnx)!r}, "
                         f"{str(tmp_path / 'scene.npz')!r}, '-o', {str(tmp_path / 'out.npz')!r}, '--no-progress', "
                         f"'--threads', '1'])\nassert rc == 0, rc\nassert 'torch' not in sys.modules\n"
                         f"print('torch-free')")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "torch-free" in proc.stdout
    with np.load(tmp_path / "out.npz") as data:
        np.testing.assert_allclose(data["hr_hsi"], reference(rt_model, hr, lr)[0], atol=1e-4)
