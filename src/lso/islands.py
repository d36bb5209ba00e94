"""The FP32 islands: the parts of LSO that stay FP32 in every reduced-precision path, and why.

One table, read by every path that lowers precision: the FP16 ONNX graph (``lso.calibration.fp16``), the
INT8 graphs' float remainder, FP16 emulation and the PyTorch runner's autocast (``lso.runtime.TorchRunner``
with ``fp16=True``, eager or compiled). Each path maps an island's name to its own mechanism: graph
queries for ONNX (``lso.calibration.graph``), autocast-free regions for PyTorch (``LSO.fp32_islands``
and the spectral blocks).

========================  ===================================================================
island                    why it stays FP32
========================  ===================================================================
``solver``                the trigonometric solver's arguments q·π·θ reach 24·π² ≈ 237 rad; FP16
                          resolves them to 0.06–0.125 rad, which scrambles every harmonic
``softmax``               the attention softmaxes (over the latent tokens and per pixel): small
                          logit differences decide the weights, FP16 exp/normalisation shifts them
``coordinate_grid``       ``(row0 + i) / (H_full - 1)``: FP16 has 11 significant bits, so beyond
                          2048 pixels neighbouring rows get the same coordinate
``bicubic``               the interpolation matrices and the up-sampled LR-HSI, which is added to
                          the output as it is: FP16 rounding (~1e-3) would go straight into it
========================  ===================================================================
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Island", "FP32_ISLANDS", "ISLAND_NAMES", "island"]


@dataclass(frozen=True)
class Island:
    """One part of the network that stays FP32, and the reason."""

    name: str
    why: str


FP32_ISLANDS: tuple[Island, ...] = (
    Island("solver", "arguments q*pi*theta reach 24*pi^2 ~ 237 rad; FP16 resolves them to 0.06-0.125 rad"),
    Island("softmax", "attention weights decided by small logit differences; FP16 exp/normalisation shifts them"),
    Island("coordinate_grid", "(row0 + i) / (H_full - 1) needs more than FP16's 11 significant bits past 2048 px"),
    Island("bicubic", "the up-sampled LR-HSI is added to the output as it is: FP16 rounding would go into it"),
)
ISLAND_NAMES: tuple[str, ...] = tuple(i.name for i in FP32_ISLANDS)


def island(name: str) -> Island:
    """The island called ``name`` (KeyError naming the known ones otherwise)."""
    for entry in FP32_ISLANDS:
        if entry.name == name:
            return entry
    raise KeyError(f"no FP32 island {name!r}; known: {', '.join(ISLAND_NAMES)}")
