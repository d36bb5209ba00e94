"""The paper's degradation protocol and the SRF (lso.data.degradation, lso.data.srf)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lso.data import degrade
from lso.data.degradation import add_noise, blur_decimate, gaussian_psf
from lso.data.srf import WAVELENGTHS_NM, hsi_to_msi, load_srf
from lso.errors import InputError


def _rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape)


# ---- SRF ----------------------------------------------------------------------------------------


def test_srf_nikon_columns_sum_to_one_and_match_counts():
    srf = load_srf()
    assert srf.shape == (31, 3) and srf.dtype == np.float64
    np.testing.assert_allclose(srf.sum(axis=0), 1.0, atol=1e-15)
    # the CSV's first row (400 nm) is (2, 1, 7) counts over sums (255, 203, 251)
    np.testing.assert_allclose(srf[0], [2 / 255, 1 / 203, 7 / 251])
    assert WAVELENGTHS_NM[0] == 400 and WAVELENGTHS_NM[-1] == 700 and len(WAVELENGTHS_NM) == 31
    with pytest.raises(InputError, match="unknown SRF"):
        load_srf("canon")


def test_hsi_to_msi_numpy_torch_and_band_check():
    hsi = _rand(2, 31, 4, 5)
    msi = hsi_to_msi(hsi)
    assert msi.shape == (2, 3, 4, 5) and msi.dtype == np.float64
    np.testing.assert_allclose(msi[1, :, 2, 3], hsi[1, :, 2, 3] @ load_srf())
    t = hsi_to_msi(torch.from_numpy(hsi[0]).float())
    assert isinstance(t, torch.Tensor) and t.shape == (3, 4, 5) and t.dtype == torch.float32
    np.testing.assert_allclose(t.numpy(), msi[0], atol=1e-6)
    with pytest.raises(InputError, match="31 bands"):
        hsi_to_msi(_rand(30, 4, 5))


# ---- PSF ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("ratio, size", [(3, 11), (4, 13), (8, 25)])
def test_gaussian_psf_size_sigma_sum(ratio, size):
    psf = gaussian_psf(ratio)
    assert psf.shape == (size, size)
    assert psf.sum() == pytest.approx(1.0, abs=1e-15)
    c = size // 2
    assert np.unravel_index(psf.argmax(), psf.shape) == (c, c)
    # Gaussian with σ = 0.5·r: psf[c, c+1] / psf[c, c] = exp(-1 / (2σ²))
    sigma = 0.5 * ratio
    assert psf[c, c + 1] / psf[c, c] == pytest.approx(math.exp(-1 / (2 * sigma**2)), rel=1e-12)
    np.testing.assert_allclose(psf, psf.T, atol=0)


def test_bad_ratio_rejected():
    for bad in (1, 0, 2.5, True):
        with pytest.raises(InputError, match="ratio"):
            gaussian_psf(bad)


# ---- blur + decimation ---------------------------------------------------------------------------


@pytest.mark.parametrize("centered", [False, True])
def test_constant_image_stays_constant(centered):
    gt = np.full((31, 24, 24), 0.37)
    hr_msi, lr_hsi = degrade(gt, 4, centered=centered)
    assert hr_msi.dtype == np.float64
    np.testing.assert_allclose(hr_msi, 0.37, atol=1e-12, rtol=0)
    np.testing.assert_allclose(lr_hsi, 0.37, atol=1e-12, rtol=0)


@pytest.mark.parametrize(
    "shape, ratio, msi, lr",
    [
        ((31, 32, 24), 4, (3, 32, 24), (31, 8, 6)),
        ((31, 32, 48), 8, (3, 32, 48), (31, 4, 6)),
        ((31, 21, 15), 3, (3, 21, 15), (31, 7, 5)),
        ((2, 31, 16, 12), 4, (2, 3, 16, 12), (2, 31, 4, 3)),
    ],
)
def test_output_shapes_and_dtype(shape, ratio, msi, lr):
    hr_msi, lr_hsi = degrade(_rand(*shape).astype(np.float32), ratio)
    assert hr_msi.shape == msi and lr_hsi.shape == lr
    assert hr_msi.dtype == np.float32 and lr_hsi.dtype == np.float32


def test_batch_equals_per_image():
    gt = _rand(2, 31, 16, 16)
    msi, lr = degrade(gt, 4)
    for b in range(2):
        m1, l1 = degrade(gt[b], 4)
        np.testing.assert_allclose(msi[b], m1, atol=1e-12)
        np.testing.assert_allclose(lr[b], l1, atol=1e-12)


def test_delta_is_not_shifted():
    # Paper protocol: LR pixel i sits at HR pixel r·i, so a delta at HR (8, 12) peaks at LR (2, 3)
    # and its neighbours one LR pixel up and down (equally far from it) receive the same weight.
    x = np.zeros((1, 32, 32))
    x[0, 8, 12] = 1.0
    lr = blur_decimate(x, 4)
    assert np.unravel_index(lr.argmax(), lr.shape) == (0, 2, 3)
    assert lr[0, 1, 3] == pytest.approx(lr[0, 3, 3], abs=1e-15)
    assert lr[0, 2, 2] == pytest.approx(lr[0, 2, 4], abs=1e-15)
    assert lr[0, 2, 3] == pytest.approx(gaussian_psf(4)[6, 6], rel=1e-9)


def test_centered_variant_puts_lr_pixel_at_block_centre():
    # centered=True: LR pixel i centred at HR 4·i + 1.5, so deltas at 9 and 10 (either side of
    # 9.5 = 4·2 + 1.5) give LR pixel 2 the same value, and mirror images of each other.
    a = np.zeros((1, 32, 32))
    b = np.zeros((1, 32, 32))
    a[0, 9, 13] = 1.0
    b[0, 10, 14] = 1.0
    la, lb = blur_decimate(a, 4, centered=True), blur_decimate(b, 4, centered=True)
    assert np.unravel_index(la.argmax(), la.shape) == (0, 2, 3)
    assert la[0, 2, 3] == pytest.approx(lb[0, 2, 3], abs=1e-15)
    assert la[0, 1, 2] == pytest.approx(lb[0, 3, 4], abs=1e-15)


def test_centered_odd_ratio_is_shifted_sampling():
    # odd r: the centred variant is the paper's blur sampled at [(r-1)/2::r]
    x = _rand(2, 15, 21)
    shifted = np.roll(x, (-1, -1), axis=(-2, -1))  # sampling at [1::3] = sampling the shifted image at [0::3]
    np.testing.assert_allclose(blur_decimate(x, 3, centered=True), blur_decimate(shifted, 3), atol=1e-12)


def test_convolution_is_circular():
    # A delta at the last column wraps around: LR column 0 (HR column 0) is 1 px from column W-1,
    # exactly as far as from a delta at column 1.
    wrap = np.zeros((1, 16, 16))
    wrap[0, 0, 15] = 1.0
    near = np.zeros((1, 16, 16))
    near[0, 0, 1] = 1.0
    lw, ln = blur_decimate(wrap, 4), blur_decimate(near, 4)
    assert lw[0, 0, 0] > 0.03
    assert lw[0, 0, 0] == pytest.approx(ln[0, 0, 0], abs=1e-15)
    # same along rows: the bottom row wraps to the top
    lw, ln = blur_decimate(wrap.transpose(0, 2, 1), 4), blur_decimate(near.transpose(0, 2, 1), 4)
    assert lw[0, 0, 0] > 0.03
    assert lw[0, 0, 0] == pytest.approx(ln[0, 0, 0], abs=1e-15)


def test_blur_matches_direct_circular_convolution():
    x = _rand(1, 16, 20)
    psf = gaussian_psf(4)
    half = psf.shape[0] // 2
    direct = np.zeros_like(x)
    for dy in range(-half, half + 1):
        for dx in range(-half, half + 1):
            direct += psf[dy + half, dx + half] * np.roll(x, (dy, dx), axis=(-2, -1))
    np.testing.assert_allclose(blur_decimate(x, 4), direct[..., ::4, ::4], atol=1e-13)


def test_size_not_multiple_of_ratio():
    with pytest.raises(InputError, match="multiples of the ratio 4.*crop"):
        degrade(_rand(31, 18, 16), 4)
    with pytest.raises(InputError, match="31 bands"):
        degrade(_rand(3, 16, 16), 4)
    bad = _rand(31, 16, 16)
    bad[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        degrade(bad, 4)


# ---- noise -------------------------------------------------------------------------------------


def test_noise_snr_per_band():
    x = _rand(3, 128, 128) * np.array([1.0, 0.2, 0.05])[:, None, None]
    for snr in (20.0, 35.0):
        noisy = add_noise(x, snr, seed=1)
        n = noisy - x
        measured = 10 * np.log10(np.mean(x**2, axis=(1, 2)) / np.mean(n**2, axis=(1, 2)))
        np.testing.assert_allclose(measured, snr, atol=0.2)


def test_noise_is_reproducible_with_seed():
    gt = _rand(31, 16, 16)
    a = degrade(gt, 4, snr_db=30, seed=7)
    b = degrade(gt, 4, snr_db=30, seed=7)
    c = degrade(gt, 4, snr_db=30, seed=8)
    clean = degrade(gt, 4)
    for u, v, w, z in zip(a, b, c, clean, strict=True):
        np.testing.assert_array_equal(u, v)
        assert not np.array_equal(u, w)
        assert not np.array_equal(u, z)
    np.testing.assert_array_equal(add_noise(gt, 25, 3), add_noise(gt, 25, 3))
    # a pair gives separate SNRs; None = no noise on that output
    msi, lr = degrade(gt, 4, snr_db=(30, None), seed=7)
    np.testing.assert_array_equal(msi, clean[0])
    assert not np.array_equal(lr, clean[1])


# ---- torch -------------------------------------------------------------------------------------


def test_torch_in_torch_out():
    gt = _rand(1, 31, 16, 16)
    msi_np, lr_np = degrade(gt, 4)
    msi, lr = degrade(torch.from_numpy(gt).float(), 4)
    assert isinstance(msi, torch.Tensor) and isinstance(lr, torch.Tensor)
    assert msi.dtype == torch.float32 and lr.shape == (1, 31, 4, 4)
    np.testing.assert_allclose(msi.numpy(), msi_np, atol=1e-6)
    np.testing.assert_allclose(lr.numpy(), lr_np, atol=1e-6)
    msi64, _ = degrade(torch.from_numpy(gt), 4)
    assert msi64.dtype == torch.float64
    noisy = add_noise(torch.from_numpy(gt[0]).float(), 30.0, seed=0)
    assert isinstance(noisy, torch.Tensor) and noisy.dtype == torch.float32


# ---- FFT resize (the authors' cross-scale resampling) ---------------------------------------------


def test_fft_resize_truncates_spectrum_by_hand():
    """8 -> 4 columns keeps frequencies 0, 1, 2 of the real FFT: the 3-cycle term goes, the rest stays."""
    from lso.data import fft_resize

    n = np.arange(8)
    row = 0.5 + np.cos(2 * np.pi * n / 8) + 0.25 * np.cos(2 * np.pi * 3 * n / 8)
    x = np.stack([row, row])  # [2, 8]: two rows, so both sizes keep every row frequency
    y = fft_resize(x, (2, 4))
    # by hand: DC 0.5 kept (scale 4/8 undoes the length change), cos(2 pi n / 8) sampled at n = 2m
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, [[1.5, 0.5, -0.5, 0.5]] * 2, atol=1e-6)


def test_fft_resize_zero_pads_spectrum_by_hand():
    """4 -> 8 rows: a one-cycle cosine is interpolated exactly (zero-padded spectrum, scale 8/4)."""
    from lso.data import fft_resize

    col = np.cos(2 * np.pi * np.arange(4) / 4)[:, None]  # [4, 1] = [1, 0, -1, 0]
    y = fft_resize(col, (8, 1))
    np.testing.assert_allclose(y[:, 0], np.cos(2 * np.pi * np.arange(8) / 8), atol=1e-6)
    # a constant keeps its value at any size, odd ones included; leading axes are independent
    const = np.full((2, 31, 5, 7), 0.3)
    np.testing.assert_allclose(fft_resize(const, (3, 4)), np.full((2, 31, 3, 4), 0.3), atol=1e-6)
    with pytest.raises(InputError, match="positive"):
        fft_resize(const, (0, 4))
