"""Calibration feeds: shapes from the I/O spec, count checks, sources, the ORT reader adapter."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from lso import io_spec
from lso.calibration import calibration_feeds, held_out_scenes, make_ort_reader
from lso.errors import ArtifactError, InputError


def test_default_shapes_follow_the_opt_profile():
    feeds = calibration_feeds(count=8)  # nothing generated until iterated
    prof = io_spec.default_profile()
    assert feeds.shapes() == {io_spec.HR_MSI: prof.opt[io_spec.HR_MSI], io_spec.LR_HSI: prof.opt[io_spec.LR_HSI]}
    assert feeds.ratio == 4 and len(feeds) == 8


def test_feeds_are_arrays_of_the_spec_names_and_shapes():
    feeds = calibration_feeds(count=2, size=32, min_count=1)
    items = list(feeds)
    assert len(items) == 2
    for item in items:
        assert set(item) == set(io_spec.INPUT_NAMES)
        assert item[io_spec.HR_MSI].shape == (1, 3, 32, 32) and item[io_spec.LR_HSI].shape == (1, 31, 8, 8)
        assert item[io_spec.HR_MSI].dtype == np.float32
        assert 0.0 <= item[io_spec.LR_HSI].min() and item[io_spec.LR_HSI].max() <= 1.0
    assert list(feeds)[0] is items[0]  # re-iterable, same arrays
    assert feeds.describe()["scenes"] == ["synth_1000", "synth_1001"]  # training seeds, never eval ones


def test_batch_groups_scenes():
    feeds = calibration_feeds(count=4, size=32, batch=2, min_count=1)
    assert len(feeds) == 2 and feeds[0][io_spec.HR_MSI].shape == (2, 3, 32, 32)


@pytest.mark.parametrize("kwargs, match", [
    (dict(count=3), "at least 8"),
    (dict(count=3, min_count=1, batch=2), "whole batches"),
    (dict(count=1, min_count=1, batch=2), "whole batches"),
    (dict(count=2, min_count=1, size=30), "multiple of the ratio"),
    (dict(count=2, min_count=1, size=4096), "outside the profile"),
])
def test_bad_requests_fail_before_any_scene_is_made(kwargs, match):
    with pytest.raises(InputError, match=match):
        calibration_feeds(**kwargs)


def test_missing_h5_is_an_artifact_error(tmp_path):
    with pytest.raises(ArtifactError):
        calibration_feeds(tmp_path / "nope.h5", count=2, size=32, min_count=1)


def test_h5_source_is_cropped_and_degraded(tmp_path):
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(0)
    path = tmp_path / "train.h5"
    with h5py.File(path, "w") as f:
        f["GT"] = rng.random((3, 31, 40, 48), dtype=np.float32)
        f["RGB"] = rng.random((3, 3, 40, 48), dtype=np.float32)
    feeds = calibration_feeds(path, count=3, size=32, min_count=1)
    assert [f[io_spec.LR_HSI].shape for f in feeds] == [(1, 31, 8, 8)] * 3
    with pytest.raises(InputError, match="has 3 images"):
        list(calibration_feeds(path, count=4, size=32, min_count=1))


def test_ort_reader_protocol():
    pytest.importorskip("onnxruntime")
    feeds = calibration_feeds(count=2, size=32, min_count=1)
    reader = feeds.ort_reader()
    from onnxruntime.quantization import CalibrationDataReader

    assert isinstance(reader, CalibrationDataReader) and len(reader) == 2
    got = [reader.get_next(), reader.get_next(), reader.get_next()]
    assert got[2] is None and got[0] is feeds[0]
    reader.rewind()
    assert reader.get_next() is feeds[0]
    reader.set_range(1, 2)
    assert reader.get_next() is feeds[1] and reader.get_next() is None
    assert len(make_ort_reader([feeds[0]])) == 1


def test_held_out_scenes_are_the_eval_split():
    scenes = held_out_scenes(1, size=32)
    assert scenes[0].name == "synth_101" and scenes[0].lr_hsi.shape == (31, 8, 8)


def test_import_is_light():
    code = ("import sys, lso.calibration, lso.calibration.feeds; "
            "bad = [m for m in ('onnx', 'onnxruntime', 'onnxconverter_common') if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
