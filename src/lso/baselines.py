"""Classical fusion baselines: bicubic upsampling and GSA (Gram–Schmidt adaptive).

- :func:`bicubic_upsample`: the LR-HSI upsampled by ``ratio`` exactly as the model's ``lms``
  (``F.interpolate``, bicubic, ``align_corners=False``, no antialias).
- :func:`gsa_fusion`: component-substitution pansharpening with adaptive weights (GSA; Aiazzi,
  Baronti & Selva, IEEE TGRS 2007) adapted to HSI–MSI fusion as in Yokoya, Grohnfeldt & Chanussot,
  "Hyperspectral and multispectral data fusion: a comparative review of the recent literature"
  (IEEE GRSM 2017): the HSI bands are split into one group per MSI band, and each group is
  pansharpened with its MSI band as the panchromatic image.

GSA, for one group (HSI bands ``K``, MSI band ``P``), written from the papers' description:

1. ``U_k`` = bicubic upsampling of LR-HSI band k to the MSI grid.
2. ``P_L`` = ``P`` degraded to the LR grid with the paper's protocol (Gaussian PSF σ = r/2, circular
   blur, decimation ``[0::r, 0::r]``; :func:`lso.data.degradation.blur_decimate`), so that it is
   aligned with the LR-HSI.
3. Least squares at low resolution: ``P_L ≈ w_0 + Σ_k w_k · LR_k`` (an intercept and one weight
   per band of the group).
4. Synthetic intensity at high resolution: ``I = w_0 + Σ_k w_k · U_k``.
5. Injection gains ``g_k = cov(U_k, I) / var(I)`` (over the HR pixels; 0 where ``var(I)`` vanishes).
6. Detail ``D = (P − mean P) − (I − mean I)``; fused band ``F_k = U_k + g_k · D``.

Grouping (``grouping=``): ``"srf"`` (default) assigns HSI band c to the MSI band whose SRF covers it
most, ``argmax_m srf[c, m]`` (Nikon D700: 400–500 nm → B, 510–580 nm → G, 590–700 nm → R);
``"correlation"`` assigns it to the MSI band (degraded to LR) with the largest correlation
coefficient, which needs no SRF. An MSI band with no HSI band assigned is unused.

Arrays are numpy or torch, ``[C, H, W]`` or ``[B, C, H, W]``; results come back as the same kind
(torch on the input's device), float64 if the input is float64, else float32. GSA computes in
float64 with numpy, one image at a time.
"""
from __future__ import annotations

import logging
import numbers
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lso.data.degradation import blur_decimate
from lso.data.srf import load_srf
from lso.errors import InputError

__all__ = ["GROUPINGS", "bicubic_upsample", "gsa_fusion"]

logger = logging.getLogger(__name__)

GROUPINGS: tuple[str, ...] = ("srf", "correlation")
"""How :func:`gsa_fusion` assigns HSI bands to MSI bands."""

_EPS = 1e-12


def _check_ratio(ratio: Any) -> int:
    if isinstance(ratio, bool) or not isinstance(ratio, numbers.Integral) or ratio < 1:
        raise InputError(f"ratio: expected a positive integer scale (e.g. 4 or 8), got {ratio!r}")
    return int(ratio)


def _to_numpy64(x: Any, what: str) -> tuple[np.ndarray, Any]:
    """``x`` as float64 numpy plus a function that returns a float64 result in ``x``'s kind."""
    if isinstance(x, torch.Tensor):
        if not x.is_floating_point():
            raise InputError(f"{what}: expected a floating-point tensor, got dtype {x.dtype}")
        device, dtype = x.device, (torch.float64 if x.dtype == torch.float64 else torch.float32)

        def back_t(y: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(y)).to(device=device, dtype=dtype)

        return x.detach().to("cpu", torch.float64).numpy(), back_t
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu":
        raise InputError(f"{what}: expected a real numeric array, got dtype {arr.dtype}")
    out = np.float64 if arr.dtype == np.float64 else np.float32

    def back_np(y: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(y, dtype=out)

    return arr.astype(np.float64, copy=False), back_np


def _check_rank(x: np.ndarray, what: str) -> None:
    if x.ndim not in (3, 4):
        raise InputError(f"{what}: expected [C, H, W] or [B, C, H, W], got shape {tuple(x.shape)}")
    if not np.isfinite(x).all():
        raise InputError(f"{what}: contains NaN or infinite values")


def bicubic_upsample(lr_hsi: Any, ratio: int) -> Any:
    """Bicubic upsampling by ``ratio``, the model's ``lms`` (align_corners=False, no antialias).

    Args:
        lr_hsi: ``[C, h, w]`` or ``[B, C, h, w]``, numpy array or torch tensor.
        ratio: integer scale r ≥ 1.

    Returns:
        ``[C, r·h, r·w]`` or ``[B, C, r·h, r·w]``, the same kind as ``lr_hsi`` (torch: same device
        and floating dtype; numpy: float64 if the input is float64, else float32).

    Raises:
        InputError: wrong rank or non-integer ratio.
    """
    r = _check_ratio(ratio)
    if isinstance(lr_hsi, torch.Tensor):
        t = lr_hsi if lr_hsi.is_floating_point() else lr_hsi.float()
        out_kind = None
    else:
        arr = np.asarray(lr_hsi)
        if arr.dtype.kind not in "fiu":
            raise InputError(f"lr_hsi: expected a real numeric array, got dtype {arr.dtype}")
        out_kind = np.float64 if arr.dtype == np.float64 else np.float32
        t = torch.from_numpy(np.ascontiguousarray(arr, dtype=out_kind))
    if t.ndim not in (3, 4):
        raise InputError(f"lr_hsi: expected [C, h, w] or [B, C, h, w], got shape {tuple(t.shape)}")
    batched = t.ndim == 4
    x = t if batched else t[None]
    h, w = x.shape[-2:]
    up = F.interpolate(x, size=(h * r, w * r), mode="bicubic", align_corners=False)
    up = up if batched else up[0]
    return up if out_kind is None else up.numpy()


def _band_groups(
    lr_hsi: np.ndarray, msi_lr: np.ndarray, grouping: str, srf: np.ndarray | None
) -> list[np.ndarray]:
    """Indices of the HSI bands assigned to each MSI band (one array per MSI band)."""
    n_msi = msi_lr.shape[0]
    if grouping == "srf":
        assert srf is not None
        owner = srf.argmax(axis=1)
    else:
        a = lr_hsi.reshape(lr_hsi.shape[0], -1)
        b = msi_lr.reshape(n_msi, -1)
        a = a - a.mean(axis=1, keepdims=True)
        b = b - b.mean(axis=1, keepdims=True)
        na = np.sqrt((a * a).sum(axis=1))[:, None]
        nb = np.sqrt((b * b).sum(axis=1))[None, :]
        corr = (a @ b.T) / np.maximum(na * nb, _EPS)
        owner = corr.argmax(axis=1)
    return [np.flatnonzero(owner == m) for m in range(n_msi)]


def _gsa_group(lr: np.ndarray, up: np.ndarray, pan: np.ndarray, pan_lr: np.ndarray) -> np.ndarray:
    """GSA for one group: lr [k, h, w], up [k, H, W], pan [H, W], pan_lr [h, w] → [k, H, W]."""
    k = lr.shape[0]
    design = np.concatenate([lr.reshape(k, -1).T, np.ones((lr[0].size, 1))], axis=1)  # [h·w, k+1]
    weights, *_ = np.linalg.lstsq(design, pan_lr.ravel(), rcond=None)
    intensity = np.tensordot(weights[:k], up, axes=1) + weights[k]  # [H, W]
    i0 = intensity - intensity.mean()
    var_i = float((i0 * i0).mean())
    u0 = up - up.mean(axis=(1, 2), keepdims=True)
    gains = (u0 * i0).mean(axis=(1, 2)) / var_i if var_i > _EPS else np.zeros(k)
    detail = (pan - pan.mean()) - i0
    return up + gains[:, None, None] * detail


def gsa_fusion(
    hr_msi: Any,
    lr_hsi: Any,
    ratio: int,
    *,
    srf: Any = None,
    grouping: str = "srf",
    centered: bool = False,
) -> Any:
    """Fuse an HR-MSI and an LR-HSI with GSA, one HSI band group per MSI band (see the module doc).

    Args:
        hr_msi: ``[M, H, W]`` or ``[B, M, H, W]`` (M = 3 for RGB), numpy or torch.
        lr_hsi: ``[C, h, w]`` or ``[B, C, h, w]`` with ``H = ratio·h`` and ``W = ratio·w``.
        ratio: integer scale r ≥ 2.
        srf: ``[C, M]`` SRF for ``grouping="srf"``; ``None`` = Nikon D700
            (:func:`lso.data.srf.load_srf`). Ignored for ``grouping="correlation"``.
        grouping: ``"srf"`` or ``"correlation"`` (see :data:`GROUPINGS`).
        centered: how the MSI band is brought to the LR grid for the regression:
            ``False`` = the paper's degradation (LR pixel i at HR pixel r·i), ``True`` = the
            centred variant; use the one the LR-HSI was made with
            (:func:`lso.data.degradation.blur_decimate`).

    Returns:
        ``[C, H, W]`` or ``[B, C, H, W]`` fused HSI, the same kind as ``lr_hsi`` (torch on its
        device); float64 if ``lr_hsi`` is float64, else float32. Not clipped.

    Raises:
        InputError: mismatched ranks, batch sizes or sizes, bad ratio, grouping or SRF shape,
            non-finite values.
    """
    r = _check_ratio(ratio)
    if r < 2:
        raise InputError(f"ratio: expected an integer ≥ 2 for fusion, got {ratio!r}")
    if grouping not in GROUPINGS:
        raise InputError(f"grouping: expected one of {GROUPINGS}, got {grouping!r}")
    msi, _ = _to_numpy64(hr_msi, "hr_msi")
    hsi, back = _to_numpy64(lr_hsi, "lr_hsi")
    _check_rank(msi, "hr_msi")
    _check_rank(hsi, "lr_hsi")
    if msi.ndim != hsi.ndim:
        raise InputError(
            f"hr_msi {tuple(msi.shape)} and lr_hsi {tuple(hsi.shape)}: both must be batched [B, C, H, W] "
            f"or both unbatched [C, H, W]"
        )
    batched = hsi.ndim == 4
    if not batched:
        msi, hsi = msi[None], hsi[None]
    if msi.shape[0] != hsi.shape[0]:
        raise InputError(f"batch sizes differ: hr_msi has {msi.shape[0]}, lr_hsi has {hsi.shape[0]}")
    (_, n_msi, big_h, big_w), (_, n_hsi, h, w) = msi.shape, hsi.shape
    if (big_h, big_w) != (r * h, r * w):
        raise InputError(
            f"hr_msi is {big_h}×{big_w} but lr_hsi is {h}×{w} at ratio {r}: expected hr_msi of "
            f"{r * h}×{r * w} (H = ratio·h, W = ratio·w)"
        )
    srf_mat: np.ndarray | None = None
    if grouping == "srf":
        if srf is None:
            srf_mat = load_srf()
        else:
            srf_mat = np.asarray(srf.detach().cpu().numpy() if isinstance(srf, torch.Tensor) else srf, float)
        if srf_mat.shape != (n_hsi, n_msi):
            raise InputError(
                f"srf: expected shape [{n_hsi}, {n_msi}] (HSI bands × MSI bands), got {srf_mat.shape}; "
                f"pass the SRF the MSI was made with, or grouping='correlation'"
            )

    up_all = bicubic_upsample(hsi, r)  # float64 numpy [B, C, H, W]
    msi_lr_all = blur_decimate(msi, r, centered=centered)
    out = np.empty_like(up_all)
    for b in range(hsi.shape[0]):
        groups = _band_groups(hsi[b], msi_lr_all[b], grouping, srf_mat)
        for m, bands in enumerate(groups):
            if bands.size:
                out[b, bands] = _gsa_group(hsi[b, bands], up_all[b, bands], msi[b, m], msi_lr_all[b, m])
        logger.debug("gsa_fusion: image %d, bands per MSI band %s", b, [g.size for g in groups])
    return back(out if batched else out[0])
