"""Data: readers (community HDF5, raw CAVE, Harvard .mat), the paper's degradation, SRF, synthetic scenes.

Public names::

    from lso.data import synthetic_scene    # seed -> [31, S, S] float32 in [0, 1] (CAVE-like, offline)
    from lso.data import degrade            # GT [31, H, W] → (hr_msi [3, H, W], lr_hsi [31, H/r, W/r])

Readers live in :mod:`lso.data.readers`, the SRF in :mod:`lso.data.srf`.
"""
from __future__ import annotations

from lso.data.degradation import degrade, fft_resize
from lso.data.synthetic import synthetic_scene

__all__ = ["degrade", "fft_resize", "synthetic_scene"]
