"""TensorRT distributions (one list, full/lean/dispatch x CUDA 12/13) as ``lso info`` and ``--print-trtexec``
read them, and ONNX Runtime's TensorRT execution provider as an ``OrtRunner`` option (options and gate on CPU)."""
from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError

import pytest
import torch

from lso import io_spec
from lso.errors import InputError, MissingDependencyError
from lso.runtime import trt_support as C


def test_one_list_covers_every_flavour_and_cuda_major():
    names = {d.name for d in C.TRT_DISTRIBUTIONS}
    for stem in ("tensorrt", "tensorrt-lean", "tensorrt-dispatch"):
        for cuda in (12, 13):
            assert {f"{stem}-cu{cuda}", f"{stem}-cu{cuda}-bindings", f"{stem}-cu{cuda}-libs"} <= names
    lean13 = next(d for d in C.TRT_DISTRIBUTIONS if d.name == "tensorrt-lean-cu13-bindings")
    assert (lean13.flavour, lean13.cuda_major, lean13.module) == ("lean", 13, "tensorrt_lean_bindings")
    assert {d.module for d in C.TRT_DISTRIBUTIONS if d.module} == set(C.MODULE_CANDIDATES)
    assert [d.flavour for d in C.TRT_DISTRIBUTIONS][0] == "full"  # full first: the builder's choice


def _fake_metadata(monkeypatch, installed: dict[str, str], requires: dict[str, list[str]] | None = None,
                   importable: tuple[str, ...] = ()):
    import importlib.metadata as md
    import importlib.util

    def version(name):
        if name in installed:
            return installed[name]
        raise PackageNotFoundError(name)

    monkeypatch.setattr(md, "version", version)
    monkeypatch.setattr(md, "requires", lambda name: (requires or {}).get(name, []))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name in importable else
                        (None if name.startswith("tensorrt") else real(name, *a)))


@pytest.mark.parametrize("installed, importable, want", [
    ({"tensorrt-dispatch-cu13-bindings": "11.4.0.106", "tensorrt-dispatch-cu13-libs": "11.4.0.106"},
     ("tensorrt_dispatch_bindings",), ("dispatch", "11.4.0.106", 13, False)),
    ({"tensorrt-lean-cu12": "10.13.0.35", "tensorrt-lean-cu12-bindings": "10.13.0.35"},
     ("tensorrt_lean", "tensorrt_lean_bindings"), ("lean", "10.13.0.35", 12, False)),
    ({"tensorrt": "11.4.0.106", "tensorrt-cu13": "11.4.0.106", "tensorrt-lean-cu13": "11.4.0.106"},
     ("tensorrt", "tensorrt_lean"), ("full", "11.4.0.106", 13, True)),
])
def test_describe_tensorrt_names_flavour_version_and_cuda(monkeypatch, installed, importable, want):
    _fake_metadata(monkeypatch, installed, {"tensorrt": ["tensorrt_cu13==11.4.0.106"]}, importable)
    info = C.describe_tensorrt()
    assert info["installed"] and (info["flavour"], info["version"], info["cuda_major"], info["can_build"]) == want
    assert {d["distribution"] for d in info["distributions"]} == set(installed)


def test_nothing_installed_and_the_builder_reads_the_same_list(monkeypatch):
    from lso.runtime.trt_support import detect_trt_major

    _fake_metadata(monkeypatch, {})
    assert C.describe_tensorrt() == {"installed": False, "module": None, "distributions": []}
    assert detect_trt_major(default=None) is None
    _fake_metadata(monkeypatch, {"tensorrt-dispatch-cu12": "10.13.0.35"}, importable=("tensorrt_dispatch",))
    assert detect_trt_major(default=None) == 10


def test_lso_info_reports_tensorrt_without_importing_it(capsys):
    import sys

    from lso.cli import main

    before = {m for m in sys.modules if m.startswith("tensorrt")}
    assert main(["info"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert set(info["tensorrt"]) >= {"installed", "distributions"}
    if info["tensorrt"]["installed"]:
        assert info["tensorrt"]["flavour"] in C.FLAVOURS and info["tensorrt"]["cuda_major"] in (11, 12, 13)
    assert {m for m in sys.modules if m.startswith("tensorrt")} == before


# ----------------------------------------------------------------------------- ONNX Runtime's TensorRT provider
def test_tensorrt_provider_options_from_the_profile(tmp_path):
    from lso.runtime.ort_runner import tensorrt_provider_options

    opts = tensorrt_provider_options(device_id=1, engine_cache=tmp_path / "engines")
    prof = io_spec.default_profile()
    assert opts["trt_profile_min_shapes"] == "hr_msi:1x3x32x32,lr_hsi:1x31x1x1"
    assert opts["trt_profile_opt_shapes"] == "hr_msi:{},lr_hsi:{}".format(
        "x".join(map(str, prof.opt["hr_msi"])), "x".join(map(str, prof.opt["lr_hsi"])))
    assert opts["trt_profile_max_shapes"] == "hr_msi:4x3x1024x1024,lr_hsi:4x31x512x512"
    assert opts["trt_engine_cache_enable"] is True and opts["trt_engine_cache_path"] == str(tmp_path / "engines")
    assert opts["device_id"] == 1 and opts["trt_fp16_enable"] is False and opts["trt_int8_enable"] is False
    assert not any(k.startswith("trt_timing") for k in opts) and "trt_max_workspace_size" not in opts
    small = io_spec.default_profile(hr=((16, 16), (64, 64), (128, 128)), lr=((4, 4), (16, 16), (32, 32)))
    only_hr = tensorrt_provider_options(small, inputs=["hr_msi"], timing_cache="tc", workspace_bytes=1 << 30)
    assert only_hr["trt_profile_max_shapes"] == "hr_msi:4x3x128x128"
    assert only_hr["trt_timing_cache_enable"] and only_hr["trt_max_workspace_size"] == 1 << 30


@pytest.fixture(scope="module")
def tiny_graph(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    from lso import LSO, LSOConfig
    from lso.export import export_onnx

    torch.manual_seed(0)
    return export_onnx(LSO(LSOConfig.tiny()).eval(), tmp_path_factory.mktemp("ort-trt") / "tiny.onnx", check=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path")
@pytest.mark.parametrize("kwargs", [{"tensorrt": True}, {"providers": "tensorrt"}])
def test_tensorrt_provider_needs_a_gpu(tiny_graph, kwargs):
    from lso.runtime import OrtRunner
    from lso.runtime.cuda_arrays import DeviceUnavailableError

    with pytest.raises(DeviceUnavailableError, match="CUDA GPU"):
        OrtRunner(tiny_graph, **kwargs).activate()


def test_tensorrt_provider_needs_onnxruntime_with_it(tiny_graph, monkeypatch):
    """With a GPU (faked) but this onnxruntime's providers: the error names onnxruntime-gpu, no session made."""
    import onnxruntime as ort

    import lso.runtime.cuda_arrays as cuda_arrays
    from lso.runtime import OrtRunner

    if "TensorrtExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the TensorRT provider")
    monkeypatch.setattr(cuda_arrays, "require_cuda", lambda device=None: torch.device("cuda", 0))
    with pytest.raises(MissingDependencyError, match="onnxruntime-gpu"):
        OrtRunner(tiny_graph, tensorrt=True).activate()


def test_tensorrt_provider_list_when_available(tiny_graph, monkeypatch, tmp_path):
    """The providers handed to ONNX Runtime: TensorRT (with the options), then CUDA, then CPU; a CPU-tuned graph
    and an oversized profile are refused first."""
    import onnxruntime as ort

    import lso.runtime.cuda_arrays as cuda_arrays
    from lso.runtime import OrtRunner

    monkeypatch.setattr(cuda_arrays, "require_cuda", lambda device=None: torch.device("cuda", 0))
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    runner = OrtRunner(tiny_graph, tensorrt=True, trt_engine_cache=tmp_path / "engines")
    providers = runner._resolve_providers(ort)
    assert [p[0] if isinstance(p, tuple) else p for p in providers] == [
        "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert providers[0][1]["trt_engine_cache_path"] == str(tmp_path / "engines") and (tmp_path / "engines").is_dir()
    huge = io_spec.default_profile(batch=(1, 1, 64), hr=((32, 32), (512, 512), (4096, 4096)),
                                   lr=((1, 1), (128, 128), (1024, 1024)))
    with pytest.raises(InputError, match="limit"):
        OrtRunner(tiny_graph, tensorrt=True, trt_profile=huge)._resolve_providers(ort)
    with pytest.raises(InputError, match="providers"):
        OrtRunner(tiny_graph, providers="tpu")
