"""``lso calibrate``: FP32 graph -> ``model.fp16.onnx`` or ``model.int8.onnx`` (+ cpu flavour), one call.

:func:`calibrate` takes a :class:`CalibrateOptions` (what the command line parses into) and writes the
artifacts with their sidecars:

- ``precision="fp16"``: calibration feeds -> activation ranges -> :func:`lso.calibration.fp16.convert_fp16`.
- ``precision="int8"``: calibration feeds -> one range calibration (kept in ``<out stem>.calibration.json``,
  recomputed on every run; an explicit ``calibration_cache`` that exists is reused instead)
  -> unless ``float_blocks`` is given, a sensitivity sweep on validation scenes (synthetic training
  scenes disjoint from the calibration ones; reference: the FP32 graph) and the shortest prefix of the
  ranking whose validation ΔPSNR is within ``selection_margin * target_dpsnr`` with at least
  ``min_int8_macs`` of the conv MACs in INT8 ->
  :func:`lso.calibration.int8.quantize_int8` for each flavour (``tensorrt`` -> ``<out>``, ``cpu`` ->
  ``<out stem>.cpu.onnx``).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lso.errors import InputError
from lso.tolerances import bound

__all__ = ["CalibrateOptions", "calibrate", "default_output", "cpu_flavour_path"]

log = logging.getLogger(__name__)


@dataclass
class CalibrateOptions:
    """Options of ``lso calibrate`` (see ``lso calibrate --help``)."""

    onnx: str
    precision: str = "fp16"
    out: str | None = None
    data: str = "synthetic"
    count: int = 16
    size: int | None = None
    ratio: int | None = None
    batch: int | None = None
    min_count: int = 8
    # fp16
    safe_range: float = 4096.0
    naive: bool = False
    # int8
    flavour: str = "both"
    method: str = "minmax"
    float_blocks: Sequence[str] | None = None
    target_dpsnr: float = bound("int8", "dpsnr")
    min_int8_macs: float = 0.75
    selection_margin: float = 0.5
    val_count: int = 4
    val_size: int = 128
    calibration_cache: str | None = None
    extra: dict = field(default_factory=dict)


def default_output(onnx: str | os.PathLike, precision: str) -> Path:
    """``model.onnx`` -> ``model.fp16.onnx`` / ``model.int8.onnx``."""
    path = Path(onnx)
    stem = path.name[:-len(".onnx")] if path.name.endswith(".onnx") else path.stem
    return path.with_name(f"{stem}.{precision}.onnx")


def cpu_flavour_path(out: str | os.PathLike) -> Path:
    """``model.int8.onnx`` -> ``model.int8.cpu.onnx``."""
    path = Path(out)
    stem = path.name[:-len(".onnx")] if path.name.endswith(".onnx") else path.stem
    return path.with_name(f"{stem}.cpu.onnx")


def calibration_cache_path(opts: CalibrateOptions, out: Path) -> Path:
    """``--calibration-cache``, else ``<out stem>.calibration.json`` beside ``out``."""
    if opts.calibration_cache:
        return Path(opts.calibration_cache)
    return out.with_name((out.name[:-len(".onnx")] if out.name.endswith(".onnx") else out.stem) + ".calibration.json")


def check_calibrate_clash(opts: CalibrateOptions, out: Path) -> None:
    """InputError when a file ``lso calibrate`` writes (the graph(s), their sidecars, the calibration cache) is one
    of its inputs (the FP32 graph, the data file, an existing ``--calibration-cache``, their sidecars)."""
    from lso.artifacts import check_no_clash, sidecar_path, with_sidecars

    inputs = with_sidecars([opts.onnx], "input graph")
    if opts.data != "synthetic":
        inputs += with_sidecars([opts.data], "calibration data")
    outputs: list[tuple[str, Path]] = [("output", out), ("output sidecar", sidecar_path(out))]
    if opts.precision == "int8":
        if opts.flavour == "both":
            cpu = cpu_flavour_path(out)
            outputs += [("output (cpu flavour)", cpu), ("output sidecar", sidecar_path(cpu))]
        cache = calibration_cache_path(opts, out)
        if opts.calibration_cache and cache.is_file():  # an explicit cache that exists is read, not written
            inputs.append(("calibration cache", cache))
        else:
            outputs.append(("calibration cache", cache))
    check_no_clash(inputs, outputs)


def calibrate(opts: CalibrateOptions, *, progress: bool = True) -> list[Path]:
    """Write the artifacts ``opts`` asks for; returns their paths.

    Raises:
        InputError: bad options; a file it would write is one of its inputs (:func:`check_calibrate_clash`,
            before anything runs).
    """
    from lso.calibration.feeds import calibration_feeds

    if opts.precision not in ("fp16", "int8"):
        raise InputError(f"--precision must be fp16 or int8, got {opts.precision!r}")
    out = Path(opts.out) if opts.out else default_output(opts.onnx, opts.precision)
    check_calibrate_clash(opts, out)  # before anything runs
    feeds = calibration_feeds(opts.data, count=opts.count, size=opts.size, ratio=opts.ratio, batch=opts.batch,
                              min_count=opts.min_count)
    if opts.precision == "fp16":
        from lso.calibration.fp16 import convert_fp16

        return [convert_fp16(opts.onnx, out, feeds=feeds, mode="naive" if opts.naive else "mixed",
                             safe_range=opts.safe_range)]
    return _int8(opts, out, feeds)


def _int8(opts: CalibrateOptions, out: Path, feeds: Any) -> list[Path]:
    from lso.calibration import int8
    from lso.calibration.accuracy import ort_reference
    from lso.data.sources import SceneSource

    flavours = {"both": ("tensorrt", "cpu"), "tensorrt": ("tensorrt",), "cpu": ("cpu",)}.get(opts.flavour)
    if flavours is None:
        raise InputError(f"--flavour must be tensorrt, cpu or both, got {opts.flavour!r}")
    # an explicit --calibration-cache is reused when it exists; the default one is always recomputed
    cache = calibration_cache_path(opts, out)
    if opts.calibration_cache is None or not cache.is_file():
        log.info("calibrating activation ranges (%s) on %d feed(s)", opts.method, len(feeds))
        int8.calibrate_ranges(opts.onnx, feeds, cache, method=opts.method)
    sweep_record = None
    float_blocks = list(opts.float_blocks or [])
    if opts.float_blocks is None:
        with SceneSource(opts.data, split="train", size=opts.val_size, centre_crop=True) as source:
            val = list(source.degraded(feeds.ratio, opts.val_count, offset=opts.count, exact=True))
        reference = ort_reference(opts.onnx, val)
        log.info("sensitivity sweep on %d validation scene(s) of %d² (reference: the FP32 graph)", len(val),
                 opts.val_size)
        ranking = int8.sensitivity_sweep(opts.onnx, val, reference, calibration_cache=cache, method=opts.method,
                                         flavour=flavours[0])
        points = []
        chosen = None
        for k in range(len(ranking) + 1):
            point = int8.float_block_curve(opts.onnx, ranking, val, reference, calibration_cache=cache, ks=[k],
                                           method=opts.method, flavours=(flavours[0],))[0]
            points.append(point)
            if point.dpsnr <= opts.selection_margin * opts.target_dpsnr \
                    and point.int8_mac_fraction >= opts.min_int8_macs:
                chosen, met = point, True
                break
            if point.int8_mac_fraction < opts.min_int8_macs:
                break
        if chosen is None:
            chosen, met = int8.choose_float_blocks(points, target_dpsnr=opts.target_dpsnr,
                                                   min_int8_macs=opts.min_int8_macs, margin=opts.selection_margin)
            log.warning("INT8 target not met (ΔPSNR <= %.3g dB with >= %.0f%% INT8 conv MACs); best point: %d float "
                        "block(s), ΔPSNR %.3f dB, %.1f%% INT8 MACs", opts.target_dpsnr, 100 * opts.min_int8_macs,
                        chosen.k, chosen.dpsnr, 100 * chosen.int8_mac_fraction)
        float_blocks = list(chosen.float_blocks)
        sweep_record = {"validation": {"scenes": [s.name for s in val], "size": opts.val_size,
                                       "reference": "FP32 graph (ONNX Runtime, CPU)"},
                        "target_dpsnr": opts.target_dpsnr, "min_int8_macs": opts.min_int8_macs,
                        "selection_margin": opts.selection_margin, "target_met": met,
                        "ranking": ranking, "points": [p.to_dict() for p in points], "chosen_k": chosen.k}
    paths = []
    for flavour in flavours:
        path = out if flavour == "tensorrt" or len(flavours) == 1 else cpu_flavour_path(out)
        paths.append(int8.quantize_int8(opts.onnx, path, feeds=feeds, flavour=flavour, float_blocks=float_blocks,
                                        calibration_cache=cache, method=opts.method, sweep=sweep_record))
    return paths
