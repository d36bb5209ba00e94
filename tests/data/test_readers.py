"""Readers: community HDF5 (H5Dataset), raw CAVE folders, Harvard .mat (v5 and v7.3)."""
from __future__ import annotations

import logging
import os
import pickle
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from lso.data.readers import H5Dataset, read_cave_scene, read_harvard_mat
from lso.data.srf import hsi_to_msi
from lso.errors import ArtifactError, InputError

h5py = pytest.importorskip("h5py")


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _write_h5(path: Path, gt: np.ndarray | None = None, rgb: np.ndarray | None = None, **extra) -> Path:
    gt = _rng(0).random((2, 31, 16, 16), dtype=np.float32) if gt is None else gt
    rgb = _rng(1).random((gt.shape[0], 3, *gt.shape[2:]), dtype=np.float32) if rgb is None else rgb
    with h5py.File(path, "w") as f:
        if gt is not False:
            f["GT"] = gt
        if rgb is not False:
            f["RGB"] = rgb
        for key, value in extra.items():
            f[key] = value
    return path


# ---- H5Dataset ----------------------------------------------------------------------------------


def test_h5_items_values_and_indexing(tmp_path):
    gt = _rng(0).random((2, 31, 16, 16), dtype=np.float32)
    rgb = _rng(1).random((2, 3, 16, 16), dtype=np.float32)
    path = _write_h5(tmp_path / "a.h5", gt, rgb, LRHSI=np.zeros((2, 31, 4, 4), np.float32))
    for load_all in (False, True):
        with H5Dataset(path, load_all=load_all) as ds:
            assert len(ds) == 2 and ds.image_size == (16, 16)
            item = ds[1]
            assert set(item) == {"gt", "rgb"}
            assert item["gt"].dtype == np.float32 and item["gt"].shape == (31, 16, 16)
            np.testing.assert_array_equal(item["gt"], gt[1])
            np.testing.assert_array_equal(item["rgb"], rgb[1])
            np.testing.assert_array_equal(ds[-2]["gt"], gt[0])
            with pytest.raises(IndexError):
                ds[2]
            assert len(list(ds)) == 2
        assert ds._file is None  # closed by the context manager


def test_h5_reads_lazily(tmp_path):
    # 4096 declared items (130 MB as float32) stored as unwritten chunks: opening the file and
    # reading two items must allocate about two items (127 kB each), not the dataset.
    path = tmp_path / "big.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("GT", shape=(4096, 31, 16, 16), dtype="f4", chunks=(1, 31, 16, 16), fillvalue=0.25)
        f.create_dataset("RGB", shape=(4096, 3, 16, 16), dtype="f4", chunks=(1, 3, 16, 16), fillvalue=0.5)
    assert path.stat().st_size < 1_000_000
    tracemalloc.start()
    try:
        ds = H5Dataset(path)
        first, last = ds[0], ds[4095]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(ds) == 4096
    assert float(first["gt"][0, 0, 0]) == 0.25 and float(last["rgb"][2, 15, 15]) == 0.5
    assert peak < 4_000_000, f"peak {peak} bytes: the reader read more than the requested items"


def test_h5_range_checked_per_item(tmp_path):
    gt = _rng(0).random((3, 31, 16, 16), dtype=np.float32)
    gt[1, 4, 2, 3] = 2.5
    gt[2, 0, 0, 0] = 1.0005  # within tolerance: clipped to 1
    path = _write_h5(tmp_path / "bad.h5", gt)
    ds = H5Dataset(path)  # opening does not read the items
    ds[0]
    assert ds[2]["gt"].max() == 1.0
    with pytest.raises(InputError, match=r"bad\.h5.*'GT'\[1\].*2\.5"):
        ds[1]
    with pytest.raises(InputError, match=r"'GT'\[1\]"):
        H5Dataset(path, load_all=True)
    gt[1, 4, 2, 3] = -0.25
    _write_h5(tmp_path / "neg.h5", gt)
    with pytest.raises(InputError, match=r"-0\.25"):
        H5Dataset(tmp_path / "neg.h5")[1]


def test_h5_pickles_and_reopens_per_process(tmp_path):
    gt = _rng(0).random((2, 31, 16, 16), dtype=np.float32)
    ds = H5Dataset(_write_h5(tmp_path / "a.h5", gt))
    assert ds._file is None  # nothing open until the first access
    ds[0]
    first = ds._file
    assert first is not None
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._file is None
    np.testing.assert_array_equal(clone[1]["gt"], gt[1])
    ds._pid = -1  # as seen from a forked worker: the inherited handle is not reused
    ds[1]
    assert ds._file is not first and ds._pid == os.getpid()
    first.close()
    ds.close()
    clone.close()


def test_h5_in_dataloader_worker(tmp_path):
    torch = pytest.importorskip("torch")
    gt = _rng(0).random((2, 31, 16, 16), dtype=np.float32)
    ds = H5Dataset(_write_h5(tmp_path / "a.h5", gt))
    ds[0]  # a handle open in the parent must not break the worker
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=1)
    (batch,) = list(loader)
    assert batch["gt"].shape == (2, 31, 16, 16)
    np.testing.assert_array_equal(batch["gt"].numpy(), gt)


def test_h5_missing_key_wrong_bands_mismatch_dtype(tmp_path):
    with pytest.raises(InputError, match="'RGB' not found.*GT"):
        H5Dataset(_write_h5(tmp_path / "k.h5", rgb=False))
    with pytest.raises(InputError, match=r"'GT' has shape \(2, 30, 16, 16\).*\(N, 31, H, W\)"):
        H5Dataset(_write_h5(tmp_path / "b.h5", np.zeros((2, 30, 16, 16), np.float32)))
    with pytest.raises(InputError, match=r"'RGB' has shape"):
        H5Dataset(_write_h5(tmp_path / "r.h5", rgb=np.zeros((2, 16, 16, 3), np.float32)))
    with pytest.raises(InputError, match="disagree"):
        H5Dataset(_write_h5(tmp_path / "m.h5", rgb=np.zeros((2, 3, 16, 8), np.float32)))
    with pytest.raises(InputError, match="dtype uint8"):
        H5Dataset(_write_h5(tmp_path / "d.h5", np.zeros((2, 31, 16, 16), np.uint8)))


def test_h5_without_n_axis_is_one_item(tmp_path, caplog):
    gt = _rng(0).random((31, 16, 12), dtype=np.float32)
    rgb = _rng(1).random((3, 16, 12), dtype=np.float32)
    path = _write_h5(tmp_path / "one.h5", gt, rgb)
    for load_all in (False, True):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="lso.data.readers"):
            ds = H5Dataset(path, load_all=load_all)
        assert "'GT' (31, 16, 12) has no leading N axis: read as one scene (N = 1)" in caplog.text
        with ds:
            assert len(ds) == 1 and ds.image_size == (16, 12)
            np.testing.assert_array_equal(ds[0]["gt"], gt)
            np.testing.assert_array_equal(ds[-1]["rgb"], rgb)
            with pytest.raises(IndexError):
                ds[1]


def test_h5_wrong_shapes_name_the_real_fix(tmp_path):
    def message(gt=None, rgb=None) -> str:
        with pytest.raises(InputError) as info:
            H5Dataset(_write_h5(tmp_path / "x.h5", gt, rgb))
        return str(info.value)

    one_hwc = message(np.zeros((16, 16, 31), np.float32), np.zeros((16, 16, 3), np.float32))
    assert "one channels-last scene (H×W×C): transpose it to (C, H, W)" in one_hwc and "N×H×W×C" not in one_hwc
    many_hwc = message(np.zeros((2, 16, 16, 31), np.float32))
    assert "channels-last (N×H×W×C): transpose it to (N, C, H, W)" in many_hwc
    assert "stack the 31 bands" in message(np.zeros((16, 16), np.float32), np.zeros((16, 16), np.float32))
    assert "no axis has 31 entries" in message(np.zeros((2, 30, 16, 16), np.float32))


# ---- fit_to_ratio: the one rule for sizes that do not fit the ratio ----------------------------------------


def test_fit_to_ratio_names_the_crop_and_refuses_unless_allowed():
    from lso.data.readers import fit_to_ratio

    gt_only = fit_to_ratio((130, 131), ratio=4, hr_name="GT")
    assert gt_only.needed and gt_only.hr_to == (128, 128) and gt_only.box == (0, 0, 128, 128)
    with pytest.raises(InputError, match=r"x\.h5: GT 130x131 is not a multiple of the ratio 4; the top-left 128x128"
                                         r" would fit.*--crop"):
        gt_only.check("x.h5", allowed=False)
    assert gt_only.check("x.h5", allowed=True) is gt_only
    assert gt_only.apply_hr(np.zeros((2, 31, 130, 131))).shape == (2, 31, 128, 128)
    assert not fit_to_ratio((128, 64), ratio=4).needed and fit_to_ratio((128, 64), ratio=4).check("x", allowed=False) \
        is None
    down = fit_to_ratio((130, 130), lr_size=(32, 32))  # LR made by rounding down
    assert (down.ratio, down.hr_to, down.lr_to) == (4, (128, 128), (32, 32))
    up = fit_to_ratio((130, 130), lr_size=(33, 33))  # ... or up
    assert (up.ratio, up.hr_to, up.lr_to) == (4, (128, 128), (32, 32))
    assert up.describe() == "hr_msi 130x130 -> top-left 128x128, lr_hsi 33x33 -> top-left 32x32"
    exact = fit_to_ratio((96, 64), lr_size=(12, 8))
    assert not exact.needed and exact.ratio == 8 and exact.describe() == "none"
    with pytest.raises(InputError, match="not related by one integer ratio"):
        fit_to_ratio((130, 130), lr_size=(20, 20))
    with pytest.raises(InputError, match="not related by one integer ratio"):
        fit_to_ratio((128, 128), lr_size=(32, 16))
    with pytest.raises(InputError, match="asked ratio 8"):
        fit_to_ratio((128, 128), ratio=8, lr_size=(32, 32))
    with pytest.raises(InputError, match="smaller than the ratio"):
        fit_to_ratio((3, 40), ratio=4)


def test_h5_garbage_truncated_missing(tmp_path):
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(_rng(0).bytes(4096))
    with pytest.raises(ArtifactError, match="garbage.h5"):
        H5Dataset(garbage)
    data = _write_h5(tmp_path / "full.h5").read_bytes()
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match="truncated.h5"):
        H5Dataset(truncated)
    with pytest.raises(ArtifactError, match="no such file"):
        H5Dataset(tmp_path / "absent.h5")


# ---- raw CAVE ------------------------------------------------------------------------------------


def _write_cave(root: Path, name: str = "balloons", h: int = 12, w: int = 16) -> tuple[Path, np.ndarray]:
    io = pytest.importorskip("skimage.io")
    inner = root / f"{name}_ms" / f"{name}_ms"
    inner.mkdir(parents=True)
    bands = _rng(3).integers(0, 65536, size=(31, h, w), dtype=np.uint16)
    for k in range(31):
        io.imsave(inner / f"{name}_ms_{k + 1:02d}.png", bands[k], check_contrast=False)
    (inner / f"{name}_RGB.bmp").write_bytes(b"not a band")
    (inner / "Thumbs.db").write_bytes(b"junk")
    return root / f"{name}_ms", bands


def test_cave_scene_values_layout_and_rgb(tmp_path):
    outer, bands = _write_cave(tmp_path)
    scene = read_cave_scene(outer)
    assert scene["gt"].shape == (31, 12, 16) and scene["gt"].dtype == np.float32
    np.testing.assert_allclose(scene["gt"], bands / 65535.0, rtol=1e-6)
    np.testing.assert_allclose(scene["rgb"], hsi_to_msi(bands / 65535.0), rtol=1e-5)
    inner = read_cave_scene(outer / "balloons_ms")  # one level less works the same
    np.testing.assert_array_equal(inner["gt"], scene["gt"])


def test_cave_8bit_and_rgba_bands(tmp_path, caplog):
    io = pytest.importorskip("skimage.io")
    outer, bands = _write_cave(tmp_path, "watercolors")
    inner = outer / "watercolors_ms"
    grey8 = _rng(4).integers(0, 256, size=(12, 16), dtype=np.uint8)
    io.imsave(inner / "watercolors_ms_05.png", grey8, check_contrast=False)
    rgba = np.stack([grey8, grey8, grey8, np.full_like(grey8, 255)], axis=-1)
    io.imsave(inner / "watercolors_ms_06.png", rgba, check_contrast=False)
    colour = np.stack([grey8, grey8 // 2, np.zeros_like(grey8), np.full_like(grey8, 255)], axis=-1)
    io.imsave(inner / "watercolors_ms_07.png", colour, check_contrast=False)
    with caplog.at_level(logging.WARNING, logger="lso.data.readers"):
        gt = read_cave_scene(outer)["gt"]
    np.testing.assert_allclose(gt[4], grey8 / 255.0, rtol=1e-6)
    np.testing.assert_allclose(gt[5], grey8 / 255.0, rtol=1e-6)
    np.testing.assert_allclose(gt[6], (grey8.astype(float) + grey8 // 2) / 3 / 255.0, rtol=1e-6)
    np.testing.assert_allclose(gt[0], bands[0] / 65535.0, rtol=1e-6)
    assert "2 band PNGs are RGB/RGBA" in caplog.text


def test_cave_missing_band_and_corrupt_png(tmp_path):
    outer, _ = _write_cave(tmp_path)
    inner = outer / "balloons_ms"
    (inner / "balloons_ms_31.png").unlink()
    with pytest.raises(InputError, match=r"missing bands \[31\]"):
        read_cave_scene(outer)
    (inner / "balloons_ms_31.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    with pytest.raises(ArtifactError, match="balloons_ms_31.png"):
        read_cave_scene(outer)
    with pytest.raises(ArtifactError, match="no such folder"):
        read_cave_scene(tmp_path / "absent")


# ---- Harvard .mat --------------------------------------------------------------------------------


def _ref(h: int = 10, w: int = 14, bands: int = 31) -> np.ndarray:
    return _rng(5).random((h, w, bands)) * 3.7  # MATLAB order (H, W, 31), not normalised


def _write_v73(path: Path, **arrays: np.ndarray) -> Path:
    # MATLAB v7.3 = HDF5 with a 512-byte user block; arrays stored with the axes reversed.
    with h5py.File(path, "w", userblock_size=512) as f:
        for key, value in arrays.items():
            f[key] = value.T
    with open(path, "r+b") as fh:
        fh.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: test HDF5 schema 1.00 .")
    return path


def test_harvard_v5_and_v73_agree(tmp_path):
    sio = pytest.importorskip("scipy.io")
    ref = _ref()
    sio.savemat(tmp_path / "v5.mat", {"ref": ref, "lbl": np.ones((10, 14))})
    v73 = _write_v73(tmp_path / "v73.mat", ref=ref, lbl=np.ones((10, 14)))
    with h5py.File(v73, "r") as f:
        assert f["ref"].shape == (31, 14, 10)  # as h5py sees a real v7.3 file: (31, W, H)
    expected = ref.transpose(2, 0, 1) / ref.max()
    for path in (tmp_path / "v5.mat", v73):
        scene = read_harvard_mat(path)
        assert scene["gt"].shape == (31, 10, 14) and scene["gt"].dtype == np.float32
        np.testing.assert_allclose(scene["gt"], expected, rtol=1e-6)
        assert scene["gt"].max() == 1.0
        np.testing.assert_allclose(scene["rgb"], hsi_to_msi(expected), rtol=1e-5)


def test_harvard_crop(tmp_path):
    sio = pytest.importorskip("scipy.io")
    ref = _ref()
    sio.savemat(tmp_path / "s.mat", {"ref": ref})
    scene = read_harvard_mat(tmp_path / "s.mat", crop=(2, 3, 4, 5))
    np.testing.assert_allclose(scene["gt"], ref.transpose(2, 0, 1)[:, 2:6, 3:8] / ref.max(), rtol=1e-6)
    assert scene["rgb"].shape == (3, 4, 5)
    with pytest.raises(InputError, match="does not fit the 10×14 scene"):
        read_harvard_mat(tmp_path / "s.mat", crop=(8, 0, 4, 4))


def test_harvard_wrong_content_and_bad_files(tmp_path):
    sio = pytest.importorskip("scipy.io")
    sio.savemat(tmp_path / "noref.mat", {"img": _ref()})
    with pytest.raises(InputError, match="'ref' not found.*img"):
        read_harvard_mat(tmp_path / "noref.mat")
    with pytest.raises(InputError, match="'ref' not found"):
        read_harvard_mat(_write_v73(tmp_path / "noref73.mat", img=_ref()))
    sio.savemat(tmp_path / "bands.mat", {"ref": _ref(bands=30)})
    with pytest.raises(InputError, match=r"\(10, 14, 30\)"):
        read_harvard_mat(tmp_path / "bands.mat")
    garbage = tmp_path / "garbage.mat"
    garbage.write_bytes(_rng(0).bytes(2048))
    with pytest.raises(ArtifactError, match="garbage.mat"):
        read_harvard_mat(garbage)
    sio.savemat(tmp_path / "full.mat", {"ref": _ref()})
    data = (tmp_path / "full.mat").read_bytes()
    for n in (len(data) // 2, 100):
        (tmp_path / "cut.mat").write_bytes(data[:n])
        with pytest.raises(ArtifactError, match="cut.mat"):
            read_harvard_mat(tmp_path / "cut.mat")
