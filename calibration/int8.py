"""INT8 Q/DQ graphs: explicit quantization with ONNX Runtime's ``quantize_static``, and a sensitivity sweep.

::

    from lso.calibration import calibration_feeds, quantize_int8, sensitivity_sweep
    feeds = calibration_feeds(count=16)
    quantize_int8("model.onnx", "model.int8.onnx", feeds=feeds, flavour="tensorrt")
    quantize_int8("model.onnx", "model.int8.cpu.onnx", feeds=feeds, flavour="cpu", calibration_cache=...)

TensorRT 11 has no INT8 builder flag or calibrator: INT8 exists only where the graph says so, with
``QuantizeLinear``/``DequantizeLinear`` pairs (QDQ format). What is quantized: the **convolutions**
(their input activation per tensor, their weights per output channel); the solver, the softmaxes and
all other arithmetic stay in float, and whole blocks can be kept in float (``float_blocks``). In the
``tensorrt`` flavour only the convolutions read the dequantized tensors (:func:`isolate_qdq`): a tensor
a convolution shares with a residual ``Add`` or a ``Concat`` reaches those in float, so skip
connections carry no rounding. The ``cpu`` flavour keeps ONNX Runtime's layout (every reader of a
quantized tensor reads the dequantized one), which its INT8 kernel fusion needs.

Two flavours from one calibration (the ranges are computed once and cached in a JSON file that
``quantize_static`` reuses, ``calibration_cache``):

==============  ===========================================  ============================================
flavour         activations                                   for
==============  ===========================================  ============================================
``tensorrt``    int8, **symmetric** (zero point 0), conv      TensorRT (it requires zero points of 0 and
                inputs only; weights int8 per channel;        does not take int32 bias DQ); TensorRT's
                bias left in float                            Q/DQ placement guide: quantize the inputs of
                                                              weighted layers, not their outputs
``cpu``         uint8, **asymmetric**; conv inputs and        ONNX Runtime's CPU kernels: they run INT8
                outputs (so Q/DQ fuse into QLinearConv);      convolutions fast only with U8 activations
                weights int8 per channel; int32 bias          (with symmetric S8 about half fall back)
==============  ===========================================  ============================================

``quant_pre_process`` is not run: its symbolic shape inference fails on this graph's independent
dynamic sizes; ``quantize_static`` works on the graph as exported (ONNX shape inference only).

Sensitivity (:func:`sensitivity_sweep`): each block (one named module: an encoder residual block, a
DoubleConv, a spectral block, the output head ...) is quantized alone and ranked by the ΔPSNR it
costs; :func:`float_block_curve` then keeps the worst 0, 1, 2 ... blocks in float and measures ΔPSNR,
the INT8 share of convolution MACs and CPU latency; :func:`choose_float_blocks` picks the first point
that meets the ΔPSNR target with enough INT8 MACs. ``lso calibrate`` ranks and chooses on validation
scenes (synthetic training scenes, never the held-out ones) and requires the validation ΔPSNR to stay
within half the budget (:data:`DEFAULT_SELECTION_MARGIN`).
"""
from __future__ import annotations

import contextlib
import datetime
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence, Sized
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np

from lso.calibration import graph as G
from lso.calibration.source import (
    graph_config,
    input_names,
    load_fp32_graph,
    mac_feed,
    tool_version,
    tool_versions,
    with_extent,
)
from lso.deps import require
from lso.errors import ExportError, InputError
from lso.export.graph_query import island_nodes, quantized_convs
from lso.islands import islands_for
from lso.tolerances import bound

if TYPE_CHECKING:  # pragma: no cover
    import onnx

    from lso.calibration.feeds import Scene

__all__ = ["quantize_int8", "quantize_model", "isolate_qdq", "float_nodes", "FLAVOURS", "CALIBRATION_METHODS",
           "calibrate_ranges", "int8_summary", "sensitivity_sweep", "float_block_curve", "choose_float_blocks",
           "CurvePoint", "ort_latency", "DEFAULT_TARGET_DPSNR", "DEFAULT_MIN_INT8_MACS", "DEFAULT_SELECTION_MARGIN"]

log = logging.getLogger(__name__)

FLAVOURS = ("tensorrt", "cpu")
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
DEFAULT_TARGET_DPSNR = bound("int8", "dpsnr")  # 0.5 dB, from the one tolerance table
DEFAULT_MIN_INT8_MACS = 0.75
DEFAULT_SELECTION_MARGIN = 0.5
"""Share of the ΔPSNR budget the *validation* ΔPSNR may use when blocks are chosen: validation scenes are
few and not the deployment data, so the choice keeps a 2x margin (on the demo checkpoint the held-out
ΔPSNR of the all-INT8 graph was 1.5x its validation ΔPSNR)."""

PathLike: TypeAlias = str | os.PathLike


# ------------------------------------------------------------------------------------------- options
def _flavour_options(flavour: str, quant: Any) -> dict[str, Any]:
    if flavour == "tensorrt":
        return {"activation_type": quant.QuantType.QInt8, "weight_type": quant.QuantType.QInt8,
                "extra_options": {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                                  "OpTypesToExcludeOutputQuantization": ["Conv"]}}
    if flavour == "cpu":
        return {"activation_type": quant.QuantType.QUInt8, "weight_type": quant.QuantType.QInt8,
                "extra_options": {"ActivationSymmetric": False, "WeightSymmetric": True, "QuantizeBias": True}}
    raise InputError(f"INT8 flavour must be one of {FLAVOURS}, got {flavour!r}")


def _method(name: str, quant: Any) -> Any:
    table = {"minmax": quant.CalibrationMethod.MinMax, "percentile": quant.CalibrationMethod.Percentile,
             "entropy": quant.CalibrationMethod.Entropy}
    if name not in table:
        raise InputError(f"calibration method must be one of {CALIBRATION_METHODS}, got {name!r}")
    return table[name]


@contextlib.contextmanager
def _quiet_quantizer():
    """ORT's quantizer logs 'consider pre-processing' on the root logger; pre-processing is skipped on purpose."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def isolate_qdq(model: onnx.ModelProto) -> int:
    """Rewire readers of ``DequantizeLinear`` outputs that are not Conv back to the float tensor (in place).

    ``quantize_static`` replaces a quantized activation for *all* its readers; here only the convolutions
    keep reading ``Q -> DQ``. Returns the number of inputs rewired.
    """
    prod = G.producers(model)
    inits = {i.name for i in model.graph.initializer}
    rewired = 0
    for node in model.graph.node:
        if node.op_type in ("Conv", "QuantizeLinear", "DequantizeLinear"):
            continue
        for i, name in enumerate(node.input):
            dq = prod.get(name)
            if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] in inits:
                continue
            q = prod.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                node.input[i] = q.input[0]
                rewired += 1
    return rewired


def float_nodes(model: onnx.ModelProto, float_blocks: Iterable[str] = ()) -> dict[str, str]:
    """Nodes ``quantize_static`` must leave in float: the FP32 islands of the INT8 path (``lso.islands``: solver,
    softmaxes), convs of ``float_blocks``."""
    keep = island_nodes(model, [i.name for i in islands_for("int8")])
    wanted = set(float_blocks)
    blocks = G.conv_blocks(model)
    unknown = wanted - set(blocks.values())
    if unknown:
        raise InputError(f"unknown block(s) {sorted(unknown)}; this graph's blocks are {G.block_order(model)}")
    for node, block in blocks.items():
        if block in wanted:
            keep[node] = f"block {block} kept in float"
    return keep


# ------------------------------------------------------------------------------------------- quantizing
def calibrate_ranges(model_path: PathLike, feeds: Iterable[Mapping[str, np.ndarray]], cache: PathLike, *,
                     method: str = "minmax", percentile: float = 99.999) -> Path:
    """Compute the activation ranges of every Conv input/output on ``feeds`` once and store them in ``cache``.

    (A throw-away ``quantize_static`` run: ONNX Runtime writes its calibration cache as a side effect.)
    """
    cache = Path(cache)
    if cache.exists():
        cache.unlink()
    with tempfile.TemporaryDirectory(prefix="lso-int8-") as tmp:
        quantize_model(model_path, Path(tmp) / "probe.onnx", feeds=feeds, flavour="tensorrt", calibration_cache=cache,
                       method=method, percentile=percentile)
    return cache


def quantize_model(model_path: PathLike, out: PathLike, *,
                   feeds: Iterable[Mapping[str, np.ndarray]] | None = None, flavour: str = "tensorrt",
                   float_blocks: Iterable[str] = (), calibration_cache: PathLike | None = None,
                   method: str = "minmax", percentile: float = 99.999, per_channel: bool = True,
                   model: onnx.ModelProto | None = None) -> Path:
    """``quantize_static`` (QDQ) of the FP32 graph at ``model_path`` into ``out`` (no sidecar). See the module doc."""
    quant = require("onnxruntime.quantization")
    onnx = require("onnx")
    from lso.calibration.feeds import make_ort_reader

    model = model if model is not None else onnx.load(str(model_path))
    options = _flavour_options(flavour, quant)
    extra = dict(options.pop("extra_options"))
    if method == "percentile":
        extra["CalibPercentile"] = percentile
    exclude = sorted(float_nodes(model, float_blocks))
    cache_ok = calibration_cache is not None and Path(calibration_cache).is_file()
    if feeds is None and not cache_ok:
        raise InputError("INT8 quantization needs calibration feeds (or an existing calibration cache)")
    inputs = input_names(model)  # a tileable graph also takes extent: the whole image's is added
    reader = None if cache_ok else make_ort_reader([with_extent(feed, inputs) for feed in feeds or ()])
    with _quiet_quantizer():
        try:
            quant.quantize_static(str(model_path), str(out), reader, quant_format=quant.QuantFormat.QDQ,
                                  op_types_to_quantize=["Conv"], per_channel=per_channel, reduce_range=False,
                                  nodes_to_exclude=exclude, calibrate_method=_method(method, quant),
                                  calibration_cache_path=str(calibration_cache) if calibration_cache else None,
                                  extra_options=extra, **options)
        except (InputError, ExportError):
            raise
        except Exception as exc:  # ORT raises ValueError/RuntimeError/Fail types
            raise ExportError(f"onnxruntime.quantization.quantize_static failed ({flavour}): "
                              f"{type(exc).__name__}: {exc}") from exc
    if flavour == "tensorrt":
        from lso.export.passes import cleanup

        qmodel = onnx.load(str(out))
        if isolate_qdq(qmodel):
            onnx.save_model(cleanup(qmodel), str(out), save_as_external_data=False)
    return Path(out)


def int8_summary(qmodel: onnx.ModelProto, macs: Mapping[str, int]) -> dict[str, Any]:
    """Quantized convolutions, their share of conv MACs, and the Q/DQ zero points/types found."""
    numpy_helper = require("onnx.numpy_helper")
    inits = {i.name: i for i in qmodel.graph.initializer}
    quantized = quantized_convs(qmodel)
    zero_points: dict[str, list] = {"QuantizeLinear": [], "DequantizeLinear": []}
    zp_types = set()
    per_channel = 0
    for node in qmodel.graph.node:
        if node.op_type in zero_points and len(node.input) > 2 and node.input[2] in inits:
            zp = numpy_helper.to_array(inits[node.input[2]])
            zp_types.add(str(zp.dtype))
            zero_points[node.op_type].extend(np.unique(zp).tolist())
            if zp.ndim == 1 and zp.size > 1:
                per_channel += 1
    total = sum(macs.values())
    in_int8 = sum(v for k, v in macs.items() if k in quantized)
    return {
        "convs_int8": len(quantized),
        "convs_total": len(macs),
        "conv_macs_total": int(total),
        "conv_macs_int8": int(in_int8),
        "conv_mac_fraction_int8": in_int8 / total if total else 0.0,
        "convs_float": sorted(n for n in macs if n not in quantized),
        "quantize_nodes": sum(1 for n in qmodel.graph.node if n.op_type == "QuantizeLinear"),
        "dequantize_nodes": sum(1 for n in qmodel.graph.node if n.op_type == "DequantizeLinear"),
        "zero_point_types": sorted(zp_types),
        "zero_points_all_zero": all(v == 0 for vals in zero_points.values() for v in vals),
        "per_channel_dq": per_channel,
    }


def quantize_int8(
    source: PathLike,
    out: PathLike,
    *,
    feeds: Iterable[Mapping[str, np.ndarray]] | None = None,
    flavour: str = "tensorrt",
    float_blocks: Iterable[str] = (),
    calibration_cache: PathLike | None = None,
    method: str = "minmax",
    percentile: float = 99.999,
    sweep: Mapping[str, Any] | None = None,
) -> Path:
    """Write the INT8 Q/DQ graph of an FP32 LSO graph (+ ``<out>.json`` sidecar).

    Args:
        source: the FP32 ``.onnx`` (from ``lso export``).
        out: the ``.onnx`` to write (``model.int8.onnx``; ``model.int8.cpu.onnx`` for the cpu flavour).
        feeds: calibration feeds (:func:`lso.calibration.calibration_feeds`); optional when
            ``calibration_cache`` already exists.
        flavour: ``"tensorrt"`` (symmetric, zero points 0) or ``"cpu"`` (asymmetric U8).
        float_blocks: blocks kept in float (e.g. chosen by :func:`choose_float_blocks`).
        calibration_cache: JSON file of activation ranges, computed from ``feeds`` when missing and
            reused when present (so both flavours share one calibration).
        method: ``"minmax"`` (default), ``"percentile"`` or ``"entropy"``.
        sweep: the sensitivity sweep / curve that chose ``float_blocks``, recorded in the sidecar.

    Returns:
        ``out``.
    """
    onnx = require("onnx")
    from lso.artifacts import atomic_path, check_writable_target, sha256_file, write_sidecar

    out = Path(out)
    if out.suffix != ".onnx":
        raise InputError(f"output {out} must end in .onnx")
    check_writable_target(out)
    if flavour not in FLAVOURS:
        raise InputError(f"INT8 flavour must be one of {FLAVOURS}, got {flavour!r}")
    model, source_info = load_fp32_graph(source)
    if source_info.get("kind") != "onnx":
        raise InputError("quantize_int8 takes the path of the FP32 .onnx (quantize_static reads the file)")
    config = graph_config(model, source_info)
    if feeds is not None and not isinstance(feeds, Sized):
        feeds = list(feeds)  # a one-pass iterable: counted below after quantization has read it
    float_blocks = list(dict.fromkeys(float_blocks))
    keep = float_nodes(model, float_blocks)
    with contextlib.ExitStack() as stack:
        if calibration_cache is None:
            tmpdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="lso-int8-"))
            calibration_cache = Path(tmpdir) / "calibration.json"
        computed = not Path(calibration_cache).is_file()
        if computed and feeds is None:
            raise InputError("INT8 calibration needs feeds: pass feeds=calibration_feeds(...) or an existing "
                             "calibration_cache")
        t0 = time.perf_counter()
        with atomic_path(out) as tmp:
            quantize_model(source_info["path"], tmp, feeds=feeds, flavour=flavour, float_blocks=float_blocks,
                           calibration_cache=calibration_cache, method=method, percentile=percentile, model=model)
            qmodel = onnx.load(str(tmp))
            entry = qmodel.metadata_props.add()
            entry.key, entry.value = "lso.precision", f"int8-{flavour}"
            qmodel.doc_string = f"LSO fusion, INT8 Q/DQ ({flavour} flavour, FP32 I/O), quantized by lso-deploy"
            onnx.save_model(qmodel, str(tmp), save_as_external_data=False)
            G.ort_session(qmodel)  # ONNX Runtime must load what we ship
        seconds = time.perf_counter() - t0
        calib_sha = sha256_file(calibration_cache)
    summary = int8_summary(qmodel, G.conv_macs(model, mac_feed(config, model)))
    if flavour == "tensorrt" and not summary["zero_points_all_zero"]:
        out.unlink(missing_ok=True)
        raise ExportError("the tensorrt INT8 graph has non-zero zero points, which TensorRT rejects")
    feed_info: dict[str, Any]
    if feeds is None:
        feed_info = {"from_cache": True}
    elif hasattr(feeds, "describe"):
        feed_info = feeds.describe()
    else:
        feed_info = {"count": len(feeds)}
    quant = require("onnxruntime.quantization")
    opts = _flavour_options(flavour, quant)
    info = {
        "stage": "calibrate",
        "format": "onnx",
        "precision": "int8",
        "flavour": flavour,
        "io_dtype": "float32",
        "config": config,
        "source": {k: v for k, v in source_info.items() if k != "sidecar"},
        "quantizer": {"tool": "onnxruntime.quantization.quantize_static", "version": tool_version("onnxruntime"),
                      "format": "QDQ", "op_types": ["Conv"], "per_channel_weights": True,
                      "activation_type": str(opts["activation_type"]), "weight_type": str(opts["weight_type"]),
                      "extra_options": opts["extra_options"], "method": method,
                      **({"percentile": percentile} if method == "percentile" else {}),
                      "pre_process": "skipped (quant_pre_process fails on the dynamic-shape graph)"},
        "calibration": {**feed_info, "cache_sha256": calib_sha, "computed_here": computed},
        "float_blocks": float_blocks,
        "float_nodes": [{"node": k, "reason": v} for k, v in sorted(keep.items())],
        "summary": summary,
        "sweep": dict(sweep) if sweep else None,
        "timing_s": round(seconds, 2),
        "versions": tool_versions(),
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        write_sidecar(out, info)
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    log.info("wrote %s (%s, %.1f%% of conv MACs in INT8)", out, flavour, 100 * summary["conv_mac_fraction_int8"])
    return out


# ------------------------------------------------------------------------------------------- sensitivity
def ort_latency(model: Any, feed: Mapping[str, np.ndarray], *, repeats: int = 5, warmup: int = 1,
                threads: int | None = None) -> float:
    """Median wall time (s) of one ONNX Runtime CPU run of ``model`` (ModelProto or path) on ``feed``."""
    onnx = require("onnx")
    if not hasattr(model, "graph"):
        model = onnx.load(str(model))
    session = G.ort_session(model, threads=threads)
    for _ in range(warmup):
        session.run(None, dict(feed))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        session.run(None, dict(feed))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _evaluate(qpath: Path, scenes: Sequence[Scene], reference: Sequence[np.ndarray]) -> Any:
    from lso.calibration.accuracy import compare, ort_runner

    return compare(ort_runner(str(qpath)), scenes, reference)


def sensitivity_sweep(source: PathLike, scenes: Sequence[Scene], reference: Sequence[np.ndarray], *,
                      calibration_cache: PathLike, feeds: Iterable[Mapping[str, np.ndarray]] | None = None,
                      flavour: str = "tensorrt", method: str = "minmax", blocks: Sequence[str] | None = None,
                      workdir: PathLike | None = None) -> list[dict[str, Any]]:
    """Quantize each block alone (everything else float) and measure its ΔPSNR; worst first.

    Returns ``[{"block", "dpsnr", "dsam", "fidelity_psnr", "macs"}, ...]`` sorted by ``dpsnr`` descending.
    """
    onnx = require("onnx")
    model = onnx.load(str(source))
    all_blocks = G.block_order(model)
    blocks = list(blocks) if blocks is not None else all_blocks
    macs = G.conv_macs(model, mac_feed(graph_config(model, {}), model))
    block_macs = {b: sum(v for k, v in macs.items() if G.conv_blocks(model).get(k) == b) for b in all_blocks}
    if not Path(calibration_cache).is_file():
        if feeds is None:
            raise InputError("INT8 quantization needs calibration feeds (or an existing calibration cache)")
        calibrate_ranges(source, feeds, calibration_cache, method=method)
    rows = []
    with contextlib.ExitStack() as stack:
        work = Path(workdir) if workdir else Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="lso-sweep-")))
        for block in blocks:
            others = [b for b in all_blocks if b != block]
            qpath = work / f"only_{block}.onnx"
            quantize_model(source, qpath, flavour=flavour, float_blocks=others, calibration_cache=calibration_cache,
                           method=method, model=model)
            comp = _evaluate(qpath, scenes, reference)
            rows.append({"block": block, "dpsnr": comp.dpsnr, "dsam": comp.dsam, "fidelity_psnr": comp.fidelity_psnr,
                         "macs": block_macs.get(block, 0)})
            log.info("sensitivity %-24s ΔPSNR %.4f dB", block, comp.dpsnr)
            qpath.unlink(missing_ok=True)
    rows.sort(key=lambda r: -r["dpsnr"])
    return rows


@dataclass
class CurvePoint:
    """One point of the curve: the ``k`` most sensitive blocks kept in float."""

    k: int
    float_blocks: list[str]
    dpsnr: float
    dsam: float
    fidelity_psnr: float
    int8_mac_fraction: float
    latency_s: dict[str, float] = field(default_factory=dict)
    dpsnr_by_flavour: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def float_block_curve(source: PathLike, ranking: Sequence[Mapping[str, Any]], scenes: Sequence[Scene],
                      reference: Sequence[np.ndarray], *, calibration_cache: PathLike,
                      ks: Iterable[int] | None = None,
                      method: str = "minmax", flavours: Sequence[str] = ("tensorrt",),
                      latency_feed: Mapping[str, np.ndarray] | None = None, latency_repeats: int = 3,
                      threads: int | None = None, workdir: PathLike | None = None) -> list[CurvePoint]:
    """Keep the ``k`` worst blocks of ``ranking`` in float for each ``k``; measure ΔPSNR (first flavour is
    the one ``dpsnr`` reports), INT8 MAC share and, with ``latency_feed``, ONNX Runtime CPU latency per flavour.
    """
    onnx = require("onnx")
    model = onnx.load(str(source))
    macs = G.conv_macs(model, mac_feed(graph_config(model, {}), model))
    order = [r["block"] for r in ranking]
    ks = list(ks) if ks is not None else list(range(len(order) + 1))
    points = []
    with contextlib.ExitStack() as stack:
        work = Path(workdir) if workdir else Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="lso-curve-")))
        for k in ks:
            kept = order[:k]
            point = CurvePoint(k=k, float_blocks=kept, dpsnr=float("nan"), dsam=float("nan"),
                               fidelity_psnr=float("nan"), int8_mac_fraction=0.0)
            for i, flavour in enumerate(flavours):
                qpath = work / f"k{k}_{flavour}.onnx"
                quantize_model(source, qpath, flavour=flavour, float_blocks=kept, calibration_cache=calibration_cache,
                               method=method, model=model)
                qmodel = onnx.load(str(qpath))
                comp = _evaluate(qpath, scenes, reference)
                point.dpsnr_by_flavour[flavour] = comp.dpsnr
                if i == 0:
                    point.dpsnr, point.dsam, point.fidelity_psnr = comp.dpsnr, comp.dsam, comp.fidelity_psnr
                    point.int8_mac_fraction = int8_summary(qmodel, macs)["conv_mac_fraction_int8"]
                if latency_feed is not None:
                    point.latency_s[flavour] = ort_latency(qmodel, latency_feed, repeats=latency_repeats,
                                                           threads=threads)
                qpath.unlink(missing_ok=True)
            log.info("curve k=%d float=%s ΔPSNR %.4f dB, INT8 MACs %.1f%%", k, kept, point.dpsnr,
                     100 * point.int8_mac_fraction)
            points.append(point)
    return points


def choose_float_blocks(points: Sequence[CurvePoint], *, target_dpsnr: float = DEFAULT_TARGET_DPSNR,
                        min_int8_macs: float = DEFAULT_MIN_INT8_MACS, margin: float = 1.0) -> tuple[CurvePoint, bool]:
    """The first point (fewest float blocks) with ``dpsnr <= margin * target_dpsnr`` and enough INT8 MACs:
    ``(point, True)``; if none, the lowest-ΔPSNR point among those with enough INT8 MACs (or overall):
    ``(point, False)``."""
    if not points:
        raise InputError("empty curve: nothing to choose from")
    for p in sorted(points, key=lambda p: p.k):
        if p.dpsnr <= margin * target_dpsnr and p.int8_mac_fraction >= min_int8_macs:
            return p, True
    eligible = [p for p in points if p.int8_mac_fraction >= min_int8_macs] or list(points)
    return min(eligible, key=lambda p: p.dpsnr), False
