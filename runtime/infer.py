"""``lso infer``: read a scene from files, fuse it with any artifact, write the result atomically.

Inputs (one file, or a pair):

- ``.h5``/``.hdf5``, our layout: datasets ``hr_msi`` and ``lr_hsi``.
- ``.h5``/``.hdf5``, the community layout (``GT``, ``RGB``, optionally ``LRHSI``): ``RGB`` is the
  HR-MSI; the LR-HSI is regenerated from ``GT`` with the paper's protocol
  (:func:`lso.data.degrade`, ratio ``--ratio``, default 4), as LSO's evaluation does. ``--lr-from
  file`` uses the file's ``LRHSI`` instead (made with another protocol by the dataset's authors).
- ``.npz``: arrays ``hr_msi`` and ``lr_hsi`` (also accepted: ``msi``/``rgb`` and ``lrhsi``/``hsi``).
- ``.mat`` (MATLAB v5 through scipy, v7.3 through h5py): variables as for ``.npz``; MATLAB arrays are
  usually ``H x W x C`` and are transposed (``--layout``).
- a pair ``HR LR``: two single-array files (``.npy``, ``.npz``, ``.mat``, ``.h5``), or an 8/16-bit
  ``.png``/``.tif`` for the RGB (divided by 255 or 65535). Which is which is read from the band counts.

Arrays may be ``[C, H, W]``, ``[N, C, H, W]`` or channels-last (``--layout auto`` transposes when the
band count makes it unambiguous). Values are reflectance in [0, 1]; one policy for every format
(:mod:`lso.data.value_range`): values outside [-0.5, 1.5] are an ``InputError`` naming the scale they look like
(8- or 16-bit counts stored as numbers, centred at 0) and the fix; ``--input-scale`` (``input_scale``: ``8bit``,
``16bit`` or a number to divide by) converts them and the output records it (``input_scale``); integer arrays
need it; images (PNG) carry their scale in their bit depth. A community ``.h5`` holding one scene without the
leading N axis (``GT`` ``[31, H, W]``) is read as one scene.

Nothing is cropped silently, whatever the format: sizes that do not fit the ratio (a community ``GT``
of 130x130 at x4, an HR-MSI of 130x130 with an LR-HSI of 32x32 or 33x33) are an ``InputError`` naming the
top-left crop that would fit (:func:`lso.data.readers.fit_to_ratio`). ``--crop`` (``crop=True``) takes that
crop instead; the output records it (attribute/variable ``crop``, a one-line description, and
``crop_box`` = top, left, height, width of the HR input kept) and ``lso infer`` prints it.

Outputs are written as the network computes them (they may leave [0, 1] slightly); ``--clamp`` clips them
to [0, 1], as the paper does before computing metrics (recorded as ``clamped`` = 1).

Outputs, chosen by the suffix of ``--out``, each with the variables/attributes ``artifact``, ``inputs``,
``crop``, ``clamped`` and, for 31 bands, ``wavelengths_nm`` (400..700 nm):

- ``.npz``: arrays ``hr_hsi`` and the ones above.
- ``.h5``/``.hdf5``: dataset ``hr_hsi`` with the others as its attributes, chunked with Fletcher-32
  checksums.
- ``.mat`` (MATLAB v5, :func:`scipy.io.savemat`): variable ``hr_hsi`` and the others as variables.
  ``hr_hsi`` has the same layout as in ``.npz``/``.h5``: ``[31, H, W]`` for one scene, ``[N, 31, H, W]``
  for several (channels first; in MATLAB ``permute(hr_hsi, [2 3 1])`` gives the usual H x W x 31 of one
  scene). MATLAB v5 holds at most 2 GiB per variable: write larger results as ``.h5``.

Each is written to a temporary file and renamed (no partial file under the final name, ever), with a
sidecar ``<out>.json`` holding its sha256; optionally an ENVI pair (``.hdr`` + ``.img``, BSQ float32,
wavelengths in the header) for remote-sensing tools; and a false-colour PNG preview (bands near
650/550/450 nm, 1-99 % stretch). ``--tile`` fuses large scenes exactly in tiles
(:func:`lso.runtime.fuse_tiled`), into a memory-mapped partial result in ``.<out>.partial/`` that
records finished tiles: a killed run leaves no output file, and the same command run again skips the
finished tiles and completes the rest (the folder is removed once the output is written).
One run per output at a time: while it runs, ``.<out>.lock`` beside the output holds it
(:func:`lso._io.output_lock`), and a second run writing the same output is refused with an ``ArtifactError``
naming the first (PID, host, start time, command) before it touches the output or its resume state.

Untrusted input files: sizes are read from headers and checked against the memory budget before
any array is read; ``.npy``/``.npz`` are never unpickled; an input with a sidecar must match its sha256.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import struct
import time
import tokenize
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from lso._deps import require
from lso._io import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_text,
    check_writable_target,
    npy_header,
    output_lock,
    read_sidecar,
    sidecar_path,
    write_sidecar,
)
from lso.data.value_range import InputScale, apply_input_scale
from lso.errors import ArtifactError, InputError
from lso.memory import array_bytes, check_bytes, fusion_bytes, parse_bytes, resolve_budget

__all__ = ["InferOptions", "InferResult", "Scene", "infer", "load_scene", "read_scene", "write_png", "false_colour",
           "write_envi", "resume_dir"]

log = logging.getLogger(__name__)

HR_KEYS = ("hr_msi", "msi", "rgb", "hrmsi", "hr_rgb")
LR_KEYS = ("lr_hsi", "lrhsi", "lr", "hsi_lr", "hsi")
GT_KEYS = ("gt",)
OUTPUT_SUFFIXES = (".npz", ".h5", ".hdf5", ".mat")
MAT_MAX_BYTES = 2**31 - 1
"""MATLAB v5 files hold at most this many bytes per variable (larger results: write ``.h5``)."""
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")


@dataclass(frozen=True)
class InferOptions:
    """What ``lso infer`` does (one field per flag).

    Attributes:
        artifact: checkpoint, ONNX graph or TensorRT plan (the runner is chosen from it).
        inputs: one scene file, or the HR-MSI and LR-HSI files.
        out: output ``.npz``, ``.h5`` or ``.mat`` (see the module docstring for the variables).
        device: runner device (default: the backend's).
        tile: fuse in tiles with this core size (exact; bounded memory); None = whole image.
        overlap: tile overlap (default: the exact minimum).
        index: scene index in a multi-scene file (default: all scenes).
        ratio: ratio for regenerating the LR-HSI from GT (community files); default 4.
        lr_from: community files: ``"auto"``/``"gt"`` regenerate from GT, ``"file"`` use ``LRHSI``.
        layout: ``"auto"``, ``"chw"`` or ``"hwc"`` for the arrays read.
        envi: also write ``<out>.hdr``/``<out>.img``.
        preview: also write ``<out>.png``.
        threads: ONNX Runtime intra-op threads.
        progress: show a progress bar when tiling.
        config: for a checkpoint artifact, configuration fields (``--config``, e.g. ``{"patch_size": 2}``):
            they must agree with what it records and fill in what it does not (:func:`lso.load_checkpoint`).
        memory_budget: working memory allowed (bytes or ``"4G"``; default :mod:`lso.memory`'s): a scene
            too large to fuse in one piece is refused before anything is allocated; with ``tile`` the
            tile shrinks until it fits.
        crop: crop inputs whose sizes do not fit the ratio to the top-left part that does (recorded in the
            output); False (default): such inputs are an ``InputError`` naming that crop.
        clamp: clip the output to [0, 1] (as the paper does before metrics); False (default): write the
            values as the network computes them.
        input_scale: scale of the input values (``--input-scale``: ``"unit"`` (default), ``"8bit"``, ``"16bit"``
            or a number to divide by; :mod:`lso.data.value_range`); recorded in the output as ``input_scale``.
    """

    artifact: Path
    inputs: tuple[Path, ...]
    out: Path
    device: str | None = None
    tile: int | None = None
    overlap: int | None = None
    index: int | None = None
    ratio: int | None = None
    lr_from: str = "auto"
    layout: str = "auto"
    envi: bool = False
    preview: bool = True
    threads: int | None = None
    progress: bool = True
    memory_budget: str | None = None
    config: dict[str, Any] | None = None
    crop: bool = False
    clamp: bool = False
    input_scale: Any = None

    def check(self) -> InferOptions:
        """Refuse impossible option values (InputError naming the flag) before any file is read."""
        def whole(name: str, value: Any, minimum: int | None) -> None:
            if value is None:
                return
            if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
                raise InputError(f"--{name.replace('_', '-')} must be an integer"
                                 + (f" >= {minimum}" if minimum is not None else "") + f", got {value!r}")

        whole("tile", self.tile, 1)
        whole("overlap", self.overlap, 0)
        whole("index", self.index, None)
        whole("ratio", self.ratio, 2)
        whole("threads", self.threads, 1)
        if self.lr_from not in ("auto", "gt", "file"):
            raise InputError(f"--lr-from must be 'auto', 'gt' or 'file', got {self.lr_from!r}")
        if self.layout not in ("auto", "chw", "hwc"):
            raise InputError(f"--layout must be 'auto', 'chw' or 'hwc', got {self.layout!r}")
        if not 1 <= len(self.inputs) <= 2:
            raise InputError(f"give one scene file or two files (HR-MSI, LR-HSI), got {len(self.inputs)}")
        if Path(self.out).suffix.lower() not in OUTPUT_SUFFIXES:
            raise InputError(f"output {Path(self.out).name}: expected one of {', '.join(OUTPUT_SUFFIXES)}")
        if self.memory_budget is not None:
            parse_bytes(self.memory_budget)
        from lso.data.value_range import InputScale

        InputScale.parse(self.input_scale)  # InputError naming --input-scale
        return self


@dataclass
class InferResult:
    """What was written (``crop``: what ``--crop`` did, ``"none"`` if nothing; ``clamped``: ``--clamp``)."""

    output: Path
    shape: tuple[int, ...]
    seconds: float
    runner: str
    preview: list[Path] = field(default_factory=list)
    envi: list[Path] = field(default_factory=list)
    crop: str = "none"
    clamped: bool = False


@dataclass
class Scene:
    """A scene as read: channels-first arrays, and the crop taken (None: the files are used as they are).

    Attributes:
        hr_msi: ``[3, H, W]`` or ``[N, 3, H, W]``.
        lr_hsi: ``[31, h, w]`` or ``[N, 31, h, w]``.
        crop: the :class:`~lso.data.readers.Crop` applied (only with ``crop=True``), else None.
        input_scale: the scale the values were converted by (:meth:`lso.data.value_range.InputScale.record`).
    """

    hr_msi: np.ndarray
    lr_hsi: np.ndarray
    crop: Any = None
    input_scale: str = "unit"

    def crop_attrs(self) -> dict[str, Any]:
        """What the output records about the crop: ``crop`` (a description) and ``crop_box`` when cropped."""
        if self.crop is None:
            return {"crop": "none"}
        return {"crop": self.crop.describe(), "crop_box": np.asarray(self.crop.box, dtype=np.int64)}


# ------------------------------------------------------------------------------------------ reading
def _pick(keys: Any, candidates: tuple[str, ...]) -> str | None:
    lower = {str(k).lower(): k for k in keys}
    for cand in candidates:
        if cand in lower:
            return lower[cand]
    return None


def _to_chw(arr: np.ndarray, bands: int, layout: str, name: str) -> np.ndarray:
    """``[C, H, W]``/``[N, C, H, W]`` from channels-first or channels-last arrays."""
    if layout == "hwc" or (layout == "auto" and arr.ndim in (3, 4) and arr.shape[-1] == bands
                           and arr.shape[-3] != bands):
        return np.ascontiguousarray(np.moveaxis(arr, -1, -3))
    if layout not in ("auto", "chw", "hwc"):
        raise InputError(f"layout must be 'auto', 'chw' or 'hwc', got {layout!r}")
    return arr


def _select(arr: np.ndarray, index: int | None, name: str) -> np.ndarray:
    if index is None or arr.ndim != 4:
        return arr
    if not -arr.shape[0] <= index < arr.shape[0]:
        raise InputError(f"--index {index} is out of range: {name} holds {arr.shape[0]} scene(s)")
    return arr[index]


def _read_image(path: Path) -> np.ndarray:
    image_mod = require("PIL.Image")
    try:
        with image_mod.open(path) as img:
            check_bytes(array_bytes((img.height, img.width, max(len(img.getbands()), 1)), 8),
                        f"{path}: reading a {img.width}x{img.height} image (as its header claims)")
            arr = np.asarray(img)
    except image_mod.DecompressionBombError as exc:
        raise InputError(f"{path}: the image claims more pixels than PIL's decompression-bomb limit ({exc}); the "
                         f"file is corrupt or malicious, or split it into tiles") from exc
    except (OSError, ValueError, SyntaxError, EOFError, struct.error, TypeError, IndexError, KeyError,
            ZeroDivisionError) as exc:  # what PIL's decoders raise on damaged files
        if isinstance(exc, InputError):
            raise
        raise ArtifactError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from exc
    if arr.dtype == np.uint8:
        scaled = arr.astype(np.float32) / 255.0
    elif arr.dtype in (np.uint16, np.int32):  # PIL reads 16-bit PNGs as int32 ("I" mode)
        scaled = arr.astype(np.float32) / 65535.0
    else:
        raise InputError(f"{path}: image of dtype {arr.dtype} has no known scale; save it as .npy floats in [0, 1]")
    if scaled.ndim == 3 and scaled.shape[-1] == 4:
        scaled = scaled[..., :3]  # drop alpha
    return scaled


# what h5py raises on damaged files (InputError, a ValueError, is re-raised as it is)
_H5_ERRORS = (OSError, RuntimeError, ValueError, KeyError, TypeError)


def _check_sizes(path: Path, shapes: dict[str, tuple[Any, Any]]) -> None:
    """Refuse before reading when the arrays a header declares would not fit the memory budget.

    ``shapes``: name -> (shape, dtype). Counted twice: the array as stored and its float32/channels-first copy.
    """
    total = 0
    for shape, dtype in shapes.values():
        try:
            itemsize = max(int(np.dtype(dtype).itemsize), 1)
        except TypeError:
            itemsize = 8
        total += array_bytes(shape, itemsize) + array_bytes(shape, 4)
    check_bytes(total, f"{path}: reading {', '.join(f'{k} {tuple(int(d) for d in s)}' for k, (s, _) in shapes.items())}"
                       f" (as the file's header claims)",
                fix="check that the file is not corrupt, or split the scene")


def _h5_datasets(path: Path, f: Any, keys: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    h5py = require("h5py")
    names = [k for k in (keys or f.keys()) if isinstance(f[k], h5py.Dataset)]
    _check_sizes(path, {k: (f[k].shape, f[k].dtype) for k in names})
    return {k: np.asarray(f[k]) for k in names}


def _open_h5(path: Path, what: str) -> Any:
    h5py = require("h5py")
    read_sidecar(path)
    try:
        return h5py.File(path, "r")
    except _H5_ERRORS as exc:
        raise ArtifactError(f"{path}: not a readable {what} ({exc})") from exc


def _mat_arrays(path: Path) -> dict[str, np.ndarray]:
    h5py = require("h5py")
    if h5py.is_hdf5(str(path)):  # MATLAB v7.3: HDF5, arrays stored transposed (column-major)
        try:
            with _open_h5(path, "MATLAB v7.3 (HDF5) file") as f:
                return {k: v.T for k, v in _h5_datasets(path, f).items()}
        except _H5_ERRORS as exc:
            if isinstance(exc, InputError):
                raise
            raise ArtifactError(f"{path}: not a readable MATLAB v7.3 (HDF5) file ({exc})") from exc
    from lso.data.readers import load_mat

    read_sidecar(path)
    return load_mat(path)[0]  # MATLAB v4/v5: parsed in a child process, sizes checked first (see load_mat)


def _numpy_arrays(path: Path) -> dict[str, np.ndarray]:
    """``.npy``/``.npz`` arrays; headers checked against the memory budget first; never unpickled."""
    import zipfile

    read_sidecar(path)
    try:
        if path.suffix.lower() == ".npy":
            with open(path, "rb") as fh:
                _check_sizes(path, {path.stem: npy_header(fh)})
            return {path.stem: np.load(path, allow_pickle=False)}
        with zipfile.ZipFile(path) as zf:
            headers = {}
            for info in zf.infolist():
                if info.filename.endswith(".npy"):
                    with zf.open(info) as fh:
                        headers[info.filename[:-4]] = npy_header(fh)
        _check_sizes(path, headers)
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except InputError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, KeyError,
            struct.error, NotImplementedError, TypeError, UnicodeDecodeError, SyntaxError, OverflowError,
            IndexError, tokenize.TokenError) as exc:  # numpy's header parser tokenizes the header dict
        raise ArtifactError(f"{path}: not a readable numpy file ({type(exc).__name__}: {exc})") from exc


def _arrays(path: Path) -> dict[str, Any]:
    """Named arrays of a file (lazy h5py datasets for .h5)."""
    if not path.is_file():
        raise ArtifactError(f"{path} does not exist (or is not a file)")
    suffix = path.suffix.lower()
    if suffix in (".npy", ".npz"):
        return _numpy_arrays(path)
    if suffix == ".mat":
        return _mat_arrays(path)
    if suffix in (".h5", ".hdf5"):
        try:
            with _open_h5(path, "HDF5 file") as f:
                return _h5_datasets(path, f)
        except _H5_ERRORS as exc:
            if isinstance(exc, InputError):
                raise
            raise ArtifactError(f"{path}: not a readable HDF5 file ({exc})") from exc
    if suffix in IMAGE_SUFFIXES:
        read_sidecar(path)
        return {"rgb": _read_image(path)}
    raise ArtifactError(f"{path}: unknown input format {suffix!r}; expected .h5, .npz, .mat, .npy or an image")


def _fit_pair(hr: np.ndarray, lr: np.ndarray, opts: InferOptions, where: str, names: tuple[str, str] = ("hr_msi",
              "lr_hsi")) -> Scene:
    """The pair as it is when its sizes fit one integer ratio; else the top-left crop (``opts.crop``) or an
    InputError naming it (``names``: the arrays' names in the message). Arrays of too few dimensions are left to
    the runner's checks."""
    from lso.data.readers import fit_to_ratio

    if hr.ndim < 2 or lr.ndim < 2:
        return Scene(hr, lr)
    crop = fit_to_ratio(hr.shape[-2:], lr_size=lr.shape[-2:], hr_name=names[0], lr_name=names[1]).check(
        where, allowed=opts.crop)
    if crop is None:
        return Scene(hr, lr)
    return Scene(np.ascontiguousarray(crop.apply_hr(hr)), np.ascontiguousarray(crop.apply_lr(lr)), crop)


def _community(path: Path, opts: InferOptions, n_bands: int) -> Scene:
    """RGB + LR-HSI regenerated from GT with the paper's protocol (or the file's LRHSI with lr_from='file')."""
    if opts.lr_from == "file":
        keys = _h5_keys(path)
        hr_key, lr_key = _pick(keys, HR_KEYS), _pick(keys, LR_KEYS)
        if hr_key is None or lr_key is None:
            raise InputError(f"{path}: --lr-from file needs RGB and LRHSI datasets (found {sorted(keys)})")
        hr, lr = _read_h5(path, (hr_key, lr_key))
        scale = InputScale.parse(opts.input_scale)
        hr = apply_input_scale(_select(hr, opts.index, hr_key), f"{path}: {hr_key}", scale)
        lr = apply_input_scale(_select(lr, opts.index, lr_key), f"{path}: {lr_key}", scale)
        return replace(_fit_pair(hr, lr, opts, str(path), (hr_key, lr_key)), input_scale=scale.record())
    if opts.lr_from not in ("auto", "gt"):
        raise InputError(f"lr_from must be 'auto', 'gt' or 'file', got {opts.lr_from!r}")
    from lso.data import degrade
    from lso.data.readers import H5Dataset, fit_to_ratio

    ratio = opts.ratio or 4
    scale = InputScale.parse(opts.input_scale)
    with H5Dataset(path, input_scale=scale) as ds:
        indices = [opts.index] if opts.index is not None else list(range(len(ds)))
        if opts.index is not None and not -len(ds) <= opts.index < len(ds):
            raise InputError(f"--index {opts.index} is out of range: {path} holds {len(ds)} scene(s)")
        # checked before any item is read: the same rule as for every other format (no silent crop)
        crop = fit_to_ratio(ds.image_size, ratio=ratio, hr_name="GT/RGB").check(str(path), allowed=opts.crop)
        hrs, lrs = [], []
        for i in indices:
            item = ds[i]
            gt, rgb = item["gt"], item["rgb"]
            if crop is not None:
                gt, rgb = np.ascontiguousarray(crop.apply_hr(gt)), np.ascontiguousarray(crop.apply_hr(rgb))
            _, lr = degrade(gt, ratio)
            hrs.append(rgb)
            lrs.append(lr.astype(np.float32))
    log.info("%s: community layout; LR-HSI regenerated from GT with the paper's protocol at x%d", path.name, ratio)
    if opts.index is not None:
        return Scene(hrs[0], lrs[0], crop, scale.record())
    return Scene(np.stack(hrs), np.stack(lrs), crop, scale.record())


def _h5_keys(path: Path) -> list[str]:
    h5py = require("h5py")
    if not path.is_file():
        raise ArtifactError(f"{path} does not exist (or is not a file)")
    try:
        with _open_h5(path, "HDF5 file") as f:
            return [k for k in f.keys() if isinstance(f[k], h5py.Dataset)]
    except _H5_ERRORS as exc:
        if isinstance(exc, InputError):
            raise
        raise ArtifactError(f"{path}: not a readable HDF5 file ({exc})") from exc


def _read_h5(path: Path, keys: tuple[str, ...]) -> list[np.ndarray]:
    try:
        with _open_h5(path, "HDF5 file") as f:
            arrays = _h5_datasets(path, f, keys)
    except _H5_ERRORS as exc:
        if isinstance(exc, InputError):
            raise
        raise ArtifactError(f"{path}: not a readable HDF5 file ({exc})") from exc
    return [arrays[k] for k in keys]


def _has_bands(a: np.ndarray, bands: int) -> bool:
    return a.ndim >= 3 and (a.shape[-3] == bands or a.shape[-1] == bands)


def read_scene(opts: InferOptions, *, n_msi_bands: int = 3, n_bands: int = 31) -> tuple[np.ndarray, np.ndarray]:
    """``(hr_msi, lr_hsi)`` as channels-first numpy arrays from ``opts.inputs`` (see :func:`load_scene`)."""
    scene = load_scene(opts, n_msi_bands=n_msi_bands, n_bands=n_bands)
    return scene.hr_msi, scene.lr_hsi


def load_scene(opts: InferOptions, *, n_msi_bands: int = 3, n_bands: int = 31) -> Scene:
    """The scene of ``opts.inputs`` as channels-first numpy arrays (see the module docstring).

    Sizes that do not fit one integer ratio are cropped to the top-left part that does only with
    ``opts.crop`` (the :class:`Scene` says so); otherwise they raise.

    Raises:
        ArtifactError: an unreadable file.
        InputError: wrong content: keys, shapes, sizes that do not fit the ratio (naming the crop that would).
    """
    paths = tuple(Path(p) for p in opts.inputs)
    images: list[bool] = []  # which of (hr, lr) came from an image file: its bit depth gave its scale already
    if len(paths) == 1:
        path = paths[0]
        if path.suffix.lower() in (".h5", ".hdf5"):
            keys = _h5_keys(path)
            hr_key, lr_key = _pick(keys, HR_KEYS[:1]), _pick(keys, LR_KEYS[:1])
            if not (hr_key and lr_key) and _pick(keys, GT_KEYS):
                return _community(path, opts, n_bands)
            hr_key, lr_key = _pick(keys, HR_KEYS), _pick(keys, LR_KEYS)
            arrays = {k: None for k in keys}
        else:
            arrays = _arrays(path)
            hr_key, lr_key = _pick(arrays, HR_KEYS), _pick(arrays, LR_KEYS)
        if hr_key is None or lr_key is None:
            raise InputError(f"{path} holds {sorted(arrays)}; expected an HR-MSI array ({'/'.join(HR_KEYS)}) and an "
                             f"LR-HSI array ({'/'.join(LR_KEYS)}), or pass two files (HR LR)")
        if arrays[hr_key] is None:
            hr, lr = _read_h5(path, (hr_key, lr_key))
        else:
            hr, lr = arrays[hr_key], arrays[lr_key]
    elif len(paths) == 2:
        pair = []
        for path in paths:
            images.append(path.suffix.lower() in IMAGE_SUFFIXES)
            arrays = _arrays(path)
            if len(arrays) != 1:
                key = _pick(arrays, HR_KEYS + LR_KEYS)
                if key is None:
                    raise InputError(f"{path} holds {sorted(arrays)}: with two files each must hold one array")
                pair.append(np.asarray(arrays[key]))
            else:
                pair.append(np.asarray(next(iter(arrays.values()))))
        hr, lr = pair
        if _has_bands(hr, n_bands) and not _has_bands(hr, n_msi_bands) and _has_bands(lr, n_msi_bands):
            log.info("%s holds %d bands: taking it as the LR-HSI", paths[0].name, n_bands)
            hr, lr = lr, hr
            images.reverse()
    else:
        raise InputError(f"give one scene file or two files (HR-MSI, LR-HSI), got {len(paths)}")
    hr = _select(_to_chw(np.asarray(hr), n_msi_bands, opts.layout, "hr_msi"), opts.index, "hr_msi")
    lr = _select(_to_chw(np.asarray(lr), n_bands, opts.layout, "lr_hsi"), opts.index, "lr_hsi")
    where = " + ".join(str(p) for p in paths)
    scale = InputScale.parse(opts.input_scale)
    images = images or [False, False]
    hr = apply_input_scale(hr, f"{where}: hr_msi", InputScale() if images[0] else scale)
    lr = apply_input_scale(lr, f"{where}: lr_hsi", InputScale() if images[1] else scale)
    return replace(_fit_pair(hr, lr, opts, where), input_scale=scale.record())


# ------------------------------------------------------------------------------------------ memory plan
@dataclass(frozen=True)
class DeclaredScene:
    """What a scene's files declare (headers only, nothing read): the work a command will hold.

    Attributes:
        batch: scenes fused together (all items of a multi-scene file, or 1 with ``index``).
        height, width: HR size; ``lr_height``, ``lr_width``: LR-HSI size.
        read_bytes: transient bytes of reading (as stored plus the float32 copy; a community file: one item
            and its degradation at a time).
        held_factor: copies of the inputs held at once while reading (2 for a community file: the items read
            and their stack).
        what: the files and shapes, for messages.
    """

    batch: int
    height: int
    width: int
    lr_height: int
    lr_width: int
    read_bytes: int
    held_factor: int
    what: str


def _declared_arrays(path: Path) -> dict[str, tuple[tuple[int, ...], Any]] | None:
    """name -> (shape, dtype) as ``.npy``/``.npz``/``.h5`` headers declare them; None for other formats."""
    import zipfile

    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            with open(path, "rb") as fh:
                return {path.stem: npy_header(fh)}
        if suffix == ".npz":
            headers = {}
            with zipfile.ZipFile(path) as zf:
                for info in zf.infolist():
                    if info.filename.endswith(".npy"):
                        with zf.open(info) as fh:
                            headers[info.filename[:-4]] = npy_header(fh)
            return headers
        if suffix in (".h5", ".hdf5"):
            h5py = require("h5py")
            with h5py.File(path, "r") as f:
                return {k: (tuple(f[k].shape), f[k].dtype) for k in f.keys() if isinstance(f[k], h5py.Dataset)}
    except Exception:  # unreadable headers: the readers say so, with their own messages
        return None
    return None


def _spatial(shape: tuple[int, ...], bands: int, layout: str) -> tuple[int, int, int] | None:
    """``(batch, H, W)`` of a declared ``[.., C, H, W]`` (or channels-last) shape; None when it is not one."""
    if len(shape) < 2:
        return None
    if len(shape) >= 3 and (layout == "hwc" or (layout == "auto" and shape[-1] == bands and shape[-3] != bands)):
        lead, (h, w) = shape[:-3], shape[-3:-1]
    elif len(shape) >= 3:
        lead, (h, w) = shape[:-3], shape[-2:]
    else:
        lead, (h, w) = (), shape
    batch = 1
    for d in lead:
        batch *= int(d)
    return batch, int(h), int(w)


def declared_scene(opts: InferOptions, *, n_msi_bands: int = 3, n_bands: int = 31) -> DeclaredScene | None:
    """The scene ``opts.inputs`` declare, from headers only (``.npz``, ``.npy``, ``.h5`` in both layouts);
    None where a format declares nothing readable here (``.mat``, images: their readers check each read)."""
    paths = tuple(Path(p) for p in opts.inputs)
    if not all(p.is_file() for p in paths):
        return None
    arrays: dict[str, tuple[tuple[int, ...], Any]] = {}
    singles = []
    for path in paths:
        found = _declared_arrays(path)
        if found is None:
            return None
        if len(paths) == 2 and len(found) == 1:  # a pair: one array per file
            singles.append(next(iter(found.values())))
        else:
            arrays.update(found)
    if len(singles) == 2:  # which is which: the larger image is the HR-MSI (as load_scene decides by bands)
        sizes = [_spatial(tuple(int(d) for d in s[0]), b, opts.layout)
                 for s, b in zip(singles, (n_msi_bands, n_bands), strict=True)]
        big = 0 if not all(sizes) or sizes[0][1] * sizes[0][2] >= sizes[1][1] * sizes[1][2] else 1
        arrays.update({"hr_msi": singles[big], "lr_hsi": singles[1 - big]})
    where = " + ".join(str(p) for p in paths)
    gt_key = _pick(arrays, GT_KEYS)
    ours = _pick(arrays, HR_KEYS[:1]) and _pick(arrays, LR_KEYS[:1])
    if len(paths) == 1 and paths[0].suffix.lower() in (".h5", ".hdf5") and gt_key and not ours \
            and opts.lr_from != "file":  # community: items read one at a time, LR-HSI made from GT
        shape = tuple(int(d) for d in arrays[gt_key][0])
        if len(shape) not in (3, 4):
            return None
        n = shape[0] if len(shape) == 4 else 1
        height, width = shape[-2:]
        ratio = opts.ratio or 4
        batch = 1 if opts.index is not None else n
        item = array_bytes((n_bands + n_msi_bands, height, width), 4)
        return DeclaredScene(batch, height, width, height // ratio, width // ratio, read_bytes=3 * item,
                             held_factor=2, what=f"{where}: {batch} item(s) of {height}x{width} (GT {shape})")
    hr_key, lr_key = _pick(arrays, HR_KEYS), _pick(arrays, LR_KEYS)
    if hr_key is None or lr_key is None:
        return None
    hr = _spatial(tuple(int(d) for d in arrays[hr_key][0]), n_msi_bands, opts.layout)
    lr = _spatial(tuple(int(d) for d in arrays[lr_key][0]), n_bands, opts.layout)
    if hr is None or lr is None:
        return None
    read = 0
    for shape, dtype in (arrays[hr_key], arrays[lr_key]):
        try:
            itemsize = max(int(np.dtype(dtype).itemsize), 1)
        except TypeError:
            itemsize = 8
        read += array_bytes(shape, itemsize) + array_bytes(shape, 4)
    batch = 1 if opts.index is not None else hr[0]
    if opts.index is not None and hr[0] > 1 and paths[0].suffix.lower() in (".h5", ".hdf5"):
        read //= hr[0]  # one item's slice (lso batch reads only it; lso infer's whole read is checked as it reads)
    return DeclaredScene(batch, hr[1], hr[2], lr[1], lr[2], read_bytes=read, held_factor=1,
                         what=f"{where}: {hr_key} {tuple(arrays[hr_key][0])}, {lr_key} {tuple(arrays[lr_key][0])}")


def work_bytes(scene: DeclaredScene, config: Any, *, tiled: bool, fuse_on_host: bool = True,
               clamp: bool = False) -> int:
    """Peak host bytes of a command's whole work on ``scene``: the larger of reading (inputs held plus the read
    in flight) and fusing (inputs held, the fusion's working memory and its float32 output, unless tiled:
    the tiles are sized to fit the budget by :func:`lso.runtime.fuse_tiled`, the output is memory-mapped)."""
    held = array_bytes((scene.batch, config.n_msi_bands, scene.height, scene.width), 4) \
        + array_bytes((scene.batch, config.n_bands, scene.lr_height, scene.lr_width), 4)
    reading = held * scene.held_factor + scene.read_bytes
    output = array_bytes((scene.batch, config.n_bands, scene.height, scene.width), 4)
    fusing = held
    if not tiled:
        fusing += output * (2 if clamp else 1)
        if fuse_on_host:
            fusing += fusion_bytes(config, scene.batch, scene.height, scene.width)
    elif clamp:
        fusing += output
    return max(reading, fusing)


def check_work_memory(opts: InferOptions, runner: Any, *, tiled: bool | None = None,
                      memory_budget: Any = None, label: str = "", fix: str | None = None) -> int | None:
    """Refuse (InputError) before anything is read when the whole work ``opts`` asks for (every item of the
    file, read, held and fused) would not fit the memory budget; returns the estimate (None: not declared).

    Args:
        opts: the inputs, ``index``, ``ratio``, ``layout``, ``tile``, ``clamp`` and ``memory_budget``.
        runner: the active runner (its configuration and bands).
        tiled: the fusion will be tiled to fit (default: ``opts.tile`` given).
        memory_budget: the budget (default ``opts.memory_budget``, then :mod:`lso.memory`'s).
        label: put before the message (``"scene big: "``).
        fix: how to get under the budget (default: one scene at a time, tiles, or a split file).
    """
    from lso.config import LSOConfig

    tiled = bool(opts.tile) if tiled is None else tiled
    memory_budget = opts.memory_budget if memory_budget is None else memory_budget

    scene = declared_scene(opts, n_msi_bands=runner.n_msi_bands, n_bands=runner.n_bands)
    if scene is None:
        return None
    config = runner.config or LSOConfig(n_bands=runner.n_bands, n_msi_bands=runner.n_msi_bands)
    memory_device = getattr(runner, "_memory_device", None)
    on_host = memory_device is None or memory_device() == "cpu"
    need = work_bytes(scene, config, tiled=tiled, fuse_on_host=on_host, clamp=opts.clamp)
    how = "in tiles" if tiled else "in one piece"
    check_bytes(need, f"{label}{scene.what} (as declared; {scene.batch} scene(s) read, held and fused {how})",
                memory_budget=memory_budget,
                fix=fix or "fuse one scene at a time (--index I), in tiles (--tile 256), or split the file")
    return need


# ------------------------------------------------------------------------------------------ writing
def _band_indices(n_bands: int) -> tuple[int, int, int]:
    if n_bands == 31:  # 400..700 nm at 10 nm: 650, 550, 450 nm
        return 25, 15, 5
    return tuple(int(round(f * (n_bands - 1))) for f in (0.83, 0.5, 0.17))  # type: ignore[return-value]


def false_colour(hsi: np.ndarray, bands: tuple[int, int, int] | None = None) -> np.ndarray:
    """``[C, H, W]`` -> ``[H, W, 3]`` uint8: bands near 650/550/450 nm, each stretched 1-99 %."""
    idx = bands or _band_indices(hsi.shape[0])
    rgb = np.stack([np.asarray(hsi[i], dtype=np.float32) for i in idx], axis=-1)
    out = np.empty(rgb.shape, dtype=np.uint8)
    for c in range(3):
        ch = rgb[..., c]
        finite = ch[np.isfinite(ch)]
        lo, hi = (np.percentile(finite, (1, 99)) if finite.size else (0.0, 1.0))
        scale = 255.0 / max(float(hi - lo), 1e-12)
        out[..., c] = np.clip((np.nan_to_num(ch) - lo) * scale, 0, 255).astype(np.uint8)
    return out


def write_png(path: str | os.PathLike, rgb: np.ndarray) -> Path:
    """Write an ``[H, W, 3]`` uint8 image as PNG (zlib only, no imaging library), atomically."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    height, width = rgb.shape[:2]

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(height))
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))
    return atomic_write_bytes(path, data)


def write_envi(stem: Path, hsi: np.ndarray, *, wavelengths: np.ndarray | None = None,
               description: str = "lso-deploy fused HSI") -> list[Path]:
    """Write ``<stem>.img`` (BSQ float32, little-endian) and ``<stem>.hdr`` for ``[C, H, W]``."""
    bands, lines, samples = hsi.shape
    img, hdr = stem.with_suffix(".img"), stem.with_suffix(".hdr")
    with atomic_path(img) as tmp:
        np.ascontiguousarray(hsi, dtype="<f4").tofile(tmp)
    header = ["ENVI", f"description = {{{description}}}", f"samples = {samples}", f"lines = {lines}",
              f"bands = {bands}", "header offset = 0", "file type = ENVI Standard", "data type = 4",
              "interleave = bsq", "byte order = 0"]
    if wavelengths is not None:
        header += ["wavelength units = Nanometers",
                   "wavelength = {" + ", ".join(f"{float(w):g}" for w in wavelengths) + "}"]
    atomic_write_text(hdr, "\n".join(header) + "\n")
    return [hdr, img]


def _check_mat_size(path: Path, hsi_shape: tuple[int, ...]) -> None:
    """Refuse a ``.mat`` output MATLAB v5 cannot hold (before fusing, when called with the expected shape)."""
    size = array_bytes(hsi_shape, 4)
    if size > MAT_MAX_BYTES:
        raise InputError(f"output {path.name}: hr_hsi {'x'.join(map(str, hsi_shape))} is {size / 2**30:.1f} GiB, "
                         f"more than the 2 GiB a MATLAB v5 .mat variable holds; write .h5 instead (MATLAB reads "
                         f"it with h5read)")


def _write_output(path: Path, hsi: np.ndarray, attrs: dict[str, Any]) -> None:
    """Write the result atomically, then its sidecar (sha256); a stale sidecar is removed first."""
    suffix = path.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise InputError(f"output {path.name}: expected one of {', '.join(OUTPUT_SUFFIXES)}")
    if suffix == ".mat":
        scipy_io = require("scipy.io")
        _check_mat_size(path, tuple(hsi.shape))
    sidecar_path(path).unlink(missing_ok=True)  # never leave a sidecar that describes an older file
    try:
        if suffix == ".npz":
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as fh:  # a file object: np.savez would append .npz to a path
                    np.savez(fh, hr_hsi=hsi, **{k: np.asarray(v) for k, v in attrs.items()})
        elif suffix == ".mat":
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as fh:  # a file object: savemat would append .mat to the temporary name
                    scipy_io.savemat(fh, {"hr_hsi": hsi, **{k: np.asarray(v) for k, v in attrs.items()}},
                                     format="5", oned_as="row")
        else:
            h5py = require("h5py")
            with atomic_path(path) as tmp:
                with h5py.File(tmp, "w") as f:
                    # chunked with Fletcher-32 checksums: h5py refuses a corrupted chunk on reading
                    dset = f.create_dataset("hr_hsi", data=hsi, chunks=True, fletcher32=True)
                    for key, value in attrs.items():
                        dset.attrs[key] = value
    except OSError as exc:  # disk full, quota, a file system that went away: the temporary file is gone
        raise ArtifactError(f"cannot write {path}: {exc.strerror or exc}; nothing was written (free space or "
                            f"choose another --out)") from exc
    write_sidecar(path, {"kind": "lso infer output", "shape": list(hsi.shape), "dtype": "float32",
                         **{k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in attrs.items()}})


# ------------------------------------------------------------------------------------------ resuming
def resume_dir(out: Path) -> Path:
    """Where a tiled ``lso infer`` keeps its partial result: ``.<out name>.partial/`` next to ``out``."""
    out = Path(out)
    return out.with_name(f".{out.name}.partial")


def _fingerprint(opts: InferOptions, hr_shape: tuple, lr_shape: tuple) -> str:
    """What a partial result depends on: the artifact and input files (name, size, mtime), options, shapes."""
    def stat(p: Path) -> list:
        st = Path(p).stat()
        return [str(Path(p).resolve()), st.st_size, st.st_mtime_ns]

    key = {"artifact": stat(opts.artifact), "inputs": [stat(p) for p in opts.inputs], "tile": opts.tile,
           "overlap": opts.overlap, "memory_budget": opts.memory_budget, "index": opts.index, "ratio": opts.ratio,
           "lr_from": opts.lr_from, "layout": opts.layout, "hr": list(hr_shape), "lr": list(lr_shape),
           "config": opts.config}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _fuse_resumable(runner: Any, hr: np.ndarray, lr: np.ndarray, opts: InferOptions, out: Path) -> np.ndarray:
    """Tiled fusion into a memory-mapped partial result that survives a kill; finished tiles are skipped on re-run.

    The partial result (``hr_hsi.f32``) and the list of finished tiles (``state.json``, written atomically at
    most every 0.5 s and at the end, after the tiles' pixels are flushed) live in :func:`resume_dir`. The final
    output is written atomically from it by the caller; the folder is removed after that.
    """
    from lso.runtime.tiling import fuse_tiled

    work = resume_dir(out)
    state_path, data_path = work / "state.json", work / "hr_hsi.f32"
    shape = (*hr.shape[:-3], runner.n_bands, *hr.shape[-2:])
    key = _fingerprint(opts, hr.shape, lr.shape)
    done: list[int] = []
    if state_path.is_file():
        try:
            state = json.loads(state_path.read_text(encoding="utf-8"))
            same = (isinstance(state, dict) and state.get("key") == key
                    and data_path.stat().st_size == array_bytes(shape, 4))
            done = [int(i) for i in state.get("done", [])] if same else []
        except (OSError, ValueError, TypeError) as exc:
            log.warning("%s: unreadable partial result (%s); starting over", work, exc)
            same = False
        if not same:
            log.warning("%s belongs to another run (different artifact, inputs or options): starting over", work)
            shutil.rmtree(work, ignore_errors=True)
        elif done:
            log.warning("resuming %s: %d tile(s) already done", out.name, len(done))
    work.mkdir(exist_ok=True)
    mm = np.memmap(data_path, dtype=np.float32, mode="r+" if done else "w+", shape=shape)
    last = [time.monotonic()]

    def save(force: bool = False) -> None:
        if force or time.monotonic() - last[0] >= 0.5:
            mm.flush()  # the pixels first, then the list that says they are there
            atomic_write_text(state_path, json.dumps({"key": key, "done": sorted(set(done))}))
            last[0] = time.monotonic()

    def on_tile(index: int, _tile: Any) -> None:
        done.append(index)
        save()

    # the tiles get the budget less the inputs this command already holds (the output is the memmap on disk)
    held = sum(array_bytes(tuple(x.shape), np.dtype(getattr(x, "dtype", np.float32)).itemsize) for x in (hr, lr))
    fuse_tiled(runner, hr, lr, tile=opts.tile, overlap=opts.overlap, progress=opts.progress, out=mm,
               memory_budget=max(resolve_budget(opts.memory_budget) - held, 1), done=set(done), on_tile=on_tile)
    save(force=True)
    return mm


# ------------------------------------------------------------------------------------------ entry
def check_infer_clash(opts: InferOptions) -> None:
    """InputError when anything ``lso infer`` would write (``out``, its sidecar, previews, the ENVI pair, the
    resume folder) is one of its inputs (the artifact, the scene files and their sidecars); see :mod:`lso._clash`."""
    import re

    from lso._clash import OutputFolder, check_no_clash, with_sidecars

    out = Path(opts.out)
    stem = out.with_name(out.stem)
    outputs: list[tuple[str, Path]] = [("output", out), ("output sidecar", sidecar_path(out)),
                                       ("resume folder", resume_dir(out))]
    extras = (["png"] if opts.preview else []) + (["hdr", "img"] if opts.envi else [])
    outputs += [("preview" if ext == "png" else "ENVI file", stem.with_name(f"{stem.name}.{ext}")) for ext in extras]
    # a multi-scene file gives one preview/ENVI pair per scene: <stem>_<i>.png, ... (the count is not known yet)
    folder = (OutputFolder(out.parent, rf"{re.escape(stem.name)}_[0-9]+\.(?:{'|'.join(extras)})", "output folder",
                           recursive=False) if extras else None)
    check_no_clash([*with_sidecars([opts.artifact], "artifact"), *with_sidecars(opts.inputs, "input")], outputs,
                   folders=[folder])


def infer(opts: InferOptions) -> InferResult:
    """Read ``opts.inputs``, fuse with the runner for ``opts.artifact``, write ``opts.out`` (+ extras).

    Raises:
        ArtifactError: unreadable artifact or input file, unwritable output.
        InputError: wrong content (keys, shapes, bands, dtype, values); an output path that is one of the inputs
            (:func:`check_infer_clash`, before anything runs).
        ArtifactError: another run is writing ``opts.out`` (:func:`lso._io.output_lock`: it names that run).
    """
    opts.check()
    from dataclasses import replace

    from lso.weights import resolve_checkpoint

    opts = replace(opts, artifact=resolve_checkpoint(opts.artifact))  # @demo: the bundled checkpoint's file
    out = Path(opts.out)
    check_infer_clash(opts)  # before anything runs: no output (sidecar, preview, ENVI, resume folder) over an input
    check_writable_target(out)
    with output_lock(out):  # one run per output: a second one is refused, naming this one
        return _infer_locked(opts, out)


def _infer_locked(opts: InferOptions, out: Path) -> InferResult:
    """:func:`infer` once ``out`` is locked (options checked, the artifact resolved)."""
    from lso.runtime.base import load
    from lso.runtime.tiling import AUTO_TILE, decide_tiling

    if out.suffix.lower() == ".mat":
        require("scipy.io")  # before the model is loaded and the scene fused
    # threads: a hint, ignored by backends without intra-op threads (lso.runtime.base.backend_options)
    runner = load(opts.artifact, device=opts.device, memory_budget=opts.memory_budget, config=opts.config,
                  threads=opts.threads)
    start = time.perf_counter()
    with runner:  # active: its configuration is known
        check_work_memory(opts, runner)  # every item of the file, from declared sizes, before any is read
        scene = load_scene(opts, n_msi_bands=runner.n_msi_bands, n_bands=runner.n_bands)
        hr, lr = scene.hr_msi, scene.lr_hsi
        if out.suffix.lower() == ".mat":
            _check_mat_size(out, (*hr.shape[:-3], runner.n_bands, *hr.shape[-2:]))
        log.info("fusing hr_msi %s with lr_hsi %s using %r", hr.shape, lr.shape, runner)
        tiling = decide_tiling(runner, tuple(hr.shape), tile=opts.tile)  # the one policy (lso.runtime.tiling)
        if tiling.tiled:
            hsi = _fuse_resumable(runner, hr, lr, opts, out)
        else:
            if tiling.large:
                log.warning("fusing a %dx%d scene in one piece; --tile %d bounds memory (and is exact)",
                            hr.shape[-2], hr.shape[-1], AUTO_TILE)
            hsi = runner.fuse(hr, lr)
    seconds = time.perf_counter() - start
    hsi = np.asarray(hsi, dtype=np.float32)
    if opts.clamp:  # a new array: a tiled run's partial result keeps the values as computed
        hsi = np.clip(hsi, 0.0, 1.0)
    n_bands = hsi.shape[-3]
    wavelengths = np.arange(400, 701, 10) if n_bands == 31 else None
    attrs: dict[str, Any] = {"artifact": str(Path(opts.artifact).name),
                             "inputs": ";".join(Path(p).name for p in opts.inputs),
                             **scene.crop_attrs(), "clamped": int(opts.clamp), "input_scale": scene.input_scale}
    attrs["weights_sha256"] = runner.weights_fingerprint or ""  # provenance: lso.checkpoint.weights_fingerprint
    if wavelengths is not None:
        attrs["wavelengths_nm"] = wavelengths
    _write_output(out, hsi, attrs)
    result = InferResult(output=out, shape=tuple(hsi.shape), seconds=seconds, runner=repr(runner),
                         crop=str(attrs["crop"]), clamped=opts.clamp)
    scenes = hsi if hsi.ndim == 4 else hsi[None]
    for i, scene in enumerate(scenes):
        suffix = f"_{i}" if len(scenes) > 1 else ""
        stem = out.with_name(out.stem + suffix)
        if opts.preview:
            result.preview.append(write_png(stem.with_suffix(".png"), false_colour(scene)))
        if opts.envi:
            result.envi += write_envi(stem, scene, wavelengths=wavelengths)
    if opts.tile:
        shutil.rmtree(resume_dir(out), ignore_errors=True)  # the output is complete: the partial result goes
    log.info("wrote %s %s in %.2f s", out, result.shape, seconds)
    return result
