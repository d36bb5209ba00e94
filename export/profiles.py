"""Optimization profiles and build options of a TensorRT engine: shape specs, profile checks, :class:`BuildOptions`.

One definition shared by the builder (:mod:`lso.export.engine_builder`) and the trtexec recipe
(:mod:`lso.export.trtexec`). Profiles come from :mod:`lso.io_spec` (min/opt/max for both inputs),
overridable with trtexec-style shape specs (``hr_msi:1x3x512x512,lr_hsi:1x31x128x128``). Importing this
module imports neither onnx nor TensorRT.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeAlias

from lso import io_spec
from lso.errors import InputError
from lso.runtime.trt_support import HARDWARE_COMPATIBILITY

__all__ = ["PRECISIONS", "BuildOptions", "parse_shape_spec", "resolve_profiles", "format_shapes", "build_options",
           "check_tensor_limit"]

PathLike: TypeAlias = str | os.PathLike
PRECISIONS = ("fp32", "fp16", "int8")


def parse_shape_spec(text: str) -> dict[str, tuple[int, ...]]:
    """trtexec-style ``"hr_msi:1x3x512x512,lr_hsi:1x31x128x128"`` -> ``{name: shape}``."""
    out: dict[str, tuple[int, ...]] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, dims = part.rpartition(":")
        try:
            if not sep or not name:
                raise ValueError
            out[name.strip("'")] = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            raise InputError(f"shape spec {part!r}: expected NAME:DxDxDxD, e.g. hr_msi:1x3x512x512") from None
    return out


def format_shapes(shapes: Mapping[str, Sequence[int]]) -> str:
    """``{name: shape}`` -> the trtexec-style spec :func:`parse_shape_spec` reads."""
    return ",".join(f"{name}:{'x'.join(map(str, shape))}" for name, shape in shapes.items())


def resolve_profiles(profiles: Sequence[io_spec.ShapeProfile] | None = None, *,
                     min_shapes: Mapping[str, Sequence[int]] | None = None,
                     opt_shapes: Mapping[str, Sequence[int]] | None = None,
                     max_shapes: Mapping[str, Sequence[int]] | None = None,
                     config: Any = None) -> list[io_spec.ShapeProfile]:
    """The optimization profiles to build: ``profiles``, or the I/O spec's default with overrides.

    Each profile is checked: every input of :data:`lso.io_spec.INPUT_NAMES` present, ranks of 4, channel
    counts fixed, ``min <= opt <= max`` element-wise.
    """
    if profiles is None:
        base = io_spec.default_profile(config)
        shapes_of = {k: dict(getattr(base, k)) for k in ("min", "opt", "max")}
        for key, override in (("min", min_shapes), ("opt", opt_shapes), ("max", max_shapes)):
            for name, shape in (override or {}).items():
                if name not in io_spec.INPUT_NAMES:
                    raise InputError(f"profile override for unknown input {name!r}; "
                                     f"inputs: {list(io_spec.INPUT_NAMES)}")
                shapes_of[key][name] = tuple(int(d) for d in shape)
        profiles = [io_spec.ShapeProfile(**shapes_of)]
    for i, prof in enumerate(profiles):
        for name in io_spec.INPUT_NAMES:
            shapes = [getattr(prof, k).get(name) for k in ("min", "opt", "max")]
            if any(s is None for s in shapes):
                raise InputError(f"profile {i} lacks min/opt/max for {name}")
            if any(len(s) != 4 for s in shapes) or len({s[1] for s in shapes}) != 1:
                raise InputError(f"profile {i}, {name}: shapes must be [B, C, H, W] with one C, got {shapes}")
            lo, opt, hi = shapes
            if not all(a <= b <= c for a, b, c in zip(lo, opt, hi, strict=True)) or min(lo) < 1:
                raise InputError(f"profile {i}, {name}: need 1 <= min <= opt <= max per dimension; got "
                                 f"{prof.describe(name)}")
    return list(profiles)


@dataclass
class BuildOptions:
    """Everything the builder and the trtexec line take (one definition for both)."""

    profiles: Sequence[io_spec.ShapeProfile]
    workspace_gib: float = 4.0
    timing_cache: PathLike | None = None
    optimization_level: int = 3
    version_compatible: bool = False
    hardware_compatibility: str = "none"
    device: int = 0
    precision: str | None = None  # expected precision (default: read from the graph); checked after building

    def __post_init__(self) -> None:
        if not 0 <= int(self.optimization_level) <= 5:
            raise InputError(f"builder optimization level must be 0-5, got {self.optimization_level}")
        if self.workspace_gib <= 0:
            raise InputError(f"workspace must be positive, got {self.workspace_gib} GiB")
        hw = str(self.hardware_compatibility).lower().replace("-", "_").replace("+", "_plus")
        if hw not in HARDWARE_COMPATIBILITY:
            raise InputError(f"hardware compatibility must be one of {HARDWARE_COMPATIBILITY}, got "
                             f"{self.hardware_compatibility!r}")
        self.hardware_compatibility = hw
        if self.precision is not None and self.precision not in PRECISIONS:
            raise InputError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")

    @property
    def workspace_bytes(self) -> int:
        return int(self.workspace_gib * (1 << 30))


def build_options(onnx_path: PathLike, options: Mapping[str, Any]) -> BuildOptions:
    """:class:`BuildOptions` from keyword options: its fields, plus ``profiles`` or ``min_shapes``/``opt_shapes``/
    ``max_shapes`` overrides of the I/O spec's default profile (for the configuration the graph's sidecar records,
    or ``config``). Unknown keys are an InputError naming the known ones."""
    opts = dict(options)
    profiles = opts.pop("profiles", None)
    overrides = {k: opts.pop(k, None) for k in ("min_shapes", "opt_shapes", "max_shapes")}
    config = opts.pop("config", None)
    if config is None:
        from lso.artifacts import read_sidecar
        from lso.config import LSOConfig

        side = read_sidecar(Path(onnx_path), verify=False) or {}
        if isinstance(side.get("config"), dict):
            config = LSOConfig.from_dict(side["config"])
    known = {f.name for f in fields(BuildOptions)}
    unknown = set(opts) - known
    if unknown:
        raise InputError(f"unknown build option(s) {sorted(unknown)}; known: {sorted(known)}")
    return BuildOptions(profiles=resolve_profiles(profiles, config=config, **overrides), **opts)


def check_tensor_limit(onnx_path: PathLike, options: BuildOptions) -> list[Any]:
    """The largest tensor of the graph at each profile's max shapes; InputError if one is past TensorRT's limit.

    Returns :class:`lso.export.tensor_limits.TensorSize` per profile (empty for a graph without the LSO
    inputs, which is not checked).
    """
    from lso.export.tensor_limits import check_profiles

    return check_profiles(onnx_path, options.profiles)
