"""The largest intermediate tensor of an ONNX graph at a given shape profile, against TensorRT's limit.

TensorRT refuses (or its convolution builder fails on) any tensor with 2³¹ or more elements
(NVIDIA/TensorRT issues #4123 and #4408), whatever the precision. The widest tensors of LSO are
192-channel full-resolution ones (the spectral blocks' key/value/query convolution and its patch
views, which exist only in the exported graph), so the limit binds at B·H·W ≈ 11.1 M: batch 4 at
2048² is 3.2e9 elements, batch 4 at 1024² is 0.8e9.

Shapes come from shape inference on *the graph being built* (ONNX Runtime's symbolic shape inference,
which follows the shape arithmetic of the bicubic matrices and the patch reshapes), never from the
eager model: export-only rewrites make tensors the eager model does not have.

::

    from lso.export.tensor_limits import largest_tensor, check_profiles
    big = largest_tensor("model.onnx", {"hr_msi": (4, 3, 1024, 1024), "lr_hsi": (4, 31, 256, 256)})
    big.elements, big.nbytes("fp16")          # 805306368, 1610612736
    check_profiles("model.onnx", profiles)     # InputError before any build if a max shape is too large
"""
from __future__ import annotations

import copy
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from lso import io_spec
from lso.errors import ArtifactError, InputError

__all__ = ["TRT_MAX_ELEMENTS", "TensorSize", "tensor_sizes", "largest_tensor", "check_profiles", "largest_fitting_side",
           "BYTES_PER_ELEMENT"]

log = logging.getLogger(__name__)

#: Largest element count TensorRT accepts in one tensor (volumes must stay below 2³¹).
TRT_MAX_ELEMENTS = io_spec.MAX_TENSOR_ELEMENTS
BYTES_PER_ELEMENT = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1}

PathLike: TypeAlias = str | os.PathLike


@dataclass(frozen=True)
class TensorSize:
    """One tensor of the graph at fixed input shapes: its name, shape and element count."""

    name: str
    shape: tuple[int, ...]

    @property
    def elements(self) -> int:
        return math.prod(self.shape)

    def nbytes(self, precision: str = "fp32") -> int:
        """Bytes at ``precision`` (``fp32``, ``fp16``/``bf16``, ``int8``)."""
        return self.elements * BYTES_PER_ELEMENT[precision]

    def describe(self) -> str:
        gib = {p: self.nbytes(p) / 2**30 for p in ("fp32", "fp16")}
        return (f"{self.name} [{', '.join(map(str, self.shape))}] = {self.elements:,} elements "
                f"({gib['fp32']:.2f} GiB FP32, {gib['fp16']:.2f} GiB FP16)")


def _load(model: Any) -> Any:
    from lso.deps import require

    onnx = require("onnx")
    if isinstance(model, onnx.ModelProto):
        return model
    try:
        return onnx.load(str(model))
    except Exception as exc:  # protobuf raises its own errors
        raise ArtifactError(f"cannot read {model} as ONNX ({exc}); re-export it") from exc


def tensor_sizes(model: Any, shapes: Mapping[str, Sequence[int]]) -> list[TensorSize]:
    """Every tensor of ``model`` (path or ``ModelProto``) with ``shapes`` given to its inputs, largest first.

    Args:
        model: the ONNX graph that will be built (its export-only rewrites included).
        shapes: a full shape for each graph input (``hr_msi``, ``lr_hsi``; ``extent`` is fixed at [4]).

    Raises:
        InputError: an input has no shape in ``shapes``, or shape inference leaves a tensor unresolved.
        MissingDependencyError: onnx/onnxruntime missing (the ``onnx`` extra).
    """
    from lso.deps import require

    require("onnxruntime")
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    proto = copy.deepcopy(_load(model))
    inits = {i.name for i in proto.graph.initializer}
    for inp in proto.graph.input:
        if inp.name in inits:
            continue
        dims = inp.type.tensor_type.shape.dim
        if inp.name == io_spec.EXTENT:
            continue
        if inp.name not in shapes:
            raise InputError(f"no shape given for graph input {inp.name!r}; give one for each of "
                             f"{[i.name for i in proto.graph.input if i.name not in inits]}")
        shape = tuple(int(d) for d in shapes[inp.name])
        if len(shape) != len(dims):
            raise InputError(f"{inp.name}: shape {shape} has rank {len(shape)}, the graph's input has rank {len(dims)}")
        for dim, value in zip(dims, shape, strict=True):
            dim.Clear()
            dim.dim_value = value
    try:
        inferred = SymbolicShapeInference.infer_shapes(proto, auto_merge=True, guess_output_rank=False)
    except Exception as exc:  # the tool raises plain Exceptions on graphs it cannot follow
        raise InputError(f"shape inference failed at {dict(shapes)} ({type(exc).__name__}: {exc})") from exc
    sizes, unresolved = [], []
    for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        if vi.name in inits or not vi.type.HasField("tensor_type"):
            continue
        dims = vi.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            sizes.append(TensorSize(vi.name, tuple(int(d.dim_value) for d in dims)))
        else:
            unresolved.append(vi.name)
    if unresolved:
        log.debug("shape inference left %d tensor(s) symbolic, first %s", len(unresolved), unresolved[:5])
    sizes.sort(key=lambda t: t.elements, reverse=True)
    return sizes


def largest_tensor(model: Any, shapes: Mapping[str, Sequence[int]]) -> TensorSize:
    """The largest tensor of ``model`` at input ``shapes`` (see :func:`tensor_sizes`)."""
    sizes = tensor_sizes(model, shapes)
    if not sizes:
        raise InputError(f"shape inference resolved no tensor at {dict(shapes)}")
    return sizes[0]


def _shapes_at(batch: int, side: int, ratio: int, n_msi: int, n_bands: int) -> dict[str, tuple[int, ...]]:
    return {io_spec.HR_MSI: (batch, n_msi, side, side), io_spec.LR_HSI: (batch, n_bands, side // ratio, side // ratio)}


def largest_fitting_side(model: Any, *, batch: int = 1, ratio: int = 4, limit: int | None = None,
                         multiple: int | None = None, n_msi: int = 3, n_bands: int = 31) -> int:
    """The largest square HR side (a multiple of ``4·ratio`` by default) whose largest tensor is within ``limit``.

    This is the largest tile (window, overlap included) or max profile shape a TensorRT build can take at
    ``batch``. Found by bisection on shape inference of ``model`` itself.
    """
    limit = TRT_MAX_ELEMENTS if limit is None else limit
    proto = _load(model)
    step = multiple or 4 * ratio
    lo, hi = 0, step
    while largest_tensor(proto, _shapes_at(batch, hi, ratio, n_msi, n_bands)).elements <= limit:
        lo, hi = hi, hi * 2
    while hi - lo > step:
        mid = (lo + hi) // 2 // step * step
        if largest_tensor(proto, _shapes_at(batch, mid, ratio, n_msi, n_bands)).elements <= limit:
            lo = mid
        else:
            hi = mid
    return lo


def check_profiles(model: Any, profiles: Sequence[io_spec.ShapeProfile], *,
                   limit: int | None = None) -> list[TensorSize]:
    """The largest tensor at each profile's max shapes; InputError before any build if one exceeds ``limit``.

    A graph without the LSO inputs (``hr_msi``, ``lr_hsi``) is not checked (a warning says so; empty list).

    The error names the tensor, its size, the limit and two fixes: a smaller max shape (the largest square
    one that fits at the profile's max batch) or tiled fusion with windows that fit (the tile size is
    computed for batch 1 at the profile's ratio).
    """
    limit = TRT_MAX_ELEMENTS if limit is None else limit
    proto = _load(model)
    inits = {i.name for i in proto.graph.initializer}
    names = {i.name for i in proto.graph.input if i.name not in inits}
    if not set(io_spec.INPUT_NAMES) <= names:
        log.warning("the graph has inputs %s, not %s: the largest-tensor check (TensorRT's 2^31-element limit) is "
                    "skipped", sorted(names), list(io_spec.INPUT_NAMES))
        return []
    out = []
    for i, prof in enumerate(profiles):
        try:
            big = largest_tensor(proto, prof.max)
        except InputError as exc:  # e.g. a Scan body (CPU-tuned graph) the symbolic inference cannot follow
            log.warning("the largest-tensor check could not run (%s); TensorRT itself refuses tensors of 2^31 "
                        "elements or more", exc)
            return []
        out.append(big)
        if big.elements <= limit:
            continue
        hr, lr = prof.max[io_spec.HR_MSI], prof.max[io_spec.LR_HSI]
        ratio = max(io_spec.MIN_RATIO, int(hr[-1]) // max(1, int(lr[-1])))
        n_msi, n_bands = int(hr[1]), int(lr[1])
        side = largest_fitting_side(proto, batch=int(hr[0]), ratio=ratio, limit=limit, n_msi=n_msi, n_bands=n_bands)
        tile_side = largest_fitting_side(proto, batch=1, ratio=ratio, limit=limit, n_msi=n_msi, n_bands=n_bands)
        where = f"profile {i} max" if len(profiles) > 1 else "the max profile"
        raise InputError(
            f"{where} ({prof.describe(io_spec.HR_MSI)}; {prof.describe(io_spec.LR_HSI)}) makes tensor "
            f"{big.describe()}, over TensorRT's limit of {limit:,} elements per tensor: the build "
            f"would fail. Fix: a smaller max shape, e.g. --max-shapes "
            f"hr_msi:{hr[0]}x{n_msi}x{side}x{side},lr_hsi:{lr[0]}x{n_bands}x{side // ratio}x{side // ratio} "
            f"(the largest square one that fits at batch {hr[0]}, x{ratio}); larger scenes then go through exact "
            f"tiled fusion (lso.runtime.fuse_tiled / lso infer --tile) with windows of at most {tile_side}x{tile_side} "
            f"at batch 1 (export the graph with --tileable)")
    return out
