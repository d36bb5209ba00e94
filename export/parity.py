"""Parity of an exported graph with PyTorch: ONNX Runtime (CPU) vs the model, on seeded inputs.

:data:`DEFAULT_CASES` is the export-time table: x4 at 64x64 and 512x512, x8, x16 and x32, x3 at a
non-square size that is not a multiple of 4, and batch 2. Each case draws ``hr_msi`` and ``lr_hsi``
uniformly in [0, 1) from a seeded generator, runs both, and reports the max absolute error and the
PSNR between the two outputs (data range 1; ``inf`` when identical).

This module imports numpy only at import time (onnxruntime and torch inside the functions), so the
command-line parser can use :meth:`ParityCase.parse`.
"""
from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from lso.deps import require
from lso.errors import ExportError, InputError
from lso.tolerances import bound

if TYPE_CHECKING:  # pragma: no cover
    from lso.model import LSO

__all__ = ["ParityCase", "ParityRow", "ParityReport", "DEFAULT_CASES", "TILE_CASE", "DEFAULT_ATOL", "run_parity",
           "case_inputs", "compare"]

log = logging.getLogger(__name__)

DEFAULT_ATOL = bound("fp32", "max_abs")  # 1e-4, from the one tolerance table (lso.tolerances)


@dataclass(frozen=True)
class ParityCase:
    """One input size: ``hr_msi [batch, 3, height, width]``, ``lr_hsi [batch, 31, height/ratio, width/ratio]``.

    ``extent`` (tileable graphs only) places the input in a larger image: ``(row0, col0, H_full,
    W_full)``; default: the input is the whole image.
    """

    ratio: int
    height: int
    width: int
    batch: int = 1
    extent: tuple[int, int, int, int] | None = None

    def __post_init__(self) -> None:
        if self.ratio < 2 or self.height % self.ratio or self.width % self.ratio or self.batch < 1:
            raise InputError(f"parity case x{self.ratio} {self.height}x{self.width} batch {self.batch}: height and "
                             "width must be multiples of the ratio (>= 2), batch >= 1")

    @property
    def name(self) -> str:
        text = f"x{self.ratio} {self.height}x{self.width}"
        if self.batch != 1:
            text += f" b{self.batch}"
        if self.extent is not None:
            text += " tile@" + ",".join(map(str, self.extent))
        return text

    @property
    def lr_size(self) -> tuple[int, int]:
        return self.height // self.ratio, self.width // self.ratio

    @classmethod
    def parse(cls, text: str) -> ParityCase:
        """``"4:64x64"``, ``"3:75x57"``, ``"4:48x80:2"`` (ratio:HxW[:batch])."""
        try:
            parts = text.strip().split(":")
            ratio = int(parts[0].lstrip("xX"))
            height, width = (int(v) for v in parts[1].lower().split("x"))
            batch = int(parts[2]) if len(parts) > 2 else 1
            if len(parts) > 3:
                raise ValueError
        except (ValueError, IndexError):
            raise InputError(f"parity case {text!r}: expected RATIO:HEIGHTxWIDTH[:BATCH], e.g. 4:64x64 or 3:75x57:2") \
                from None
        return cls(ratio, height, width, batch)


DEFAULT_CASES: tuple[ParityCase, ...] = (
    ParityCase(4, 64, 64),
    ParityCase(4, 512, 512),
    ParityCase(8, 128, 128),
    ParityCase(16, 128, 128),
    ParityCase(32, 128, 128),
    ParityCase(3, 75, 57),  # neither side a multiple of 4, non-square
    ParityCase(4, 48, 80, batch=2),
)
# added to the default table of a tileable graph: a tile at an offset inside a larger image
TILE_CASE = ParityCase(4, 64, 48, extent=(32, 16, 256, 256))


@dataclass(frozen=True)
class ParityRow:
    case: str
    hr_msi: tuple[int, ...]
    lr_hsi: tuple[int, ...]
    max_abs: float
    psnr_db: float
    torch_s: float
    ort_s: float
    passed: bool


@dataclass
class ParityReport:
    """Rows of the parity table plus what they were measured with."""

    atol: float
    seed: int
    rows: list[ParityRow] = field(default_factory=list)
    runtime: str = "onnxruntime CPUExecutionProvider"
    reference: str = "PyTorch eager, CPU, float32"

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rows)

    @property
    def max_abs(self) -> float:
        return max((r.max_abs for r in self.rows), default=0.0)

    def failures(self) -> list[ParityRow]:
        return [r for r in self.rows if not r.passed]

    def to_dict(self) -> dict:
        return {"atol": self.atol, "seed": self.seed, "runtime": self.runtime, "reference": self.reference,
                "passed": self.passed, "max_abs": self.max_abs,
                "cases": [{**asdict(r), "psnr_db": _json_float(r.psnr_db)} for r in self.rows]}

    @classmethod
    def from_dict(cls, data: dict) -> ParityReport:
        """Inverse of :meth:`to_dict` (e.g. the ``parity`` entry of an export sidecar)."""
        rows = [ParityRow(**{**row, "hr_msi": tuple(row["hr_msi"]), "lr_hsi": tuple(row["lr_hsi"]),
                             "psnr_db": float(row["psnr_db"])}) for row in data["cases"]]
        return cls(atol=data["atol"], seed=data["seed"], rows=rows, runtime=data["runtime"],
                   reference=data["reference"])

    def format_table(self) -> str:
        """A Markdown table (readable as plain text too)."""
        lines = ["| case | hr_msi | lr_hsi | max abs err | PSNR ORT vs torch (dB) | torch s | ORT s | ok |",
                 "|---|---|---|---|---|---|---|---|"]
        for r in self.rows:
            psnr = "inf" if math.isinf(r.psnr_db) else f"{r.psnr_db:.1f}"
            lines.append(f"| {r.case} | {'x'.join(map(str, r.hr_msi))} | {'x'.join(map(str, r.lr_hsi))} | "
                         f"{r.max_abs:.2e} | {psnr} | {r.torch_s:.2f} | {r.ort_s:.2f} | "
                         f"{'yes' if r.passed else 'NO'} |")
        return "\n".join(lines)


def _json_float(value: float) -> float | str:
    return "inf" if math.isinf(value) else value


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(1.0 / mse)


def _inputs(case: ParityCase, n_msi: int, n_bands: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    h, w = case.lr_size
    hr = rng.random((case.batch, n_msi, case.height, case.width), dtype=np.float32)
    lr = rng.random((case.batch, n_bands, h, w), dtype=np.float32)
    return hr, lr


def case_inputs(case: ParityCase, n_msi: int, n_bands: int, *, seed: int = 0, index: int = 0,
                tileable: bool = False) -> dict[str, np.ndarray]:
    """The feeds of case number ``index`` as :func:`run_parity` draws them (``default_rng([seed, index])``, uniform in
    [0, 1)): ``hr_msi``, ``lr_hsi`` and, for a ``tileable`` graph, ``extent`` (the case's, else the whole image)."""
    from lso import io_spec

    hr, lr = _inputs(case, n_msi, n_bands, np.random.default_rng([seed, index]))
    feeds = {io_spec.HR_MSI: hr, io_spec.LR_HSI: lr}
    if tileable:
        feeds[io_spec.EXTENT] = np.asarray(case.extent or (0, 0, case.height, case.width), dtype=np.int64)
    elif case.extent is not None:
        raise InputError(f"parity case {case.name} has an extent but the graph is not tileable")
    return feeds


def compare(case: ParityCase, feeds: dict[str, np.ndarray], got: np.ndarray, expected: np.ndarray, *,
            atol: float = DEFAULT_ATOL, torch_s: float = 0.0, run_s: float = 0.0) -> ParityRow:
    """One row of the table: ``got`` (a runtime's output on ``feeds``) against ``expected`` (PyTorch's) for ``case``;
    it passes when the max abs error is at most ``atol`` and every value is finite.

    Raises:
        ExportError: the shapes differ.
    """
    from lso import io_spec

    if got.shape != expected.shape:
        raise ExportError(f"parity case {case.name}: the runtime returned {got.shape}, PyTorch {expected.shape}")
    err = float(np.max(np.abs(got - expected))) if got.size else 0.0
    return ParityRow(case.name, tuple(feeds[io_spec.HR_MSI].shape), tuple(feeds[io_spec.LR_HSI].shape), err,
                     _psnr(got, expected), torch_s, run_s, bool(err <= atol and np.isfinite(got).all()))


def run_parity(
    onnx_model: str | os.PathLike | bytes,
    model: LSO,
    cases: Sequence[ParityCase] = DEFAULT_CASES,
    *,
    atol: float = DEFAULT_ATOL,
    seed: int = 0,
    tileable: bool = False,
) -> ParityReport:
    """Run ONNX Runtime (CPU) and ``model`` on the same seeded inputs for every case.

    Args:
        onnx_model: path of the ``.onnx`` file (or its bytes).
        model: the PyTorch model the graph was exported from (run as it is, in eval mode, on CPU).
        cases: the sizes to check.
        atol: a case passes when its max absolute error is at most this.
        seed: inputs of case ``i`` come from ``numpy.random.default_rng([seed, i])``.
        tileable: the graph has the ``extent`` input; cases without one get ``(0, 0, H, W)``.

    Returns:
        The table; check ``report.passed``.
    """
    require("onnxruntime")
    import torch

    from lso import io_spec
    from lso.runtime.ort_runner import ort_session

    cfg = model.config
    source = onnx_model if isinstance(onnx_model, bytes) else os.fspath(onnx_model)
    session = ort_session(source)  # CPU, ONNX Runtime's defaults
    model = model.eval()
    report = ParityReport(atol=atol, seed=seed, reference=f"PyTorch eager ({cfg.solver} solver), CPU, float32")
    for index, case in enumerate(cases):
        feeds = case_inputs(case, cfg.n_msi_bands, cfg.n_bands, seed=seed, index=index, tileable=tileable)
        args = [torch.from_numpy(feeds[name]) for name in (io_spec.HR_MSI, io_spec.LR_HSI, io_spec.EXTENT)
                if name in feeds]
        t0 = time.perf_counter()
        with torch.inference_mode():
            expected = model(*args).numpy()
        t1 = time.perf_counter()
        (got,) = session.run([io_spec.HR_HSI], feeds)
        t2 = time.perf_counter()
        row = compare(case, feeds, got, expected, atol=atol, torch_s=t1 - t0, run_s=t2 - t1)
        log.info("parity %-22s max abs %.2e  PSNR %s dB", case.name, row.max_abs,
                 "inf" if math.isinf(row.psnr_db) else f"{row.psnr_db:.1f}")
        report.rows.append(row)
    return report
