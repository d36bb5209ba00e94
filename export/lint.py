"""TensorRT parseability lint: check every node of an ONNX graph against TensorRT's ONNX parser table.

The table (``trt_onnx_ops.csv`` beside this module, described in ``trt_onnx_ops.md``) is the
onnx-tensorrt ``docs/operators.md`` of TensorRT 10.15 (opsets 9-24) as data: one row per ONNX
operator with Y/N support, the float types it runs in and its restrictions. The lint needs neither
TensorRT nor a GPU; it does not replace a real ``trtexec --onnx`` parse, it catches before one what
the documentation already rules out:

- an ``ai.onnx`` opset outside 9-24;
- a node whose operator is missing from the table or marked unsupported (``Col2Im``, ``DFT``, ...),
  or lives in a domain TensorRT knows nothing about (it would need a plugin);
- the restrictions TensorRT states for supported operators, as far as the graph shows them (Resize
  modes and no antialias, CumSum/Reduce*/Squeeze axes that are not constants, TopK, Q/DQ zero points, ...);
- a node computing in a float type (fp32/fp16) that the table does not list for its operator.

Subgraphs (If/Loop/Scan bodies) and model-local functions are walked too. ``python -m lso.export.lint
model.onnx`` runs it from the shell.
"""
from __future__ import annotations

import csv
import logging
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from lso.deps import require
from lso.errors import ArtifactError, ExportError
from lso.export import graph_query

if TYPE_CHECKING:  # pragma: no cover
    import onnx

__all__ = ["OpSupport", "LintIssue", "load_op_table", "lint_model", "check_trt_support", "TRT_OPSETS", "main"]

log = logging.getLogger(__name__)

TABLE_FILE = "trt_onnx_ops.csv"
TABLE_SOURCE = "onnx-tensorrt docs/operators.md (TensorRT 10.15, ONNX opsets 9-24)"
TRT_OPSETS = range(9, 25)
_DEFAULT_DOMAINS = ("", "ai.onnx")

_RESIZE_MODES = {"nearest", "linear", "cubic"}
_RESIZE_COORDS = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}
_TYPE_JUDGED_BY_NOTES = {"QuantizeLinear", "DequantizeLinear", "Cast", "CastLike", "Shape", "Size", "Constant",
                         "ConstantOfShape", "Identity"}


@dataclass(frozen=True)
class OpSupport:
    """One row of the table: is ``op_type`` parsed, in which float types, with which restrictions."""

    op_type: str
    supported: bool
    fp32: bool
    fp16: bool
    int8: bool
    notes: str = ""


@dataclass(frozen=True)
class LintIssue:
    """A node (or the model, ``node=None``) that TensorRT's ONNX parser will refuse or may refuse."""

    node: str | None
    op_type: str
    reason: str

    def __str__(self) -> str:
        where = f"node {self.node!r} ({self.op_type})" if self.node is not None else f"model ({self.op_type})"
        return f"{where}: {self.reason}"


def load_op_table(path: str | os.PathLike | None = None) -> dict[str, OpSupport]:
    """Read the operator table (default: the copy shipped in ``lso.export``)."""
    try:
        if path is None:
            text = resources.files("lso.export").joinpath(TABLE_FILE).read_text(encoding="utf-8")
        else:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
    except OSError as exc:
        raise ArtifactError(f"cannot read the TensorRT operator table {path or TABLE_FILE}: {exc}") from exc
    table = {}
    for row in csv.DictReader(text.splitlines()):
        table[row["op_type"]] = OpSupport(
            op_type=row["op_type"], supported=row["supported"] == "Y", fp32=row["fp32"] == "Y",
            fp16=row["fp16"] == "Y", int8=row["int8"] == "Y", notes=row.get("notes") or "",
        )
    if not table:
        raise ArtifactError(f"the TensorRT operator table {path or TABLE_FILE} is empty")
    return table


# ---------------------------------------------------------------------------------------------- walking
@dataclass
class _Scope:
    """What the lint knows about one graph: constant tensor names and element types."""

    constants: dict  # name -> numpy array or None (constant, value unknown)
    types: Mapping[str, int]


def _graph_scope(graph, types: Mapping[str, int]) -> _Scope:
    return _Scope(graph_query.constants(graph, values=True), types)


def _walk(graph, types, onnx_mod) -> Iterator[tuple[Any, _Scope]]:
    scope = _graph_scope(graph, types)
    for node in graph.node:
        yield node, scope
        for attr in node.attribute:
            if attr.type == onnx_mod.AttributeProto.GRAPH:
                yield from _walk(attr.g, types, onnx_mod)
            elif attr.type == onnx_mod.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _walk(sub, types, onnx_mod)


# ------------------------------------------------------------------------------------------- the rules
def _attr(node, name: str, default=None):
    for attr in node.attribute:
        if attr.name == name:
            return require("onnx").helper.get_attribute_value(attr)
    return default


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _input(node, index: int) -> str | None:
    return node.input[index] if len(node.input) > index and node.input[index] else None


def _restrictions(node, scope: _Scope, opset: int) -> list[str]:
    """The table's notes, checked where the graph shows them."""
    op = node.op_type
    problems = []

    def must_be_constant(index: int, what: str) -> None:
        name = _input(node, index)
        if name is not None and name not in scope.constants:
            problems.append(f"{what} must be a build-time constant (initializer or Constant), got tensor {name!r}")

    if op == "Resize":
        if int(_attr(node, "antialias", 0)):
            problems.append("antialias=1 (antialiased resize) is not supported")
        mode = _text(_attr(node, "mode", b"nearest"))
        if mode not in _RESIZE_MODES:
            problems.append(f"mode={mode!r} is not one of {sorted(_RESIZE_MODES)}")
        coords = _text(_attr(node, "coordinate_transformation_mode", b"half_pixel"))
        if coords not in _RESIZE_COORDS:
            problems.append(f"coordinate_transformation_mode={coords!r} is not one of {sorted(_RESIZE_COORDS)}")
        policy = _text(_attr(node, "keep_aspect_ratio_policy", b"stretch"))
        if policy != "stretch":
            problems.append(f"keep_aspect_ratio_policy={policy!r}: only 'stretch' is supported")
        axes = _attr(node, "axes")
        if axes is not None and list(axes) != list(range(len(axes))):
            problems.append(f"axes={list(axes)}: scales/sizes must cover all dimensions in order")
    elif op == "CumSum":
        must_be_constant(1, "axis")
    elif op.startswith("Reduce") and opset >= 13 and (op == "ReduceSum" or opset >= 18):
        must_be_constant(1, "axes")
    elif op in ("Squeeze", "Unsqueeze") and opset >= 13:
        must_be_constant(1, "axes")
    elif op == "OneHot":
        must_be_constant(1, "depth")
    elif op == "TopK":
        if int(_attr(node, "sorted", 1)) != 1:
            problems.append("sorted=0 is not supported (must be 1)")
        k_name = _input(node, 1)
        k = scope.constants.get(k_name) if k_name else None
        if k_name and k_name not in scope.constants:
            problems.append(f"K must be a build-time constant, got tensor {k_name!r}")
        elif k is not None and int(k.reshape(-1)[0]) >= 3840:
            problems.append(f"K={int(k.reshape(-1)[0])} must be < 3840")
    elif op in ("QuantizeLinear", "DequantizeLinear"):
        zp_name = _input(node, 2)
        if zp_name is not None:
            zp = scope.constants.get(zp_name)
            if zp_name not in scope.constants:
                problems.append(f"zero point {zp_name!r} must be a constant 0")
            elif zp is not None and zp.size and bool((zp != 0).any()):
                problems.append("zero point must be 0 (symmetric quantization only)")
    elif op == "Dropout":
        mode_name = _input(node, 2)
        if mode_name is not None:
            training_mode = scope.constants.get(mode_name)
            if mode_name not in scope.constants or (training_mode is not None
                                                    and bool(training_mode.reshape(-1)[0])):
                problems.append("training_mode must be an initializer equal to False")
    elif op == "Constant":
        if _attr(node, "sparse_value") is not None or _attr(node, "value_string") is not None \
                or _attr(node, "value_strings") is not None:
            problems.append("sparse or string constants are not supported")
    elif op == "LayerNormalization":
        if len([o for o in node.output if o]) > 1:
            problems.append("only the first output (Y) is supported, not Mean/InvStdDev")
    elif op == "MaxPool":
        if len([o for o in node.output if o]) > 1:
            problems.append("the Indices output is not supported")
    return problems


def _float_type_problem(node, scope: _Scope, support: OpSupport) -> str | None:
    if node.op_type in _TYPE_JUDGED_BY_NOTES:
        return None
    for name in node.input:
        elem = scope.types.get(name) if name else None
        if elem == graph_query.FLOAT and not support.fp32:
            return f"computes in float32, which the table does not list for {node.op_type}"
        if elem == graph_query.FLOAT16 and not support.fp16:
            return f"computes in float16, which the table does not list for {node.op_type}"
        if elem is not None:
            return None  # judged by the first typed input
    return None


def lint_model(model: onnx.ModelProto | str | os.PathLike, *,
               table: Mapping[str, OpSupport] | None = None) -> list[LintIssue]:
    """Every reason TensorRT's ONNX parser (10.15 table) would refuse ``model``; empty if none.

    Args:
        model: a ``ModelProto`` or the path of an ``.onnx`` file.
        table: operator table (default: :func:`load_op_table`).
    """
    onnx = require("onnx")
    from onnx import ModelProto

    if isinstance(model, ModelProto):
        proto = model
    else:
        try:
            proto = onnx.load(str(model), load_external_data=False)
        except Exception as exc:
            raise ArtifactError(f"cannot read ONNX model {model}: {exc}") from exc
    table = table if table is not None else load_op_table()
    issues: list[LintIssue] = []
    opset = next((o.version for o in proto.opset_import if o.domain in _DEFAULT_DOMAINS), None)
    if opset is None or opset not in TRT_OPSETS:
        issues.append(LintIssue(None, "opset", f"ai.onnx opset {opset} is outside TensorRT's supported "
                                              f"{TRT_OPSETS.start}-{TRT_OPSETS.stop - 1}"))
        opset = opset or 0
    functions = {(f.domain, f.name): f for f in proto.functions}
    types = graph_query.tensor_types(proto, strict=False)  # best effort: float-type checks use what it finds

    graphs = [proto.graph] + [onnx.helper.make_graph(list(f.node), f.name, [], []) for f in proto.functions]
    for graph in graphs:
        for node, scope in _walk(graph, types, onnx):
            name = node.name or (node.output[0] if node.output else "?")
            if (node.domain, node.op_type) in functions:
                continue  # a call to a model-local function: its body is walked on its own
            if node.domain not in _DEFAULT_DOMAINS:
                issues.append(LintIssue(name, f"{node.domain}::{node.op_type}",
                                        f"domain {node.domain!r} is not ai.onnx: TensorRT needs a registered plugin"))
                continue
            support = table.get(node.op_type)
            if support is None:
                issues.append(LintIssue(name, node.op_type, "not in TensorRT's ONNX parser operator table"))
                continue
            if not support.supported:
                issues.append(LintIssue(name, node.op_type, f"not supported by TensorRT's ONNX parser "
                                                            f"({support.notes or 'marked N'})"))
                continue
            for problem in _restrictions(node, scope, opset):
                issues.append(LintIssue(name, node.op_type, problem))
            type_problem = _float_type_problem(node, scope, support)
            if type_problem:
                issues.append(LintIssue(name, node.op_type, type_problem))
    return issues


def check_trt_support(model, *, allow_unsupported: bool = False,
                      table: Mapping[str, OpSupport] | None = None) -> list[LintIssue]:
    """Run :func:`lint_model`; raise :class:`ExportError` naming the nodes unless ``allow_unsupported``.

    Returns the issues (empty when the graph passes; with ``allow_unsupported`` they are logged as
    warnings and returned).
    """
    issues = lint_model(model, table=table)
    if not issues:
        return issues
    listing = "\n".join(f"  - {issue}" for issue in issues[:20])
    more = f"\n  ... and {len(issues) - 20} more" if len(issues) > 20 else ""
    if not allow_unsupported:
        raise ExportError(
            f"{len(issues)} node(s) will not parse in TensorRT (checked against {TABLE_SOURCE}):\n{listing}{more}\n"
            "Rewrite or avoid those operators, or pass --allow-unsupported (allow_unsupported=True) to write "
            "the graph anyway (for ONNX Runtime only, or a TensorRT with plugins for them)."
        )
    log.warning("writing a graph TensorRT will not parse (--allow-unsupported):\n%s%s", listing, more)
    return issues


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m lso.export.lint model.onnx [...]``: print issues, exit 1 if any."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m lso.export.lint",
                                     description=f"Check ONNX graphs against {TABLE_SOURCE}.")
    parser.add_argument("models", nargs="+", help="ONNX files to check")
    parser.add_argument("--allow-cpu-graph", action="store_true",
                        help="check the operators of a CPU-tuned graph (the 'cpu' variant) without refusing it")
    args = parser.parse_args(argv)
    from lso.export.variants import TRT_EXPORT_COMMAND, read_variant

    status = 0
    for path in args.models:
        issues = [str(i) for i in lint_model(path)]
        variant = read_variant(path)
        if variant.cpu_only and not args.allow_cpu_graph:
            issues.insert(0, f"a CPU-tuned graph ({variant.describe()}), not for TensorRT: {TRT_EXPORT_COMMAND} "
                             f"(--allow-cpu-graph checks its operators only)")
        print(f"{path} [{variant.describe()}]: {'OK' if not issues else f'{len(issues)} issue(s)'}")
        for issue in issues:
            print(f"  - {issue}")
        status |= bool(issues)
    return status


if __name__ == "__main__":
    sys.exit(main())
