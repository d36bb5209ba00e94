"""Spectral response functions (SRF): 31 HSI bands (400-700 nm at 10 nm) → RGB.

The fusion literature's Nikon D700 SRF ships as package data (``nikon_d700_srf.csv``: integer counts
per band and channel). :func:`load_srf` turns it into a ``[31, 3]`` matrix whose columns sum to 1
(each channel divided by its own sum: R 255, G 203, B 251), and :func:`hsi_to_msi` applies it.

Example::

    from lso.data.srf import hsi_to_msi
    rgb = hsi_to_msi(hsi)          # hsi: [31, H, W] or [B, 31, H, W] → [3, H, W] / [B, 3, H, W]
"""
from __future__ import annotations

import functools
import importlib.resources
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from lso.deps import is_tensor
from lso.errors import ArtifactError, InputError

__all__ = ["WAVELENGTHS_NM", "SRF_NAMES", "load_srf", "hsi_to_msi"]

logger = logging.getLogger(__name__)

WAVELENGTHS_NM: np.ndarray = np.arange(400, 701, 10)
"""Band centres of the 31 HSI bands in nm (400, 410, ..., 700), read-only."""
WAVELENGTHS_NM.flags.writeable = False

SRF_NAMES: tuple[str, ...] = ("nikon_d700",)
"""SRFs shipped with the package; ``load_srf(name)`` reads ``lso/data/<name>_srf.csv``."""


@functools.cache
def _read_counts(name: str) -> np.ndarray:
    resource = importlib.resources.files("lso.data").joinpath(f"{name}_srf.csv")
    try:
        text = resource.read_text(encoding="utf-8")
        table = np.loadtxt(text.splitlines(), delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)
    except (OSError, ValueError) as exc:
        raise ArtifactError(
            f"cannot read the packaged SRF file '{name}_srf.csv' ({exc}); the installation is "
            f"incomplete: reinstall lso-deploy"
        ) from exc
    if table.shape != (len(WAVELENGTHS_NM), 4) or not np.array_equal(table[:, 0], WAVELENGTHS_NM):
        raise ArtifactError(
            f"packaged SRF file '{name}_srf.csv' has shape {table.shape} / wavelengths "
            f"{table[:, 0].tolist() if table.ndim == 2 else '?'}; expected 31 rows 400..700 nm at 10 nm "
            f"and 4 columns (wavelength_nm, r, g, b): reinstall lso-deploy"
        )
    return table[:, 1:]


def load_srf(name: str = "nikon_d700") -> np.ndarray:
    """The SRF matrix of a packaged camera, each channel normalised to sum 1.

    Args:
        name: one of :data:`SRF_NAMES` (``"nikon_d700"``).

    Returns:
        ``[31, 3]`` float64 (rows: bands 400 → 700 nm; columns: R, G, B), every column summing to
        1, so a spectrally flat image of value v maps to RGB (v, v, v). A fresh copy on every call.

    Raises:
        InputError: unknown ``name``.
    """
    if name not in SRF_NAMES:
        raise InputError(f"unknown SRF '{name}'; available: {', '.join(SRF_NAMES)}")
    counts = _read_counts(name)
    return counts / counts.sum(axis=0, keepdims=True)


# ---- array-kind helpers shared by lso.data (numpy or torch in → the same kind out) -----------------


def _as_float64(x: Any, what: str) -> tuple[np.ndarray, Callable[[np.ndarray], Any]]:
    """``x`` as a float64 numpy array and a function that turns a result back into ``x``'s kind.

    The result keeps float64 if ``x`` is float64 and becomes float32 otherwise; torch results go
    back to ``x``'s device.
    """
    if is_tensor(x):
        import torch

        if x.is_complex() or x.dtype == torch.bool:
            raise InputError(f"{what}: expected a real floating tensor, got dtype {x.dtype}")
        device = x.device
        out_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        arr = x.detach().to("cpu", torch.float64).numpy()

        def restore(y: np.ndarray) -> Any:
            return torch.from_numpy(np.ascontiguousarray(y)).to(device=device, dtype=out_dtype)

        return arr, restore
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu":
        raise InputError(f"{what}: expected a real numeric array, got dtype {arr.dtype}")
    out_np = np.float64 if arr.dtype == np.float64 else np.float32

    def restore_np(y: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(y, dtype=out_np)

    return arr.astype(np.float64, copy=False), restore_np


def _check_image(x: np.ndarray, what: str, n_bands: int | None) -> None:
    """``x`` is ``[C, H, W]`` or ``[B, C, H, W]`` with ``n_bands`` bands (if given)."""
    if x.ndim not in (3, 4):
        raise InputError(
            f"{what}: expected [C, H, W] or [B, C, H, W], got shape {tuple(x.shape)}"
        )
    if n_bands is not None and x.shape[-3] != n_bands:
        raise InputError(
            f"{what}: expected {n_bands} bands on axis {x.ndim - 3} (layout [B, C, H, W]), got shape "
            f"{tuple(x.shape)}; pass channels-first arrays (transpose an [H, W, C] array with "
            f"x.transpose(2, 0, 1))"
        )


def _srf_matrix(srf: Any) -> np.ndarray:
    """The user's SRF (any ``[C, M]`` array) or the packaged Nikon D700 one, as float64."""
    if srf is None:
        return load_srf()
    if is_tensor(srf):
        srf = srf.detach().cpu().numpy()
    mat = np.asarray(srf, dtype=np.float64)
    if mat.ndim != 2:
        raise InputError(f"srf: expected a [bands, channels] matrix such as [31, 3], got shape {mat.shape}")
    return mat


def _project(x: np.ndarray, srf: np.ndarray) -> np.ndarray:
    """[..., C, H, W] float64 × [C, M] → [..., M, H, W] float64."""
    return np.einsum("...chw,cm->...mhw", x, srf, optimize=True)


def hsi_to_msi(hsi: Any, srf: Any = None) -> Any:
    """Project a hyperspectral image onto multispectral channels: HR-MSI = HSI × SRF.

    Args:
        hsi: ``[C, H, W]`` or ``[B, C, H, W]``, numpy array or torch tensor (C = rows of ``srf``).
        srf: ``[C, M]`` matrix used as given; ``None`` = :func:`load_srf` (Nikon D700, ``[31, 3]``).

    Returns:
        ``[M, H, W]`` or ``[B, M, H, W]``, the same kind as ``hsi`` (torch on ``hsi``'s device),
        float64 if ``hsi`` is float64, else float32. Computed in float64.

    Raises:
        InputError: wrong rank, or band count different from the SRF's rows.
    """
    mat = _srf_matrix(srf)
    x, restore = _as_float64(hsi, "hsi")
    _check_image(x, "hsi", mat.shape[0])
    return restore(_project(x, mat))
