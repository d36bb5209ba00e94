"""Tests of lso.metrics: known answers on tiny seeded images, input checks, skimage cross-check."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lso import metrics
from lso.deps import available, require
from lso.errors import InputError
from lso.metrics import ergas, ergas_paper, evaluate, psnr, sam, ssim, summarize


def _image(c: int = 3, h: int = 24, w: int = 20, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.1, 0.9, size=(c, h, w))


def _checkerboard_bands(means: list[float], amp: float, h: int = 16, w: int = 16) -> np.ndarray:
    """Bands ``mu_c +/- amp`` in a checkerboard: the band mean is exactly ``mu_c`` (even H*W)."""
    sign = np.where((np.arange(h)[:, None] + np.arange(w)[None, :]) % 2 == 0, 1.0, -1.0)
    return np.stack([m + amp * sign for m in means])


# ------------------------------------------------------------------------------------------------
# Identical images
# ------------------------------------------------------------------------------------------------
def test_identical_images_give_ideal_values():
    x = _image()
    assert psnr(x, x) == math.inf
    assert sam(x, x) == 0.0
    assert ergas(x, x, 4) == 0.0
    assert ergas_paper(x, x) == 0.0
    assert ssim(x, x) == 1.0


def test_psnr_is_inf_when_one_band_is_exact():
    x = _image(c=2)
    y = x.copy()
    y[1] += 0.01
    assert psnr(x, y) == math.inf
    y[0] += 0.01
    assert math.isfinite(psnr(x, y))


# ------------------------------------------------------------------------------------------------
# Constant offset: PSNR and ERGAS by hand
# ------------------------------------------------------------------------------------------------
def test_psnr_constant_offset():
    # Values on a 2^-10 grid and d = 2^-6, so y - x == d exactly in float64.
    x = np.random.default_rng(1).integers(0, 900, size=(4, 16, 12)) / 1024.0
    for d in (2.0**-6, 2.0**-3):
        assert psnr(x, x + d) == pytest.approx(-20.0 * math.log10(d), abs=1e-12)
    # A different offset per band: PSNR is the mean of the band PSNRs, not the PSNR of the mean MSE.
    d = np.array([2.0**-4, 2.0**-6, 2.0**-6, 2.0**-6])[:, None, None]
    expected = np.mean(-20.0 * np.log10(d.ravel()))
    assert psnr(x, x + d) == pytest.approx(expected, abs=1e-12)
    assert psnr(x, x + d) != pytest.approx(10 * math.log10(1 / np.mean(d.ravel() ** 2)), abs=1e-3)


def test_ergas_constant_offset_by_hand():
    x = _checkerboard_bands([0.25, 0.5], amp=0.125)  # band means 0.25 and 0.5
    y = x + 0.125  # MSE_c = 0.125^2 for both bands
    # (0.125/0.25)^2 = 0.25, (0.125/0.5)^2 = 0.0625 -> mean 0.15625
    assert ergas(x, y, 4) == pytest.approx(25.0 * math.sqrt(0.15625), rel=1e-14)
    assert ergas(x, y, 8) == pytest.approx(12.5 * math.sqrt(0.15625), rel=1e-14)
    assert ergas(x, y, 4) == pytest.approx(9.882117688026186, rel=1e-14)


def test_ergas_scales_with_ratio_and_paper_variant_fixes_4():
    x = _image(seed=2)
    y = x + np.random.default_rng(3).normal(0, 0.02, size=x.shape)
    e4, e8 = ergas(x, y, 4), ergas(x, y, 8)
    assert e4 > 0
    assert e8 == pytest.approx(e4 / 2, rel=1e-14)
    assert ergas_paper(x, y) == e4
    assert ergas_paper(x, y) == pytest.approx(2 * e8, rel=1e-14)  # the paper's x8 ERGAS is twice the standard


# ------------------------------------------------------------------------------------------------
# SAM
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("theta_deg", [0.5, 7.0, 30.0])
def test_sam_pure_spectral_rotation(theta_deg):
    rng = np.random.default_rng(4)
    theta = math.radians(theta_deg)
    h, w = 12, 10
    phi = rng.uniform(0.0, math.pi / 2 - theta, size=(h, w))  # rotated vectors stay in the first quadrant
    r = rng.uniform(0.2, 1.0, size=(h, w))
    x = np.stack([r * np.cos(phi), r * np.sin(phi)])
    y = np.stack([r * np.cos(phi + theta), r * np.sin(phi + theta)])
    # different scaling per pixel must not change the angle
    y = y * rng.uniform(0.5, 1.0, size=(h, w))
    assert sam(x, y) == pytest.approx(theta_deg, abs=1e-9)


def test_sam_ignores_zero_pixels_and_averages_angles():
    x = np.zeros((2, 4, 4))
    y = np.zeros((2, 4, 4))
    x[0, 0, 0], y[0, 0, 0] = 1.0, 1.0  # angle 0
    x[0, 0, 1], y[1, 0, 1] = 0.5, 0.5  # angle 90
    x[0, 0, 2] = 0.7  # y zero here: left out
    y[1, 0, 3] = 0.7  # x zero here: left out
    assert sam(x, y) == pytest.approx(45.0, abs=1e-12)


def test_sam_is_nan_when_no_pixel_qualifies():
    z = np.zeros((3, 4, 4))
    assert math.isnan(sam(z, z))


# ------------------------------------------------------------------------------------------------
# SSIM
# ------------------------------------------------------------------------------------------------
def _ssim_bruteforce(x: np.ndarray, y: np.ndarray) -> float:
    """Direct 2-D 11x11 window over the valid region, as Wang's ssim_index.m (filter2 'valid')."""
    g = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
    win = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = 0.01**2, 0.03**2
    per_band = []
    for xb, yb in zip(x, y, strict=True):
        px = np.lib.stride_tricks.sliding_window_view(xb, (11, 11))
        py = np.lib.stride_tricks.sliding_window_view(yb, (11, 11))
        mx = np.einsum("ijkl,kl->ij", px, win)
        my = np.einsum("ijkl,kl->ij", py, win)
        vx = np.einsum("ijkl,kl->ij", px * px, win) - mx * mx
        vy = np.einsum("ijkl,kl->ij", py * py, win) - my * my
        cxy = np.einsum("ijkl,kl->ij", px * py, win) - mx * my
        s = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
        per_band.append(s.mean())
    return float(np.mean(per_band))


def test_ssim_matches_bruteforce_valid_window():
    x = _image(c=2, h=17, w=23, seed=5)
    y = np.clip(x + np.random.default_rng(6).normal(0, 0.05, size=x.shape), 0, 1)
    value = ssim(x, y)
    assert 0.0 < value < 1.0
    assert value == pytest.approx(_ssim_bruteforce(x, y), abs=1e-12)


def test_ssim_constant_images_by_hand():
    # Constant bands: variances and covariance are 0, SSIM = (2ab + C1) / (a^2 + b^2 + C1).
    a, b = 0.5, 0.625
    x = np.full((2, 16, 16), a)
    y = np.full((2, 16, 16), b)
    c1 = 0.01**2
    assert ssim(x, y) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), abs=1e-12)


@pytest.mark.skipif(not available("skimage"), reason="needs scikit-image: pip install 'lso-deploy[data]'")
def test_ssim_matches_skimage():
    structural_similarity = require("skimage.metrics").structural_similarity
    x = _image(c=3, h=32, w=27, seed=7)
    y = np.clip(x + np.random.default_rng(8).normal(0, 0.05, size=x.shape), 0, 1)
    ref = structural_similarity(
        x, y, channel_axis=0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0
    )
    assert ssim(x, y) == pytest.approx(ref, abs=1e-12)


def test_ssim_rejects_images_smaller_than_window():
    x = _image(h=10, w=32)
    with pytest.raises(InputError, match="at least 11"):
        ssim(x, x)


# ------------------------------------------------------------------------------------------------
# Input types, layouts and dtypes
# ------------------------------------------------------------------------------------------------
def test_numpy_and_torch_inputs_agree():
    x = _image(c=3, h=16, w=18, seed=9).astype(np.float32)
    y = np.clip(x + np.random.default_rng(10).normal(0, 0.03, size=x.shape).astype(np.float32), 0, 1)
    ref = evaluate(x, y, 8)
    assert all(math.isfinite(v) for v in ref.values())
    assert evaluate(torch.from_numpy(x), torch.from_numpy(y), 8) == ref
    assert evaluate(torch.from_numpy(x)[None], torch.from_numpy(y)[None], 8) == ref  # [1, C, H, W]
    assert evaluate(x[None], torch.from_numpy(y), 8) == ref  # mixed layouts and types
    t = torch.from_numpy(y).requires_grad_(True)
    assert evaluate(x, t, 8) == ref


def test_float32_inputs_are_computed_in_float64():
    x32 = _image(c=3, h=16, w=16, seed=11).astype(np.float32)
    y32 = x32 + np.float32(1e-3) * np.random.default_rng(12).standard_normal(x32.shape).astype(np.float32)
    x64, y64 = x32.astype(np.float64), y32.astype(np.float64)
    assert evaluate(x32, y32, 4, clamp=False) == evaluate(x64, y64, 4, clamp=False)


def test_float32_sam_of_small_angle_is_accurate():
    # Rotation by 0.01 deg: cos = 1 - 1.5e-8 rounds to 1 in float32, so a float32 SAM is badly off.
    rng = np.random.default_rng(12)
    theta = math.radians(0.01)
    phi = rng.uniform(0.2, 1.2, size=(16, 16))
    r = rng.uniform(0.2, 1.0, size=(16, 16))
    x32 = np.stack([r * np.cos(phi), r * np.sin(phi)]).astype(np.float32)
    y32 = np.stack([r * np.cos(phi + theta), r * np.sin(phi + theta)]).astype(np.float32)
    assert sam(x32, y32) == pytest.approx(0.01, abs=1e-5)
    dot = np.sum(x32 * y32, axis=0)
    norms = np.sqrt(np.sum(x32 * x32, axis=0) * np.sum(y32 * y32, axis=0))
    sam32 = float(np.degrees(np.mean(np.arccos(np.clip(dot / norms, -1, 1)))))
    assert abs(sam32 - 0.01) > 1e-3  # what a float32 computation would report


def test_half_precision_tensors_accepted():
    x = torch.from_numpy(_image(c=2, h=12, w=12, seed=13))
    for dtype in (torch.float16, torch.bfloat16):
        xs = x.to(dtype)
        assert psnr(xs, xs) == math.inf
        assert sam(xs, xs) == 0.0
        assert ssim(xs, xs) == 1.0


# ------------------------------------------------------------------------------------------------
# evaluate
# ------------------------------------------------------------------------------------------------
def test_evaluate_keys_and_consistency():
    x = _image(c=3, h=16, w=16, seed=14)
    y = np.clip(x + np.random.default_rng(15).normal(0, 0.02, size=x.shape), 0, 1)
    out = evaluate(x, y, 8)
    assert tuple(out) == metrics.METRIC_NAMES == ("psnr", "sam", "ergas", "ergas_paper", "ssim")
    assert out["psnr"] == psnr(x, y)
    assert out["sam"] == sam(x, y)
    assert out["ergas"] == ergas(x, y, 8)
    assert out["ergas_paper"] == ergas_paper(x, y)
    assert out["ergas_paper"] == pytest.approx(2 * out["ergas"], rel=1e-14)
    assert out["ssim"] == ssim(x, y)


def test_evaluate_clamps_estimate():
    x = _image(c=2, h=16, w=16, seed=16)
    x[:, :4, :4] = 1.0
    x[:, -4:, -4:] = 0.0
    y = x.copy()
    y[:, :4, :4] = 1.5  # overshoot above 1
    y[:, -4:, -4:] = -0.25  # undershoot below 0
    clamped = evaluate(x, y, 4)
    assert clamped["psnr"] == math.inf
    assert clamped["ergas"] == 0.0 and clamped["ssim"] == 1.0
    raw = evaluate(x, y, 4, clamp=False)
    assert math.isfinite(raw["psnr"])
    assert raw["ergas"] > 0 and raw["ssim"] < 1.0
    assert raw["psnr"] == psnr(x, y)


def test_evaluate_does_not_clamp_reference():
    x = _image(c=2, h=16, w=16, seed=17)
    x[:, 0, 0] = 1.25  # reference out of range in every band: used as given
    out = evaluate(x, x, 4)
    assert math.isfinite(out["psnr"])
    assert out["psnr"] == psnr(x, np.clip(x, 0, 1))


# ------------------------------------------------------------------------------------------------
# summarize
# ------------------------------------------------------------------------------------------------
def test_summarize_mean_and_population_std():
    rows = [{"psnr": 30.0, "sam": 2.0}, {"psnr": 40.0, "sam": 4.0}]
    out = summarize(rows)
    assert list(out) == ["psnr", "sam"]
    assert out["psnr"] == {"mean": 35.0, "std": 5.0}  # population std; the sample std would be 7.07
    assert out["sam"] == {"mean": 3.0, "std": 1.0}


def test_summarize_keeps_inf():
    out = summarize(iter([{"psnr": math.inf}, {"psnr": 30.0}]))
    assert out["psnr"]["mean"] == math.inf
    assert math.isnan(out["psnr"]["std"])
    nan_out = summarize([{"sam": math.nan}, {"sam": 1.0}])
    assert math.isnan(nan_out["sam"]["mean"]) and math.isnan(nan_out["sam"]["std"])


def test_summarize_of_evaluate_results():
    x = _image(c=2, h=16, w=16, seed=18)
    rows = [evaluate(x, np.clip(x + s, 0, 1), 4) for s in (0.01, 0.02)]
    out = summarize(rows)
    assert out["psnr"]["mean"] == pytest.approx((rows[0]["psnr"] + rows[1]["psnr"]) / 2, rel=1e-14)
    assert out["psnr"]["std"] == pytest.approx(abs(rows[0]["psnr"] - rows[1]["psnr"]) / 2, rel=1e-12)


def test_summarize_errors():
    with pytest.raises(InputError, match="at least one"):
        summarize([])
    with pytest.raises(InputError, match="keys"):
        summarize([{"psnr": 1.0}, {"sam": 1.0}])


# ------------------------------------------------------------------------------------------------
# Input errors
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fn", [psnr, sam, ergas_paper, ssim, lambda x, y: ergas(x, y, 4),
                                lambda x, y: evaluate(x, y, 4)])
def test_shape_mismatch(fn):
    with pytest.raises(InputError, match=r"same \[C, H, W\] shape.*\[3, 16, 16\].*\[3, 16, 15\]"):
        fn(np.zeros((3, 16, 16)), np.zeros((3, 16, 15)))


def test_band_count_mismatch():
    with pytest.raises(InputError, match="reference \\[31, 16, 16\\] and estimate \\[3, 16, 16\\]"):
        psnr(np.zeros((31, 16, 16)), np.zeros((3, 16, 16)))


@pytest.mark.parametrize("shape", [(16, 16), (16,), (1, 1, 3, 16, 16)])
def test_wrong_ndim(shape):
    with pytest.raises(InputError, match=f"found {len(shape)} dimensions"):
        psnr(np.zeros(shape), np.zeros(shape))


def test_batch_larger_than_one():
    x = torch.zeros(2, 3, 16, 16)
    with pytest.raises(InputError, match="batch of 2"):
        evaluate(x, x, 4)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_inputs(bad):
    x = _image(c=2, h=12, w=12)
    y = x.copy()
    y[1, 3, 4] = bad
    with pytest.raises(InputError, match="estimate: expected finite values, found 1 NaN/inf"):
        psnr(x, y)
    with pytest.raises(InputError, match="reference: expected finite values"):
        sam(torch.from_numpy(y), x)


def test_non_float_and_non_array_inputs():
    x = np.zeros((3, 12, 12), dtype=np.uint8)
    with pytest.raises(InputError, match="floating-point.*uint8"):
        psnr(x, x)
    with pytest.raises(InputError, match="floating-point.*int64"):
        psnr(torch.zeros(3, 12, 12, dtype=torch.int64), torch.zeros(3, 12, 12))
    with pytest.raises(InputError, match="numpy.ndarray or torch.Tensor, found list"):
        psnr([[[0.0]]], np.zeros((1, 1, 1)))


@pytest.mark.parametrize("ratio", [0, -4, math.nan, math.inf, True, "4"])
def test_bad_ratio(ratio):
    x = _image(c=2, h=12, w=12)
    with pytest.raises(InputError, match="ratio"):
        ergas(x, x, ratio)
    with pytest.raises(InputError, match="ratio"):
        evaluate(x, x, ratio)


def test_input_error_is_a_value_error():
    with pytest.raises(ValueError):
        psnr(np.zeros((3, 4, 4)), np.zeros((3, 4, 5)))


# ---- labelled report keys and band-wise errors ----------------------------------------------------


def test_labelled_names_both_ergas_figures():
    rng = np.random.default_rng(3)
    x = rng.random((4, 16, 16)) * 0.8 + 0.1
    y = np.clip(x + 0.05 * rng.standard_normal(x.shape), 0, 1)
    out = metrics.labelled(evaluate(x, y, 8))
    assert tuple(out) == metrics.REPORT_NAMES == ("psnr", "sam", "ergas_true_ratio", "ergas_paper_r4", "ssim")
    assert out["ergas_true_ratio"] == ergas(x, y, 8)
    assert out["ergas_paper_r4"] == ergas_paper(x, y) == pytest.approx(2 * out["ergas_true_ratio"], rel=1e-14)
    assert metrics.REPORT_HEADERS["ergas_true_ratio"] == "ERGAS (true r)"
    assert metrics.REPORT_HEADERS["ergas_paper_r4"] == "ERGAS (paper, r=4)"
    with pytest.raises(InputError, match="ergas_paper"):
        metrics.labelled({"psnr": 1.0, "sam": 1.0, "ergas": 1.0, "ssim": 1.0})


def test_band_errors_by_hand_and_clamp():
    x = np.full((3, 4, 4), 0.5)
    y = x.copy()
    y[0] += 0.1  # band 0: MSE 0.01 -> PSNR 20 dB, RMSE 0.1
    y[1, 0, 0] = 1.7  # band 1: one pixel above 1, clamped to 1: MSE 0.25 / 16
    out = metrics.band_errors(x, y)
    assert out["psnr"].shape == out["rmse"].shape == (3,)
    assert out["psnr"][0] == pytest.approx(20.0, rel=1e-12)
    assert out["rmse"][0] == pytest.approx(0.1, rel=1e-12)
    assert out["rmse"][1] == pytest.approx(math.sqrt(0.25 / 16), rel=1e-12)
    assert out["psnr"][2] == math.inf and out["rmse"][2] == 0.0  # exact band: +inf, never a cap
    assert np.mean(out["psnr"][:2]) == pytest.approx(np.mean([20.0, 10 * math.log10(16 / 0.25)]))
    raw = metrics.band_errors(x, y, clamp=False)
    assert raw["rmse"][1] == pytest.approx(math.sqrt(1.2**2 / 16), rel=1e-12)
    finite = y.copy()
    finite[2] += 0.01
    assert np.mean(metrics.band_errors(x, finite)["psnr"]) == pytest.approx(psnr(x, np.clip(finite, 0, 1)), rel=1e-12)
