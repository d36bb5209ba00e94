"""Image-quality metrics for hyperspectral super-resolution, as the LSO paper's tables compute them.

All functions take one image: a reference ``X`` (ground truth) and an estimate ``Y`` (network output),
each ``[C, H, W]`` or ``[1, C, H, W]`` (C bands), as numpy arrays or torch tensors of any floating
dtype, with values nominally in ``[0, 1]``. Everything is computed in float64 on the CPU with numpy,
so ``lso.metrics`` needs only torch and numpy. With ``MSE_c`` the mean squared error of band ``c``:

- :func:`psnr`: mean over bands of ``10 * log10(1 / MSE_c)`` (data range 1). A band with
  ``MSE_c = 0`` has PSNR ``+inf``, so identical images give ``float('inf')``, never a made-up cap.
- :func:`sam`: spectral angle in degrees, mean over pixels with ``||x|| * ||y|| > 1e-8`` of
  ``arccos(clip(<x, y> / (||x|| * ||y||), -1, 1))`` (x, y: the C-vectors of one pixel).
- :func:`ergas`: the standard ERGAS ``(100 / r) * sqrt(mean_c MSE_c / mu_c^2)``, ``mu_c`` the mean of
  reference band ``c`` and ``r`` the true scale ratio; :func:`ergas_paper`: the paper's variant,
  which hard-codes ``r = 4`` at every scale (its x8 ERGAS is twice the standard one).
- :func:`ssim`: Wang et al. (2004) SSIM per band over the 'valid' region, averaged over bands.
- :func:`evaluate`: all of the above for one image, estimate clamped to ``[0, 1]`` first;
  :func:`summarize`: mean and population std of each metric over a set of images.
- :func:`labelled`: the same figures under report keys that name which ERGAS is which
  (:data:`REPORT_NAMES`: ``ergas_true_ratio`` and ``ergas_paper_r4``), with table headers in
  :data:`REPORT_HEADERS`; :func:`band_errors`: PSNR and RMSE of every band (per wavelength).

Inputs are checked at the boundary: a batch of more than one image, the wrong number of dimensions,
mismatched shapes, non-floating dtypes or non-finite values raise :class:`~lso.errors.InputError`.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping

import numpy as np
import torch

from lso.errors import InputError

__all__ = ["psnr", "sam", "ergas", "ergas_paper", "ssim", "evaluate", "summarize", "labelled", "band_errors",
           "METRIC_NAMES", "REPORT_NAMES", "REPORT_HEADERS"]

logger = logging.getLogger(__name__)

#: Keys of the dictionary returned by :func:`evaluate`, in order.
METRIC_NAMES: tuple[str, ...] = ("psnr", "sam", "ergas", "ergas_paper", "ssim")

#: Report keys of :func:`labelled`: each ERGAS says which ratio it divides by.
REPORT_NAMES: tuple[str, ...] = ("psnr", "sam", "ergas_true_ratio", "ergas_paper_r4", "ssim")

#: Table headers for :data:`REPORT_NAMES`, in order.
REPORT_HEADERS: dict[str, str] = {
    "psnr": "PSNR (dB)",
    "sam": "SAM (deg)",
    "ergas_true_ratio": "ERGAS (true r)",
    "ergas_paper_r4": "ERGAS (paper, r=4)",
    "ssim": "SSIM",
}

_PAPER_RATIO = 4.0  # the paper's ERGAS uses r = 4 at every scale
_SAM_EPS = 1e-8  # pixels with ||x|| * ||y|| <= this are left out of SAM
_SSIM_WIN = 11
_SSIM_SIGMA = 1.5
_SSIM_K1 = 0.01
_SSIM_K2 = 0.03
_DATA_RANGE = 1.0


def _gaussian_taps(size: int = _SSIM_WIN, sigma: float = _SSIM_SIGMA) -> np.ndarray:
    """1-D Gaussian of ``size`` taps normalised to sum 1 (the 2-D window is its outer product)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


_GAUSS = _gaussian_taps()


# --------------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------------
def _to_float64(image: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    """Return ``image`` as a float64 numpy array ``[C, H, W]``, or raise InputError."""
    if isinstance(image, torch.Tensor):
        if not image.is_floating_point():
            raise InputError(
                f"{name}: expected a floating-point tensor with values in [0, 1], found dtype {image.dtype}; "
                "convert it first (e.g. uint8 images: x.float() / 255)"
            )
        shape = tuple(image.shape)
        array = image.detach().to(device="cpu", dtype=torch.float64).numpy()
    elif isinstance(image, np.ndarray):
        if not np.issubdtype(image.dtype, np.floating):
            raise InputError(
                f"{name}: expected a floating-point array with values in [0, 1], found dtype {image.dtype}; "
                "convert it first (e.g. uint8 images: x.astype(np.float32) / 255)"
            )
        shape = image.shape
        array = np.asarray(image, dtype=np.float64)
    else:
        raise InputError(f"{name}: expected a numpy.ndarray or torch.Tensor, found {type(image).__name__}")

    if array.ndim == 4:
        if shape[0] != 1:
            raise InputError(
                f"{name}: expected one image [C, H, W] or [1, C, H, W], found a batch of {shape[0]} "
                f"(shape {list(shape)}); evaluate the images one at a time and combine them with summarize()"
            )
        array = array[0]
    elif array.ndim != 3:
        raise InputError(
            f"{name}: expected one image [C, H, W] or [1, C, H, W], found {array.ndim} dimensions "
            f"(shape {list(shape)})"
        )
    if array.size == 0:
        raise InputError(f"{name}: expected a non-empty image, found shape {list(shape)}")
    finite = np.isfinite(array)
    if not finite.all():
        bad = int(array.size - np.count_nonzero(finite))
        raise InputError(
            f"{name}: expected finite values, found {bad} NaN/inf value(s) of {array.size} "
            f"(shape {list(shape)})"
        )
    return array


def _prepare(
    reference: np.ndarray | torch.Tensor, estimate: np.ndarray | torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """Check both images and return them as float64 ``[C, H, W]`` arrays of the same shape."""
    x = _to_float64(reference, "reference")
    y = _to_float64(estimate, "estimate")
    if x.shape != y.shape:
        raise InputError(
            f"reference and estimate must have the same [C, H, W] shape, found reference {list(x.shape)} "
            f"and estimate {list(y.shape)}"
        )
    return x, y


def _check_ratio(ratio: float) -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float, np.integer, np.floating)):
        raise InputError(f"ratio: expected a positive number (the scale factor), found {ratio!r}")
    value = float(ratio)
    if not (math.isfinite(value) and value > 0):
        raise InputError(f"ratio: expected a positive finite scale factor (e.g. 4 or 8), found {ratio!r}")
    return value


# --------------------------------------------------------------------------------------------------
# Metrics on checked float64 [C, H, W] arrays
# --------------------------------------------------------------------------------------------------
def _band_mse(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    d = y - x
    return np.mean(d * d, axis=(1, 2))


def _psnr(x: np.ndarray, y: np.ndarray) -> float:
    mse = _band_mse(x, y)
    with np.errstate(divide="ignore"):
        per_band = 10.0 * np.log10(_DATA_RANGE**2 / mse)  # MSE 0 -> +inf
    return float(np.mean(per_band))


def _sam(x: np.ndarray, y: np.ndarray) -> float:
    dot = np.sum(x * y, axis=0)
    # sqrt(|x|^2 |y|^2) == |x| |y|; for x == y it rounds to |x|^2 exactly, so identical pixels give 0.
    norms = np.sqrt(np.sum(x * x, axis=0) * np.sum(y * y, axis=0))
    valid = norms > _SAM_EPS
    if not valid.any():
        logger.warning(
            "SAM is undefined: no pixel has ||x|| * ||y|| > %g (all-zero images); returning NaN", _SAM_EPS
        )
        return float("nan")
    cos = np.clip(dot[valid] / norms[valid], -1.0, 1.0)
    return float(np.degrees(np.mean(np.arccos(cos))))


def _ergas(x: np.ndarray, y: np.ndarray, ratio: float) -> float:
    mse = _band_mse(x, y)
    mu = np.mean(x, axis=(1, 2))
    if np.any(mu == 0):
        logger.warning(
            "ERGAS is undefined: reference band(s) %s have mean 0; the result is inf or NaN",
            np.flatnonzero(mu == 0).tolist(),
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = mse / (mu * mu)
    return float(100.0 / ratio * np.sqrt(np.mean(rel)))


def _filter_valid(a: np.ndarray) -> np.ndarray:
    """Separable 11x11 Gaussian filter of ``a`` ``[C, H, W]`` over the valid region ``[C, H-10, W-10]``."""
    k = _GAUSS.size
    h = a.shape[-2] - k + 1
    w = a.shape[-1] - k + 1
    rows = np.zeros(a.shape[:-2] + (h, a.shape[-1]), dtype=np.float64)
    for i in range(k):
        rows += _GAUSS[i] * a[..., i : i + h, :]
    out = np.zeros(a.shape[:-2] + (h, w), dtype=np.float64)
    for j in range(k):
        out += _GAUSS[j] * rows[..., :, j : j + w]
    return out


def _ssim(x: np.ndarray, y: np.ndarray) -> float:
    if x.shape[-2] < _SSIM_WIN or x.shape[-1] < _SSIM_WIN:
        raise InputError(
            f"ssim: expected H and W of at least {_SSIM_WIN} (the Gaussian window), found "
            f"H={x.shape[-2]}, W={x.shape[-1]}"
        )
    c1 = (_SSIM_K1 * _DATA_RANGE) ** 2
    c2 = (_SSIM_K2 * _DATA_RANGE) ** 2
    mu_x = _filter_valid(x)
    mu_y = _filter_valid(y)
    var_x = _filter_valid(x * x) - mu_x * mu_x
    var_y = _filter_valid(y * y) - mu_y * mu_y
    cov = _filter_valid(x * y) - mu_x * mu_y
    num = (2.0 * mu_x * mu_y + c1) * (2.0 * cov + c2)
    den = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    per_band = np.mean(num / den, axis=(1, 2))
    return float(np.mean(per_band))


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------
def psnr(reference: np.ndarray | torch.Tensor, estimate: np.ndarray | torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB, mean over bands, data range 1.

    ``mean_c 10 * log10(1 / MSE_c)`` in float64. A band with ``MSE_c = 0`` contributes ``+inf``, so the
    mean is ``float('inf')`` as soon as one band is exact (identical images give ``inf``, never a cap).

    Args:
        reference: ground truth ``[C, H, W]`` or ``[1, C, H, W]``, numpy or torch, any float dtype.
        estimate: estimate of the same shape.

    Returns:
        PSNR in dB (``inf`` possible).

    Raises:
        InputError: batch > 1, wrong number of dimensions, shape mismatch, non-float or non-finite input.
    """
    x, y = _prepare(reference, estimate)
    return _psnr(x, y)


def sam(reference: np.ndarray | torch.Tensor, estimate: np.ndarray | torch.Tensor) -> float:
    """Spectral angle mapper in degrees.

    For each pixel with C-vectors ``x`` (reference) and ``y`` (estimate) and ``||x|| * ||y|| > 1e-8``,
    the angle ``arccos(clip(<x, y> / (||x|| * ||y||), -1, 1))``; the result is the mean over those
    pixels, in degrees, computed in float64. Pixels where either vector is (near) zero are left out;
    if no pixel is left the angle is undefined and ``nan`` is returned (with a logged warning).

    Args:
        reference: ground truth ``[C, H, W]`` or ``[1, C, H, W]``, numpy or torch, any float dtype.
        estimate: estimate of the same shape.

    Returns:
        Mean spectral angle in degrees, in ``[0, 180]`` (``nan`` if no pixel qualifies).

    Raises:
        InputError: batch > 1, wrong number of dimensions, shape mismatch, non-float or non-finite input.
    """
    x, y = _prepare(reference, estimate)
    return _sam(x, y)


def ergas(reference: np.ndarray | torch.Tensor, estimate: np.ndarray | torch.Tensor, ratio: float) -> float:
    """Standard ERGAS with the true scale ratio.

    ``(100 / ratio) * sqrt(mean_c MSE_c / mu_c^2)`` with ``mu_c`` the mean of reference band ``c``, in
    float64. ``ratio`` is the spatial scale factor (HR size / LR size, e.g. 4 or 8). The paper's tables
    use :func:`ergas_paper` instead, which fixes ``ratio = 4`` at every scale. A reference band with
    mean 0 makes ERGAS undefined: the result is ``inf`` (or ``nan`` if that band is also exact), with a
    logged warning.

    Args:
        reference: ground truth ``[C, H, W]`` or ``[1, C, H, W]``, numpy or torch, any float dtype.
        estimate: estimate of the same shape.
        ratio: scale factor r > 0.

    Returns:
        ERGAS (lower is better, 0 for identical images).

    Raises:
        InputError: bad images (see :func:`psnr`) or a ratio that is not a positive finite number.
    """
    r = _check_ratio(ratio)
    x, y = _prepare(reference, estimate)
    return _ergas(x, y, r)


def ergas_paper(reference: np.ndarray | torch.Tensor, estimate: np.ndarray | torch.Tensor) -> float:
    """ERGAS as the LSO paper's tables report it: ratio hard-coded to 4 at every scale.

    Equal to ``ergas(reference, estimate, 4)``. At x4 it is the standard ERGAS; at x8 it is **twice**
    the standard value ``ergas(reference, estimate, 8)``. Use it only to compare with the paper.

    Args:
        reference: ground truth ``[C, H, W]`` or ``[1, C, H, W]``, numpy or torch, any float dtype.
        estimate: estimate of the same shape.

    Returns:
        The paper's ERGAS.

    Raises:
        InputError: see :func:`psnr`.
    """
    x, y = _prepare(reference, estimate)
    return _ergas(x, y, _PAPER_RATIO)


def ssim(reference: np.ndarray | torch.Tensor, estimate: np.ndarray | torch.Tensor) -> float:
    """Structural similarity (Wang et al., 2004), per band, averaged over bands.

    Gaussian window 11x11 with sigma 1.5 (normalised to sum 1), K1 = 0.01, K2 = 0.03, data range 1,
    population (biased) local variances, no downsampling. Border handling: the SSIM map is computed
    on the 'valid' region only (window fully inside the image, ``[H-10, W-10]`` per band), as Wang's
    reference ``ssim_index.m`` does with ``filter2(..., 'valid')``; no padding. This equals
    ``skimage.metrics.structural_similarity(X, Y, channel_axis=0, gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1.0)`` to rounding (skimage filters with reflect padding,
    then crops 5 px at every border, which leaves exactly the valid region; checked to 1e-12 in
    tests/test_metrics.py).

    Args:
        reference: ground truth ``[C, H, W]`` or ``[1, C, H, W]`` with H, W >= 11, numpy or torch,
            any float dtype.
        estimate: estimate of the same shape.

    Returns:
        Mean SSIM (1 for identical images).

    Raises:
        InputError: see :func:`psnr`, or H or W smaller than the 11 px window.
    """
    x, y = _prepare(reference, estimate)
    return _ssim(x, y)


def evaluate(
    reference: np.ndarray | torch.Tensor,
    estimate: np.ndarray | torch.Tensor,
    ratio: float,
    *,
    clamp: bool = True,
) -> dict[str, float]:
    """All metrics of one image, as the paper evaluates it.

    The estimate is clamped to ``[0, 1]`` first when ``clamp`` is true (the paper clamps the network
    output before scoring); the reference is used as given.

    Args:
        reference: ground truth ``[C, H, W]`` or ``[1, C, H, W]`` (H, W >= 11 for SSIM), numpy or
            torch, any float dtype.
        estimate: estimate of the same shape.
        ratio: true scale factor, used by the standard ``ergas`` (``ergas_paper`` always uses 4).
        clamp: clamp the estimate to ``[0, 1]`` before scoring.

    Returns:
        ``{"psnr", "sam", "ergas", "ergas_paper", "ssim"}`` (see :data:`METRIC_NAMES`) as floats.

    Raises:
        InputError: see :func:`ergas` and :func:`ssim`.
    """
    r = _check_ratio(ratio)
    x, y = _prepare(reference, estimate)
    if clamp:
        y = np.clip(y, 0.0, 1.0)
    return {
        "psnr": _psnr(x, y),
        "sam": _sam(x, y),
        "ergas": _ergas(x, y, r),
        "ergas_paper": _ergas(x, y, _PAPER_RATIO),
        "ssim": _ssim(x, y),
    }


def summarize(results: Iterable[Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Mean and population standard deviation of each metric over a set of images.

    The std is the population one (``ddof = 0``, numpy's default), as ``np.std`` gives. Infinite
    values (PSNR of an exactly reconstructed image) are kept, not capped: the mean of a set that
    contains ``+inf`` is ``+inf`` and its std is ``nan`` (the spread is undefined). A ``nan`` value
    makes both ``nan``.

    Args:
        results: per-image metric dictionaries, e.g. from :func:`evaluate`; all with the same keys.

    Returns:
        ``{key: {"mean": float, "std": float}}`` in the key order of the first dictionary.

    Raises:
        InputError: ``results`` is empty or the dictionaries have different keys.
    """
    rows = [dict(r) for r in results]
    if not rows:
        raise InputError("summarize: expected at least one metric dictionary, found none")
    keys = list(rows[0])
    for i, row in enumerate(rows):
        if set(row) != set(keys):
            raise InputError(
                f"summarize: every dictionary must have the keys {sorted(keys)}, "
                f"found {sorted(row)} at index {i}"
            )
    summary: dict[str, dict[str, float]] = {}
    for key in keys:
        values = np.array([float(row[key]) for row in rows], dtype=np.float64)
        if np.isnan(values).any():
            mean, std = math.nan, math.nan
        elif np.isinf(values).any():
            signs = set(np.sign(values[np.isinf(values)]).tolist())
            mean = math.inf * signs.pop() if len(signs) == 1 else math.nan
            std = math.nan
        else:
            mean, std = float(np.mean(values)), float(np.std(values))
        summary[key] = {"mean": mean, "std": std}
    return summary


def labelled(metrics: Mapping[str, float]) -> dict[str, float]:
    """Rename the output of :func:`evaluate` to the report keys of :data:`REPORT_NAMES`.

    ``ergas`` (standard, true ratio) becomes ``ergas_true_ratio`` and ``ergas_paper`` (the paper's, r fixed
    at 4) becomes ``ergas_paper_r4``, so that no report can show one under the other's name.

    Args:
        metrics: a dictionary with the keys of :data:`METRIC_NAMES`.

    Returns:
        The same values under :data:`REPORT_NAMES`, in that order.

    Raises:
        InputError: a key of :data:`METRIC_NAMES` is missing.
    """
    missing = [k for k in METRIC_NAMES if k not in metrics]
    if missing:
        raise InputError(f"labelled: expected the keys {list(METRIC_NAMES)} (from evaluate()), missing {missing}")
    return {new: float(metrics[old]) for old, new in zip(METRIC_NAMES, REPORT_NAMES, strict=True)}


def band_errors(
    reference: np.ndarray | torch.Tensor,
    estimate: np.ndarray | torch.Tensor,
    *,
    clamp: bool = True,
) -> dict[str, np.ndarray]:
    """PSNR and RMSE of each band (each wavelength) of one image.

    ``psnr[c] = 10 * log10(1 / MSE_c)`` (data range 1, ``+inf`` for an exact band) and
    ``rmse[c] = sqrt(MSE_c)``, in float64; the mean of ``psnr`` over bands is :func:`psnr`. The paper's
    motivation is error that rises in narrow spectral regions: these show where.

    Args:
        reference: ground truth ``[C, H, W]`` or ``[1, C, H, W]``, numpy or torch, any float dtype.
        estimate: estimate of the same shape.
        clamp: clamp the estimate to ``[0, 1]`` first (as :func:`evaluate` does).

    Returns:
        ``{"psnr": [C], "rmse": [C]}`` float64 arrays.

    Raises:
        InputError: see :func:`psnr`.
    """
    x, y = _prepare(reference, estimate)
    if clamp:
        y = np.clip(y, 0.0, 1.0)
    mse = _band_mse(x, y)
    with np.errstate(divide="ignore"):
        per_band = 10.0 * np.log10(_DATA_RANGE**2 / mse)
    return {"psnr": per_band, "rmse": np.sqrt(mse)}
