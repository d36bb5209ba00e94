"""Plain helpers of the export tests (no fixtures: those are in ex_fixtures)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lso import LSO

# small parity table for tests: a square case, x3 at a non-square size that is not a multiple of 4, batch 2
SMALL_CASES = ("4:32x32", "3:45x33", "4:24x40:2")


def ort_run(path: Path, feeds: dict) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def torch_run(model: LSO, *args) -> np.ndarray:
    with torch.inference_mode():
        return model(*(torch.from_numpy(a) for a in args)).numpy()


def inputs(batch: int, ratio: int, h: int, w: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``hr_msi [batch, 3, ratio*h, ratio*w]`` and ``lr_hsi [batch, 31, h, w]``, uniform in [0, 1)."""
    rng = np.random.default_rng(seed)
    return (rng.random((batch, 3, ratio * h, ratio * w), dtype=np.float32),
            rng.random((batch, 31, h, w), dtype=np.float32))
