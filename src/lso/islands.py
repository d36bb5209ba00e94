"""The FP32 islands: the parts of LSO that stay FP32 in every reduced-precision path, and why.

One table, read by every path that lowers precision. Each path maps an island's name to its own
mechanism, and refuses to run when an island of the table has none:

- the FP16 ONNX graph (``lso.calibration.fp16``) and its FP16 emulation: each island's nodes are found
  by its graph query (``lso.export.graph_query.ISLAND_QUERIES``) and kept FP32;
- the INT8 Q/DQ graphs (``lso.calibration.int8``): the islands whose ``paths`` name ``"int8"`` are the
  nodes ``quantize_static`` is told to leave in float (only convolutions are quantized, so the
  coordinate grid and the bicubic matrices, which hold none, stay float without being listed);
- the PyTorch runner's FP16 autocast (``lso.runtime.TorchRunner`` with ``fp16=True``, eager or compiled):
  autocast-free regions (``LSO.fp32_islands`` and the spectral blocks);
- OpenVINO's BF16 mode (``lso.runtime.openvino_runner.OpenVinoRunner`` with ``precision="bf16"``): each island's
  nodes, found by its graph query, are marked in the IR (``lso.runtime.openvino_runner.mark_fp32_islands``) and
  stay FP32 while everything else is typed BF16 in the model itself (``lso.runtime.openvino_runner.to_bf16``).

========================  ================  =================================================================
island                    paths             why it stays FP32
========================  ================  =================================================================
``solver``                fp16, int8, bf16  the trigonometric solver's arguments q·π·θ reach 24·π² ≈ 237 rad;
                                            FP16 resolves them to 0.06–0.125 rad (BF16 to 0.5–1 rad), which
                                            scrambles every harmonic
``softmax``               fp16, int8, bf16  the attention softmaxes (over the latent tokens and per pixel):
                                            small logit differences decide the weights, FP16
                                            exp/normalisation shifts them
``coordinate_grid``       fp16, bf16        ``(row0 + i) / (H_full - 1)``: FP16 has 11 significant bits (BF16
                                            8), so beyond 2048 (256) pixels neighbouring rows get the same
                                            coordinate
``bicubic``               fp16, bf16        the interpolation matrices and the up-sampled LR-HSI, which is
                                            added to the output as it is: FP16 rounding (~1e-3, BF16 ~4e-3)
                                            would go straight into it
========================  ================  =================================================================
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Island", "FP32_ISLANDS", "ISLAND_NAMES", "PATHS", "island", "islands_for"]

PATHS: tuple[str, ...] = ("fp16", "int8", "bf16")
"""The reduced-precision paths: ``fp16`` (the FP16 ONNX graph, its emulation, TorchRunner's FP16 autocast),
``int8`` (the nodes the INT8 Q/DQ graphs list as left in float) and ``bf16`` (OpenVINO's BF16 mode)."""


@dataclass(frozen=True)
class Island:
    """One part of the network that stays FP32, the reason, and the precision paths that keep it explicitly."""

    name: str
    why: str
    paths: tuple[str, ...] = PATHS


FP32_ISLANDS: tuple[Island, ...] = (
    Island("solver", "arguments q*pi*theta reach 24*pi^2 ~ 237 rad; FP16 resolves them to 0.06-0.125 rad"),
    Island("softmax", "attention weights decided by small logit differences; FP16 exp/normalisation shifts them"),
    Island("coordinate_grid", "(row0 + i) / (H_full - 1) needs more than FP16's 11 significant bits past 2048 px",
           paths=("fp16", "bf16")),
    Island("bicubic", "the up-sampled LR-HSI is added to the output as it is: FP16 rounding would go into it",
           paths=("fp16", "bf16")),
)
ISLAND_NAMES: tuple[str, ...] = tuple(i.name for i in FP32_ISLANDS)


def island(name: str) -> Island:
    """The island called ``name`` (KeyError naming the known ones otherwise)."""
    for entry in FP32_ISLANDS:
        if entry.name == name:
            return entry
    raise KeyError(f"no FP32 island {name!r}; known: {', '.join(ISLAND_NAMES)}")


def islands_for(path: str) -> tuple[Island, ...]:
    """The islands the precision path ``path`` (one of :data:`PATHS`) keeps explicitly, in table order."""
    if path not in PATHS:
        raise KeyError(f"no precision path {path!r}; known: {', '.join(PATHS)}")
    return tuple(entry for entry in FP32_ISLANDS if path in entry.paths)
