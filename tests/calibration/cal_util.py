"""Helpers of the calibration tests (plain functions; fixtures are in cal_fixtures)."""
from __future__ import annotations

import numpy as np


def feed(height: int = 32, width: int = 32, ratio: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"hr_msi": rng.random((1, 3, height, width), dtype=np.float32),
            "lr_hsi": rng.random((1, 31, height // ratio, width // ratio), dtype=np.float32)}


def load(path):
    import onnx

    return onnx.load(str(path))
