"""``lso calibrate`` on a tileable graph (inputs hr_msi, lr_hsi, extent): the feeds get the whole image's extent."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxconverter_common")

from lso.cli import main

SMALL = ["--count", "2", "--min-count", "1", "--size", "32"]


def test_calibrate_fp16_on_a_tileable_graph(tiny_onnx_tileable, tmp_path, capsys):
    from lso.calibration.graph import ort_session

    onnx = pytest.importorskip("onnx")
    src = shutil.copy(tiny_onnx_tileable, tmp_path / "model.onnx")
    assert main(["calibrate", str(src), "--precision", "fp16", *SMALL]) == 0, capsys.readouterr().err
    out = tmp_path / "model.fp16.onnx"
    side = json.loads(out.with_name(out.name + ".json").read_text())
    assert side["precision"] == "fp16" and side["summary"]["conv_macs_total"] > 0
    session = ort_session(onnx.load(str(out)))
    assert "extent" in {i.name for i in session.get_inputs()}
    rng = np.random.default_rng(0)
    feed = {"hr_msi": rng.random((1, 3, 32, 32), dtype=np.float32),
            "lr_hsi": rng.random((1, 31, 8, 8), dtype=np.float32), "extent": np.array([0, 0, 32, 32], np.int64)}
    assert np.isfinite(session.run(None, feed)[0]).all()


def test_quantize_int8_on_a_tileable_graph(tiny_onnx_tileable, cal_feeds, tmp_path):
    from lso.calibration import quantize_int8

    out = quantize_int8(tiny_onnx_tileable, tmp_path / "model.int8.onnx", feeds=cal_feeds)
    side = json.loads(out.with_name(out.name + ".json").read_text())
    assert side["summary"]["convs_int8"] > 0


def test_with_extent_adds_the_whole_image_only_where_the_graph_takes_it():
    from lso.calibration.source import with_extent

    feed = {"hr_msi": np.zeros((1, 3, 24, 40), np.float32), "lr_hsi": np.zeros((1, 31, 6, 10), np.float32)}
    assert set(with_extent(feed, ["hr_msi", "lr_hsi"])) == {"hr_msi", "lr_hsi"}
    assert with_extent(feed, ["hr_msi", "lr_hsi", "extent"])["extent"].tolist() == [0, 0, 24, 40]
    given = {**feed, "extent": np.array([8, 8, 64, 64], np.int64)}
    assert with_extent(given, ["extent"])["extent"].tolist() == [8, 8, 64, 64]
