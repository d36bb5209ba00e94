"""``export_onnx``: any LSO checkpoint (or model) -> one self-contained ONNX file + JSON sidecar.

What the file is:

- FP32, the folded solver (one ``Sin`` and one ``Cos`` per spectral block, no ``[.., 2Q]`` basis);
- batch, HR height/width and LR height/width symbolic and independent (names from ``lso.io_spec``),
  so one file serves every image size and every integer ratio (x2, x3, x4 ... x32);
- opset 18 by default (19 and 20 on request), every node checked against TensorRT's ONNX parser
  table (:mod:`lso.export.lint`), constants folded with onnxslim;
- all weights inside the ``.onnx`` (no external ``.data`` file), written atomically: the graph is
  written under a temporary name, checked against PyTorch with ONNX Runtime (:mod:`lso.export.parity`)
  and only then renamed, so a failed or interrupted export leaves no file behind;
- provenance: the fingerprint of the weights it was exported from (:func:`lso.checkpoint.weights_fingerprint`,
  the same function a checkpoint file gives it with) in ``metadata_props`` (``lso.weights_sha256``, and the
  checkpoint file's sha256 as ``lso.source_sha256``) and in the sidecar (``weights_sha256``, ``source``);
  ``Runner.weights_fingerprint`` reports it.

How: ``torch.export`` (non-strict) with the dynamic shapes of ``io_spec`` captures the model; any
guard or specialisation on a size is an error here, never silently accepted (``torch.onnx.export``
given the module would instead "refine" the shapes, e.g. to multiples of 4). The exported program
is translated by the dynamo ONNX exporter (``torch.onnx.export(..., dynamo=True)``), then the passes
of :mod:`lso.export.passes` run.
"""
from __future__ import annotations

import contextlib
import copy
import datetime
import hashlib
import logging
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeAlias

from lso import io_spec
from lso.artifacts import atomic_path, check_writable_target, sha256_file, sidecar_path, tool_versions, write_sidecar
from lso.checkpoint import WEIGHTS_FINGERPRINT_KEY
from lso.config import LSOConfig
from lso.deps import require
from lso.errors import ExportError, InputError

__all__ = ["export_onnx", "DEFAULT_OPSET", "SUPPORTED_OPSETS", "trace_inputs"]

log = logging.getLogger(__name__)

# 18 is the opset the dynamo exporter's op library (torchlib) is written in: no version conversion.
DEFAULT_OPSET = 18
SUPPORTED_OPSETS = (18, 19, 20)

# range of each symbolic dimension during capture (r >= 2 so H, W >= 2). The graph itself carries no
# range; an explicit upper bound keeps torch.export's error reports working (it fails on an infinite one).
_DIM_MIN = {io_spec.DIM_BATCH: 1, io_spec.DIM_H: 2, io_spec.DIM_W: 2, io_spec.DIM_LR_H: 1, io_spec.DIM_LR_W: 1}
_DIM_MAX = 1 << 16
# trace sizes: x3, neither side a multiple of 4, all five dimensions different from each other
_TRACE: dict[str, Any] = {"batch": 2, "ratio": 3, "lr": (14, 18)}

PathLike: TypeAlias = str | os.PathLike


# ------------------------------------------------------------------------------------------ the model
def _resolve_model(source, config: LSOConfig | Mapping[str, Any] | None) -> tuple[Any, dict]:
    """``(model, description of its source)`` from an LSO model, a checkpoint path (or ``@demo``), or None (demo).

    The description holds the checkpoint file's sha256 (a model: of its state dict) and the weights' fingerprint
    (:func:`lso.checkpoint.weights_fingerprint`, the same for the checkpoint file and the graph).
    """
    from lso.checkpoint import load_checkpoint, weights_fingerprint
    from lso.model import LSO
    from lso.weights import is_demo_name

    if isinstance(source, LSO):
        if config is not None:
            raise ExportError("config= applies to checkpoint files only; the given model already has one")
        return source, {"kind": "model", "sha256": _state_sha256(source), "weights_sha256": weights_fingerprint(source)}
    if source is None or is_demo_name(source):
        from lso.weights import demo_checkpoint

        path = demo_checkpoint()  # ArtifactError with a clear message when none is bundled
        kind = "bundled demo checkpoint"
    elif isinstance(source, (str, os.PathLike)):
        path, kind = Path(source), "checkpoint"
    else:
        raise ExportError(f"export_onnx takes an LSO model or a checkpoint path, got {type(source).__name__}")
    model = load_checkpoint(path, config)  # ArtifactError: missing, corrupt, or not fitting the config
    return model, {"kind": kind, "path": str(path), "sha256": sha256_file(path),
                   "weights_sha256": weights_fingerprint(model)}


def _record_source(proto: Any, source: Mapping[str, Any]) -> None:
    """Put the weights' fingerprint (and the checkpoint file's sha256) in the graph's ``metadata_props``."""
    from lso.checkpoint import WEIGHTS_FINGERPRINT_KEY

    values = {"lso." + WEIGHTS_FINGERPRINT_KEY: source["weights_sha256"]}
    if source.get("path"):
        values["lso.source_sha256"] = source["sha256"]
    for prop in list(proto.metadata_props):
        if prop.key in values:
            proto.metadata_props.remove(prop)
    for key, value in values.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def _state_sha256(model) -> str:
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def trace_inputs(config: LSOConfig, *, tileable: bool = False) -> tuple:
    """Example inputs for tracing: batch 2, x3, 42x54 (not multiples of 4; all sizes distinct)."""
    import torch

    h, w = _TRACE["lr"]
    big_h, big_w = h * _TRACE["ratio"], w * _TRACE["ratio"]
    gen = torch.Generator().manual_seed(0)
    args = [torch.rand(_TRACE["batch"], config.n_msi_bands, big_h, big_w, generator=gen),
            torch.rand(_TRACE["batch"], config.n_bands, h, w, generator=gen)]
    if tileable:
        args.append(torch.tensor([0, 0, big_h, big_w], dtype=torch.int64))
    return tuple(args)


def _dynamic_shapes(tileable: bool) -> dict:
    import torch

    axes = io_spec.dynamic_axes(tileable=tileable)
    shapes: dict[str, Any] = {
        name: {axis: torch.export.Dim(sym, min=_DIM_MIN[sym], max=_DIM_MAX) for axis, sym in axes[name].items()}
        for name in io_spec.INPUT_NAMES
    }
    if tileable:
        shapes[io_spec.EXTENT] = None  # static [4]
    return shapes


@contextlib.contextmanager
def _size_oblivious():
    """Treat sizes 0/1 like any other during capture (what torch.onnx does itself), where torch has it."""
    import torch.fx.experimental._config as fx_config

    if hasattr(fx_config, "backed_size_oblivious"):
        with fx_config.patch(backed_size_oblivious=True):
            yield
    else:  # pragma: no cover - older torch
        yield


def _capture(model, args: tuple, tileable: bool):
    """torch.export the model with independent dynamic sizes; any guard on a size is an ExportError."""
    import torch

    try:
        with _size_oblivious(), _quiet():
            return torch.export.export(model, args, dynamic_shapes=_dynamic_shapes(tileable), strict=False)
    except Exception as exc:
        text = str(exc)
        if _in_guard_check(exc) or "Constraints violated" in text:
            head = "\n".join(text.splitlines()[:8])
            raise ExportError(
                "torch.export could not keep every size dynamic: the model's forward makes a decision on an image "
                "size (a Python int from a shape, a branch on a size, a view-or-copy reshape), which would bake that "
                "size into the graph. Run with TORCH_LOGS=+dynamic to see where the guard comes from. torch.export "
                f"said: {type(exc).__name__}: {head}"
            ) from exc
        raise ExportError(f"torch.export failed: {type(exc).__name__}: {text.splitlines()[0] if text else ''}") from exc


def _in_guard_check(exc: BaseException) -> bool:
    """True if ``exc`` was raised while torch.export checked the guards on the dynamic sizes.

    (Its own report of a violated constraint sometimes fails with an AssertionError while it builds
    suggested fixes; that is the same finding.)
    """
    tb = exc.__traceback__
    while tb is not None:
        if "produce_guards" in tb.tb_frame.f_code.co_name:
            return True
        tb = tb.tb_next
    return False


def _translate(exported, args: tuple, opset: int):
    """ExportedProgram -> ModelProto with the dynamo ONNX exporter (weights inline)."""
    import torch

    require("onnxscript")  # the dynamo exporter's op library; MissingDependencyError names the extra
    names = list(io_spec.INPUT_NAMES) + ([io_spec.EXTENT] if len(args) == 3 else [])
    try:
        with _quiet("torch.onnx", "onnx_ir", "onnxscript"):  # "torchvision is not installed", per-pass chatter
            program = torch.onnx.export(exported, args, input_names=names, output_names=list(io_spec.OUTPUT_NAMES),
                                        opset_version=opset, dynamo=True, optimize=True, verify=False,
                                        report=False, verbose=False)
    except Exception as exc:
        raise ExportError(f"torch.onnx.export (dynamo) failed: {type(exc).__name__}: {exc}") from exc
    if program is None:  # only when writing to a file, which this call does not ask for
        raise ExportError("torch.onnx.export (dynamo) returned no ONNX program")
    return program.model_proto


@contextlib.contextmanager
def _quiet(*names: str):
    """Raise the given loggers to ERROR and hide torch's internal FutureWarnings for the block.

    (Unless this module logs at DEBUG.) What is hidden is exporter chatter, not about the user's model.
    """
    if log.isEnabledFor(logging.DEBUG):
        yield
        return
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, message=".*LeafSpec.*")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


# --------------------------------------------------------------------------------------------- export
def export_onnx(
    model_or_checkpoint: Any | PathLike | None,
    out: PathLike = "model.onnx",
    *,
    config: LSOConfig | Mapping[str, Any] | None = None,
    opset: int = DEFAULT_OPSET,
    tileable: bool = False,
    simplify: bool = True,
    check: bool = True,
    cases: Sequence[Any] | None = None,
    atol: float | None = None,
    seed: int = 0,
    allow_unsupported: bool = False,
    solver_chunk: int | None = None,
    align_channels: int | None = None,
    target: str = "portable",
    tune_budget: float | str | None = None,
    tuning: Mapping[str, Any] | None = None,
) -> Path:
    """Export an LSO model or checkpoint to one ONNX file (+ ``<out>.json`` sidecar) and prove parity.

    Args:
        model_or_checkpoint: an :class:`~lso.model.LSO`, a checkpoint path (official ``.pth.tar``/
            ``.pth``/``.pt`` or ours ``.safetensors``), or None / ``@demo`` for the bundled demo weights.
        out: the ``.onnx`` file to write (its folder must exist).
        config: for a checkpoint, configuration fields (an LSOConfig or a dict such as ``{"patch_size": 2}``)
            that must agree with what it records and fill in what it does not (default: its own; see
            :func:`lso.checkpoint.load_checkpoint`).
        opset: ai.onnx opset, 18 (default), 19 or 20.
        tileable: add the int64 ``extent [4]`` input ``(row0, col0, H_full, W_full)`` for tiled fusion.
        simplify: fold constants with onnxslim (if it fails, the unsimplified graph is kept).
        check: run ONNX Runtime vs PyTorch on ``cases`` before the file gets its final name.
        cases: :class:`~lso.export.parity.ParityCase` list (default: ``parity.DEFAULT_CASES``, plus
            ``parity.TILE_CASE`` for a tileable graph).
        atol: largest max-abs error a case may show (default ``parity.DEFAULT_ATOL`` = 1e-4).
        seed: seed of the parity inputs.
        allow_unsupported: write the graph even if nodes fail the TensorRT lint (they are logged).
        solver_chunk: run each solver chain in a ``Scan`` over chunks of this many patches
            (:func:`lso.export.passes.chunk_solver`; ``passes.DEFAULT_SOLVER_CHUNK`` = 128 is a good
            value). For ONNX Runtime on CPU, where it makes the element-wise chain cache-resident;
            leave it off (None) for TensorRT, which fuses the chain itself. Outputs are unchanged.
        align_channels: pad convolutions' channel counts to a multiple of this with zero weights
            (:func:`lso.export.passes.align_conv_channels`; ``passes.DEFAULT_CHANNEL_MULTIPLE`` = 16),
            so ONNX Runtime's CPU provider runs every convolution in its blocked layout. For ONNX
            Runtime on CPU, with ``solver_chunk``; leave it off for TensorRT. Outputs are unchanged
            up to float rounding.
        target: what the graph is for, recorded in its metadata (``lso.variant``) and sidecar
            (``variant``, ``passes``): ``"portable"`` (default; every runtime), ``"tensorrt"`` (the same
            graph, every node checked against TensorRT's parser with no override; no CPU passes allowed).
            A graph with CPU-only passes (``solver_chunk``, ``align_channels``) is the ``"cpu"`` variant,
            which the TensorRT consumers refuse (see :mod:`lso.export.variants`). ``"cpu"`` (``lso export
            --target cpu``) tunes the deployment on this machine (:mod:`lso.export.cpu_tuning`): the candidate
            graphs (plain, chunked solver at a few chunk sizes, aligned channels, their combinations; only the
            one fixed by ``solver_chunk``/``align_channels`` when given) are timed on each available CPU
            backend and thread setting within ``tune_budget``, every one checked against PyTorch FP32, and the
            fastest that passes is written (a tie on time within the run's noise goes to the lowest peak
            memory, measured in a fresh process), with the ``cpu_tuning`` block in the sidecar (the choice, every
            candidate's timings and parity, the budget, the CPU model) that :func:`lso.runtime.load` then
            follows by default.
        tune_budget: time budget of the ``"cpu"`` tuning: seconds, or ``"90s"``/``"5m"`` (default
            ``cpu_tuning.DEFAULT_BUDGET_S`` = 300); only with ``target="cpu"``.
        tuning: further keyword arguments of :func:`lso.export.cpu_tuning.tune` (``cases``, ``graphs``,
            ``backends``, ``threads``, ``repeats``, ``timer``, ``peak_rss``, ``memory``); only with ``target="cpu"``.

    Returns:
        ``out`` as a Path. The sidecar ``<out>.json`` records the config, opset, versions, source
        sha256, the variant and passes, the input/output spec, node counts and the parity table.

    Raises:
        ArtifactError: checkpoint missing/corrupt/not fitting ``config``; ``out`` not writable.
        InputError: ``out`` or its sidecar is the checkpoint (or its sidecar), checked before any work; a bad
            ``tune_budget``, or one without ``target="cpu"``.
        ExportError: a size could not stay dynamic, an unsupported operator, or a parity failure.
        MissingDependencyError: onnx, onnxscript, onnxslim or onnxruntime missing.
    """
    t_start = time.perf_counter()
    out = Path(out)
    if out.suffix != ".onnx":
        raise ExportError(f"output {out} must end in .onnx (runtimes choose the backend by the suffix)")
    if isinstance(model_or_checkpoint, (str, os.PathLike)):  # before any work: the graph never replaces its source
        from lso.artifacts import check_no_clash, with_sidecars
        from lso.weights import is_demo_name

        if not is_demo_name(model_or_checkpoint):
            check_no_clash(with_sidecars([model_or_checkpoint], "checkpoint"),
                           [("output", out), ("output sidecar", sidecar_path(out))])
    check_writable_target(out)  # before any work: missing folder, a folder named like the file
    if opset not in SUPPORTED_OPSETS:
        raise ExportError(f"opset {opset} is not supported: choose one of {SUPPORTED_OPSETS} (default {DEFAULT_OPSET})")
    onnx = require("onnx")
    from lso.export.variants import VARIANTS, read_variant, set_variant

    if target not in VARIANTS:
        raise ExportError(f"target must be one of {VARIANTS}, got {target!r}")
    cpu_passes = bool(solver_chunk or align_channels)
    if target == "tensorrt" and (cpu_passes or allow_unsupported):
        raise ExportError("target 'tensorrt' takes the plain graph with every node supported by TensorRT: drop "
                          "--solver-chunk/--align-channels (CPU-only passes) and --allow-unsupported")
    from lso.export import cpu_tuning

    tune = target == "cpu"
    if not tune and (tune_budget is not None or tuning):
        raise InputError(f"--tune-budget (tune_budget=, tuning=) applies to the tuned CPU export only: add --target "
                         f"cpu, or drop it (target is {target!r})")
    budget = cpu_tuning.parse_budget(tune_budget) if tune else None

    from lso.export import lint, parity, passes
    from lso.model import set_solver_form

    source_model, source = _resolve_model(model_or_checkpoint, config)
    reference = copy.deepcopy(source_model).float().cpu().eval()  # what "PyTorch computes", as given
    graph_model = set_solver_form(copy.deepcopy(reference), "folded")
    cfg = graph_model.config
    if cases is None:
        cases = parity.DEFAULT_CASES + ((parity.TILE_CASE,) if tileable else ())
    cases = tuple(cases)
    atol = parity.DEFAULT_ATOL if atol is None else float(atol)
    inputs, outputs = io_spec.tensor_specs(cfg, tileable=tileable)
    axes = io_spec.dynamic_axes(tileable=tileable)

    report, parity_s, tuned = None, 0.0, None
    with atomic_path(out) as tmp:  # the temporary file is created first: an unwritable place fails now
        if tune:
            plain, simplifier = _plain_graph(graph_model, opset=opset, tileable=tileable, simplify=simplify)

            def candidate(graph: cpu_tuning.GraphOptions) -> Any:
                return _finish(copy.deepcopy(plain), cfg, tileable=tileable, allow_unsupported=allow_unsupported,
                               solver_chunk=graph.solver_chunk, align_channels=graph.align_channels)[0]

            log.info("tuning the CPU deployment on this machine (budget %.0f s)", budget)
            tuned = cpu_tuning.tune(candidate, graph_model, budget_s=budget, atol=atol, seed=seed, tileable=tileable,
                                    **{"graphs": cpu_tuning.graph_candidates(solver_chunk, align_channels),
                                       **(tuning or {})})
            solver_chunk, align_channels = tuned.graph.solver_chunk, tuned.graph.align_channels
            proto, issues = _finish(plain, cfg, tileable=tileable, allow_unsupported=allow_unsupported,
                                    solver_chunk=solver_chunk, align_channels=align_channels)
        else:
            proto, simplifier, issues = _build(graph_model, opset=opset, tileable=tileable, simplify=simplify,
                                               allow_unsupported=allow_unsupported, solver_chunk=solver_chunk,
                                               align_channels=align_channels)
        if not (solver_chunk or align_channels):  # the CPU passes have marked the graph 'cpu' themselves
            set_variant(proto, target)
        _record_source(proto, source)
        variant = read_variant(proto)
        export_s = time.perf_counter() - t_start
        log.info("exported in %.1f s: %d nodes", export_s, len(proto.graph.node))
        onnx.save_model(proto, str(tmp), save_as_external_data=False)
        if check:
            log.info("parity: ONNX Runtime (CPU) vs PyTorch on %d case(s)", len(cases))
            t_check = time.perf_counter()
            report = parity.run_parity(tmp, reference, cases, atol=atol, seed=seed, tileable=tileable)
            parity_s = time.perf_counter() - t_check
            if not report.passed:
                failed = ", ".join(r.case for r in report.failures())
                raise ExportError(f"parity check failed for {failed} (max abs error > {atol:g}); no file written.\n"
                                  + report.format_table())
    info = {
        "stage": "export",
        "format": "onnx",
        "precision": "fp32",
        "opset": opset,
        "ir_version": proto.ir_version,
        "config": cfg.to_dict(),
        "solver": "folded",
        "solver_chunk": solver_chunk,
        "align_channels": align_channels,
        "variant": variant.name,
        "passes": list(variant.passes),
        "tileable": tileable,
        "source": source,
        WEIGHTS_FINGERPRINT_KEY: source["weights_sha256"],
        "inputs": [_spec_dict(s) for s in inputs],
        "outputs": [_spec_dict(s) for s in outputs],
        "dynamic_axes": {k: {str(a): v for a, v in d.items()} for k, d in axes.items()},
        "simplifier": simplifier,
        "trt_lint": {"table": lint.TABLE_SOURCE, "issues": [str(i) for i in issues]},
        "graph": {"nodes": len(proto.graph.node), "op_counts": passes.op_counts(proto), "bytes": out.stat().st_size},
        "parity": report.to_dict() if report is not None else {"skipped": True},
        "timing_s": {"export": round(export_s, 2), **({"parity": round(parity_s, 2)} if report else {}),
                     **({"cpu_tuning": round(tuned.elapsed_s, 2)} if tuned else {})},
        **({cpu_tuning.SIDECAR_KEY: tuned.to_dict()} if tuned else {}),
        "versions": _versions(),
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        write_sidecar(out, info)
    except BaseException:
        out.unlink(missing_ok=True)  # an artifact without its sidecar would fail the loaders' checks
        raise
    log.info("wrote %s (%.1f MB) and %s", out, out.stat().st_size / 1e6, sidecar_path(out).name)
    return out


def _build(graph_model, *, opset: int, tileable: bool, simplify: bool, allow_unsupported: bool,
           solver_chunk: int | None = None, align_channels: int | None = None):
    """Capture, translate and pass the folded model: ``(ModelProto, simplifier record, lint issues)``."""
    proto, simplifier = _plain_graph(graph_model, opset=opset, tileable=tileable, simplify=simplify)
    proto, issues = _finish(proto, graph_model.config, tileable=tileable, allow_unsupported=allow_unsupported,
                            solver_chunk=solver_chunk, align_channels=align_channels)
    return proto, simplifier, issues


def _plain_graph(graph_model, *, opset: int, tileable: bool, simplify: bool):
    """Capture and translate the folded model, name its dynamic axes, simplify: ``(ModelProto, simplifier record)``."""
    import torch

    from lso.export import passes

    log.info("capturing the model with torch.export (dynamic batch, H, W, h, w%s)", ", extent" if tileable else "")
    args = trace_inputs(graph_model.config, tileable=tileable)
    with torch.no_grad():
        exported = _capture(graph_model, args, tileable)
        log.info("translating to ONNX opset %d", opset)
        proto = _translate(exported, args, opset)
    axes = io_spec.dynamic_axes(tileable=tileable)
    proto = passes.name_dynamic_axes(proto, axes)
    simplifier: dict[str, Any] = {"tool": "onnxslim", "version": _version("onnxslim"), "applied": False}
    if simplify:
        try:
            proto = passes.name_dynamic_axes(passes.simplify(proto), axes)
            simplifier["applied"] = True
        except ExportError as exc:
            log.warning("%s; keeping the unsimplified graph", exc)
            simplifier["error"] = str(exc)
    return proto, simplifier


def _finish(proto, cfg: LSOConfig, *, tileable: bool, allow_unsupported: bool, solver_chunk: int | None = None,
            align_channels: int | None = None):
    """The CPU passes asked for (alignment first), the metadata, the TensorRT lint and the ONNX checker on the
    plain graph ``proto`` (modified in place): ``(ModelProto, lint issues)``."""
    onnx = require("onnx")
    from lso.export import lint, passes
    from lso.export.cpu_tuning import GraphOptions, apply_graph_options

    proto = apply_graph_options(proto, GraphOptions(solver_chunk or None, align_channels or None))
    inputs, outputs = io_spec.tensor_specs(cfg, tileable=tileable)
    proto = passes.annotate(proto, {"lso.config": cfg.to_json(), "lso.tileable": str(tileable).lower(),
                                    "lso.inputs": ",".join(s.name for s in inputs)},
                            doc=f"LSO fusion ({_describe(inputs, outputs)}), exported by lso-deploy")
    issues = lint.check_trt_support(proto, allow_unsupported=allow_unsupported)
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the exported graph is not valid ONNX: {exc}") from exc
    return proto, issues


# ------------------------------------------------------------------------------------------- helpers
def _spec_dict(spec) -> dict:
    return {"name": spec.name, "dtype": spec.dtype, "shape": list(spec.shape), "doc": spec.doc}


def _describe(inputs, outputs) -> str:
    def one(spec) -> str:
        return f"{spec.name} [{', '.join(map(str, spec.shape))}]"

    return ", ".join(one(s) for s in inputs) + " -> " + ", ".join(one(s) for s in outputs)


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # not installed or no metadata
        return None


def _versions() -> dict[str, str | None]:
    """The sidecar's ``versions`` (:func:`lso.artifacts.tool_versions`), torch's as ``torch.__version__`` says it;
    keys in the order lso-deploy, python, torch, onnx, onnxscript, onnxslim, onnxruntime."""
    import torch

    tools = tool_versions("onnx", "onnxscript", "onnxslim", "onnxruntime")
    return {**tool_versions(), "torch": torch.__version__, **tools}
