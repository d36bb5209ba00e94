"""What a graph is meant for: one vocabulary (``portable``, ``tensorrt``, ``cpu``) and the passes applied.

- ``portable``: the plain export; every runtime runs it (TensorRT, ONNX Runtime on any provider, OpenVINO).
- ``tensorrt``: the plain export, asked for TensorRT (``lso export --target tensorrt``): every node passes
  the TensorRT parser table, no override.
- ``cpu``: tuned for a CPU runtime: CPU-only passes applied (``align_conv_channels``, ``chunk_solver``)
  or the ``cpu`` INT8 flavour (asymmetric uint8). It runs anywhere ONNX Runtime runs, but it is not
  for TensorRT: the zero channels cost real work on a GPU, a ``Scan`` defeats TensorRT's fusion and
  TensorRT's INT8 needs symmetric zero points.

The variant and the passes live in the graph's own metadata (``metadata_props``: ``lso.variant``,
``lso.passes`` as a JSON list), written by the export and by every pass, and in the export sidecar. A
graph that carries neither (made before the vocabulary, or re-saved by another tool) is classified from its
sidecar and its structure. Consumers that target TensorRT (``lso build``, ``--print-trtexec``,
``lso triton-repo --plan``, ``python -m lso.export.lint``) call :func:`require_tensorrt_graph`.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

from lso.errors import InputError

__all__ = ["VARIANTS", "CPU_PASSES", "META_VARIANT", "META_PASSES", "GraphVariant", "read_variant", "mark_pass",
           "set_variant", "require_tensorrt_graph", "TRT_EXPORT_COMMAND"]

VARIANTS = ("portable", "tensorrt", "cpu")
#: Passes that make a graph CPU-only (their names as recorded in ``lso.passes``).
CPU_PASSES = ("align_conv_channels", "chunk_solver", "int8_cpu_flavour")
META_VARIANT = "lso.variant"
META_PASSES = "lso.passes"
#: The command that makes a graph for TensorRT (named in every refusal).
TRT_EXPORT_COMMAND = ("lso export --checkpoint CKPT --out model.onnx --target tensorrt "
                      "(no --solver-chunk/--align-channels)")

PathLike: TypeAlias = str | os.PathLike


@dataclass(frozen=True)
class GraphVariant:
    """A graph's variant, the passes applied to it, and where that was read (``metadata``, ``sidecar``,
    ``structure``)."""

    name: str
    passes: tuple[str, ...] = ()
    source: str = "metadata"

    @property
    def cpu_only(self) -> bool:
        return self.name == "cpu"

    def describe(self) -> str:
        return f"{self.name}" + (f" (passes: {', '.join(self.passes)})" if self.passes else "")


def _props(proto: Any) -> dict[str, str]:
    return {p.key: p.value for p in proto.metadata_props}


def _put(proto: Any, key: str, value: str) -> None:
    for prop in proto.metadata_props:
        if prop.key == key:
            prop.value = value
            return
    entry = proto.metadata_props.add()
    entry.key, entry.value = key, value


def set_variant(proto: Any, name: str, passes: Sequence[str] = ()) -> Any:
    """Record ``name`` and ``passes`` in ``proto``'s metadata (in place); returns ``proto``."""
    if name not in VARIANTS:
        raise InputError(f"graph variant must be one of {VARIANTS}, got {name!r}")
    if name != "cpu" and any(p.split(":")[0] in CPU_PASSES for p in passes):
        raise InputError(f"a {name!r} graph cannot carry the CPU-only passes {list(passes)}")
    _put(proto, META_VARIANT, name)
    _put(proto, META_PASSES, json.dumps(list(passes)))
    return proto


def mark_pass(proto: Any, name: str, argument: Any = None) -> Any:
    """Append pass ``name`` (``name:argument``) to ``proto``'s recorded passes; a CPU-only pass makes it ``cpu``."""
    props = _props(proto)
    try:
        passes = list(json.loads(props.get(META_PASSES, "[]")))
    except ValueError:
        passes = []
    passes.append(name if argument is None else f"{name}:{argument}")
    variant = "cpu" if name in CPU_PASSES else props.get(META_VARIANT, "portable")
    return set_variant(proto, variant if variant in VARIANTS else "portable", passes)


def _structure(proto: Any) -> list[str]:
    """CPU-only passes visible in the graph itself (for graphs without metadata)."""
    from onnx import TensorProto

    found = []
    if any(n.op_type == "Scan" for n in proto.graph.node):
        found.append("chunk_solver")
    uint8_zp = {i.name for i in proto.graph.initializer if i.data_type == TensorProto.UINT8}
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2 and n.input[2] in uint8_zp
           for n in proto.graph.node):
        found.append("int8_cpu_flavour")
    return found


def read_variant(model: Any | PathLike) -> GraphVariant:
    """The variant of an ONNX graph (a path or a ``ModelProto``): its metadata, else its sidecar, else its structure."""
    from lso.deps import require

    onnx = require("onnx")
    path: Path | None = None
    if not isinstance(model, onnx.ModelProto):
        path = Path(model)
        model = onnx.load(str(path), load_external_data=False)
    props = _props(model)
    if props.get(META_VARIANT) in VARIANTS:
        try:
            recorded = tuple(json.loads(props.get(META_PASSES, "[]")))
        except ValueError:
            recorded = ()
        return GraphVariant(props[META_VARIANT], recorded, "metadata")
    passes: list[str] = []
    source = "structure"
    if path is not None:
        from lso.artifacts import read_sidecar

        side = read_sidecar(path, verify=False) or {}
        if side.get("variant") in VARIANTS:
            return GraphVariant(side["variant"], tuple(side.get("passes") or ()), "sidecar")
        if side.get("align_channels"):
            passes.append(f"align_conv_channels:{side['align_channels']}")
            source = "sidecar"
        if side.get("solver_chunk"):
            passes.append(f"chunk_solver:{side['solver_chunk']}")
            source = "sidecar"
        if side.get("flavour") == "cpu":
            passes.append("int8_cpu_flavour")
            source = "sidecar"
    names = {p.split(":")[0] for p in passes}
    passes += [p for p in _structure(model) if p not in names]
    return GraphVariant("cpu" if passes else "portable", tuple(passes), source)


def require_tensorrt_graph(model: Any | PathLike, *, consumer: str, allow: bool = False) -> GraphVariant:
    """Refuse a CPU-tuned graph where TensorRT is the target (``allow`` overrides, with a log warning).

    Raises:
        InputError: the graph is the ``cpu`` variant; the message names the export command that makes the
            right graph and the override.
    """
    variant = read_variant(model)
    if variant.cpu_only:
        name = Path(model).name if isinstance(model, (str, os.PathLike)) else "the graph"
        message = (f"{name} is a CPU-tuned graph ({variant.describe()}; read from its {variant.source}), not for "
                   f"TensorRT: {consumer} needs the portable or tensorrt export: {TRT_EXPORT_COMMAND}")
        if not allow:
            raise InputError(message + " (--allow-cpu-graph builds it anyway)")
        import logging

        logging.getLogger(__name__).warning("%s (allowed by --allow-cpu-graph)", message)
    return variant
