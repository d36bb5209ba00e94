"""The paper's degradation protocol: ground-truth HSI → (HR-MSI, LR-HSI).

Protocol (see ``docs/model.md``, "Degradation protocol"):

* LR-HSI: Gaussian PSF with σ = 0.5·r and size 2·ceil(3σ)+1 (×4: 13×13, ×8: 25×25), normalised to
  sum 1, applied as a circular (FFT) convolution over the whole image with the PSF centred at the
  origin (the ``psf2otf`` convention: the kernel is zero-padded to the image size and circularly
  shifted so its centre sits at [0, 0]; the blur introduces no shift), then decimation ``[0::r, 0::r]``.
  LR pixel i therefore sits at HR pixel r·i (not at r·i + (r−1)/2, which bicubic upsampling
  assumes); ``centered=True`` offers the other convention, clearly not the paper's.
* HR-MSI: HSI × SRF (Nikon D700, :func:`lso.data.srf.load_srf`).
* Noise (optional, not in the paper's protocol): white Gaussian per band with
  SNR = 10·log10(mean(x_c²) / σ_c²).

Everything is computed in float64 with numpy's FFT; torch tensors are processed on the CPU and
returned on their device.

Example::

    from lso.data import degrade
    hr_msi, lr_hsi = degrade(gt, ratio=4)   # gt [31, H, W] → [3, H, W], [31, H/4, W/4]
"""
from __future__ import annotations

import logging
import math
import numbers
from typing import Any

import numpy as np

from lso.data.srf import _as_float64, _check_image, _project, _srf_matrix
from lso.errors import InputError

__all__ = ["gaussian_psf", "blur_decimate", "add_noise", "degrade", "fft_resize"]

logger = logging.getLogger(__name__)


def _check_ratio(ratio: Any) -> int:
    if isinstance(ratio, bool) or not isinstance(ratio, numbers.Integral) or ratio < 2:
        raise InputError(f"ratio: expected an integer ≥ 2 (e.g. 4 or 8), got {ratio!r}")
    return int(ratio)


def _taps(ratio: int, center: float) -> tuple[np.ndarray, np.ndarray]:
    """1-D Gaussian taps (σ = 0.5·r, support |d| ≤ ceil(3σ) around ``center``), normalised to sum 1.

    Returns integer positions and weights; ``center = 0`` gives the paper's 2·ceil(3σ)+1 taps.
    """
    sigma = 0.5 * ratio
    half = math.ceil(3.0 * sigma)
    pos = np.arange(math.floor(center - half), math.ceil(center + half) + 1)
    pos = pos[np.abs(pos - center) <= half + 1e-9]
    w = np.exp(-((pos - center) ** 2) / (2.0 * sigma**2))
    return pos, w / w.sum()


def gaussian_psf(ratio: int) -> np.ndarray:
    """The paper's Gaussian PSF for scale ``ratio``.

    Args:
        ratio: integer scale r ≥ 2.

    Returns:
        ``[k, k]`` float64 with k = 2·ceil(3σ)+1 and σ = 0.5·r (×3: 11×11, ×4: 13×13, ×8: 25×25),
        summing to 1, centre at ``[k // 2, k // 2]``.
    """
    r = _check_ratio(ratio)
    _, g = _taps(r, 0.0)
    psf = np.outer(g, g)
    return psf / psf.sum()


def _circular_kernel(n: int, pos: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Taps at integer positions placed on a length-n circle (position p → index p mod n)."""
    k = np.zeros(n)
    np.add.at(k, pos % n, w)
    return k


def _blur_decimate_np(x: np.ndarray, ratio: int, centered: bool) -> np.ndarray:
    """[..., H, W] float64 → [..., H/r, W/r] float64 (H, W already checked)."""
    h, w = x.shape[-2:]
    # Convolution kernel k(m): y(n) = Σ_m k(m) x(n − m). The paper: a Gaussian centred at m = 0.
    # Centred variant: a Gaussian centred at m = −(r−1)/2, so y(r·i) weighs x around r·i + (r−1)/2.
    center = -(ratio - 1) / 2.0 if centered else 0.0
    pos, g = _taps(ratio, center)
    # The PSF is separable (outer(g, g)), so its OTF is the outer product of the 1-D OTFs: this is
    # exactly psf2otf of the 2-D kernel (zero-padded to H×W, circularly shifted to the origin).
    otf = np.fft.fft(_circular_kernel(h, pos, g))[:, None] * np.fft.rfft(_circular_kernel(w, pos, g))[None, :]
    blurred = np.fft.irfft2(np.fft.rfft2(x, axes=(-2, -1)) * otf, s=(h, w), axes=(-2, -1))
    return blurred[..., ::ratio, ::ratio]


def _check_divisible(shape: tuple[int, ...], ratio: int, what: str) -> None:
    h, w = shape[-2:]
    if h % ratio or w % ratio:
        raise InputError(
            f"{what}: height and width must be multiples of the ratio {ratio}, got {h}×{w}; crop it "
            f"first, e.g. x[..., :{h - h % ratio}, :{w - w % ratio}]"
        )


def _check_finite(x: np.ndarray, what: str) -> None:
    if not np.isfinite(x).all():
        raise InputError(f"{what}: contains NaN or infinite values; clean the data before degrading it")


def blur_decimate(hsi: Any, ratio: int, *, centered: bool = False) -> Any:
    """Gaussian blur (circular, FFT) and decimation by ``ratio``: the paper's LR-HSI from an HSI.

    Args:
        hsi: ``[..., H, W]`` (typically ``[C, H, W]`` or ``[B, C, H, W]``), numpy or torch, H and W
            multiples of ``ratio``. Every leading index is blurred independently.
        ratio: integer scale r ≥ 2.
        centered: ``False`` (default) = the paper: PSF centred at the origin, pixels ``[0::r, 0::r]``,
            so LR pixel i sits at HR pixel r·i. ``True`` = NOT the paper's protocol: the same
            Gaussian (σ = 0.5·r, support |d| ≤ ceil(3σ), renormalised to sum 1) centred at HR
            position r·i + (r−1)/2, i.e. on the centre of LR pixel i's r×r block, which is where
            bicubic upsampling (``align_corners=False``) puts it. For odd r this equals the
            paper's blur sampled at ``[(r−1)/2::r]``; for even r the Gaussian is sampled at
            half-integer offsets (×4: 12×12 taps symmetric about the block centre). Still circular.

    Returns:
        ``[..., H/r, W/r]``, same kind as ``hsi``; float64 if ``hsi`` is float64, else float32.

    Raises:
        InputError: ``ratio`` not an integer ≥ 2, or H, W not multiples of it.
    """
    r = _check_ratio(ratio)
    x, restore = _as_float64(hsi, "hsi")
    if x.ndim < 2:
        raise InputError(f"hsi: expected at least 2 dimensions [..., H, W], got shape {tuple(x.shape)}")
    _check_divisible(x.shape, r, "hsi")
    return restore(_blur_decimate_np(x, r, centered))


def _noise_np(x: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """x + white Gaussian noise at ``snr_db`` per band (leading index), float64."""
    power = np.mean(x**2, axis=(-2, -1), keepdims=True)
    sigma = np.sqrt(power / 10.0 ** (snr_db / 10.0))
    return x + rng.standard_normal(x.shape) * sigma


def _check_snr(snr_db: Any, what: str = "snr_db") -> float:
    if isinstance(snr_db, bool) or not isinstance(snr_db, numbers.Real) or not math.isfinite(snr_db):
        raise InputError(f"{what}: expected a finite SNR in dB (e.g. 30.0), got {snr_db!r}")
    return float(snr_db)


def add_noise(x: Any, snr_db: float, seed: Any = None) -> Any:
    """Add white Gaussian noise per band at a given SNR (not part of the paper's protocol).

    For each band (each index of the leading axes), σ_c² = mean(x_c²) / 10^(snr_db/10), so that
    SNR = 10·log10(mean(x_c²)/σ_c²). An all-zero band stays zero. Values are not clipped.

    Args:
        x: ``[..., H, W]`` (typically ``[C, H, W]`` or ``[B, C, H, W]``), numpy or torch.
        snr_db: signal-to-noise ratio in dB.
        seed: int, ``np.random.SeedSequence``, ``np.random.Generator`` or ``None`` (fresh entropy).
            The same int seed gives the same noise for the same shape, numpy or torch alike.

    Returns:
        Noisy copy, same kind as ``x``; float64 if ``x`` is float64, else float32.
    """
    snr = _check_snr(snr_db)
    arr, restore = _as_float64(x, "x")
    if arr.ndim < 2:
        raise InputError(f"x: expected at least 2 dimensions [..., H, W], got shape {tuple(arr.shape)}")
    return restore(_noise_np(arr, snr, np.random.default_rng(seed)))


def degrade(
    gt: Any,
    ratio: int = 4,
    *,
    srf: Any = None,
    snr_db: float | tuple[float | None, float | None] | None = None,
    seed: Any = None,
    centered: bool = False,
) -> tuple[Any, Any]:
    """Make the fusion inputs from a ground-truth HSI with the paper's protocol.

    Args:
        gt: ``[31, H, W]`` or ``[B, 31, H, W]`` (bands 400 → 700 nm), numpy or torch, H and W
            multiples of ``ratio`` (crop first otherwise).
        ratio: integer scale r ≥ 2 (paper: 4 and 8).
        srf: ``[31, M]`` SRF used as given; ``None`` = Nikon D700, columns summing to 1.
        snr_db: ``None`` (default, the paper: no noise); a float = that SNR on both outputs; a pair
            ``(lr_hsi_snr, hr_msi_snr)``, either ``None`` for no noise on that output. See
            :func:`add_noise`.
        seed: seed of the noise (int, SeedSequence or Generator). The LR-HSI and HR-MSI noise come
            from two independent streams spawned from it; same seed → same noise.
        centered: ``False`` = the paper (LR pixel i at HR r·i). ``True`` = LR pixel i centred at
            HR r·i + (r−1)/2 (not the paper's protocol); see :func:`blur_decimate`.

    Returns:
        ``(hr_msi, lr_hsi)``: ``[.., M, H, W]`` (M = 3) and ``[.., 31, H/r, W/r]``, the same kind as
        ``gt`` (torch on ``gt``'s device), float64 if ``gt`` is float64, else float32. Computed in
        float64 from the exact ``gt`` values; not clipped.

    Raises:
        InputError: wrong rank or band count, H or W not a multiple of ``ratio``, non-finite values,
            bad ``ratio`` or ``snr_db``.
    """
    r = _check_ratio(ratio)
    mat = _srf_matrix(srf)
    x, restore = _as_float64(gt, "gt")
    _check_image(x, "gt", mat.shape[0])
    _check_divisible(x.shape, r, "gt")
    _check_finite(x, "gt")

    hr_msi = _project(x, mat)
    lr_hsi = _blur_decimate_np(x, r, centered)

    if snr_db is not None:
        if isinstance(snr_db, (tuple, list)):
            if len(snr_db) != 2:
                raise InputError(
                    f"snr_db: expected a float or a pair (lr_hsi_snr, hr_msi_snr), got {snr_db!r}"
                )
            snr_hsi, snr_msi = snr_db
        else:
            snr_hsi = snr_msi = snr_db
        if isinstance(seed, np.random.Generator):
            rng_hsi = rng_msi = seed
        else:
            ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
            rng_hsi, rng_msi = (np.random.default_rng(s) for s in ss.spawn(2))
        if snr_hsi is not None:
            lr_hsi = _noise_np(lr_hsi, _check_snr(snr_hsi, "snr_db (LR-HSI)"), rng_hsi)
        if snr_msi is not None:
            hr_msi = _noise_np(hr_msi, _check_snr(snr_msi, "snr_db (HR-MSI)"), rng_msi)
        logger.debug("degrade: noise at %s dB (lr_hsi, hr_msi) = (%s, %s)", snr_db, snr_hsi, snr_msi)
    return restore(hr_msi), restore(lr_hsi)


def fft_resize(x: Any, size: tuple[int, int]) -> np.ndarray:
    """Resample ``x [..., H, W]`` to ``size = (H_out, W_out)`` by truncating or zero-padding its spectrum.

    The authors' cross-scale evaluation resamples every LR-HSI to one fixed size this way (see
    ``docs/model.md``, "The authors' cross-scale evaluation"): real 2-D FFT over the last two axes; keep
    the lowest frequencies that fit, i.e. the first ⌈n/2⌉ and last ⌊n/2⌋ rows with n = min(H_in, H_out),
    and the first ⌊w/2⌋+1 columns with w = min(W_in, W_out); zero the rest; inverse real FFT to the
    output size; multiply by (H_out/H_in)·(W_out/W_in) so that a constant image keeps its value.
    Computed in float64; returns float32.

    Raises:
        InputError: ``x`` has fewer than two axes or a size is not a positive integer.
    """
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim < 2:
        raise InputError(f"fft_resize: expected an array [..., H, W], got shape {arr.shape}")
    try:
        h_out, w_out = (int(v) for v in size)
    except (TypeError, ValueError) as exc:
        raise InputError(f"fft_resize: size must be (height, width), got {size!r}") from exc
    if h_out < 1 or w_out < 1:
        raise InputError(f"fft_resize: size must be positive, got {size!r}")
    h_in, w_in = arr.shape[-2:]
    spec = np.fft.rfft2(arr, axes=(-2, -1))
    out = np.zeros(arr.shape[:-2] + (h_out, w_out // 2 + 1), dtype=spec.dtype)
    n, w = min(h_in, h_out), min(w_in, w_out)
    top, bottom, cols = (n + 1) // 2, n // 2, w // 2 + 1
    out[..., :top, :cols] = spec[..., :top, :cols]
    if bottom:
        out[..., h_out - bottom:, :cols] = spec[..., h_in - bottom:, :cols]
    y = np.fft.irfft2(out, s=(h_out, w_out), axes=(-2, -1)) * ((h_out / h_in) * (w_out / w_in))
    return y.astype(np.float32)
