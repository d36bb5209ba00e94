"""One value-range policy for every input format and the server (issue 18).

The same 32x32 x4 scene is written in every format ``lso infer`` reads (.npz, our .h5, the community .h5, .mat,
a pair of .npy files, an RGB PNG with an .npy LR-HSI), read by ``lso eval`` (community .h5) and encoded in both
of the server's wire formats, three ways: as 8-bit counts stored as floats (0..255), centred at 0 beyond the
bound ((x - 0.5) * 10), and centred at 0 within it (x - 0.5). The first two are an ``InputError`` naming that
scale in every format (the server: 422); the third a warning naming it (an error in the community format, whose
GT promises [0, 1]). ``--input-scale 8bit`` converts the first and the output records it.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from lso import LSO, LSOConfig, save_checkpoint
from lso.data import write_png
from lso.data.value_range import InputRangeWarning, InputScale
from lso.errors import InputError
from lso.runtime.infer import InferOptions, infer
from lso.scaleout.wire import NPZ, RAW, decode_request, encode_request

h5py = pytest.importorskip("h5py")
scipy_io = pytest.importorskip("scipy.io")

FORMATS = ("npz", "h5-ours", "h5-community", "mat", "npy-pair", "png-pair", "wire-npz", "wire-raw", "eval-community")
SCALES = {  # name -> (transform of [0, 1] values, what the error/warning must name)
    "8bit": (lambda x: x * 255.0, "--input-scale 8bit"),
    "centred-beyond": (lambda x: (x - 0.5) * 10.0, "centred at 0"),
    "centred-within": (lambda x: x - 0.5, "centred at 0"),
}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(LSO(LSOConfig.tiny()).eval(), tmp_path_factory.mktemp("vr") / "tiny.safetensors")


def _scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    gt = rng.random((31, 32, 32), dtype=np.float32)
    from lso.data import degrade

    hr, lr = degrade(gt, 4)
    return gt, hr.astype(np.float32), lr.astype(np.float32)


def _write(fmt: str, folder: Path, f) -> tuple[Path, ...]:
    """The scene in ``fmt`` with values ``f(x)``; returns the inputs of lso infer."""
    gt, hr, lr = _scene()
    if fmt == "npz":
        np.savez(folder / "s.npz", hr_msi=f(hr), lr_hsi=f(lr))
        return (folder / "s.npz",)
    if fmt == "h5-ours":
        with h5py.File(folder / "s.h5", "w") as h:
            h["hr_msi"], h["lr_hsi"] = f(hr), f(lr)
        return (folder / "s.h5",)
    if fmt == "h5-community":
        with h5py.File(folder / "c.h5", "w") as h:
            h["GT"], h["RGB"] = f(gt)[None], f(hr)[None]
        return (folder / "c.h5",)
    if fmt == "mat":
        scipy_io.savemat(folder / "s.mat", {"hr_msi": np.moveaxis(f(hr), 0, -1), "lr_hsi": np.moveaxis(f(lr), 0, -1)})
        return (folder / "s.mat",)
    if fmt == "npy-pair":
        np.save(folder / "hr.npy", f(hr))
        np.save(folder / "lr.npy", f(lr))
        return folder / "hr.npy", folder / "lr.npy"
    if fmt == "png-pair":  # the PNG's bit depth gives its scale; the LR-HSI array carries the values under test
        write_png(folder / "rgb.png", np.moveaxis(np.round(hr * 255).astype(np.uint8), 0, -1))
        np.save(folder / "lr.npy", f(lr))
        return folder / "rgb.png", folder / "lr.npy"
    raise AssertionError(fmt)


def _decode(fmt: str, f, scale: str | None = None):
    _, hr, lr = _scene()
    body, headers = encode_request(f(hr), f(lr), NPZ if fmt == "wire-npz" else RAW)
    headers = {k.lower(): v for k, v in headers.items()}
    if scale:
        headers["x-lso-input-scale"] = scale
    return decode_request(body, headers["content-type"], headers)


def _evaluate(ckpt: Path, folder: Path, f, scale: str | None = None) -> dict:
    """lso eval on the community file (GT and RGB read through lso.data.readers.H5Dataset)."""
    from lso.benchmarks.evaluation import EvalConfig, evaluate_set

    return evaluate_set(EvalConfig(checkpoint=str(ckpt), data=str(_write("h5-community", folder, f)[0]),
                                   out=str(folder / "eval"), png=False, input_scale=scale), progress=False)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("scale_name", list(SCALES))
def test_one_value_policy_for_every_format(ckpt, tmp_path, fmt, scale_name):
    f, named = SCALES[scale_name]
    # the community format promises [0, 1] (its GT is ground truth): centred values are an error there too
    error = scale_name != "centred-within" or fmt.endswith("community")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InputRangeWarning)
        try:
            if fmt.startswith("wire"):
                _decode(fmt, f)  # the server answers an InputError from decode_request with 422
            elif fmt.startswith("eval"):
                _evaluate(ckpt, tmp_path, f)
            else:
                infer(InferOptions(artifact=ckpt, inputs=_write(fmt, tmp_path, f), out=tmp_path / "o.npz",
                                   preview=False))
        except InputError as exc:
            assert error, f"{fmt} {scale_name}: refused ({exc})"
            assert named in str(exc) and "[-0.5, 1.5]" in str(exc), str(exc)
            assert not (tmp_path / "o.npz").exists()
        else:
            assert not error, f"{fmt} {scale_name}: accepted"
            assert any(named in str(w.message) for w in caught if issubclass(w.category, InputRangeWarning)), \
                f"{fmt} {scale_name}: no warning naming {named!r}"


@pytest.mark.parametrize("fmt", FORMATS)
def test_input_scale_converts_and_is_recorded(ckpt, tmp_path, fmt):
    f = SCALES["8bit"][0]
    if fmt.startswith("wire"):
        hr, lr, _ = _decode(fmt, f, "8bit")
        _, want_hr, want_lr = _scene()
        np.testing.assert_allclose(hr, want_hr, atol=1e-6)
        np.testing.assert_allclose(lr, want_lr, atol=1e-6)
        with pytest.raises(InputError, match="x-lso-input-scale"):
            _decode(fmt, f, "bogus")
        return
    if fmt.startswith("eval"):
        assert _evaluate(ckpt, tmp_path, f, "8bit")["input_scale"] == "8bit (divided by 255)"
        return
    res = infer(InferOptions(artifact=ckpt, inputs=_write(fmt, tmp_path, f), out=tmp_path / "o.npz", preview=False,
                             input_scale="8bit"))
    with np.load(res.output) as data:
        assert str(data["input_scale"]) == "8bit (divided by 255)"
        out = data["hr_hsi"]
        assert np.isfinite(out).all() and -0.5 < float(out.min()) < float(out.max()) < 1.5


def test_input_scale_parsing():
    assert InputScale.parse(None).is_unit and InputScale.parse("unit").is_unit
    assert InputScale.parse("16bit").divisor == 65535 and InputScale.parse("4095").record() == "divided by 4095"
    for bad in ("0", "-3", "nan", "twelve"):
        with pytest.raises(InputError, match="--input-scale"):
            InputScale.parse(bad)
