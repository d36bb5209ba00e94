"""``lso infer``: input formats, outputs (npz/h5, ENVI, PNG preview), tiling, CLI exit codes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rt_fixtures import reference, rt_model, scene, tiny_onnx_tileable  # noqa: F401  (fixtures)

from lso import save_checkpoint
from lso.cli import main
from lso.errors import InputError
from lso.runtime.infer import InferOptions, false_colour, infer, write_png

h5py = pytest.importorskip("h5py")


@pytest.fixture()
def ckpt(rt_model, tmp_path) -> Path:
    return save_checkpoint(rt_model, tmp_path / "tiny.safetensors")


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_npz_in_npz_out_with_preview(rt_model, ckpt, tmp_path):
    hr, lr = scene(32, 48, 4)
    np.savez(tmp_path / "scene.npz", hr_msi=hr[0], lr_hsi=lr[0])
    res = infer(InferOptions(artifact=ckpt, inputs=(tmp_path / "scene.npz",), out=tmp_path / "fused.npz"))
    with np.load(res.output) as data:
        np.testing.assert_allclose(data["hr_hsi"], reference(rt_model, hr, lr)[0], atol=1e-6)
        assert data["wavelengths_nm"][0] == 400 and data["wavelengths_nm"][-1] == 700
    assert res.preview == [tmp_path / "fused.png"] and _png_size(res.preview[0]) == (48, 32)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_pair_of_files_any_order_png_rgb(rt_model, ckpt, tmp_path):
    hr, lr = scene(32, 32, 4)
    rgb8 = np.round(hr[0] * 255).astype(np.uint8)
    write_png(tmp_path / "rgb.png", np.moveaxis(rgb8, 0, -1))
    np.save(tmp_path / "lr.npy", lr[0])
    out = tmp_path / "fused.h5"
    res = infer(InferOptions(artifact=ckpt, inputs=(tmp_path / "lr.npy", tmp_path / "rgb.png"), out=out, preview=False))
    assert res.preview == []
    with h5py.File(out) as f:
        got = f["hr_hsi"][...]
        assert f["hr_hsi"].attrs["artifact"] == "tiny.safetensors"
    want = reference(rt_model, (rgb8 / 255.0).astype(np.float32)[None], lr)[0]
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_our_h5_layout_with_envi(rt_model, ckpt, tmp_path):
    hr, lr = scene(24, 40, 4, batch=2)
    with h5py.File(tmp_path / "in.h5", "w") as f:
        f["hr_msi"], f["lr_hsi"] = hr, lr
    res = infer(InferOptions(artifact=ckpt, inputs=(tmp_path / "in.h5",), out=tmp_path / "o.npz", envi=True))
    assert res.shape == (2, 31, 24, 40) and len(res.preview) == 2
    hdr = (tmp_path / "o_1.hdr").read_text()
    assert "samples = 40" in hdr and "lines = 24" in hdr and "bands = 31" in hdr and "interleave = bsq" in hdr
    assert "wavelength = {400, 410" in hdr and "data type = 4" in hdr
    img = np.fromfile(tmp_path / "o_1.img", dtype="<f4").reshape(31, 24, 40)
    np.testing.assert_allclose(img, reference(rt_model, hr, lr)[1], atol=1e-6)


def test_community_h5_regenerates_lr_from_gt(rt_model, ckpt, tmp_path):
    from lso.data import degrade

    rng = np.random.default_rng(3)
    gt = rng.random((2, 31, 32, 32), dtype=np.float32)
    rgb = rng.random((2, 3, 32, 32), dtype=np.float32)
    with h5py.File(tmp_path / "test_cave.h5", "w") as f:
        f["GT"], f["RGB"], f["LRHSI"] = gt, rgb, gt[:, :, ::4, ::4]
    res = infer(InferOptions(artifact=ckpt, inputs=(tmp_path / "test_cave.h5",), out=tmp_path / "o.npz", index=1))
    _, lr = degrade(gt[1], 4)
    with np.load(res.output) as data:
        np.testing.assert_allclose(data["hr_hsi"], reference(rt_model, rgb[1:], lr[None].astype(np.float32))[0],
                                   atol=1e-5)
    res2 = infer(InferOptions(artifact=ckpt, inputs=(tmp_path / "test_cave.h5",), out=tmp_path / "o2.npz",
                              lr_from="file", preview=False))
    with np.load(res2.output) as data:
        np.testing.assert_allclose(data["hr_hsi"], reference(rt_model, rgb, gt[:, :, ::4, ::4]), atol=1e-5)


def test_mat_channels_last_is_transposed(rt_model, ckpt, tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    hr, lr = scene(32, 32, 4)
    scipy_io.savemat(tmp_path / "scene.mat", {"msi": np.moveaxis(hr[0], 0, -1), "hsi": np.moveaxis(lr[0], 0, -1)})
    res = infer(InferOptions(artifact=ckpt, inputs=(tmp_path / "scene.mat",), out=tmp_path / "o.npz", preview=False))
    with np.load(res.output) as data:
        np.testing.assert_allclose(data["hr_hsi"], reference(rt_model, hr, lr)[0], atol=1e-6)


def test_tiled_inference_with_onnx(rt_model, tiny_onnx_tileable, tmp_path):
    hr, lr = scene(96, 80, 4)
    np.savez(tmp_path / "big.npz", hr_msi=hr, lr_hsi=lr)
    res = infer(InferOptions(artifact=tiny_onnx_tileable, inputs=(tmp_path / "big.npz",), out=tmp_path / "o.npz",
                             tile=32, threads=1, progress=False, preview=False))
    assert "OrtRunner" in res.runner
    with np.load(res.output) as data:
        assert np.abs(data["hr_hsi"] - reference(rt_model, hr, lr)).max() <= 1e-5


def test_cli_infer_and_errors(ckpt, tmp_path, capsys):
    hr, lr = scene(32, 32, 4)
    np.savez(tmp_path / "s.npz", hr_msi=hr, lr_hsi=lr)
    assert main(["infer", str(ckpt), str(tmp_path / "s.npz"), "-o", str(tmp_path / "o.npz"), "--no-preview"]) == 0
    assert "hr_hsi 1x31x32x32" in capsys.readouterr().out
    np.savez(tmp_path / "bad.npz", hr_msi=hr, lr_hsi=lr[:, :30])
    assert main(["infer", str(ckpt), str(tmp_path / "bad.npz"), "-o", str(tmp_path / "bad_out.npz")]) == 1
    err = capsys.readouterr().err
    assert "lso infer: error:" in err and "30 bands" in err
    assert not (tmp_path / "bad_out.npz").exists()
    assert main(["infer", str(ckpt), str(tmp_path / "s.npz"), "-o", str(tmp_path / "o.txt")]) == 1
    assert ".npz" in capsys.readouterr().err


def test_missing_keys_are_named(ckpt, tmp_path):
    np.savez(tmp_path / "x.npz", foo=np.zeros(3))
    with pytest.raises(InputError, match="foo"):
        infer(InferOptions(artifact=ckpt, inputs=(tmp_path / "x.npz",), out=tmp_path / "o.npz"))


def test_false_colour_uses_red_green_blue_bands():
    hsi = np.zeros((31, 4, 4), np.float32)
    hsi[25] = np.linspace(0, 1, 16).reshape(4, 4)  # 650 nm -> red
    rgb = false_colour(hsi)
    assert rgb.shape == (4, 4, 3) and rgb[..., 0].max() == 255 and rgb[..., 1].max() == 0
