"""THE input/output contract: tensor names, layouts, dtypes, dynamic axes and shape profiles.

Export, engine building, runners, calibration and benchmarks all read this module; nothing else
hard-codes an input name or a profile.

- Inputs, in this order: ``hr_msi [B, 3, H, W]``, ``lr_hsi [B, 31, h, w]``; optional tileable input
  ``extent`` int64 ``[4]`` = ``(row0, col0, H_full, W_full)``. Output: ``hr_hsi [B, 31, H, W]``.
- NCHW float32, values in [0, 1], bands 400 -> 700 nm. ``r = H / h = W / w`` is any integer >= 2, read
  from the shapes; H and W need not be multiples of anything (the model pads internally).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from lso.config import LSOConfig
from lso.errors import InputError

__all__ = ["HR_MSI", "LR_HSI", "EXTENT", "HR_HSI", "INPUT_NAMES", "OUTPUT_NAMES", "TensorSpec", "ShapeProfile",
           "tensor_specs", "dynamic_axes", "default_profile", "infer_ratio", "MIN_RATIO", "PROFILE_BATCH", "PROFILE_HR",
           "PROFILE_LR", "MAX_TENSOR_ELEMENTS", "describe_profile"]

HR_MSI = "hr_msi"
LR_HSI = "lr_hsi"
EXTENT = "extent"
HR_HSI = "hr_hsi"
INPUT_NAMES: tuple[str, str] = (HR_MSI, LR_HSI)
OUTPUT_NAMES: tuple[str] = (HR_HSI,)
MIN_RATIO = 2

#: The default optimization profile (:func:`default_profile`), (min, opt, max): the batch, the HR-MSI and the
#: LR-HSI (height, width). The one place these numbers live; help texts print them with :func:`describe_profile`.
PROFILE_BATCH: tuple[int, int, int] = (1, 1, 4)
PROFILE_HR: tuple[tuple[int, int], tuple[int, int], tuple[int, int]] = ((32, 32), (512, 512), (1024, 1024))
PROFILE_LR: tuple[tuple[int, int], tuple[int, int], tuple[int, int]] = ((1, 1), (128, 128), (512, 512))
#: TensorRT's limit on the elements of one tensor (every tensor must stay under 2**31; see :func:`default_profile`)
MAX_TENSOR_ELEMENTS = 2**31 - 1

# symbolic dimension names used in the ONNX graph
DIM_BATCH, DIM_H, DIM_W, DIM_LR_H, DIM_LR_W = "batch", "height", "width", "lr_height", "lr_width"


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, dtype and symbolic shape (ints fixed, strings dynamic)."""

    name: str
    dtype: str
    shape: tuple
    doc: str = ""


def tensor_specs(config: LSOConfig | None = None, *,
                 tileable: bool = False) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """(inputs, outputs) of the model for ``config`` (paper defaults if omitted)."""
    cfg = config or LSOConfig()
    inputs = [
        TensorSpec(HR_MSI, "float32", (DIM_BATCH, cfg.n_msi_bands, DIM_H, DIM_W), "high-resolution RGB/MSI in [0,1]"),
        TensorSpec(LR_HSI, "float32", (DIM_BATCH, cfg.n_bands, DIM_LR_H, DIM_LR_W), "low-resolution HSI in [0,1]"),
    ]
    if tileable:
        inputs.append(TensorSpec(EXTENT, "int64", (4,), "(row0, col0, H_full, W_full) of this tile"))
    outputs = [TensorSpec(HR_HSI, "float32", (DIM_BATCH, cfg.n_bands, DIM_H, DIM_W), "fused HSI")]
    return inputs, outputs


def dynamic_axes(*, tileable: bool = False) -> dict[str, dict[int, str]]:
    """``torch.onnx.export``-style dynamic axes: batch, H, W, h, w independent."""
    axes = {
        HR_MSI: {0: DIM_BATCH, 2: DIM_H, 3: DIM_W},
        LR_HSI: {0: DIM_BATCH, 2: DIM_LR_H, 3: DIM_LR_W},
        HR_HSI: {0: DIM_BATCH, 2: DIM_H, 3: DIM_W},
    }
    return axes


@dataclass(frozen=True)
class ShapeProfile:
    """min/opt/max shapes per input name (TensorRT optimization profile, calibration shapes)."""

    min: dict[str, tuple[int, ...]] = field(default_factory=dict)
    opt: dict[str, tuple[int, ...]] = field(default_factory=dict)
    max: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def names(self) -> list[str]:
        return list(self.opt)

    def contains(self, name: str, shape: tuple[int, ...]) -> bool:
        lo, hi = self.min[name], self.max[name]
        return len(shape) == len(lo) and all(a <= s <= b for a, s, b in zip(lo, shape, hi, strict=True))

    def describe(self, name: str) -> str:
        def fmt(s: tuple[int, ...]) -> str:
            return "x".join(map(str, s))
        return f"{name}: min {fmt(self.min[name])}, opt {fmt(self.opt[name])}, max {fmt(self.max[name])}"

    def to_dict(self) -> dict[str, dict[str, list[int]]]:
        return {k: {n: list(s) for n, s in getattr(self, k).items()} for k in ("min", "opt", "max")}

    @classmethod
    def from_dict(cls, data: dict) -> ShapeProfile:
        return cls(**{k: {n: tuple(s) for n, s in data[k].items()} for k in ("min", "opt", "max")})


def default_profile(
    config: LSOConfig | None = None,
    *,
    batch: tuple[int, int, int] = PROFILE_BATCH,
    hr: tuple[tuple[int, int], tuple[int, int], tuple[int, int]] = PROFILE_HR,
    lr: tuple[tuple[int, int], tuple[int, int], tuple[int, int]] = PROFILE_LR,
) -> ShapeProfile:
    """The default optimization profile (overridable): batch 1/1/4; hr_msi 32²/512²/1024²; lr_hsi 1²/128²/512².

    The max is the largest that TensorRT can build: every tensor must stay under 2³¹ elements, and the
    widest tensor of the exported graph is the spectral blocks' 192-channel ``[B, 192, H, W]`` convolution
    output, so B·H·W < 11.1 M. At batch 4 × 1024² it is 805 M elements (3.0 GiB in FP32, 1.5 GiB in
    FP16), which also sets the order of the engine's activation memory at the max shape; 2048² at batch 4
    would be 3.2e9 elements and fails to build. ``lso.export.tensor_limits`` computes it on the graph
    being built; larger scenes go through exact tiled fusion (``lso.runtime.fuse_tiled``).
    """
    cfg = config or LSOConfig()
    prof: dict[str, dict[str, tuple[int, ...]]] = {"min": {}, "opt": {}, "max": {}}
    for i, key in enumerate(("min", "opt", "max")):
        prof[key][HR_MSI] = (batch[i], cfg.n_msi_bands, *hr[i])
        prof[key][LR_HSI] = (batch[i], cfg.n_bands, *lr[i])
    return ShapeProfile(**prof)


def describe_profile(batch: tuple[int, int, int] = PROFILE_BATCH,
                     hr: tuple[tuple[int, int], ...] = PROFILE_HR, lr: tuple[tuple[int, int], ...] = PROFILE_LR) -> str:
    """``"batch 1/1/4, hr_msi 32²/512²/1024², lr_hsi 1²/128²/512²"`` (min/opt/max; the default profile's)."""
    def sides(shapes: tuple[tuple[int, int], ...]) -> str:
        return "/".join(f"{h}²" if h == w else f"{h}x{w}" for h, w in shapes)

    return f"batch {'/'.join(map(str, batch))}, {HR_MSI} {sides(hr)}, {LR_HSI} {sides(lr)}"


def infer_ratio(hr_shape: tuple[int, ...], lr_shape: tuple[int, ...]) -> int:
    """The integer ratio ``r = H/h = W/w`` from ``[.., H, W]`` and ``[.., h, w]``; InputError if none exists."""
    H, W = int(hr_shape[-2]), int(hr_shape[-1])
    h, w = int(lr_shape[-2]), int(lr_shape[-1])
    if h <= 0 or w <= 0 or H <= 0 or W <= 0:
        raise InputError(f"empty spatial size: hr_msi {H}x{W}, lr_hsi {h}x{w}")
    if H % h or W % w or H // h != W // w:
        raise InputError(
            f"hr_msi {H}x{W} is not an integer multiple r of lr_hsi {h}x{w} with the same r on both axes "
            f"(H/h = {H / h:.4g}, W/w = {W / w:.4g}); crop the HR image to r*h x r*w"
        )
    ratio = H // h
    if ratio < MIN_RATIO:
        raise InputError(f"ratio H/h = {ratio} < {MIN_RATIO}: lr_hsi must be smaller than hr_msi by an integer "
                         f"factor >= 2")
    return ratio
