"""The FP32 graph a calibration starts from, and what the FP16 and INT8 paths both need to know about it.

- :func:`load_fp32_graph`: read and check the FP32 export (not already reduced, solver not chunked);
- :func:`graph_config`: the ``LSOConfig`` fields the export recorded (sidecar or graph metadata);
- :func:`mac_feed`: the small seeded feed convolution MACs are counted on;
- :func:`with_extent`: a feed completed with the full-image ``extent`` a tileable graph requires;
- :func:`tool_versions`: the versions recorded in the FP16 and INT8 sidecars.
"""
from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np

from lso import io_spec
from lso.deps import require
from lso.errors import InputError
from lso.export.graph_query import FLOAT16, has_chunked_solver

if TYPE_CHECKING:  # pragma: no cover
    import onnx

__all__ = ["load_fp32_graph", "graph_config", "mac_feed", "with_extent", "input_names", "tool_versions",
           "tool_version"]

PathLike: TypeAlias = str | os.PathLike


def load_fp32_graph(source: onnx.ModelProto | PathLike) -> tuple[onnx.ModelProto, dict]:
    """``(model, info)`` of the FP32 export at ``source`` (or a ``ModelProto``, info ``{"kind": "model"}``).

    ``info`` holds the path, its sha256 and its sidecar. Raises ``ArtifactError`` for a missing or
    unreadable file and ``InputError`` for a graph that is already FP16/INT8 or runs its solver in
    ``Scan`` chunks (where the precision passes cannot see it).
    """
    onnx = require("onnx")
    from lso.artifacts import read_sidecar, sha256_file
    from lso.errors import ArtifactError

    if isinstance(source, onnx.ModelProto):
        return source, {"kind": "model"}
    path = Path(source)
    if not path.is_file():
        raise ArtifactError(f"{path} does not exist: export the FP32 graph first (lso export --out {path.name})")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError etc.
        raise ArtifactError(f"cannot read {path} as ONNX ({exc}); re-export it") from exc
    side = read_sidecar(path) or {}
    if side.get("precision") not in (None, "fp32"):
        raise InputError(f"{path} is a {side.get('precision')} graph; convert the FP32 export (model.onnx)")
    if any(i.data_type == FLOAT16 for i in model.graph.initializer):
        raise InputError(f"{path} already holds FP16 weights; convert the FP32 export")
    if side.get("solver_chunk") or has_chunked_solver(model):
        raise InputError(f"{path} runs its solver in Scan chunks (exported with --solver-chunk), where the precision "
                         "passes cannot see it: calibrate a graph exported without --solver-chunk, then chunk the "
                         "result with lso.export.passes.chunk_solver if it is for ONNX Runtime on CPU")
    return model, {"kind": "onnx", "path": str(path), "sha256": sha256_file(path), "sidecar": side}


def graph_config(model: onnx.ModelProto, source: Mapping[str, Any]) -> dict | None:
    """The configuration the export recorded: its sidecar's ``config``, else the graph's ``lso.config`` metadata."""
    import json

    side = source.get("sidecar") or {}
    if isinstance(side.get("config"), dict):
        return side["config"]
    for prop in model.metadata_props:
        if prop.key == "lso.config":
            return json.loads(prop.value)
    return None


def input_names(model: onnx.ModelProto) -> list[str]:
    """Names of the graph's inputs that are not initializers."""
    inits = {i.name for i in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits]


def with_extent(feed: Mapping[str, np.ndarray], inputs: Collection[str]) -> dict[str, np.ndarray]:
    """``feed``, plus ``extent = (0, 0, H, W)`` (the whole image: the official grid) when the graph's ``inputs``
    include ``extent`` (a ``--tileable`` export) and ``feed`` has none."""
    out = dict(feed)
    if io_spec.EXTENT in inputs and io_spec.EXTENT not in out:
        height, width = np.shape(out[io_spec.HR_MSI])[-2:]
        out[io_spec.EXTENT] = np.array([0, 0, height, width], dtype=np.int64)
    return out


def mac_feed(config: Mapping[str, Any] | None, model: onnx.ModelProto | None = None) -> dict[str, np.ndarray]:
    """A small seeded x4 feed (64x64) for MAC counting; with ``extent`` when ``model`` takes one."""
    rng = np.random.default_rng(0)
    bands = int((config or {}).get("n_bands", 31))
    msi = int((config or {}).get("n_msi_bands", 3))
    feed = {io_spec.HR_MSI: rng.random((1, msi, 64, 64), dtype=np.float32),
            io_spec.LR_HSI: rng.random((1, bands, 16, 16), dtype=np.float32)}
    return with_extent(feed, input_names(model)) if model is not None else feed


def tool_version(dist: str) -> str | None:
    """The installed version of the distribution ``dist``, or None."""
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:  # not installed / no metadata
        return None


def tool_versions() -> dict[str, str | None]:
    """lso-deploy, Python, onnx, onnxruntime, onnxconverter-common and torch versions
    (:func:`lso.artifacts.tool_versions`)."""
    from lso import artifacts

    return artifacts.tool_versions("onnx", "onnxruntime", "onnxconverter-common", "torch")
