"""The backend registry behind ``lso.runtime.load``: suffix or ``backend=``, and one rule for options."""
from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from lso import runtime
from lso.errors import InputError
from lso.runtime import base
from lso.runtime.base import BACKENDS, backend_of, backend_options, register_backend

from rt_fixtures import reference, scene


def test_shipped_backends_and_their_suffixes():
    assert list(BACKENDS) == ["torch", "onnxruntime", "tensorrt", "openvino"]
    assert backend_of("m.onnx").name == "onnxruntime" and backend_of("m.plan").gpu_only
    assert backend_of("@demo").name == "torch"
    assert backend_of("m.safetensors", backend="torch").name == "torch"
    assert backend_of("m.onnx", backend="openvino").name == "openvino"  # OpenVINO reads ONNX directly
    assert backend_of("m.xml").name == "openvino" and not BACKENDS["openvino"].gpu_only  # its IR, by suffix
    with pytest.raises(InputError, match="unknown backend 'ncnn'.*onnxruntime.*openvino"):
        backend_of("m.onnx", backend="ncnn")


def test_backend_torch_refuses_another_backend_s_file(tiny_onnx):
    with pytest.raises(InputError, match="torch backend runs PyTorch checkpoints.*tiny.onnx.*name onnxruntime"):
        backend_of(tiny_onnx, "torch")
    assert backend_of(tiny_onnx, "openvino").name == "openvino"  # OpenVINO runs an .onnx by design
    assert backend_of("@demo", "torch").name == "torch"


def test_options_rule_hints_ignored_others_refused():
    torch_backend = BACKENDS["torch"]
    assert backend_options(torch_backend, {"threads": 4, "fp16": True}) == {"fp16": True}  # threads: a hint
    with pytest.raises(InputError, match="takes no option 'cuda_graph'.*tensorrt"):
        backend_options(torch_backend, {"cuda_graph": True})
    with pytest.raises(InputError, match="no backend takes it"):
        backend_options(BACKENDS["onnxruntime"], {"colour": "red"})
    assert backend_options(BACKENDS["tensorrt"], {"threads": 2, "memory_budget": "1G"}) == {"memory_budget": "1G"}
    openvino = BACKENDS["openvino"]
    assert backend_options(openvino, {"threads": 2, "inter_op_threads": 1, "precision": "bf16"}) == {
        "threads": 2, "precision": "bf16"}  # inter_op_threads: ONNX Runtime's hint, ignored
    with pytest.raises(InputError, match="takes no option 'precision'.*only openvino"):
        backend_options(BACKENDS["onnxruntime"], {"precision": "fp32"})


def test_load_a_model_and_a_checkpoint_with_threads(rt_model, tmp_path):
    from lso import save_checkpoint

    hr, lr = scene(32, 32, 4)
    with runtime.load(rt_model, threads=3) as runner:  # an LSO module: torch, threads ignored
        assert type(runner).__name__ == "TorchRunner"
        np.testing.assert_allclose(runner.fuse(hr, lr), reference(rt_model, hr, lr), atol=1e-6)
    ckpt = save_checkpoint(rt_model, tmp_path / "tiny.safetensors")
    with pytest.raises(InputError, match="takes no option 'providers'"):
        runtime.load(ckpt, providers=["CPUExecutionProvider"])


def test_a_new_backend_is_a_module_and_one_registration(rt_model, tiny_onnx, monkeypatch):
    module = types.ModuleType("lso_test_fake_runner")

    class FakeRunner(base.Runner):
        backend = "fake"

        def __init__(self, path, *, device=None, threads=None):
            super().__init__()
            self.path, self.threads = path, threads

        def _activate(self):
            pass

        def _deactivate(self):
            pass

        @property
        def input_specs(self):
            return ()

        def _fuse(self, inputs, extent, out, **options):
            return None

    module.FakeRunner = FakeRunner
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(base, "BACKENDS", dict(BACKENDS))
    register_backend("fake", f"{module.__name__}:FakeRunner", suffixes=(".fake",), options={"threads"},
                     hints={"threads"})
    assert type(runtime.load(tiny_onnx, backend="fake", threads=2)).__name__ == "FakeRunner"
    assert runtime.load(tiny_onnx, backend="fake", threads=2).threads == 2
    with pytest.raises(InputError, match="takes no option 'fp16'.*torch"):
        runtime.load(tiny_onnx, backend="fake", fp16=True)


@pytest.mark.parametrize("text, want", [
    ("precision=bf16", ("precision", "bf16")), ("shapes=dynamic", ("shapes", "dynamic")),
    ("cuda_graph=true", ("cuda_graph", True)), ("verify=False", ("verify", False)), ("stream=none", ("stream", None)),
    ("max_graphs=4", ("max_graphs", 4)), ("profile_index=-1", ("profile_index", -1)), ("x=0.5", ("x", 0.5)),
    ("x=1e-3", ("x", 1e-3)), ("x=nan", ("x", "nan")), (" shape_cache = 2 ", ("shape_cache", 2)),
    ("x=a=b", ("x", "a=b")), ("x=", ("x", ""))])
def test_parse_runner_option_converts_the_value(text, want):
    key, value = base.parse_runner_option(text)
    assert (key, value) == want and type(value) is type(want[1])


@pytest.mark.parametrize("text, message", [
    ("precision", "--runner-option expects KEY=VALUE"), ("=bf16", "--runner-option expects KEY=VALUE"),
    ("threads=2", "use --threads instead"), ("device=cuda", "use --device instead"),
    ("backend=openvino", "use --backend instead"), ("config=tiny", "use --config instead"),
    ("memory_budget=1G", "use --memory-budget instead")])
def test_parse_runner_option_refuses_bad_forms_and_keys_with_their_own_flag(text, message):
    with pytest.raises(InputError, match=message):
        base.parse_runner_option(text)


def test_check_runner_options_keys_and_the_command_s_own_flags():
    assert base.check_runner_options(None) == {}
    assert base.check_runner_options({"precision": "bf16"}) == {"precision": "bf16"}
    assert base.parse_runner_option("device=cuda", own_flags={"threads": "--threads"}) == ("device", "cuda")
    with pytest.raises(InputError, match="option names must be non-empty strings, got 3"):
        base.check_runner_options({3: True})
    with pytest.raises(InputError, match="must be a mapping"):
        base.check_runner_options(["precision=bf16"])  # type: ignore[arg-type]
    with pytest.raises(InputError, match="use --threads instead"):
        base.check_runner_options({"threads": 2})
