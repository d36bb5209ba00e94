"""Plan and sidecar I/O of the engine builder: what a plan's sidecar records, the output clash check, the write.

What :func:`write_plan` writes: ``<out>`` holds the serialized plan as plain bytes (``trtexec --loadEngine``
and ``polygraphy run`` load it), ``<out>.json`` the sidecar (:func:`plan_sidecar`): TensorRT version, GPU
name and compute capability, precision, profiles, version/hardware compatibility, the ONNX's sha256 and
the engine's layer precisions. The plan is written atomically, then its sidecar; a plan whose sidecar
could not be written is removed. The runner reads both back (:func:`lso.runtime.trt_runner.read_plan`,
:func:`lso.runtime.trt_runner.check_plan_sidecar`).
"""
from __future__ import annotations

import datetime
import logging
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lso.errors import ArtifactError
from lso.export.profiles import BuildOptions, PathLike
from lso.export.trtexec import trtexec_command
from lso.runtime.trt_support import version_tuple

__all__ = ["plan_sidecar", "check_build_clash", "write_plan"]

log = logging.getLogger(__name__)


def _graph_weights_fingerprint(onnx_path: Path) -> str | None:
    """The weights' fingerprint the graph records (None: exported before fingerprints were recorded)."""
    from lso.checkpoint import weights_fingerprint

    try:
        return weights_fingerprint(onnx_path)
    except ArtifactError as exc:
        log.warning("%s; the plan's sidecar records no weights fingerprint", exc)
        return None


def plan_sidecar(onnx_path: PathLike, out: PathLike, options: BuildOptions, *, precision: str, tensorrt_version: str,
                 gpu: Mapping[str, Any], layers: Mapping[str, Any], build_seconds: float) -> dict[str, Any]:
    """The sidecar of a plan (``write_sidecar`` adds the plan's sha256). Keys read by
    :func:`lso.runtime.trt_runner.check_plan_sidecar`: ``tensorrt_version``, ``compute_capability``,
    ``version_compatible``, ``hardware_compatibility``."""
    from lso.artifacts import read_sidecar, sha256_file
    from lso.export.variants import read_variant

    onnx_path = Path(onnx_path)
    source_side = read_sidecar(onnx_path, verify=False) or {}
    return {
        "stage": "build",
        "format": "tensorrt-plan",
        "precision": precision,
        "tensorrt_version": str(tensorrt_version),
        "gpu": gpu.get("gpu"),
        "compute_capability": gpu.get("compute_capability"),
        "device": gpu.get("device"),
        "version_compatible": bool(options.version_compatible),
        "hardware_compatibility": options.hardware_compatibility,
        "strongly_typed": True,
        "tf32": False,  # cleared (Polygraphy's CreateConfig default; trtexec --noTF32): FP32 layers compute in FP32
        "builder_optimization_level": int(options.optimization_level),
        "workspace_bytes": options.workspace_bytes,
        "timing_cache": str(options.timing_cache) if options.timing_cache else None,
        "profiles": [p.to_dict() for p in options.profiles],
        "config": source_side.get("config"),
        "weights_sha256": _graph_weights_fingerprint(onnx_path),
        "source": {"path": str(onnx_path), "sha256": sha256_file(onnx_path),
                   "precision": source_side.get("precision"), "flavour": source_side.get("flavour"),
                   "variant": read_variant(onnx_path).name},
        "layers": dict(layers),
        "build_seconds": round(float(build_seconds), 1),
        "trtexec_equivalent": shlex.join(trtexec_command(onnx_path, out, options,
                                                         trt_major=version_tuple(str(tensorrt_version))[0])),
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def check_build_clash(onnx: PathLike, out: PathLike, timing_cache: PathLike | None = None) -> None:
    """InputError when the plan, its sidecar or the timing cache (read and rewritten) would be written over the
    ONNX graph or its sidecar (see :func:`lso.artifacts.check_no_clash`)."""
    from lso.artifacts import check_no_clash, sidecar_path, with_sidecars

    check_no_clash(with_sidecars([onnx], "input graph"),
                   [("plan", out), ("plan sidecar", sidecar_path(out)), ("timing cache", timing_cache)])


def write_plan(out: PathLike, plan: bytes, info: Mapping[str, Any]) -> Path:
    """Write the plan bytes atomically, then its sidecar ``info`` (plus the plan's sha256); no sidecar, no plan."""
    from lso.artifacts import atomic_path, write_sidecar

    out = Path(out)
    with atomic_path(out) as tmp:
        tmp.write_bytes(plan)  # plain plan bytes: trtexec --loadEngine and polygraphy read them as they are
    try:
        write_sidecar(out, dict(info))
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    return out
