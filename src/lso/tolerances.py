"""THE tolerance table: how far each precision of a deployment may be from PyTorch FP32.

One table, read by ``benchmarks/parity.py`` (its exit status), ``benchmarks/precision.py``, the INT8
float-block selection (``lso calibrate``), the export's parity check and the tests. Differences are
against PyTorch FP32 with the reference solver (the official computation) on held-out scenes, with
ΔPSNR / ΔSAM as defined in ``docs/architecture.md``, "Precision and tolerances" (positive = the variant
lost quality):

- ``fp32`` (PyTorch folded solver, ONNX Runtime FP32, TensorRT FP32 plans): the same function up to
  float rounding. ``max_abs`` is the export-time parity bound.
- ``fp16`` (mixed graph, FP32 solver and softmax): LSO's lead over the runner-up is 0.16 dB; a default
  deployment may spend at most a few hundredths of it.
- ``int8``: an explicitly lossy speed option with its own budget (issue 6: ΔPSNR <= 0.5 dB).

Values are upper bounds; ``None`` means "not checked for this precision".
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

__all__ = ["Tolerance", "TOLERANCES", "tolerance", "bound", "violations"]


@dataclass(frozen=True)
class Tolerance:
    """Upper bounds for one precision (None = not checked)."""

    dpsnr: float | None = None  # dB, mean over scenes
    dsam: float | None = None  # degrees, mean over scenes
    max_abs: float | None = None  # largest |variant - FP32| over all pixels and bands

    def to_dict(self) -> dict:
        return asdict(self)


TOLERANCES: Mapping[str, Tolerance] = {
    "fp32": Tolerance(dpsnr=0.01, dsam=0.005, max_abs=1e-4),
    "fp16": Tolerance(dpsnr=0.05, dsam=0.01),
    "int8": Tolerance(dpsnr=0.5),
}


def tolerance(precision: str) -> Tolerance:
    """The bounds of ``precision`` (``fp32``, ``fp16`` or ``int8``)."""
    try:
        return TOLERANCES[precision]
    except KeyError:
        raise KeyError(f"no tolerance for precision {precision!r}; known: {sorted(TOLERANCES)}") from None


def bound(precision: str, key: str) -> float:
    """The ``key`` bound (``dpsnr``, ``dsam`` or ``max_abs``) of ``precision``; KeyError where it is not checked."""
    value = getattr(tolerance(precision), key)
    if value is None:
        raise KeyError(f"precision {precision!r} has no {key} bound")
    return float(value)


def violations(precision: str, measured: Mapping[str, float]) -> list[str]:
    """Human-readable list of the bounds ``measured`` exceeds (empty when within tolerance).

    ``measured`` holds any of ``dpsnr``, ``dsam``, ``max_abs``; missing keys are not checked.
    """
    out = []
    for key, bound in tolerance(precision).to_dict().items():
        value = measured.get(key)
        if bound is None or value is None:
            continue
        if not value <= bound:  # NaN counts as a violation
            out.append(f"{key} {value:.4g} > {bound:g}")
    return out
