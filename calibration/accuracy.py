"""ΔPSNR / ΔSAM / fidelity of a reduced-precision graph against the FP32 reference, per scene and mean.

Definitions (``docs/architecture.md``, "Precision and tolerances"), outputs clamped to [0, 1] first:

- ``dpsnr`` = PSNR(reference vs GT) - PSNR(variant vs GT), dB (positive = the variant lost quality);
- ``dsam`` = SAM(variant vs GT) - SAM(reference vs GT), degrees (positive = worse);
- ``fidelity_psnr`` = PSNR(variant vs reference), dB.

The reference is FP32 PyTorch where a model is at hand (:func:`torch_reference`), or the FP32 graph
run by ONNX Runtime (:func:`ort_reference`; equal to PyTorch within the export's 1e-4 parity bound).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lso import io_spec
from lso.calibration.feeds import Scene
from lso.calibration.source import with_extent

__all__ = ["Comparison", "compare", "torch_reference", "ort_reference", "ort_runner"]


@dataclass
class Comparison:
    """Per-scene and mean ΔPSNR, ΔSAM and fidelity PSNR of one variant."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def dpsnr(self) -> float:
        return float(np.mean([r["dpsnr"] for r in self.rows]))

    @property
    def dsam(self) -> float:
        return float(np.mean([r["dsam"] for r in self.rows]))

    @property
    def fidelity_psnr(self) -> float:
        return float(np.mean([r["fidelity_psnr"] for r in self.rows]))

    @property
    def seconds(self) -> float:
        return float(np.sum([r["seconds"] for r in self.rows]))

    def to_dict(self) -> dict[str, Any]:
        return {"dpsnr": self.dpsnr, "dsam": self.dsam, "fidelity_psnr": self.fidelity_psnr,
                "scenes": len(self.rows), "per_scene": self.rows}


def _clamp(x: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(x, dtype=np.float32), 0.0, 1.0)


def torch_reference(model: Any, scenes: Sequence[Scene]) -> list[np.ndarray]:
    """FP32 PyTorch outputs ``[31, H, W]`` of an :class:`~lso.model.LSO` on each scene."""
    import torch

    outs = []
    model = model.float().eval()
    with torch.no_grad():
        for s in scenes:
            outs.append(model(torch.from_numpy(s.hr_msi)[None], torch.from_numpy(s.lr_hsi)[None])[0].numpy())
    return outs


def ort_runner(model_or_session: Any, threads: int | None = None) -> Callable[[Scene], np.ndarray]:
    """A function ``scene -> [31, H, W]`` running an ONNX graph (ModelProto, path or session) on CPU."""
    from lso.calibration import graph as G

    session = model_or_session
    if not hasattr(session, "run"):
        if isinstance(session, (str, bytes)) or hasattr(session, "__fspath__"):
            from lso.deps import require

            session = G.ort_session(require("onnx").load(str(session)), threads=threads)
        else:
            session = G.ort_session(session, threads=threads)

    inputs = {i.name for i in session.get_inputs()}  # a tileable graph also takes extent: the whole image's

    def run(scene: Scene) -> np.ndarray:
        feed = with_extent({io_spec.HR_MSI: scene.hr_msi[None], io_spec.LR_HSI: scene.lr_hsi[None]}, inputs)
        return session.run(None, feed)[0][0]

    return run


def ort_reference(model_or_path: Any, scenes: Sequence[Scene]) -> list[np.ndarray]:
    """FP32 graph outputs (ONNX Runtime, CPU) on each scene."""
    run = ort_runner(model_or_path)
    return [run(s) for s in scenes]


def compare(run: Callable[[Scene], np.ndarray], scenes: Sequence[Scene],
            reference: Sequence[np.ndarray]) -> Comparison:
    """Run ``run`` on every scene and compare with ``reference`` and the ground truth."""
    from lso.metrics import psnr, sam

    result = Comparison()
    for scene, ref in zip(scenes, reference, strict=True):
        t0 = time.perf_counter()
        out = run(scene)
        seconds = time.perf_counter() - t0
        ref_c, out_c = _clamp(ref), _clamp(out)
        p_ref, p_out = psnr(scene.gt, ref_c), psnr(scene.gt, out_c)
        s_ref, s_out = sam(scene.gt, ref_c), sam(scene.gt, out_c)
        result.rows.append({"scene": scene.name, "psnr_ref": p_ref, "psnr": p_out, "dpsnr": p_ref - p_out,
                            "sam_ref": s_ref, "sam": s_out, "dsam": s_out - s_ref,
                            "fidelity_psnr": psnr(ref_c, out_c), "seconds": seconds})
    return result
