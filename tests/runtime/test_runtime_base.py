"""Runner protocol and ``lso.runtime.load``: dispatch by artifact, lifecycle, outputs in the caller's terms."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from lso import runtime, save_checkpoint
from lso.errors import ArtifactError, InputError
from lso.runtime.base import RunnerStateError, backend_for

from rt_fixtures import reference, scene


@pytest.mark.parametrize("name, backend", [
    ("model_best.pth.tar", "TorchRunner"), ("m.pth", "TorchRunner"), ("m.pt", "TorchRunner"),
    ("m.safetensors", "TorchRunner"), ("model.onnx", "OrtRunner"), ("model.fp16.onnx", "OrtRunner"),
    ("model.plan", "TrtRunner"), ("model.engine", "TrtRunner"), ("MODEL.TRT", "TrtRunner"),
])
def test_backend_chosen_by_artifact(name, backend):
    assert backend_for(name).__name__ == backend


def test_unknown_or_missing_artifact(tmp_path):
    with pytest.raises(ArtifactError, match="cannot tell which runtime"):
        backend_for("model.tflite")
    with pytest.raises(ArtifactError, match="does not exist"):
        runtime.load(tmp_path / "missing.onnx")


def test_import_is_lazy():
    code = ("import sys, lso.runtime as r; assert r.load and r.fuse_tiled; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('onnxruntime', 'tensorrt', 'tensorrt_lean', "
            "'tensorrt_lean_bindings', 'onnx')]; assert not bad, bad; "
            "from lso.runtime import TrtRunner; import lso.runtime.trt_runner; "
            "assert not [m for m in sys.modules if m.startswith('tensorrt')]")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_load_is_cheap_and_fuse_needs_activation(tiny_onnx):
    runner = runtime.load(tiny_onnx)
    assert type(runner).__name__ == "OrtRunner" and not runner.is_active
    hr, lr = scene(32, 32, 4)
    with pytest.raises(RunnerStateError, match="with runner"):
        runner.fuse(hr, lr)
    with runner as active:
        assert active is runner and runner.is_active
        assert runner.fuse(hr, lr).shape == (1, 31, 32, 32)
    assert not runner.is_active


def test_load_checkpoint_and_onnx_agree(rt_model, tiny_onnx, tmp_path):
    ckpt = save_checkpoint(rt_model, tmp_path / "tiny.safetensors")
    hr, lr = scene(40, 24, 4, batch=2)
    with runtime.load(ckpt) as torch_runner, runtime.load(tiny_onnx, threads=1) as ort_runner:
        a, b = torch_runner.fuse(hr, lr), ort_runner.fuse(hr, lr)
        assert torch_runner.config == rt_model.config
        assert [s.name for s in ort_runner.input_specs] == ["hr_msi", "lr_hsi"]
    np.testing.assert_allclose(a, reference(rt_model, hr, lr), atol=1e-6)
    np.testing.assert_allclose(b, a, atol=1e-5)


def test_input_specs_come_from_io_spec(rt_model, tiny_onnx_tileable):
    with runtime.TorchRunner(rt_model) as r, runtime.OrtRunner(tiny_onnx_tileable) as o:
        assert r.input_names == o.input_names == ("hr_msi", "lr_hsi", "extent")
        assert r.tileable and o.tileable
        assert (r.n_msi_bands, r.n_bands) == (o.n_msi_bands, o.n_bands) == (3, 31)


def test_numpy_in_numpy_out_torch_in_torch_out(rt_model):
    hr, lr = scene(32, 32, 4)
    with runtime.TorchRunner(rt_model) as r:
        assert isinstance(r.fuse(hr, lr), np.ndarray)
        out = r.fuse(torch.from_numpy(hr), torch.from_numpy(lr))
        assert isinstance(out, torch.Tensor) and out.device.type == "cpu"
        assert r.fuse(hr[0], lr[0]).shape == (31, 32, 32)


@pytest.mark.parametrize("kind", ["torch", "onnx"])
def test_out_buffer_is_filled_and_returned(kind, rt_model, tiny_onnx):
    hr, lr = scene(24, 40, 4)
    runner = runtime.TorchRunner(rt_model) if kind == "torch" else runtime.OrtRunner(tiny_onnx)
    with runner:
        out = np.zeros((1, 31, 24, 40), np.float32)
        assert runner.fuse(hr, lr, out=out) is out
        np.testing.assert_allclose(out, reference(rt_model, hr, lr), atol=1e-5)
        out3 = np.zeros((31, 24, 40), np.float32)
        assert runner.fuse(hr[0], lr[0], out=out3) is out3
        np.testing.assert_allclose(out3, out[0], atol=1e-6)
        with pytest.raises(InputError, match="shape"):
            runner.fuse(hr, lr, out=np.zeros((1, 31, 24, 41), np.float32))
        with pytest.raises(InputError, match="float32"):
            runner.fuse(hr, lr, out=np.zeros((1, 31, 24, 40), np.float64))


def test_extent_checked_and_needs_tileable_model(rt_model, tiny_onnx):
    hr, lr = scene(32, 32, 4)
    with runtime.TorchRunner(rt_model) as r:
        with pytest.raises(InputError, match="does not contain"):
            r.fuse(hr, lr, extent=(40, 0, 64, 64))
        with pytest.raises(InputError, match="4 values"):
            r.fuse(hr, lr, extent=(0, 0, 64))
        whole = r.fuse(hr, lr)
        np.testing.assert_array_equal(r.fuse(hr, lr, extent=(0, 0, 32, 32)), whole)
        assert np.abs(r.fuse(hr, lr, extent=(32, 32, 64, 64)) - whole).max() > 1e-4
    with runtime.OrtRunner(tiny_onnx) as o:
        o.fuse(hr, lr, extent=(0, 0, 32, 32))  # the whole image: fine without an extent input
        with pytest.raises(InputError, match="tileable=True"):
            o.fuse(hr, lr, extent=(32, 32, 64, 64))


def test_repr_says_state(tiny_onnx):
    runner = runtime.load(tiny_onnx)
    assert "inactive" in repr(runner) and "tiny.onnx" in repr(runner)
    with runner:
        assert repr(runner).endswith(", active)") and repr(runner).startswith(runner.description[:-1])
    # what ran, for result lines printed after the runner closed (lso infer): no state
    assert "tiny.onnx" in runner.description and "active" not in runner.description
