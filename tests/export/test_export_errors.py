"""Bad input gives a clear error and leaves no file: checkpoints, configs, output paths, parity, interrupts."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lso import LSOConfig
from lso.errors import ArtifactError, ExportError
from lso.export import ParityCase, export_onnx, onnx_export

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def _files(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_missing_checkpoint(tmp_path):
    with pytest.raises(ArtifactError, match="does not exist"):
        export_onnx(tmp_path / "nope.pth.tar", tmp_path / "m.onnx")
    assert _files(tmp_path) == []


def test_corrupt_checkpoint(tmp_path):
    bad = tmp_path / "model_best.pth.tar"
    bad.write_bytes(b"PK\x03\x04 not really a checkpoint" * 10)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ArtifactError, match="not a readable PyTorch checkpoint"):
        export_onnx(bad, out / "m.onnx")
    assert _files(out) == []


def test_config_that_does_not_fit_the_weights(tmp_path, ex_model):
    ckpt = tmp_path / "tiny.pth.tar"
    torch.save({"model_state_dict": ex_model.state_dict()}, ckpt)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ArtifactError, match="contradicts the configuration asked for: guide_dim=128"):
        export_onnx(ckpt, out / "m.onnx", config=LSOConfig.paper())
    assert _files(out) == []


def test_no_checkpoint_and_none_bundled(tmp_path, monkeypatch):
    import lso.weights

    monkeypatch.setattr(lso.weights, "DEMO_CHECKPOINT", "not_bundled.safetensors")
    with pytest.raises(ArtifactError, match="--checkpoint"):
        export_onnx(None, tmp_path / "m.onnx")
    assert _files(tmp_path) == []


@pytest.mark.parametrize("where", ["missing folder", "file as folder", "folder as file", "read-only place"])
def test_output_path_that_cannot_be_written(tmp_path, ex_model, where):
    target = {
        "missing folder": tmp_path / "no" / "such" / "m.onnx",
        "file as folder": tmp_path / "afile" / "m.onnx",
        "folder as file": tmp_path / "adir.onnx",
        "read-only place": "/proc/lso_export_test.onnx",
    }[where]
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir.onnx").mkdir()
    with pytest.raises(ArtifactError, match="cannot write"):
        export_onnx(ex_model, target)
    assert _files(tmp_path) == ["adir.onnx", "afile"]


def test_output_must_be_onnx(tmp_path, ex_model):
    with pytest.raises(ExportError, match=r"\.onnx"):
        export_onnx(ex_model, tmp_path / "model.plan")


@pytest.fixture()
def fast_build(monkeypatch, ex_onnx):
    """Skip torch.export/translation: reuse the already exported graph (the passes still run on it)."""
    monkeypatch.setattr(onnx_export, "_capture", lambda *a, **k: None)
    monkeypatch.setattr(onnx_export, "_translate", lambda *a, **k: onnx.load(str(ex_onnx)))


def test_parity_failure_leaves_no_file(tmp_path, ex_model, fast_build):
    with pytest.raises(ExportError, match="parity check failed for x4 32x32") as info:
        export_onnx(ex_model, tmp_path / "m.onnx", cases=[ParityCase(4, 32, 32)], atol=0.0)
    assert "max abs err" in str(info.value)  # the table is in the message
    assert _files(tmp_path) == []


def test_interrupt_leaves_no_file(tmp_path, ex_model, fast_build, monkeypatch):
    from lso.export import parity

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(parity, "run_parity", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_onnx(ex_model, tmp_path / "m.onnx")
    assert _files(tmp_path) == []


def test_existing_file_is_replaced_only_on_success(tmp_path, ex_model, fast_build):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"previous export")
    with pytest.raises(ExportError):
        export_onnx(ex_model, out, cases=[ParityCase(4, 32, 32)], atol=0.0)
    assert out.read_bytes() == b"previous export"
    export_onnx(ex_model, out, cases=[ParityCase(4, 32, 32)])
    assert onnx.load(str(out)).graph.input[0].name == "hr_msi"


def test_skip_check_records_it(tmp_path, ex_model, fast_build):
    from lso.artifacts import read_sidecar

    out = export_onnx(ex_model, tmp_path / "m.onnx", check=False)
    assert read_sidecar(out)["parity"] == {"skipped": True}


def test_simplifier_failure_keeps_the_unsimplified_graph(tmp_path, ex_model, fast_build, monkeypatch):
    from lso.artifacts import read_sidecar
    from lso.export import passes

    def broken(model):
        raise ExportError("onnxslim 0 failed: boom")

    monkeypatch.setattr(passes, "simplify", broken)
    out = export_onnx(ex_model, tmp_path / "m.onnx", cases=[ParityCase(4, 32, 32)])
    side = read_sidecar(out)
    assert side["simplifier"]["applied"] is False and "boom" in side["simplifier"]["error"]
    assert side["parity"]["passed"]


def test_unsupported_operator_fails_naming_the_node(tmp_path, ex_model, fast_build, monkeypatch, ex_onnx):
    def with_col2im(*args, **kwargs):
        """The exported graph with a Col2Im on the way to the output."""
        model = onnx.load(str(ex_onnx))
        last = next(n for n in model.graph.node if "hr_hsi" in n.output)
        last.output[list(last.output).index("hr_hsi")] = "pre"
        model.graph.initializer.extend([onnx.numpy_helper.from_array(np.array([4, 4], np.int64), "c2i_size"),
                                        onnx.numpy_helper.from_array(np.array([1, 1], np.int64), "c2i_block")])
        model.graph.node.extend([
            onnx.helper.make_node("Col2Im", ["pre", "c2i_size", "c2i_block"], ["c2i"], name="my_col2im"),
            onnx.helper.make_node("Add", ["pre", "c2i"], ["hr_hsi"], name="add_c2i"),
        ])
        return model

    monkeypatch.setattr(onnx_export, "_translate", with_col2im)
    with pytest.raises(ExportError, match="(?s)my_col2im.*Col2Im.*--allow-unsupported"):
        export_onnx(ex_model, tmp_path / "m.onnx", simplify=False, check=False)
    assert _files(tmp_path) == []
