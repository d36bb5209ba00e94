"""Readers: the community HDF5 files, raw CAVE scenes (31 PNGs) and raw Harvard scenes (.mat).

All readers return float32 arrays in [0, 1], channels first, bands 400 → 700 nm:
``gt`` ``[31, H, W]`` and ``rgb`` ``[3, H, W]``. Optional dependencies (h5py, scipy, scikit-image)
are imported inside the functions that need them.

Errors: a file that cannot be read (missing, not HDF5/PNG/MAT, truncated, corrupt) raises
:class:`~lso.errors.ArtifactError` naming the file; a readable file with the wrong content (keys,
shapes, bands, dtype, value range) raises :class:`~lso.errors.InputError`.

Untrusted files: a file with a sidecar ``<file>.json`` holding its sha256 (:func:`lso.artifacts.write_sidecar`)
is checked against it before it is parsed, so any modification is an ``ArtifactError``. Sizes are
read from the headers and checked against the memory budget (:mod:`lso.memory`) before any array is
read: a header claiming 10^6 x 10^6 pixels is an ``InputError`` naming the estimate, not an
allocation.

Sizes that do not fit the ratio are never cropped silently: :func:`fit_to_ratio` computes the
top-left crop that would fit and :meth:`Crop.check` refuses the input (an ``InputError`` naming that
crop) unless the caller asked for cropping (``lso infer --crop``), in which case the :class:`Crop`
describes what was done so that the output can record it. One rule for every file format.

Example::

    from lso.data.readers import H5Dataset
    with H5Dataset("test_cave(with_up)x4.h5") as ds:
        item = ds[0]                  # {"gt": [31, 512, 512], "rgb": [3, 512, 512]} float32
"""
from __future__ import annotations

import io
import json
import logging
import operator
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lso.artifacts import read_bytes_checked, read_sidecar
from lso.data.srf import _project, _srf_matrix
from lso.deps import require
from lso.errors import ArtifactError, InputError
from lso.memory import array_bytes, check_bytes, resolve_budget

__all__ = ["H5Dataset", "Crop", "fit_to_ratio", "read_cave_scene", "read_harvard_mat", "load_mat", "read_band_png",
           "RANGE_TOLERANCE", "MAT_TIMEOUT"]

logger = logging.getLogger(__name__)

RANGE_TOLERANCE = 1e-3
"""Values within this distance outside [0, 1] are accepted (and clipped); further out is an error."""

_N_BANDS = 31
_N_RGB = 3


def _check_range(arr: np.ndarray, where: str) -> np.ndarray:
    """Raise InputError if ``arr`` leaves [0, 1] by more than the tolerance; clip tiny overshoots."""
    lo, hi = float(np.min(arr)), float(np.max(arr))
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < -RANGE_TOLERANCE or hi > 1.0 + RANGE_TOLERANCE:
        if not (np.isfinite(lo) and np.isfinite(hi)):
            found = "NaN or infinite values"
        else:
            found = f"values in [{lo:.6g}, {hi:.6g}]"
        hint = "rescale it to [0, 1] (e.g. divide by its maximum) or regenerate the file"
        if np.isfinite(lo) and np.isfinite(hi):  # the scale the values look like (lso.data.value_range's words)
            from lso.data.value_range import _suggest

            hint = _suggest(lo, hi, float(np.count_nonzero(arr < 0)) / max(arr.size, 1))
        raise InputError(
            f"{where}: found {found}, expected floats in [0, 1] (tolerance {RANGE_TOLERANCE:g}; values outside "
            f"[-0.5, 1.5] are refused in every format); the data is not normalised or is damaged: {hint}"
        )
    if lo < 0.0 or hi > 1.0:
        np.clip(arr, 0.0, 1.0, out=arr)
    return arr


# ---- sizes that fit the ratio (no silent crop) ----------------------------------------------------


def _hw(size: tuple[int, int]) -> str:
    return f"{int(size[0])}x{int(size[1])}"


@dataclass(frozen=True)
class Crop:
    """The top-left crop that makes a scene's sizes fit its ratio (see :func:`fit_to_ratio`).

    Attributes:
        ratio: the integer ratio r the crop fits.
        hr_from, hr_to: the high-resolution image's ``(H, W)`` before and after (multiples of r).
        lr_from, lr_to: the LR-HSI's ``(h, w)`` before and after (``hr_to / r``); None when the LR-HSI is
            made from the cropped image (community files: regenerated from ``GT``).
        hr_name, lr_name: what the two images are called in messages.
    """

    ratio: int
    hr_from: tuple[int, int]
    hr_to: tuple[int, int]
    lr_from: tuple[int, int] | None = None
    lr_to: tuple[int, int] | None = None
    hr_name: str = "hr_msi"
    lr_name: str = "lr_hsi"

    @property
    def needed(self) -> bool:
        """True when the sizes do not fit the ratio as they are."""
        return self.hr_to != self.hr_from or self.lr_to != self.lr_from

    def describe(self) -> str:
        """One line: what the crop does (``"none"`` when nothing needs cropping)."""
        if not self.needed:
            return "none"
        text = f"{self.hr_name} {_hw(self.hr_from)} -> top-left {_hw(self.hr_to)}"
        if self.lr_from is not None and self.lr_to is not None:
            text += (f", {self.lr_name} {_hw(self.lr_from)} -> top-left {_hw(self.lr_to)}"
                     if self.lr_to != self.lr_from else f" (to {self.ratio} x {self.lr_name} {_hw(self.lr_to)})")
        else:
            text += f" (a multiple of the ratio {self.ratio})"
        return text

    @property
    def box(self) -> tuple[int, int, int, int]:
        """``(top, left, height, width)`` of the kept part of the high-resolution image."""
        return 0, 0, int(self.hr_to[0]), int(self.hr_to[1])

    def apply_hr(self, arr: Any) -> Any:
        """``arr[..., :H', :W']``: the kept part of a high-resolution array (a view)."""
        return arr[..., : self.hr_to[0], : self.hr_to[1]]

    def apply_lr(self, arr: Any) -> Any:
        """``arr[..., :h', :w']``: the kept part of the LR-HSI (a view); unchanged without ``lr_to``."""
        return arr if self.lr_to is None else arr[..., : self.lr_to[0], : self.lr_to[1]]

    def check(self, where: str, *, allowed: bool, option: str = "--crop") -> Crop | None:
        """Refuse a needed crop that was not asked for; return the crop to apply (None if none is needed).

        Args:
            where: the file (or scene) named in the message.
            allowed: the caller asked for cropping (``--crop``).
            option: how the caller asks for it, named in the message.

        Raises:
            InputError: the sizes do not fit the ratio and ``allowed`` is False; the message names the crop
                that would fit.
        """
        if not self.needed:
            return None
        if allowed:
            logger.info("%s: cropping %s, as asked (%s)", where, self.describe(), option)
            return self
        if self.lr_from is not None:
            problem = (f"{self.hr_name} {_hw(self.hr_from)} is not {self.ratio} x {self.lr_name} "
                       f"{_hw(self.lr_from)}")
        else:
            problem = f"{self.hr_name} {_hw(self.hr_from)} is not a multiple of the ratio {self.ratio}"
        fits = f"the top-left {_hw(self.hr_to)}" + (
            f" (with {self.lr_name} {_hw(self.lr_to)})" if self.lr_to is not None else "")
        raise InputError(
            f"{where}: {problem}; {fits} would fit: crop the input to it, or pass {option} to crop it so "
            f"(the output records the crop). Nothing is cropped unless asked"
        )


def fit_to_ratio(hr_size: tuple[int, int], *, ratio: int | None = None,
                 lr_size: tuple[int, int] | None = None, hr_name: str = "hr_msi",
                 lr_name: str = "lr_hsi") -> Crop:
    """The top-left crop that makes ``hr_size`` (and ``lr_size``) fit an integer ratio.

    Without ``lr_size`` (the LR-HSI is made from the high-resolution image): ``ratio`` is required and H, W are
    rounded down to multiples of it. With ``lr_size`` (a given pair): sizes that are exact multiples
    ``H = r*h, W = r*w`` need no crop; otherwise r is ``ratio`` or ``round(H/h)``, and the pair is cut to
    ``h' = min(h, H // r)`` LR rows and ``r*h'`` HR rows (the same for columns), which covers an LR-HSI made
    from the uncropped image by rounding either down or up.

    Args:
        hr_size: ``(H, W)``.
        ratio: the integer ratio (required without ``lr_size``).
        lr_size: ``(h, w)`` of a given LR-HSI.
        hr_name, lr_name: names used in messages.

    Returns:
        The :class:`Crop` (``needed`` is False when the sizes fit as they are).

    Raises:
        InputError: no integer ratio r >= 2 relates the sizes (not a crop away from fitting), or the image
            is smaller than the ratio.
    """
    H, W = (int(v) for v in hr_size)
    if ratio is not None and (isinstance(ratio, bool) or int(ratio) < 2):
        raise InputError(f"ratio must be an integer >= 2, got {ratio!r}")
    if lr_size is None:
        if ratio is None:
            raise InputError("fit_to_ratio: give the ratio, or the LR-HSI size to take it from")
        r = int(ratio)
        to = (H - H % r, W - W % r)
        if min(to) < 1:
            raise InputError(f"{hr_name} {H}x{W} is smaller than the ratio {r}: nothing of it fits")
        return Crop(r, (H, W), to, hr_name=hr_name, lr_name=lr_name)
    h, w = (int(v) for v in lr_size)
    if min(H, W, h, w) < 1:
        raise InputError(f"empty spatial size: {hr_name} {H}x{W}, {lr_name} {h}x{w}")
    if H % h == 0 and W % w == 0 and H // h == W // w and (ratio is None or H // h == int(ratio)):
        return Crop(H // h, (H, W), (H, W), (h, w), (h, w), hr_name=hr_name, lr_name=lr_name)
    r = int(ratio) if ratio is not None else int(round(H / h))
    if r < 2 or abs(H - r * h) >= r or abs(W - r * w) >= r:
        raise InputError(
            f"{hr_name} {H}x{W} and {lr_name} {h}x{w} are not related by one integer ratio r >= 2 "
            f"(H/h = {H / h:.4g}, W/w = {W / w:.4g}"
            + (f", asked ratio {r}" if ratio is not None else "")
            + f"); expected {hr_name} = r x {lr_name} on both axes (check that the two images belong together)"
        )
    lh, lw = min(h, H // r), min(w, W // r)
    return Crop(r, (H, W), (r * lh, r * lw), (h, w), (lh, lw), hr_name=hr_name, lr_name=lr_name)


# ---- community HDF5 files ------------------------------------------------------------------------


def _open_h5(path: Path) -> Any:
    h5py = require("h5py")
    if not path.is_file():
        raise ArtifactError(
            f"{path}: no such file; check the path (expected an HDF5 file with keys GT and RGB)"
        )
    read_sidecar(path)  # a pinned sha256, when there is one, must match before the file is parsed
    try:
        return h5py.File(path, "r")
    except (OSError, RuntimeError, ValueError) as exc:
        raise ArtifactError(
            f"{path}: cannot be opened as HDF5 ({exc}); the file is not HDF5, or is truncated or corrupt: "
            f"download or generate it again"
        ) from exc


def _shape_fix(shape: tuple[int, ...], bands: int) -> str:
    """The fix for a community dataset of the wrong shape, read from the shape itself."""
    if len(shape) == 4 and shape[-1] == bands:
        return "it looks channels-last (N×H×W×C): transpose it to (N, C, H, W)"
    if len(shape) == 3 and shape[-1] == bands:
        return "it looks like one channels-last scene (H×W×C): transpose it to (C, H, W)"
    if len(shape) in (3, 4) and bands not in shape:
        return f"no axis has {bands} entries: check that this is the right dataset (band count)"
    if len(shape) == 2:
        return f"it holds a single plane: stack the {bands} bands of each scene into a (C, H, W) array"
    return f"reshape it to (N, {bands}, H, W)"


class H5Dataset:
    """The community HDF5 format (``train_cave(with_up)x4.h5``, ``test_cave(with_up)x4.h5``, Harvard ...).

    Keys ``GT`` ``(N, 31, H, W)`` and ``RGB`` ``(N, 3, H, W)``, floats in [0, 1]; optional ``LRHSI``
    and ``HSI_up`` are ignored (LSO regenerates LR-HSI from GT with :func:`lso.data.degrade`). A file
    holding one scene without the leading N axis (``GT`` ``(31, H, W)``, ``RGB`` ``(3, H, W)``) is read as
    one item (N = 1; logged at info level). Items are returned whole, never cropped.

    Items are read lazily, one at a time (``load_all=False``). The HDF5 file is opened on first
    access in each process and reopened after pickling or in a forked DataLoader worker, so an
    ``H5Dataset`` can be handed to ``torch.utils.data.DataLoader(num_workers>0)`` as it is. The
    constructor checks the metadata (keys, ranks, band counts, N and H×W agree, float dtypes) and
    closes the file again. The value range is checked per item on access; values within
    :data:`RANGE_TOLERANCE` of [0, 1] are clipped to it.

    Values pass the one value policy of every input (:func:`lso.data.value_range.apply_input_scale`: 8-/16-bit
    counts or images centred at 0 are an error naming that scale; ``input_scale`` converts them) and then this
    format's own promise, floats in [0, 1] within :data:`RANGE_TOLERANCE`.

    Args:
        path: the ``.h5`` file.
        load_all: read both arrays into memory at construction (and check every item's range then).
        input_scale: scale of the stored values (``"unit"`` (default), ``"8bit"``, ``"16bit"`` or a number to
            divide by; :class:`~lso.data.value_range.InputScale`); integer datasets need one.

    Raises:
        ArtifactError: the file is missing, not HDF5, truncated or corrupt (also on item reads).
        InputError: a key is missing, or shapes, band counts or dtypes are wrong.
    """

    gt_key = "GT"
    rgb_key = "RGB"

    def __init__(self, path: str | os.PathLike[str], *, load_all: bool = False, input_scale: Any = None) -> None:
        from lso.data.value_range import InputScale

        self.path = Path(path)
        self.load_all = load_all
        self.input_scale = InputScale.parse(input_scale)
        self._file: Any = None
        self._pid: int | None = None
        self._memory: dict[str, np.ndarray] | None = None
        with _open_h5(self.path) as f:
            try:
                self._n, self._size = self._validate(f)
            except (OSError, RuntimeError, KeyError, ValueError, TypeError) as exc:
                if isinstance(exc, InputError):
                    raise
                raise ArtifactError(f"{self.path}: the HDF5 structure cannot be read ({type(exc).__name__}: "
                                    f"{exc}); the file is truncated or corrupt: download or generate it again") from exc
            if load_all:
                self._memory = {key: self._read(f, key, slice(None)) for key in (self.gt_key, self.rgb_key)}
        if self._memory is not None:
            for key, arr in self._memory.items():
                for i in range(self._n):
                    arr[i] = self._check(arr[i], f"{self.path}: '{key}'[{i}]")
        logger.debug(
            "H5Dataset %s: %d items of %d×%d (load_all=%s)", self.path, self._n, *self._size, load_all
        )

    def _validate(self, f: Any) -> tuple[int, tuple[int, int]]:
        h5py = require("h5py")
        shapes = {}
        for key, bands in ((self.gt_key, _N_BANDS), (self.rgb_key, _N_RGB)):
            if key not in f or not isinstance(f[key], h5py.Dataset):
                raise InputError(
                    f"{self.path}: dataset '{key}' not found (found keys: {sorted(f.keys())}); expected the "
                    f"community layout with '{self.gt_key}' (N, 31, H, W) and '{self.rgb_key}' (N, 3, H, W)"
                )
            dset = f[key]
            if dset.ndim == 3 and dset.shape[0] == bands:
                logger.info("%s: '%s' %s has no leading N axis: read as one scene (N = 1)", self.path, key,
                            tuple(dset.shape))
                shape = (1, *dset.shape)
            elif dset.ndim == 4 and dset.shape[1] == bands:
                shape = tuple(dset.shape)
            else:
                raise InputError(f"{self.path}: '{key}' has shape {dset.shape}, expected (N, {bands}, H, W) "
                                 f"(N×C×H×W with C = {bands}) or one scene ({bands}, H, W); "
                                 + _shape_fix(tuple(dset.shape), bands))
            if dset.dtype.kind != "f" and not (dset.dtype.kind in "iu" and not self.input_scale.is_unit):
                raise InputError(
                    f"{self.path}: '{key}' has dtype {dset.dtype}, expected floats in [0, 1]; convert the "
                    f"data to float32 and rescale it to [0, 1], or give its scale (--input-scale 8bit/16bit/N)"
                )
            shapes[key] = shape
        gt, rgb = shapes[self.gt_key], shapes[self.rgb_key]
        if gt[0] != rgb[0] or gt[2:] != rgb[2:]:
            raise InputError(
                f"{self.path}: '{self.gt_key}' {gt} and '{self.rgb_key}' {rgb} disagree; expected the "
                f"same N, H and W in both (one RGB image per GT image)"
            )
        if gt[2] < 1 or gt[3] < 1:
            raise InputError(f"{self.path}: images of {gt[2]}x{gt[3]} pixels; expected at least 1x1")
        # one item as float32 (plus the stored copy h5py reads first); all of them with load_all
        per_item = 2 * array_bytes((_N_BANDS + _N_RGB, gt[2], gt[3]), 4)
        check_bytes(per_item * (max(int(gt[0]), 1) if self.load_all else 1),
                    f"{self.path}: reading {'all ' + str(gt[0]) + ' items' if self.load_all else 'one item'} "
                    f"of {gt[2]}x{gt[3]} pixels (as its header claims)",
                    fix="use load_all=False, or check that the file is not corrupt")
        extra = sorted(k for k in f.keys() if k not in (self.gt_key, self.rgb_key))
        if extra:
            logger.debug("%s: ignoring keys %s", self.path, extra)
        return int(gt[0]), (int(gt[2]), int(gt[3]))

    def _read(self, f: Any, key: str, index: int | slice) -> np.ndarray:
        try:
            dset = f[key]
            data = dset[()][None][index] if dset.ndim == 3 else dset[index]  # 3-D: one scene, N = 1
        except (OSError, RuntimeError, ValueError) as exc:
            where = ":" if isinstance(index, slice) else index
            raise ArtifactError(
                f"{self.path}: cannot read '{key}'[{where}] ({exc}); the file is truncated or corrupt: "
                f"download or generate it again"
            ) from exc
        return np.asarray(data, dtype=np.float32)

    def _check(self, arr: np.ndarray, where: str) -> np.ndarray:
        """The one value policy (scale applied), then this format's [0, 1] promise (tiny overshoots clipped)."""
        from lso.data.value_range import apply_input_scale

        arr = apply_input_scale(arr, where, self.input_scale)  # _read made it float32: integers divided here too
        return _check_range(np.asarray(arr, dtype=np.float32), where)

    def _handle(self) -> Any:
        pid = os.getpid()
        if self._file is None or self._pid != pid:
            # A handle inherited from another process (fork) is dropped, not closed: it is not ours.
            self._file = _open_h5(self.path)
            self._pid = pid
        return self._file

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of every image in the file."""
        return self._size

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        """Item ``index`` (negative counts from the end).

        Returns:
            ``{"gt": [31, H, W], "rgb": [3, H, W]}``, float32 in [0, 1], fresh arrays.

        Raises:
            IndexError: out of range. InputError: values outside [0, 1]. ArtifactError: read failure.
        """
        i = operator.index(index)
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(f"index {index} out of range for {self.path} with {self._n} items")
        out = {}
        for name, key in (("gt", self.gt_key), ("rgb", self.rgb_key)):
            if self._memory is not None:
                out[name] = self._memory[key][i].copy()
            else:
                out[name] = self._check(self._read(self._handle(), key, i), f"{self.path}: '{key}'[{i}]")
        return out

    def close(self) -> None:
        """Close this process's file handle (it is reopened on the next access)."""
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None
        self._pid = None

    def __enter__(self) -> H5Dataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_file"] = None
        state["_pid"] = None
        return state

    def __repr__(self) -> str:
        h, w = self._size
        return f"H5Dataset('{self.path}', n={self._n}, size={h}×{w}, load_all={self.load_all})"


# ---- raw CAVE --------------------------------------------------------------------------------------

_CAVE_BAND = re.compile(r"_(\d{1,2})\.png$", re.IGNORECASE)


def _cave_band_files(folder: Path) -> tuple[Path, dict[int, list[Path]]]:
    """The folder holding the band PNGs (``folder`` or, repeatedly, its single subfolder)."""
    current = folder
    for _ in range(3):
        bands: dict[int, list[Path]] = {}
        for p in current.iterdir():
            m = _CAVE_BAND.search(p.name)
            if p.is_file() and m and not p.name.startswith("."):
                bands.setdefault(int(m.group(1)), []).append(p)
        if bands:
            return current, bands
        subdirs = [p for p in current.iterdir() if p.is_dir() and not p.name.startswith((".", "__MACOSX"))]
        if len(subdirs) != 1:
            break
        current = subdirs[0]
    return current, {}


def read_band_png(path: Path, io: Any) -> tuple[np.ndarray, bool]:
    """One band of a raw CAVE scene as float64 in [0, 1] (``io``: ``skimage.io``); the flag says a multi-channel
    PNG was reduced."""
    try:
        img = io.imread(path)
    except Exception as exc:  # imageio/PIL raise OSError, ValueError, SyntaxError, DecompressionBombError, ...
        if type(exc).__name__ == "DecompressionBombError":
            raise InputError(f"{path}: the PNG claims more pixels than PIL's decompression-bomb limit ({exc}); "
                             f"the file is corrupt or malicious") from exc
        raise ArtifactError(
            f"{path}: cannot be read as PNG ({exc}); the file is truncated or corrupt: extract the scene "
            f"again"
        ) from exc
    img = np.asarray(img)
    if img.dtype == np.uint16:
        scale = 65535.0
    elif img.dtype == np.uint8:
        scale = 255.0
    else:
        raise InputError(f"{path}: pixel type {img.dtype}, expected 16-bit (or 8-bit) PNG bands")
    reduced = False
    if img.ndim == 3 and img.shape[-1] in (2, 3, 4):
        color = img[..., :1] if img.shape[-1] == 2 else img[..., :3]  # drop alpha (LA / RGBA)
        if np.all(color == color[..., :1]):
            img = color[..., 0]
        else:
            img = color.mean(axis=-1)
        reduced = True
    if img.ndim != 2:
        raise InputError(f"{path}: image of shape {img.shape}, expected one grey channel (H, W)")
    return img.astype(np.float64) / scale, reduced


def read_cave_scene(folder: str | os.PathLike[str], *, srf: Any = None) -> dict[str, np.ndarray]:
    """One raw CAVE scene: 31 band PNGs → GT and the RGB synthesised from it.

    The real layout is ``<scene>_ms/<scene>_ms/<scene>_ms_01.png … _31.png`` (sometimes one level
    less). ``folder`` may be either level: the PNGs are looked for in ``folder`` and, while none are
    found and there is exactly one subfolder, in that subfolder. Bands are the files ending in
    ``_NN.png`` (NN = 01..31, sorted numerically); other files (``*_RGB.bmp``, ``Thumbs.db``,
    hidden ``._*`` files) are ignored. The scene's own RGB image is not used.

    Pixel values: 16-bit PNGs are divided by 65535, 8-bit ones by 255. Some real scenes (e.g.
    ``watercolors``) store bands as RGB/RGBA PNGs: the alpha channel is dropped and the colour
    channels are reduced to one, keeping the first when they are identical (grey stored as colour)
    and averaging them otherwise; a warning is logged. Any image size is accepted (CAVE: 512×512),
    all bands must share it.

    Args:
        folder: the scene folder.
        srf: ``[31, 3]`` SRF for the RGB; ``None`` = Nikon D700 (:func:`lso.data.srf.load_srf`).

    Returns:
        ``{"gt": [31, H, W], "rgb": [3, H, W]}``, float32 in [0, 1].

    Raises:
        ArtifactError: the folder does not exist, or a PNG cannot be read.
        InputError: bands missing or duplicated, sizes differ, unexpected pixel types.
    """
    io = require("skimage.io")
    root = Path(folder)
    if not root.is_dir():
        raise ArtifactError(f"{root}: no such folder; expected a CAVE scene folder holding 31 band PNGs")
    where, bands = _cave_band_files(root)
    expected = set(range(1, _N_BANDS + 1))
    missing = sorted(expected - bands.keys())
    dup = {k: [p.name for p in v] for k, v in bands.items() if len(v) > 1}
    unexpected = sorted(bands.keys() - expected)
    if missing or dup or unexpected:
        raise InputError(
            f"{where}: expected 31 band PNGs named *_01.png … *_31.png; missing bands {missing}, "
            f"duplicated {dup}, unexpected band numbers {unexpected}; point to one scene's folder "
            f"(e.g. balloons_ms)"
        )
    planes: list[np.ndarray] = []
    reduced: list[str] = []
    for k in range(1, _N_BANDS + 1):
        path = bands[k][0]
        plane, was_reduced = read_band_png(path, io)
        if planes and plane.shape != planes[0].shape:
            raise InputError(
                f"{path}: size {plane.shape} differs from band 01's {planes[0].shape}; all bands of a scene "
                f"must have the same size"
            )
        planes.append(plane)
        if was_reduced:
            reduced.append(path.name)
    if reduced:
        logger.warning(
            "%s: %d band PNGs are RGB/RGBA (e.g. %s); alpha dropped, colour channels reduced to one "
            "(first channel if identical, else their mean)", where, len(reduced), reduced[0]
        )
    gt = np.stack(planes)
    if gt.shape[1:] != (512, 512):
        logger.debug("%s: scene size %s (raw CAVE scenes are 512×512)", where, gt.shape[1:])
    rgb = _project(gt, _srf_matrix(srf))
    return {"gt": gt.astype(np.float32), "rgb": rgb.astype(np.float32)}


# ---- raw Harvard -----------------------------------------------------------------------------------


def _load_mat_ref(path: Path) -> np.ndarray:
    """``ref`` of a MATLAB file in MATLAB's axis order (H, W, 31), whatever the file version."""
    h5py = require("h5py")
    if not path.is_file():
        raise ArtifactError(f"{path}: no such file; expected a Harvard scene .mat file with key 'ref'")
    read_sidecar(path)  # a pinned sha256, when there is one, must match before the file is parsed
    if h5py.is_hdf5(path):  # MATLAB v7.3: HDF5 storing arrays with the axes reversed
        try:
            with h5py.File(path, "r") as f:
                if "ref" not in f or not isinstance(f["ref"], h5py.Dataset):
                    raise InputError(
                        f"{path}: variable 'ref' not found (found {sorted(f.keys())}); expected a Harvard "
                        f"scene with 'ref' (1040×1392×31)"
                    )
                dset = f["ref"]
                _check_ref_header(path, dset.shape, dset.dtype)
                return np.asarray(dset[()]).T
        except (OSError, RuntimeError, ValueError, KeyError, TypeError) as exc:
            if isinstance(exc, InputError):
                raise
            raise ArtifactError(
                f"{path}: cannot read the MATLAB v7.3 (HDF5) file ({exc}); it is truncated or corrupt"
            ) from exc
    mat, header = load_mat(path, ["ref"])  # in a child process: see load_mat
    if "ref" not in mat:
        found = sorted(name for name, _ in header)
        raise InputError(
            f"{path}: variable 'ref' not found or not numeric (found {found}); expected a Harvard "
            f"scene with 'ref' (1040×1392×31)"
        )
    _check_ref_header(path, mat["ref"].shape, mat["ref"].dtype)
    return np.asarray(mat["ref"])


MAT_TIMEOUT = 120.0
"""Seconds a MATLAB v5 file may take to parse (in its own process, see :func:`load_mat`)."""

# Runs in a child process: scipy's MATLAB v5 reader is compiled code that segfaults on some damaged files
# (found by fuzzing: an invalid element type inside a matrix), so it never runs in the caller's process.
_MAT_CHILD = r"""
import io, json, sys
import numpy as np, scipy.io as sio
budget, names = int(sys.argv[1]), (sys.argv[2:] or None)
raw = sys.stdin.buffer.read()
out = sys.stdout.buffer
try:
    header = [(n, [int(d) for d in shape]) for n, shape, _ in sio.whosmat(io.BytesIO(raw))]
    need = 0
    for n, shape in header:
        if names is None or n in names:
            size = 8
            for d in shape:
                size *= max(d, 0)
            need += 2 * size
    if need > budget:
        out.write(json.dumps({"budget": need, "header": header}).encode()); sys.exit(3)
    data = sio.loadmat(io.BytesIO(raw), variable_names=names)
except Exception as exc:
    out.write(json.dumps({"error": f"{type(exc).__name__}: {exc}"[:2000]}).encode()); sys.exit(4)
arrays = {k: v for k, v in data.items()
          if not k.startswith("__") and isinstance(v, np.ndarray) and v.dtype.kind in "biufc"}
buf = io.BytesIO()
np.savez(buf, **{f"v{i}": v for i, v in enumerate(arrays.values())})
meta = json.dumps({"header": header, "names": list(arrays)}).encode()
out.write(len(meta).to_bytes(8, "little") + meta + buf.getvalue())
"""


def load_mat(path: str | os.PathLike[str], variable_names: list[str] | None = None
             ) -> tuple[dict[str, np.ndarray], list[tuple[str, tuple[int, ...]]]]:
    """Numeric variables of a MATLAB v4/v5 ``.mat`` file, parsed in a separate process.

    scipy's reader is compiled code that can crash the whole process on a damaged file (a segfault was
    found by fuzzing), so it runs in a child (``python -I``, the file's bytes on stdin, the arrays back as
    an ``.npz`` without pickles). The file size and the variables' declared sizes are checked against the
    memory budget first (:mod:`lso.memory`).

    Returns:
        ``(arrays, header)``: numeric arrays by name, and every variable's ``(name, shape)`` as declared.

    Raises:
        ArtifactError: not a readable .mat file, the parser crashed or took over :data:`MAT_TIMEOUT` s.
        InputError: the declared variables would not fit the memory budget.
    """
    path = Path(path)
    require("scipy.io")  # MissingDependencyError here, not a confusing failure in the child
    raw = read_bytes_checked(path, "MATLAB file")
    budget = resolve_budget()
    try:
        proc = subprocess.run([sys.executable, "-I", "-c", _MAT_CHILD, str(budget), *(variable_names or [])],
                              input=raw, capture_output=True, timeout=MAT_TIMEOUT,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    except subprocess.TimeoutExpired as exc:
        raise ArtifactError(f"{path}: parsing the MATLAB file took more than {MAT_TIMEOUT:g} s; it is corrupt or "
                            f"malicious") from exc
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot start the MATLAB file parser ({exc})") from exc
    if proc.returncode < 0 or proc.returncode not in (0, 3, 4):
        raise ArtifactError(f"{path}: scipy's MATLAB reader crashed on this file (exit {proc.returncode}; "
                            f"{proc.stderr.decode(errors='replace').strip()[-300:]!r}); the file is corrupt or "
                            f"malicious")
    if proc.returncode in (3, 4):
        try:
            info = json.loads(proc.stdout.decode())
        except ValueError:
            info = {"error": proc.stdout[:300].decode(errors="replace")}
        if proc.returncode == 3:
            shapes = ", ".join(f"{n} {tuple(s)}" for n, s in info["header"])
            check_bytes(int(info["budget"]), f"{path}: reading {shapes} (as the file's header claims)",
                        memory_budget=budget, fix="check that the file is not corrupt, or split the scene")
        raise ArtifactError(f"{path}: cannot be read as a MATLAB .mat file ({info.get('error')}); the file is not a "
                            f".mat file, or is truncated or corrupt")
    n = int.from_bytes(proc.stdout[:8], "little")
    meta = json.loads(proc.stdout[8:8 + n].decode())
    with np.load(io.BytesIO(proc.stdout[8 + n:]), allow_pickle=False) as data:
        arrays = {name: data[f"v{i}"] for i, name in enumerate(meta["names"])}
    return arrays, [(name, tuple(shape)) for name, shape in meta["header"]]


def _check_ref_header(path: Path, shape: Any, dtype: Any) -> None:
    """Refuse a ``ref`` whose declared size would not fit the memory budget, before reading it."""
    itemsize = max(int(getattr(np.dtype(dtype), "itemsize", 8) or 8), 1)
    # the array as stored, its float64 copy (ref / max) and the RGB projection work space
    check_bytes(array_bytes(shape, itemsize) + 3 * array_bytes(shape, 8),
                f"{path}: reading 'ref' of shape {tuple(int(s) for s in shape)} (as the file's header claims)",
                fix="crop the scene in MATLAB first, or check that the file is not corrupt")


def read_harvard_mat(
    path: str | os.PathLike[str],
    *,
    crop: tuple[int, int, int, int] | None = None,
    srf: Any = None,
) -> dict[str, np.ndarray]:
    """One raw Harvard scene (``ref``, 1040×1392×31, not normalised) → GT and RGB.

    MATLAB v5 files are read with ``scipy.io.loadmat`` (``ref`` is (H, W, 31)); v7.3 files are HDF5
    and read with h5py, which sees the axes reversed ((31, W, H) = (31, 1392, 1040)); both become
    ``[31, H, W]`` with H = 1040 rows. The scene is divided by its maximum (over the whole scene,
    before cropping), so it spans [0, 1]. Any size is accepted; the band axis must have 31 entries.

    Args:
        path: the ``.mat`` file.
        crop: ``(top, left, height, width)`` in pixels of the ``[31, H, W]`` scene; ``None``
            (default) = the whole scene, 1040×1392. (The community test files hold 1000×1000
            crops; pass e.g. ``(0, 0, 1000, 1000)`` for a top-left one.)
        srf: ``[31, 3]`` SRF for the RGB; ``None`` = Nikon D700.

    Returns:
        ``{"gt": [31, h, w], "rgb": [3, h, w]}``, float32 in [0, 1].

    Raises:
        ArtifactError: missing, unreadable or corrupt file.
        InputError: no ``ref``, wrong shape, no positive value, non-finite values, crop out of bounds.
    """
    p = Path(path)
    ref = _load_mat_ref(p)
    if ref.ndim != 3 or ref.shape[-1] != _N_BANDS or ref.dtype.kind not in "fiu":
        raise InputError(
            f"{p}: 'ref' has shape {ref.shape} and dtype {ref.dtype}, expected numbers of shape (H, W, 31) "
            f"in MATLAB's order (1040×1392×31 for Harvard)"
        )
    gt = np.ascontiguousarray(ref.transpose(2, 0, 1), dtype=np.float64)
    if not np.isfinite(gt).all():
        raise InputError(f"{p}: 'ref' contains NaN or infinite values; the scene is damaged")
    peak = float(gt.max())
    if peak <= 0.0:
        raise InputError(f"{p}: 'ref' has maximum {peak:g}, expected positive radiance to normalise by")
    gt /= peak
    if crop is not None:
        h, w = gt.shape[1:]
        try:
            top, left, ch, cw = (operator.index(v) for v in crop)
        except (TypeError, ValueError) as exc:
            raise InputError(
                f"crop: expected four integers (top, left, height, width), got {crop!r}"
            ) from exc
        if top < 0 or left < 0 or ch < 1 or cw < 1 or top + ch > h or left + cw > w:
            raise InputError(
                f"crop {tuple(crop)} (top, left, height, width) does not fit the {h}×{w} scene of {p}; "
                f"choose top + height ≤ {h} and left + width ≤ {w}"
            )
        gt = gt[:, top : top + ch, left : left + cw]
    if gt.shape[1:] != (1040, 1392) and crop is None:
        logger.debug("%s: scene size %s (raw Harvard scenes are 1040×1392)", p, gt.shape[1:])
    rgb = _project(gt, _srf_matrix(srf))
    return {"gt": gt.astype(np.float32), "rgb": rgb.astype(np.float32)}
