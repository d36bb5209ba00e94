"""lso.data.read_scene (every format lso infer reads, plain arguments) and the writers of lso.data.writers."""
from __future__ import annotations

import json

import numpy as np
import pytest

from lso.data import (
    declared_scene,
    degrade,
    false_colour,
    read_arrays,
    read_gt,
    read_scene,
    write_envi,
    write_h5,
    write_mat,
    write_npz,
    write_output,
    write_png,
)
from lso.errors import ArtifactError, InputError

h5py = pytest.importorskip("h5py")


def _pair(n: int | None = None, size: int = 16, ratio: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    lead = () if n is None else (n,)
    return (rng.random((*lead, 3, size, size), dtype=np.float32),
            rng.random((*lead, 31, size // ratio, size // ratio), dtype=np.float32))


# ------------------------------------------------------------------------------------------ read_scene
def test_npz_and_channels_last(tmp_path):
    hr, lr = _pair()
    np.savez(tmp_path / "s.npz", hr_msi=hr, lr_hsi=lr)
    np.savez(tmp_path / "hwc.npz", RGB=np.moveaxis(hr, 0, -1), LRHSI=np.moveaxis(lr, 0, -1))
    for name in ("s.npz", "hwc.npz"):
        scene = read_scene(tmp_path / name)
        np.testing.assert_array_equal(scene.hr_msi, hr)
        np.testing.assert_array_equal(scene.lr_hsi, lr)
        assert scene.crop is None and scene.crop_attrs() == {"crop": "none"} and scene.input_scale == "unit"


def test_pair_in_either_order_and_png(tmp_path):
    hr, lr = _pair()
    np.save(tmp_path / "hr.npy", hr)
    np.save(tmp_path / "lr.npy", lr)
    for paths in ([tmp_path / "hr.npy", tmp_path / "lr.npy"], [tmp_path / "lr.npy", tmp_path / "hr.npy"]):
        scene = read_scene(paths)
        np.testing.assert_array_equal(scene.hr_msi, hr)
        np.testing.assert_array_equal(scene.lr_hsi, lr)
    pytest.importorskip("PIL")
    rgb8 = np.moveaxis(np.round(hr * 255).astype(np.uint8), 0, -1)
    write_png(tmp_path / "rgb.png", rgb8)
    scene = read_scene([str(tmp_path / "lr.npy"), str(tmp_path / "rgb.png")])
    np.testing.assert_allclose(scene.hr_msi, np.moveaxis(rgb8, -1, 0) / 255.0, atol=1e-7)
    with pytest.raises(InputError, match="give one scene file or two files"):
        read_scene([tmp_path / "hr.npy"] * 3)


def test_our_h5_reads_only_the_item_asked_for(tmp_path):
    hr, lr = _pair(3)
    with h5py.File(tmp_path / "s.h5", "w") as f:
        f["hr_msi"], f["lr_hsi"], f["gt"] = hr, lr, np.zeros((3, 31, 16, 16), np.float32)
    whole = read_scene(tmp_path / "s.h5")
    assert whole.hr_msi.shape == (3, 3, 16, 16)
    one = read_scene(tmp_path / "s.h5", index=-2)
    np.testing.assert_array_equal(one.hr_msi, hr[1])
    np.testing.assert_array_equal(one.lr_hsi, lr[1])
    assert read_gt(tmp_path / "s.h5", 1).shape == (31, 16, 16)
    with pytest.raises(InputError, match="--index 3 is out of range: hr_msi holds 3 scene"):
        read_scene(tmp_path / "s.h5", index=3)


def test_community_h5_regenerates_the_lr_hsi(tmp_path):
    rng = np.random.default_rng(1)
    gt = rng.random((2, 31, 16, 16), dtype=np.float32)
    rgb = rng.random((2, 3, 16, 16), dtype=np.float32)
    with h5py.File(tmp_path / "c.h5", "w") as f:
        f["GT"], f["RGB"], f["LRHSI"] = gt, rgb, gt[:, :, ::4, ::4]
    scene = read_scene(tmp_path / "c.h5", index=1, ratio=8)
    np.testing.assert_array_equal(scene.hr_msi, rgb[1])
    np.testing.assert_allclose(scene.lr_hsi, degrade(gt[1], 8)[1], atol=1e-6)
    from_file = read_scene(tmp_path / "c.h5", lr_from="file")
    np.testing.assert_array_equal(from_file.lr_hsi, gt[:, :, ::4, ::4])
    with pytest.raises(InputError, match="--index 2 is out of range"):
        read_scene(tmp_path / "c.h5", index=2)


def test_no_silent_crop_and_crop_on_request(tmp_path):
    hr, lr = _pair(size=34)
    lr = lr[:, :8, :8]
    np.savez(tmp_path / "odd.npz", hr_msi=hr, lr_hsi=lr)
    with pytest.raises(InputError, match="top-left 32x32.*--crop"):
        read_scene(tmp_path / "odd.npz")
    scene = read_scene(tmp_path / "odd.npz", crop=True)
    assert scene.hr_msi.shape == (3, 32, 32) and scene.lr_hsi.shape == (31, 8, 8)
    assert scene.crop_attrs()["crop_box"].tolist() == [0, 0, 32, 32]


def test_value_policy_and_input_scale(tmp_path):
    hr, lr = _pair()
    np.savez(tmp_path / "counts.npz", hr_msi=hr * 255, lr_hsi=lr * 255)
    with pytest.raises(InputError, match="8bit"):
        read_scene(tmp_path / "counts.npz")
    scene = read_scene(tmp_path / "counts.npz", input_scale="8bit")
    np.testing.assert_allclose(scene.hr_msi, hr, atol=1e-6)
    assert scene.input_scale != "unit"


def test_unreadable_files_are_artifact_errors(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ArtifactError, match="not a readable numpy file"):
        read_scene(tmp_path / "bad.npz")
    with pytest.raises(ArtifactError, match="does not exist"):
        read_scene(tmp_path / "missing.h5")
    with pytest.raises(ArtifactError, match="unknown input format"):
        (tmp_path / "x.xyz").write_bytes(b"")
        read_arrays(tmp_path / "x.xyz")


def test_declared_scene_reads_headers_only(tmp_path):
    hr, lr = _pair(2)
    np.savez(tmp_path / "s.npz", hr_msi=hr, lr_hsi=lr)
    declared = declared_scene(tmp_path / "s.npz")
    assert (declared.batch, declared.height, declared.width, declared.lr_height) == (2, 16, 16, 4)
    assert declared_scene(tmp_path / "s.npz", index=0).batch == 1
    assert declared_scene(tmp_path / "missing.npz") is None


# ------------------------------------------------------------------------------------------ writers
@pytest.mark.parametrize("suffix", [".npz", ".h5", ".mat"])
def test_writers_round_trip_with_sidecar(tmp_path, suffix):
    if suffix == ".mat":
        pytest.importorskip("scipy.io")
    hsi = np.linspace(0, 1, 31 * 8 * 8, dtype=np.float32).reshape(31, 8, 8)
    attrs = {"artifact": "m.onnx", "clamped": 0, "wavelengths_nm": np.arange(400, 701, 10)}
    path = write_output(tmp_path / f"o{suffix}", hsi, attrs)
    arrays = read_arrays(path)
    np.testing.assert_array_equal(arrays["hr_hsi"], hsi)
    if suffix == ".npz":
        assert str(arrays["artifact"]) == "m.onnx" and arrays["wavelengths_nm"][-1] == 700
    elif suffix == ".h5":
        with h5py.File(path, "r") as f:
            assert f["hr_hsi"].attrs["artifact"] == "m.onnx" and f["hr_hsi"].fletcher32
    sidecar = json.loads(path.with_name(path.name + ".json").read_text())
    assert sidecar["kind"] == "lso infer output" and sidecar["shape"] == [31, 8, 8] and sidecar["clamped"] == 0
    assert sidecar["artifact"] == path.name and len(sidecar["sha256"]) == 64
    writer = {".npz": write_npz, ".h5": write_h5, ".mat": write_mat}[suffix]
    bare = writer(tmp_path / f"bare{suffix}", hsi, sidecar=False)
    assert not bare.with_name(bare.name + ".json").exists()
    np.testing.assert_array_equal(read_arrays(bare)["hr_hsi"], hsi)


def test_write_output_refuses_unknown_suffix_and_huge_mat(tmp_path):
    hsi = np.zeros((31, 2, 2), np.float32)
    with pytest.raises(InputError, match="expected one of .npz"):
        write_output(tmp_path / "o.txt", hsi)
    from lso.data import check_mat_size

    with pytest.raises(InputError, match="2 GiB"):
        check_mat_size(tmp_path / "o.mat", (1, 31, 8192, 8192))


def test_envi_and_png_preview(tmp_path):
    hsi = np.random.default_rng(0).random((31, 6, 5), dtype=np.float32)
    hdr, img = write_envi(tmp_path / "o", hsi, wavelengths=np.arange(400, 701, 10))
    assert "bands = 31" in hdr.read_text() and "wavelength = {400, 410" in hdr.read_text()
    np.testing.assert_array_equal(np.fromfile(img, dtype="<f4").reshape(31, 6, 5), hsi)
    rgb = false_colour(hsi)
    assert rgb.shape == (6, 5, 3) and rgb.dtype == np.uint8
    png = write_png(tmp_path / "o.png", rgb)
    image = pytest.importorskip("PIL.Image")
    with image.open(png) as im:
        np.testing.assert_array_equal(np.asarray(im), rgb)
