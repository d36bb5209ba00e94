"""One value-range policy for every input file format and the server.

The model expects reflectance in [0, 1]. Every reader of user files (``lso infer`` / ``lso batch``: ``.npz``,
``.npy``, ``.h5`` in both layouts, ``.mat``, PNG, pairs of files) and the server's wire format
(:mod:`lso.scaleout.wire`: npz and raw) pass the arrays they read through :func:`apply_input_scale`, which

1. converts them by an explicit scale (``--input-scale``, :class:`InputScale`: ``unit`` (default, nothing to
   do), ``8bit`` (divide by 255), ``16bit`` (divide by 65535) or a number to divide by), and then
2. checks the values (host arrays only):

   - NaN/Inf: an :class:`~lso.errors.InputError` with the counts;
   - values outside ``[RANGE_LOW, RANGE_HIGH]`` = ``[-0.5, 1.5]``: an ``InputError`` naming the fix, and the
     scale the values suggest: counts stored as floats (8-bit: maximum <= 255; 16-bit: maximum <= 65535; both
     above 1.5): ``--input-scale 8bit`` / ``16bit``; centred at 0 (a standardised or zero-mean image: at least
     a quarter of the values negative): undo that normalisation; otherwise: ``--input-scale <maximum>``;
   - in range but centred at 0 (at least a quarter of the values negative, the minimum below
     ``-CENTRED_MIN``): an
     :class:`InputRangeWarning` naming that scale (the model will run, but on data it was not trained for);
   - integer arrays: with the default scale an ``InputError`` naming the ``--input-scale`` their dtype suggests
     (their scale cannot be guessed); with an explicit scale they are converted to float32.

The scale applied is what the output records (``input_scale``: :meth:`InputScale.record`).

Arrays already on a GPU are not checked here (reading their values would synchronise the host with the
device); the runtime's own checks (:mod:`lso.runtime.validation`) and the GPU readiness work cover them.
Images (PNG) carry their scale in their bit depth and are converted by their readers before this check.
"""
from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from lso.errors import InputError

__all__ = ["RANGE_LOW", "RANGE_HIGH", "CENTRED_MIN", "InputRangeWarning", "InputScale", "apply_input_scale",
           "check_value_range", "INPUT_SCALE_HELP"]

log = logging.getLogger(__name__)

RANGE_LOW = -0.5
RANGE_HIGH = 1.5
CENTRED_MIN = 0.05
"""An image whose minimum is below ``-CENTRED_MIN`` is clearly negative somewhere (not only the noise of a dark
reflectance)."""
CENTRED_SHARE = 0.25
"""At least this share of negative values (with the minimum below ``-CENTRED_MIN``) says an image is centred at 0."""

CHUNK_ELEMENTS = 1 << 22
"""Values looked at in one step (the temporaries of the check stay a few MB whatever the array's size)."""

NAMED_SCALES = {"unit": 1.0, "8bit": 255.0, "16bit": 65535.0}
INPUT_SCALE_HELP = ("scale of the input values: unit (reflectance in [0, 1], the default), 8bit (counts 0..255 "
                    "stored as numbers: divided by 255), 16bit (0..65535: divided by 65535) or a number to divide "
                    "by (e.g. 4095 for 12-bit); recorded in the output as input_scale. Values outside [-0.5, 1.5] "
                    "after it are an error")


class InputRangeWarning(UserWarning):
    """Input values that the model can run on but that look like another scale (e.g. centred at 0)."""


@dataclass(frozen=True)
class InputScale:
    """How input values are converted to reflectance: divided by ``divisor``.

    Attributes:
        name: ``"unit"``, ``"8bit"``, ``"16bit"`` or the number as given.
        divisor: what values are divided by (1 for ``unit``).
    """

    name: str = "unit"
    divisor: float = 1.0

    @classmethod
    def parse(cls, value: None | str | int | float | InputScale) -> InputScale:
        """``None``/``"unit"``, ``"8bit"``, ``"16bit"``, ``"4095"``, ``4095.0`` or an InputScale.

        Raises:
            InputError: anything else (a number must be finite and > 0).
        """
        if value is None:
            return cls()
        if isinstance(value, InputScale):
            return value
        text = str(value).strip().lower().replace("-", "")
        if text in NAMED_SCALES:
            return cls(text, NAMED_SCALES[text])
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if isinstance(value, bool) or not math.isfinite(number) or number <= 0:
            raise InputError(f"--input-scale {value!r}: expected unit, 8bit, 16bit or a positive number to divide "
                             f"the values by (e.g. 4095)")
        if number == 1.0:
            return cls()
        return cls(f"{number:g}", number)

    @property
    def is_unit(self) -> bool:
        return self.divisor == 1.0

    def record(self) -> str:
        """What an output records: ``"unit"``, ``"8bit (divided by 255)"``, ``"divided by 4095"``."""
        if self.is_unit:
            return "unit"
        if self.name in NAMED_SCALES:
            return f"{self.name} (divided by {self.divisor:g})"
        return f"divided by {self.divisor:g}"


def _integer_scale(dtype: np.dtype) -> str:
    if dtype == np.uint8:
        return "8bit"
    if dtype == np.uint16:
        return "16bit"
    return "<the sensor's maximum, e.g. 4095 for 12-bit>"


def _suggest(lo: float, hi: float, share_negative: float) -> str:
    """The scale the values suggest, with its fix, for a message."""
    if share_negative >= CENTRED_SHARE and lo < -CENTRED_MIN:
        return (f"the values look centred at 0 (a standardised or zero-mean image: {share_negative:.0%} of them "
                f"negative); undo that normalisation (x * std + mean) to reflectance in [0, 1]")
    if RANGE_HIGH < hi <= 255 and lo >= RANGE_LOW:
        return "the values look like 8-bit counts stored as numbers (maximum <= 255): pass --input-scale 8bit"
    if 255 < hi <= 65535 and lo >= RANGE_LOW:
        return "the values look like 16-bit counts stored as numbers (maximum <= 65535): pass --input-scale 16bit"
    if hi > RANGE_HIGH and lo >= RANGE_LOW:
        return f"rescale them to [0, 1] (e.g. --input-scale {hi:.6g} divides by their maximum)"
    return "rescale them to reflectance in [0, 1] (--input-scale divides by a number)"


def check_value_range(arr: np.ndarray, name: str, *, scale: InputScale | None = None) -> None:
    """Apply the value policy (see the module docstring) to a host array already converted by ``scale``.

    Args:
        arr: a numpy array (any shape; float).
        name: the array in messages (``"scene.npz: hr_msi"``).
        scale: the scale that was applied (named in messages), default unit.

    Raises:
        InputError: NaN/Inf, or values outside ``[RANGE_LOW, RANGE_HIGH]`` (the message names the scale they
            suggest and the fix).

    Warns:
        InputRangeWarning: values in range that look centred at 0.
    """
    scale = scale or InputScale()
    if arr.size == 0:
        return
    data = arr if arr.ndim >= 2 else arr.reshape(1, -1)
    rows = max(1, CHUNK_ELEMENTS // max(data.size // max(data.shape[-2], 1), 1))
    n_nan = n_inf = n_out = n_negative = 0
    lo, hi = math.inf, -math.inf
    for r0 in range(0, data.shape[-2], rows):  # row chunks: bounded temporaries whatever the size
        chunk = data[..., r0:r0 + rows, :]
        chunk = chunk.astype(np.float32) if chunk.dtype == np.float16 else chunk
        if not np.isfinite(chunk).all():
            n_nan += int(np.isnan(chunk).sum())
            n_inf += int(np.isinf(chunk).sum())
            continue
        lo, hi = min(lo, float(chunk.min())), max(hi, float(chunk.max()))
        n_out += int(np.count_nonzero((chunk < RANGE_LOW) | (chunk > RANGE_HIGH)))
        n_negative += int(np.count_nonzero(chunk < 0))
    if n_nan or n_inf:
        raise InputError(f"{name} has {n_nan} NaN and {n_inf} Inf values (of {data.size}): non-finite inputs are "
                         f"rejected; fill or mask them first (e.g. np.nan_to_num(x, nan=0.0))")
    share_negative = n_negative / data.size if lo < -CENTRED_MIN else 0.0
    after = "" if scale.is_unit else f" after --input-scale {scale.name} (divided by {scale.divisor:g})"
    if n_out:
        raise InputError(f"{name}: {n_out} of {data.size} values lie outside [{RANGE_LOW}, {RANGE_HIGH}]{after} "
                         f"(min {lo:.6g}, max {hi:.6g}); the model expects reflectance in [0, 1]: "
                         + (_suggest(lo, hi, share_negative) if scale.is_unit else
                            f"the scale does not fit these values; {_suggest(lo, hi * scale.divisor, share_negative)}"))
    if share_negative >= CENTRED_SHARE:
        warnings.warn(f"{name}: {share_negative:.0%} of the values are negative (min {lo:.4g}, max "
                      f"{hi:.4g}){after}: they look centred at 0 (a standardised or zero-mean image), not reflectance "
                      f"in [0, 1]; the output will not be meaningful unless that normalisation is undone first",
                      InputRangeWarning, stacklevel=3)


def apply_input_scale(arr: Any, name: str, scale: None | str | float | InputScale = None) -> Any:
    """Convert ``arr`` by ``scale`` and apply the value policy; returns the array to use (float, unchanged
    when the scale is unit and the array is float).

    Arrays on a GPU (torch CUDA tensors, ``__cuda_array_interface__`` objects) are returned unchanged and
    unchecked (no host synchronisation; see the module docstring).

    Raises:
        InputError: a bad scale, an integer array without an explicit scale, or values the policy refuses.
    """
    scale = InputScale.parse(scale)
    if _on_device(arr):
        return arr
    data = np.asarray(arr)
    if data.dtype.kind in "iu":
        if scale.is_unit:
            raise InputError(f"{name} holds {data.dtype} counts, whose scale cannot be guessed: pass --input-scale "
                             f"{_integer_scale(data.dtype)} (or convert to float reflectance in [0, 1])")
        data = data.astype(np.float32)
    if data.dtype.kind == "f" and not scale.is_unit:
        data = (data / scale.divisor).astype(np.float32, copy=False)
    if data.dtype.kind == "f":
        check_value_range(data, name, scale=scale)
    return data


def _on_device(arr: Any) -> bool:
    if hasattr(arr, "__cuda_array_interface__"):
        return True
    is_cuda = getattr(arr, "is_cuda", False)
    return bool(is_cuda) if isinstance(is_cuda, bool) else False
