"""Data: scene files (one reader, one writer per format), the scene source, the paper's degradation, SRF, synthetic
scenes, readers of the raw datasets.

Public names::

    from lso.data import synthetic_scene    # seed -> [31, S, S] float32 in [0, 1] (CAVE-like, offline)
    from lso.data import degrade            # GT [31, H, W] → (hr_msi [3, H, W], lr_hsi [31, H/r, W/r])
    from lso.data import read_scene         # files -> Scene(hr_msi, lr_hsi, crop, input_scale)   (scene_files)
    from lso.data import write_output       # .npz/.h5/.mat by suffix, atomically, with a sidecar  (writers)
    from lso.data import SceneSource        # "synthetic" (by seed) or a community .h5: GT scenes  (sources)

Readers of the raw datasets live in :mod:`lso.data.readers`, the SRF in :mod:`lso.data.srf`. Every name is
imported on first use: ``import lso.data.value_range`` (the runtime's input checks) loads neither torch nor scipy.
"""
from __future__ import annotations

from lso._lazy import lazy_attributes

__all__ = ["degrade", "fft_resize", "synthetic_scene",
           "Scene", "DeclaredScene", "read_scene", "read_arrays", "read_gt", "declared_scene",
           "write_output", "write_npz", "write_h5", "write_mat", "write_envi", "write_png", "false_colour",
           "check_mat_size", "OUTPUT_SUFFIXES",
           "SceneSource", "SourceScene", "DegradedScene"]

_LAZY = {
    **dict.fromkeys(("degrade", "fft_resize"), "lso.data.degradation"),
    "synthetic_scene": "lso.data.synthetic",
    **dict.fromkeys(("Scene", "DeclaredScene", "read_scene", "read_arrays", "read_gt", "declared_scene"),
                    "lso.data.scene_files"),
    **dict.fromkeys(("write_output", "write_npz", "write_h5", "write_mat", "write_envi", "write_png",
                     "false_colour", "check_mat_size", "OUTPUT_SUFFIXES"), "lso.data.writers"),
    **dict.fromkeys(("SceneSource", "SourceScene", "DegradedScene"), "lso.data.sources"),
}

__getattr__, __dir__ = lazy_attributes("lso.data", _LAZY, globals())
