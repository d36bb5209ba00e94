"""`python export/to_onnx.py` and `lso export`: one option set, --help without onnx, a full tileable run."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lso import io_spec
from lso.export.parity import DEFAULT_CASES, ParityCase

from ex_helpers import inputs, ort_run, torch_run

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "export" / "to_onnx.py"


def _options(parser: argparse.ArgumentParser) -> dict:
    return {a.dest: (tuple(a.option_strings), a.default) for a in parser._actions if a.dest not in ("help", "verbose")}


def test_script_and_subcommand_share_one_option_set():
    import importlib.util

    from lso.cli import build_parser

    spec = importlib.util.spec_from_file_location("to_onnx_script", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices["export"]
    assert _options(script.build_parser()) == _options(sub)
    for flag in ("--checkpoint", "--out", "--tileable", "--skip-check", "--allow-unsupported", "--opset"):
        assert flag in sub.format_help()


def test_help_works_without_onnx_and_explains_the_options():
    code = ("import sys, runpy; sys.argv = ['to_onnx.py', '--help']\n"
            f"try:\n    runpy.run_path({str(SCRIPT)!r}, run_name='__main__')\nexcept SystemExit as e:\n"
            "    assert e.code == 0\n"
            "assert 'onnx' not in sys.modules and 'onnxruntime' not in sys.modules, 'heavy import'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    for text in ("--checkpoint", "--tileable", "--skip-check", "--allow-unsupported", "every image size",
                 ", ".join(c.name for c in DEFAULT_CASES)):
        assert text in proc.stdout


def test_import_is_light():
    code = ("import sys, lso.export, lso.cli\n"
            "assert not {'onnx', 'onnxruntime', 'onnxslim', 'onnxscript'} & set(sys.modules), sorted(sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_bad_checkpoint_exits_1_with_a_message_and_no_file(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--checkpoint", str(tmp_path / "missing.pth.tar"),
                           "--out", str(tmp_path / "m.onnx")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "error:" in proc.stderr and "missing.pth.tar" in proc.stderr and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_case_option_parses():
    assert ParityCase.parse("4:48x80:2") == ParityCase(4, 48, 80, batch=2)
    assert ParityCase.parse("x3:75x57").name == "x3 75x57"
    from lso.errors import InputError

    with pytest.raises(InputError):
        ParityCase.parse("4:50x50")  # not a multiple of the ratio


@pytest.mark.slow
def test_tileable_export_from_a_checkpoint(tmp_path, ex_model):
    """The whole command on our checkpoint format: 3 inputs, extent int64 [4], parity at a tile offset."""
    from lso import save_checkpoint

    ckpt = save_checkpoint(ex_model, tmp_path / "tiny.safetensors")
    out = tmp_path / "tiled.onnx"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--checkpoint", str(ckpt), "--out", str(out), "--tileable",
                           "--case", "4:32x40", "--case", "3:27x33:2"], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "x3 27x33 b2" in proc.stdout and "within 0.0001" in proc.stdout
    side = json.loads((tmp_path / "tiled.onnx.json").read_text())
    assert side["tileable"] and [i["name"] for i in side["inputs"]] == [io_spec.HR_MSI, io_spec.LR_HSI, io_spec.EXTENT]
    assert side["source"]["kind"] == "checkpoint" and side["source"]["path"] == str(ckpt)
    from lso.checkpoint import weights_fingerprint

    assert f"weights sha256 {weights_fingerprint(ckpt)}" in proc.stdout  # the graph names its weights

    import onnx

    graph = onnx.load(str(out)).graph
    extent = graph.input[2]
    assert extent.type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert [d.dim_value for d in extent.type.tensor_type.shape.dim] == [4]
    # a tile at an offset of a larger image: same global coordinates as PyTorch
    hr, lr = inputs(1, 4, 6, 5, seed=3)
    ext = np.array([8, 12, 64, 48], np.int64)
    got = ort_run(out, {io_spec.HR_MSI: hr, io_spec.LR_HSI: lr, io_spec.EXTENT: ext})
    np.testing.assert_allclose(got, torch_run(ex_model, hr, lr, ext), rtol=0, atol=1e-4)
    whole = ort_run(out, {io_spec.HR_MSI: hr, io_spec.LR_HSI: lr, io_spec.EXTENT: np.array([0, 0, 24, 20])})
    assert not np.allclose(got, whole, atol=1e-6)  # the extent input is really used
    with torch.inference_mode():
        default = ex_model(torch.from_numpy(hr), torch.from_numpy(lr)).numpy()
    np.testing.assert_allclose(whole, default, rtol=0, atol=1e-4)  # (0, 0, H, W) is the default grid


def test_options_map_to_export_onnx_arguments(tmp_path):
    from lso import LSOConfig
    from lso.cli import add_export_arguments, export_kwargs
    from lso.errors import InputError

    parser = add_export_arguments(argparse.ArgumentParser())
    assert export_kwargs(parser.parse_args([])) == {
        "config": None, "opset": 18, "tileable": False, "simplify": True, "check": True, "cases": None,
        "atol": 1e-4, "seed": 0, "allow_unsupported": False, "solver_chunk": None,
        "align_channels": None, "target": "portable", "tune_budget": None}
    (tmp_path / "cfg.json").write_text(json.dumps(LSOConfig.tiny(width=8, heads=1).to_dict()))
    kwargs = export_kwargs(parser.parse_args(["--config", str(tmp_path / "cfg.json"), "--no-simplify", "--skip-check",
                                              "--case", "4:32x32", "--tileable", "--opset", "20"]))
    assert kwargs["config"] == LSOConfig.tiny(width=8, heads=1).to_dict()
    assert kwargs["cases"] == (ParityCase(4, 32, 32),)
    assert (kwargs["simplify"], kwargs["check"], kwargs["tileable"], kwargs["opset"]) == (False, False, True, 20)
    assert export_kwargs(parser.parse_args(["--config", "tiny"]))["config"] == LSOConfig.tiny().to_dict()
    assert export_kwargs(parser.parse_args(["--config", "patch_size=2"]))["config"] == {"patch_size": 2}
    assert export_kwargs(parser.parse_args(["--solver-chunk", "128"]))["solver_chunk"] == 128
    assert export_kwargs(parser.parse_args(["--align-channels", "16"]))["align_channels"] == 16
    with pytest.raises(InputError, match="--config"):
        export_kwargs(parser.parse_args(["--config", "not-a-config"]))
