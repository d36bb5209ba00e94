"""``lso calibrate``: parse -> one library call -> the artifacts and their sidecars."""
from __future__ import annotations

import json
import shutil

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxconverter_common")

from lso.cli import main

SMALL = ["--count", "2", "--min-count", "1", "--size", "32"]


def _side(path):
    return json.loads(path.with_name(path.name + ".json").read_text())


def test_calibrate_fp16(cal_onnx, tmp_path, capsys):
    src = shutil.copy(cal_onnx, tmp_path / "model.onnx")
    assert main(["calibrate", str(src), "--precision", "fp16", *SMALL]) == 0
    out = tmp_path / "model.fp16.onnx"
    assert capsys.readouterr().out.strip() == str(out)
    side = _side(out)
    assert side["precision"] == "fp16" and side["calibration"]["count"] == 2


def test_calibrate_int8_with_sweep(cal_onnx, tmp_path):
    src = shutil.copy(cal_onnx, tmp_path / "model.onnx")
    assert main(["calibrate", str(src), "--precision", "int8", *SMALL, "--val-count", "1", "--val-size", "32",
                 "--target-dpsnr", "0.5"]) == 0
    trt, cpu = tmp_path / "model.int8.onnx", tmp_path / "model.int8.cpu.onnx"
    assert (tmp_path / "model.int8.calibration.json").is_file()
    side_trt, side_cpu = _side(trt), _side(cpu)
    sweep = side_trt["sweep"]
    assert sweep["ranking"] and sweep["points"] and sweep["validation"]["scenes"] == ["synth_1002"]
    assert side_trt["float_blocks"] == side_cpu["float_blocks"] == sweep["points"][sweep["chosen_k"]]["float_blocks"]
    assert side_trt["calibration"]["cache_sha256"] == side_cpu["calibration"]["cache_sha256"]


def test_calibrate_int8_fixed_blocks_and_errors(cal_onnx, tmp_path, capsys):
    src = shutil.copy(cal_onnx, tmp_path / "model.onnx")
    assert main(["calibrate", str(src), "--precision", "int8", *SMALL, "--flavour", "tensorrt",
                 "--float-blocks", "outc"]) == 0
    assert _side(tmp_path / "model.int8.onnx")["float_blocks"] == ["outc"]
    assert not (tmp_path / "model.int8.cpu.onnx").exists()
    capsys.readouterr()
    assert main(["calibrate", str(src), "--precision", "int8", "--count", "2"]) == 1  # too few scenes
    assert "at least 8" in capsys.readouterr().err
