"""``lso infer``: input formats, outputs (npz/h5/mat, ENVI, PNG preview), tiling, CLI exit codes, no silent crop,
--crop and --clamp."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lso import save_checkpoint
from lso.cli import main
from lso.data import false_colour, write_png
from lso.errors import InputError
from lso.runtime.infer import InferOptions, infer

from rt_fixtures import reference, scene

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


# ---- no silent crop (one rule for every format), --crop, --clamp, .mat output -----------------------------
def _write_scene(fmt: str, folder: Path, hr: np.ndarray, lr: np.ndarray, gt: np.ndarray) -> tuple[Path, ...]:
    """One scene as ``fmt`` (hr [3, H, W], lr [31, h, w]; community files hold gt [31, H, W] and the RGB)."""
    if fmt == "h5_community":
        with h5py.File(folder / "cave.h5", "w") as f:
            f["GT"], f["RGB"] = gt[None], hr[None]
        return (folder / "cave.h5",)
    if fmt == "h5_ours":
        with h5py.File(folder / "ours.h5", "w") as f:
            f["hr_msi"], f["lr_hsi"] = hr, lr
        return (folder / "ours.h5",)
    if fmt == "npz":
        np.savez(folder / "s.npz", hr_msi=hr, lr_hsi=lr)
        return (folder / "s.npz",)
    if fmt == "mat":
        scipy_io = pytest.importorskip("scipy.io")
        scipy_io.savemat(folder / "s.mat", {"hr_msi": np.moveaxis(hr, 0, -1), "lr_hsi": np.moveaxis(lr, 0, -1)})
        return (folder / "s.mat",)
    if fmt == "pair_npy":
        np.save(folder / "hr.npy", hr)
        np.save(folder / "lr.npy", lr)
        return folder / "hr.npy", folder / "lr.npy"
    assert fmt == "pair_png"
    write_png(folder / "rgb.png", np.moveaxis(np.round(hr * 255).astype(np.uint8), 0, -1))
    np.save(folder / "lr.npy", lr)
    return folder / "rgb.png", folder / "lr.npy"


FORMATS = ("h5_community", "h5_ours", "npz", "mat", "pair_npy", "pair_png")


def _odd_scene(lr_size: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 34x34 scene at x4 (34 is not a multiple of 4): hr [3, 34, 34], lr [31, lr_size, lr_size], gt."""
    rng = np.random.default_rng(11)
    gt = rng.random((31, 34, 34), dtype=np.float32)
    hr = np.round(rng.random((3, 34, 34), dtype=np.float32) * 255).astype(np.float32) / 255  # exact as 8-bit PNG
    return hr, rng.random((31, lr_size, lr_size), dtype=np.float32), gt


@pytest.mark.parametrize("fmt", FORMATS)
def test_no_silent_crop_in_any_format(ckpt, tmp_path, fmt):
    hr, lr, gt = _odd_scene()
    inputs = _write_scene(fmt, tmp_path, hr, lr, gt)
    out = tmp_path / "o.npz"
    with pytest.raises(InputError) as info:
        infer(InferOptions(artifact=ckpt, inputs=inputs, out=out, preview=False))
    message = str(info.value)
    assert "34x34" in message and "top-left 32x32" in message and "--crop" in message, message
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("fmt", FORMATS)
def test_crop_option_crops_top_left_and_is_recorded(rt_model, ckpt, tmp_path, fmt):
    from lso.data import degrade

    hr, lr, gt = _odd_scene()
    inputs = _write_scene(fmt, tmp_path, hr, lr, gt)
    out = tmp_path / "o.h5"
    res = infer(InferOptions(artifact=ckpt, inputs=inputs, out=out, preview=False, crop=True))
    if fmt == "h5_community":  # the LR-HSI is regenerated from the cropped GT
        want = reference(rt_model, hr[None, :, :32, :32], degrade(gt[None, :, :32, :32], 4)[1].astype(np.float32))
        assert res.crop == "GT/RGB 34x34 -> top-left 32x32 (a multiple of the ratio 4)"
    else:
        want = reference(rt_model, hr[None, :, :32, :32], lr[None])[0]
        assert res.crop == "hr_msi 34x34 -> top-left 32x32 (to 4 x lr_hsi 8x8)"
    with h5py.File(out) as f:
        np.testing.assert_allclose(f["hr_hsi"][...], want, atol=1e-5)
        assert f["hr_hsi"].attrs["crop"] == res.crop
        assert list(f["hr_hsi"].attrs["crop_box"]) == [0, 0, 32, 32]
    assert "top-left 32x32" in json.loads((tmp_path / "o.h5.json").read_text())["crop"]


def test_crop_also_cuts_an_lr_hsi_rounded_up(rt_model, ckpt, tmp_path):
    hr, lr, _ = _odd_scene(lr_size=9)  # 34 / 4 rounded up: the ninth LR row/column covers the cut HR pixels
    np.savez(tmp_path / "s.npz", hr_msi=hr, lr_hsi=lr)
    with pytest.raises(InputError, match=r"hr_msi 34x34 is not 4 x lr_hsi 9x9.*32x32 \(with lr_hsi 8x8\)"):
        infer(InferOptions(artifact=ckpt, inputs=(tmp_path / "s.npz",), out=tmp_path / "o.npz"))
    res = infer(InferOptions(artifact=ckpt, inputs=(tmp_path / "s.npz",), out=tmp_path / "o.npz", preview=False,
                             crop=True))
    assert res.crop == "hr_msi 34x34 -> top-left 32x32, lr_hsi 9x9 -> top-left 8x8"
    with np.load(res.output) as data:
        np.testing.assert_allclose(data["hr_hsi"], reference(rt_model, hr[None, :, :32, :32], lr[None, :, :8, :8])[0],
                                   atol=1e-5)
        assert str(data["crop"]) == res.crop and list(data["crop_box"]) == [0, 0, 32, 32]


def test_sizes_that_fit_are_not_cropped_and_say_so(ckpt, tmp_path):
    hr, lr = scene(32, 32, 4)
    np.savez(tmp_path / "s.npz", hr_msi=hr, lr_hsi=lr)
    res = infer(InferOptions(artifact=ckpt, inputs=(tmp_path / "s.npz",), out=tmp_path / "o.npz", preview=False,
                             crop=True))
    with np.load(res.output) as data:
        assert res.crop == "none" and str(data["crop"]) == "none" and "crop_box" not in data.files
        assert data["hr_hsi"].shape == (1, 31, 32, 32) and int(data["clamped"]) == 0


def test_cli_crop_refused_then_printed(ckpt, tmp_path, capsys):
    hr, lr, gt = _odd_scene()
    _write_scene("h5_community", tmp_path, hr, lr, gt)
    args = ["infer", str(ckpt), str(tmp_path / "cave.h5"), "-o", str(tmp_path / "o.npz"), "--no-preview"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "GT/RGB 34x34 is not a multiple of the ratio 4" in err and "top-left 32x32" in err and "--crop" in err
    assert not (tmp_path / "o.npz").exists()
    assert main([*args, "--crop"]) == 0
    assert "cropped (--crop): GT/RGB 34x34 -> top-left 32x32" in capsys.readouterr().out


def test_3d_community_h5_is_one_scene(rt_model, ckpt, tmp_path, caplog):
    from lso.data import degrade

    rng = np.random.default_rng(5)
    gt, rgb = rng.random((31, 32, 32), dtype=np.float32), rng.random((3, 32, 32), dtype=np.float32)
    with h5py.File(tmp_path / "one.h5", "w") as f:
        f["GT"], f["RGB"] = gt, rgb  # no leading N axis
    with caplog.at_level("INFO", logger="lso"):
        res = infer(InferOptions(artifact=ckpt, inputs=(tmp_path / "one.h5",), out=tmp_path / "o.npz", preview=False))
    assert "no leading N axis: read as one scene (N = 1)" in caplog.text
    with np.load(res.output) as data:
        np.testing.assert_allclose(data["hr_hsi"], reference(rt_model, rgb[None], degrade(gt[None], 4)[1]),
                                   atol=1e-5)


def test_clamp_clips_and_the_default_does_not(ckpt, tmp_path, capsys):
    hr, lr = scene(32, 32, 4)
    np.savez(tmp_path / "s.npz", hr_msi=hr, lr_hsi=lr)
    raw = infer(InferOptions(artifact=ckpt, inputs=(tmp_path / "s.npz",), out=tmp_path / "raw.npz", preview=False))
    with np.load(raw.output) as data:
        values = data["hr_hsi"]
        assert int(data["clamped"]) == 0 and not raw.clamped
    assert values.min() < 0.0 and values.max() > 1.0  # the tiny random model leaves [0, 1]: the default keeps it
    assert main(["infer", str(ckpt), str(tmp_path / "s.npz"), "-o", str(tmp_path / "c.npz"), "--no-preview",
                 "--clamp"]) == 0
    assert "clamped to [0, 1] (--clamp)" in capsys.readouterr().out
    with np.load(tmp_path / "c.npz") as data:
        np.testing.assert_array_equal(data["hr_hsi"], np.clip(values, 0.0, 1.0))
        assert int(data["clamped"]) == 1


def test_mat_output_round_trips(ckpt, tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    hr, lr = scene(32, 40, 4, batch=2)
    np.savez(tmp_path / "s.npz", hr_msi=hr, lr_hsi=lr)
    ref = infer(InferOptions(artifact=ckpt, inputs=(tmp_path / "s.npz",), out=tmp_path / "o.npz", preview=False))
    res = infer(InferOptions(artifact=ckpt, inputs=(tmp_path / "s.npz",), out=tmp_path / "o.mat", preview=False))
    assert res.output == tmp_path / "o.mat" and (tmp_path / "o.mat.json").is_file()
    mat = scipy_io.loadmat(tmp_path / "o.mat")
    with np.load(ref.output) as data:
        np.testing.assert_array_equal(mat["hr_hsi"], data["hr_hsi"])
    assert mat["hr_hsi"].shape == (2, 31, 32, 40) and mat["hr_hsi"].dtype == np.float32
    assert mat["wavelengths_nm"].ravel().tolist() == list(range(400, 701, 10))
    assert str(mat["artifact"][0]) == "tiny.safetensors" and str(mat["crop"][0]) == "none"
    assert int(mat["clamped"].ravel()[0]) == 0
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_mat_output_is_atomic(ckpt, tmp_path, monkeypatch):
    scipy_io = pytest.importorskip("scipy.io")
    from lso.data import check_mat_size as _check_mat_size
    from lso.errors import ArtifactError

    hr, lr = scene(32, 32, 4)
    np.savez(tmp_path / "s.npz", hr_msi=hr, lr_hsi=lr)
    out = tmp_path / "o.mat"
    out.write_bytes(b"the previous result")

    def failing_savemat(file, mdict, **kwargs):
        file.write(b"MATLAB 5.0 MAT-file, half written")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(scipy_io, "savemat", failing_savemat)
    with pytest.raises(ArtifactError, match="No space left on device"):
        infer(InferOptions(artifact=ckpt, inputs=(tmp_path / "s.npz",), out=out, preview=False))
    assert out.read_bytes() == b"the previous result"  # untouched: the partial file never took its name
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(InputError, match="2 GiB.*write .h5"):
        _check_mat_size(out, (1, 31, 8192, 8192))


def test_community_lr_from_file_follows_the_same_rule(rt_model, ckpt, tmp_path):
    hr, lr, gt = _odd_scene(lr_size=9)
    with h5py.File(tmp_path / "cave.h5", "w") as f:
        f["GT"], f["RGB"], f["LRHSI"] = gt[None], hr[None], lr[None]
    opts = dict(artifact=ckpt, inputs=(tmp_path / "cave.h5",), out=tmp_path / "o.npz", preview=False, lr_from="file")
    with pytest.raises(InputError, match=r"RGB 34x34 is not 4 x LRHSI 9x9; the top-left 32x32 \(with LRHSI 8x8\)"):
        infer(InferOptions(**opts))
    res = infer(InferOptions(**opts, crop=True))
    assert res.crop == "RGB 34x34 -> top-left 32x32, LRHSI 9x9 -> top-left 8x8"
    with np.load(res.output) as data:
        np.testing.assert_allclose(data["hr_hsi"], reference(rt_model, hr[None, :, :32, :32], lr[None, :, :8, :8]),
                                   atol=1e-5)


def _loads(monkeypatch) -> list:
    """Record every runner lso.runtime.base.load makes (the real load does the work)."""
    from lso.runtime import base

    made, real = [], base.load

    def recording(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(base, "load", recording)
    return made


def test_cli_runner_option_reaches_the_openvino_runner(rt_model, tiny_onnx, tmp_path, monkeypatch, capsys):
    pytest.importorskip("openvino", reason="openvino is not installed")
    made = _loads(monkeypatch)
    hr, lr = scene(32, 32, 4)
    np.savez(tmp_path / "s.npz", hr_msi=hr, lr_hsi=lr)
    assert main(["infer", str(tiny_onnx), str(tmp_path / "s.npz"), "-o", str(tmp_path / "o.npz"), "--no-preview",
                 "--backend", "openvino", "--threads", "1", "--runner-option", "shapes=dynamic",
                 "--runner-option", "streams=1"]) == 0, capsys.readouterr().err
    (runner,) = made
    assert runner.backend == "openvino" and runner.settings["shapes"] == "dynamic" and runner.settings["streams"] == 1
    with np.load(tmp_path / "o.npz") as data:
        np.testing.assert_allclose(data["hr_hsi"], reference(rt_model, hr, lr), atol=1e-5)


def test_cli_runner_option_the_backend_does_not_take_is_refused(tiny_onnx, tmp_path, capsys):
    hr, lr = scene(32, 32, 4)
    np.savez(tmp_path / "s.npz", hr_msi=hr, lr_hsi=lr)
    argv = ["infer", str(tiny_onnx), str(tmp_path / "s.npz"), "-o", str(tmp_path / "o.npz")]
    assert main([*argv, "--runner-option", "cuda_graph=true"]) == 1  # .onnx: ONNX Runtime
    err = capsys.readouterr().err
    assert "onnxruntime backend takes no option 'cuda_graph' (only tensorrt take(s) it)" in err
    assert not (tmp_path / "o.npz").exists()
    with pytest.raises(SystemExit) as exc:  # a key with a flag of its own: a usage error, naming that flag
        main([*argv, "--runner-option", "threads=2"])
    assert exc.value.code == 2 and "use --threads instead" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*argv, "--runner-option", "precision"])
    assert "--runner-option expects KEY=VALUE" in capsys.readouterr().err


def test_infer_options_check_runner_option_keys(ckpt, tmp_path):
    hr, lr = scene(32, 32, 4)
    np.savez(tmp_path / "s.npz", hr_msi=hr, lr_hsi=lr)
    opts = dict(artifact=ckpt, inputs=(tmp_path / "s.npz",), out=tmp_path / "o.npz")
    with pytest.raises(InputError, match="option names must be non-empty strings"):
        InferOptions(**opts, runner_options={1: True}).check()
    with pytest.raises(InputError, match="use --memory-budget instead"):
        InferOptions(**opts, runner_options={"memory_budget": "1G"}).check()
    res = infer(InferOptions(**opts, runner_options={"fp16": False}, preview=False))  # torch's own option
    assert "TorchRunner" in res.runner
