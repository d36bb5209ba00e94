"""Scene files: the one reader of a fusion scene (HR-MSI and LR-HSI) from files, :func:`read_scene`.

What it reads (one file, or a pair):

- ``.h5``/``.hdf5``, our layout: datasets ``hr_msi`` and ``lr_hsi``.
- ``.h5``/``.hdf5``, the community layout (``GT``, ``RGB``, optionally ``LRHSI``): ``RGB`` is the
  HR-MSI; the LR-HSI is regenerated from ``GT`` with the paper's protocol (:func:`lso.data.degrade`,
  ``ratio``, default 4). ``lr_from="file"`` uses the file's ``LRHSI`` instead. A file holding one scene
  without the leading N axis (``GT`` ``[31, H, W]``) is read as one scene.
- ``.npz``: arrays ``hr_msi`` and ``lr_hsi`` (also accepted: :data:`HR_KEYS` and :data:`LR_KEYS`).
- ``.mat`` (MATLAB v5 through scipy, v7.3 through h5py): variables as for ``.npz``; MATLAB arrays are
  usually ``H x W x C`` and are transposed (``layout``).
- a pair ``HR LR``: two single-array files (``.npy``, ``.npz``, ``.mat``, ``.h5``), or an 8/16-bit image
  (:data:`IMAGE_SUFFIXES`) for the RGB (divided by 255 or 65535). Which is which is read from the band
  counts, so the two files may come in either order.

Arrays may be ``[C, H, W]``, ``[N, C, H, W]`` or channels-last (``layout="auto"`` transposes when the band
count makes it unambiguous). Values pass the one value policy of every input (:mod:`lso.data.value_range`,
``input_scale``); images carry their scale in their bit depth. Sizes that do not fit one integer ratio are
an ``InputError`` naming the top-left crop that would fit (:func:`lso.data.readers.fit_to_ratio`), unless
``crop=True``: then that crop is taken and the :class:`Scene` says so.

Untrusted files: sizes are read from headers and checked against the memory budget (:mod:`lso.memory`)
before any array is read; ``.npy``/``.npz`` are never unpickled; a file with a sidecar must match its
sha256. :func:`declared_scene` reads only the headers, for commands that check their whole work first.

Example::

    from lso.data import read_scene
    scene = read_scene(["rgb.png", "lr.npy"], crop=True)     # Scene: hr_msi [3, H, W], lr_hsi [31, h, w]
    scene = read_scene("test_cave.h5", index=2, ratio=8)    # community file: LR-HSI made from GT at x8
"""
from __future__ import annotations

import logging
import os
import struct
import tokenize
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from lso.artifacts import npy_header, read_sidecar
from lso.data.value_range import InputScale, apply_input_scale
from lso.deps import require
from lso.errors import ArtifactError, InputError
from lso.memory import array_bytes, check_bytes

__all__ = ["Scene", "DeclaredScene", "read_scene", "read_arrays", "read_gt", "h5_keys", "h5_scene_count",
           "declared_scene", "pick_key", "HR_KEYS", "LR_KEYS", "GT_KEYS", "IMAGE_SUFFIXES", "H5_SUFFIXES"]

log = logging.getLogger(__name__)

HR_KEYS = ("hr_msi", "msi", "rgb", "hrmsi", "hr_rgb")
"""Names of the HR-MSI array (any case); the first is ours."""
LR_KEYS = ("lr_hsi", "lrhsi", "lr", "hsi_lr", "hsi")
"""Names of the LR-HSI array (any case); the first is ours."""
GT_KEYS = ("gt",)
"""Names of the ground truth (any case)."""
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
H5_SUFFIXES = (".h5", ".hdf5")

PathLike = str | os.PathLike

# what h5py raises on damaged files (InputError, a ValueError, is re-raised as it is)
_H5_ERRORS = (OSError, RuntimeError, ValueError, KeyError, TypeError)


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
        """What an output records about the crop: ``crop`` (a description) and ``crop_box`` when cropped."""
        if self.crop is None:
            return {"crop": "none"}
        return {"crop": self.crop.describe(), "crop_box": np.asarray(self.crop.box, dtype=np.int64)}


# ------------------------------------------------------------------------------------------ small helpers
def pick_key(keys: Any, candidates: tuple[str, ...]) -> Any:
    """The first of ``candidates`` among ``keys`` (compared in lower case), as spelled in ``keys``; else None."""
    lower = {str(k).lower(): k for k in keys}
    for cand in candidates:
        if cand in lower:
            return lower[cand]
    return None


def _to_chw(arr: np.ndarray, bands: int, layout: str) -> np.ndarray:
    """``[C, H, W]``/``[N, C, H, W]`` from channels-first or channels-last arrays."""
    if layout == "hwc" or (layout == "auto" and arr.ndim in (3, 4) and arr.shape[-1] == bands
                           and arr.shape[-3] != bands):
        return np.ascontiguousarray(np.moveaxis(arr, -1, -3))
    if layout not in ("auto", "chw", "hwc"):
        raise InputError(f"layout must be 'auto', 'chw' or 'hwc', got {layout!r}")
    return arr


def _check_index(index: int, count: int, name: str) -> None:
    if not -count <= index < count:
        raise InputError(f"--index {index} is out of range: {name} holds {count} scene(s)")


def _select(arr: np.ndarray, index: int | None, name: str) -> np.ndarray:
    if index is None or arr.ndim != 4:
        return arr
    _check_index(index, arr.shape[0], name)
    return arr[index]


def _has_bands(a: np.ndarray, bands: int) -> bool:
    return a.ndim >= 3 and (a.shape[-3] == bands or a.shape[-1] == bands)


def _itemsize(dtype: Any) -> int:
    try:
        return max(int(np.dtype(dtype).itemsize), 1)
    except TypeError:
        return 8


def _check_sizes(path: Path, shapes: dict[str, tuple[Any, Any]]) -> None:
    """Refuse before reading when the arrays a header declares would not fit the memory budget.

    ``shapes``: name -> (shape, dtype). Counted twice: the array as stored and its float32/channels-first copy.
    """
    total = 0
    for shape, dtype in shapes.values():
        total += array_bytes(shape, _itemsize(dtype)) + array_bytes(shape, 4)
    check_bytes(total, f"{path}: reading {', '.join(f'{k} {tuple(int(d) for d in s)}' for k, (s, _) in shapes.items())}"
                       f" (as the file's header claims)",
                fix="check that the file is not corrupt, or split the scene")


# ------------------------------------------------------------------------------------------ formats
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


def _h5_datasets(path: Path, f: Any, keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
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


def _h5_call(path: Path, what: str, fn: Any) -> Any:
    """``fn(open file)`` with h5py's errors on damaged files turned into an ArtifactError (InputError passes)."""
    try:
        with _open_h5(path, what) as f:
            return fn(f)
    except _H5_ERRORS as exc:
        if isinstance(exc, InputError):
            raise
        raise ArtifactError(f"{path}: not a readable {what} ({exc})") from exc


def _mat_arrays(path: Path) -> dict[str, np.ndarray]:
    h5py = require("h5py")
    if h5py.is_hdf5(str(path)):  # MATLAB v7.3: HDF5, arrays stored transposed (column-major)
        return _h5_call(path, "MATLAB v7.3 (HDF5) file",
                        lambda f: {k: v.T for k, v in _h5_datasets(path, f).items()})
    from lso.data.readers import load_mat

    read_sidecar(path)
    return load_mat(path)[0]  # MATLAB v4/v5: parsed in a child process, sizes checked first (see load_mat)


def _npz_headers(path: Path) -> dict[str, tuple[tuple[int, ...], Any]]:
    headers = {}
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if info.filename.endswith(".npy"):
                with zf.open(info) as fh:
                    headers[info.filename[:-4]] = npy_header(fh)
    return headers


def _numpy_arrays(path: Path) -> dict[str, np.ndarray]:
    """``.npy``/``.npz`` arrays; headers checked against the memory budget first; never unpickled."""
    read_sidecar(path)
    try:
        if path.suffix.lower() == ".npy":
            with open(path, "rb") as fh:
                _check_sizes(path, {path.stem: npy_header(fh)})
            return {path.stem: np.load(path, allow_pickle=False)}
        _check_sizes(path, _npz_headers(path))
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except InputError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, KeyError,
            struct.error, NotImplementedError, TypeError, UnicodeDecodeError, SyntaxError, OverflowError,
            IndexError, tokenize.TokenError) as exc:  # numpy's header parser tokenizes the header dict
        raise ArtifactError(f"{path}: not a readable numpy file ({type(exc).__name__}: {exc})") from exc


def read_arrays(path: PathLike) -> dict[str, Any]:
    """Every named array of one file (``.npy``, ``.npz``, ``.mat``, ``.h5``, an image as ``rgb``), each checked
    against the memory budget from its header before it is read.

    Raises:
        ArtifactError: a missing, unreadable or damaged file (or one that fails its sidecar's sha256), an
            unknown format.
        InputError: arrays too large for the memory budget; an image without a known scale.
    """
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path} does not exist (or is not a file)")
    suffix = path.suffix.lower()
    if suffix in (".npy", ".npz"):
        return _numpy_arrays(path)
    if suffix == ".mat":
        return _mat_arrays(path)
    if suffix in H5_SUFFIXES:
        return _h5_call(path, "HDF5 file", lambda f: _h5_datasets(path, f))
    if suffix in IMAGE_SUFFIXES:
        read_sidecar(path)
        return {"rgb": _read_image(path)}
    raise ArtifactError(f"{path}: unknown input format {suffix!r}; expected .h5, .npz, .mat, .npy or an image")


def h5_keys(path: PathLike) -> list[str]:
    """The datasets at the top of an HDF5 file (ArtifactError for a missing or unreadable file)."""
    h5py = require("h5py")
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path} does not exist (or is not a file)")
    return _h5_call(path, "HDF5 file", lambda f: [k for k in f.keys() if isinstance(f[k], h5py.Dataset)])


def _read_h5(path: Path, keys: tuple[str, ...], index: int | None = None) -> list[np.ndarray]:
    """The datasets ``keys``; with ``index``, only that item of 4-D ones (InputError when out of range)."""
    def read(f: Any) -> dict[str, np.ndarray]:
        if index is None:
            return _h5_datasets(path, f, keys)
        shapes: dict[str, tuple[Any, Any]] = {}
        for k in keys:
            shape = tuple(f[k].shape)
            if len(shape) == 4:
                _check_index(index, shape[0], "hr_msi" if k == keys[0] else "lr_hsi")
                shape = shape[1:]
            shapes[k] = (shape, f[k].dtype)
        _check_sizes(path, shapes)
        return {k: np.asarray(f[k][index] if f[k].ndim == 4 else f[k]) for k in keys}

    arrays = _h5_call(path, "HDF5 file", read)
    return [arrays[k] for k in keys]


def h5_scene_count(path: PathLike) -> int | None:
    """Scenes in an HDF5 scene file: N of a 4-D ``GT``/``hr_msi`` dataset; None for a single 3-D scene.

    Raises:
        ArtifactError: an unreadable file. InputError: neither layout's datasets.
    """
    path = Path(path)
    keys = h5_keys(path)
    key = pick_key(keys, HR_KEYS[:1]) or pick_key(keys, GT_KEYS) or pick_key(keys, HR_KEYS)
    if key is None:
        raise InputError(f"{path} holds {sorted(keys)}; expected community datasets GT/RGB or ours hr_msi/lr_hsi")
    shape = _h5_call(path, "HDF5 file", lambda f: f[key].shape)
    return int(shape[0]) if len(shape) == 4 else None


def read_gt(path: PathLike, index: int | None = None, *, crop: Any = None) -> np.ndarray | None:
    """The ground truth ``[31, H, W]`` (``[N, 31, H, W]`` for several scenes) of an ``.h5`` or ``.npz`` scene file,
    None where it has none; ``index``: that scene only; ``crop``: the :attr:`Scene.crop` the inputs were read with
    (the ground truth is cut the same way)."""
    path = Path(path)
    suffix = path.suffix.lower()
    gt: np.ndarray | None = None
    if suffix in H5_SUFFIXES:
        def read(f: Any) -> np.ndarray | None:
            key = pick_key(f.keys(), GT_KEYS)
            if key is None:
                return None
            return np.asarray(f[key][index] if index is not None and f[key].ndim == 4 else f[key])

        if not path.is_file():
            raise ArtifactError(f"{path} does not exist (or is not a file)")
        gt = _h5_call(path, "HDF5 file", read)
    elif suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            key = pick_key(data.files, GT_KEYS)
            if key is not None:
                gt = _select(_to_chw(np.asarray(data[key]), 31, "auto"), index, key)
    return gt if gt is None or crop is None else np.ascontiguousarray(crop.apply_hr(gt))


# ------------------------------------------------------------------------------------------ the reader
def _fit_pair(hr: np.ndarray, lr: np.ndarray, crop: bool, where: str,
              names: tuple[str, str] = ("hr_msi", "lr_hsi")) -> Scene:
    """The pair as it is when its sizes fit one integer ratio; else the top-left crop (``crop``) or an InputError
    naming it (``names``: the arrays' names in the message). Arrays of too few dimensions are left to the
    runner's checks."""
    from lso.data.readers import fit_to_ratio

    if hr.ndim < 2 or lr.ndim < 2:
        return Scene(hr, lr)
    taken = fit_to_ratio(hr.shape[-2:], lr_size=lr.shape[-2:], hr_name=names[0], lr_name=names[1]).check(
        where, allowed=crop)
    if taken is None:
        return Scene(hr, lr)
    return Scene(np.ascontiguousarray(taken.apply_hr(hr)), np.ascontiguousarray(taken.apply_lr(lr)), taken)


def _community(path: Path, *, index: int | None, ratio: int | None, lr_from: str, crop: bool,
               scale: InputScale) -> Scene:
    """RGB + LR-HSI regenerated from GT with the paper's protocol (or the file's LRHSI with lr_from='file')."""
    if lr_from == "file":
        keys = h5_keys(path)
        hr_key, lr_key = pick_key(keys, HR_KEYS), pick_key(keys, LR_KEYS)
        if hr_key is None or lr_key is None:
            raise InputError(f"{path}: --lr-from file needs RGB and LRHSI datasets (found {sorted(keys)})")
        hr, lr = _read_h5(path, (hr_key, lr_key))
        hr = apply_input_scale(_select(hr, index, hr_key), f"{path}: {hr_key}", scale)
        lr = apply_input_scale(_select(lr, index, lr_key), f"{path}: {lr_key}", scale)
        return replace(_fit_pair(hr, lr, crop, str(path), (hr_key, lr_key)), input_scale=scale.record())
    if lr_from not in ("auto", "gt"):
        raise InputError(f"lr_from must be 'auto', 'gt' or 'file', got {lr_from!r}")
    from lso.data.degradation import degrade
    from lso.data.readers import H5Dataset, fit_to_ratio

    ratio = ratio or 4
    with H5Dataset(path, input_scale=scale) as ds:
        indices = [index] if index is not None else list(range(len(ds)))
        if index is not None:
            _check_index(index, len(ds), str(path))
        # checked before any item is read: the same rule as for every other format (no silent crop)
        taken = fit_to_ratio(ds.image_size, ratio=ratio, hr_name="GT/RGB").check(str(path), allowed=crop)
        hrs, lrs = [], []
        for i in indices:
            item = ds[i]
            gt, rgb = item["gt"], item["rgb"]
            if taken is not None:
                gt, rgb = np.ascontiguousarray(taken.apply_hr(gt)), np.ascontiguousarray(taken.apply_hr(rgb))
            _, lr = degrade(gt, ratio)
            hrs.append(rgb)
            lrs.append(lr.astype(np.float32))
    log.info("%s: community layout; LR-HSI regenerated from GT with the paper's protocol at x%d", path.name, ratio)
    if index is not None:
        return Scene(hrs[0], lrs[0], taken, scale.record())
    return Scene(np.stack(hrs), np.stack(lrs), taken, scale.record())


def _as_paths(paths: PathLike | Sequence[PathLike]) -> tuple[Path, ...]:
    if isinstance(paths, (str, os.PathLike)):
        return (Path(paths),)
    return tuple(Path(p) for p in paths)


def read_scene(paths: PathLike | Sequence[PathLike], *, index: int | None = None, ratio: int | None = None,
               lr_from: str = "auto", layout: str = "auto", crop: bool = False, input_scale: Any = None,
               n_msi_bands: int = 3, n_bands: int = 31) -> Scene:
    """The scene of one file or a pair of files, as channels-first numpy arrays (see the module docstring).

    Args:
        paths: one scene file, or the two files of a pair (HR-MSI and LR-HSI, in either order).
        index: the scene of a multi-scene file (default: all, ``[N, C, H, W]``); an ``.h5`` in our layout
            reads only that item.
        ratio: community ``.h5``: the ratio the LR-HSI is regenerated at from ``GT`` (default 4).
        lr_from: community ``.h5``: ``"auto"``/``"gt"`` regenerate the LR-HSI from ``GT``, ``"file"`` reads
            ``LRHSI``.
        layout: ``"auto"``, ``"chw"`` or ``"hwc"`` for the arrays read.
        crop: take the top-left crop when the sizes do not fit one integer ratio (the :class:`Scene` says so);
            False: such sizes are an ``InputError`` naming that crop.
        input_scale: scale of the stored values (``"unit"``, ``"8bit"``, ``"16bit"`` or a number to divide by;
            :class:`~lso.data.value_range.InputScale`); images use their bit depth.
        n_msi_bands, n_bands: the bands of the HR-MSI and the LR-HSI (which file of a pair is which, layouts).

    Raises:
        ArtifactError: an unreadable file.
        InputError: wrong content: keys, shapes, sizes that do not fit the ratio (naming the crop that would),
            values the value policy refuses, an index out of range.
    """
    paths = _as_paths(paths)
    scale = InputScale.parse(input_scale)
    images: list[bool] = []  # which of (hr, lr) came from an image file: its bit depth gave its scale already
    if len(paths) == 1:
        path = paths[0]
        arrays: dict[str, Any]
        if path.suffix.lower() in H5_SUFFIXES:
            keys = h5_keys(path)
            hr_key, lr_key = pick_key(keys, HR_KEYS[:1]), pick_key(keys, LR_KEYS[:1])
            if not (hr_key and lr_key) and pick_key(keys, GT_KEYS):
                return _community(path, index=index, ratio=ratio, lr_from=lr_from, crop=crop, scale=scale)
            hr_key, lr_key = pick_key(keys, HR_KEYS), pick_key(keys, LR_KEYS)
            arrays = {k: None for k in keys}
        else:
            arrays = read_arrays(path)
            hr_key, lr_key = pick_key(arrays, HR_KEYS), pick_key(arrays, LR_KEYS)
        if hr_key is None or lr_key is None:
            raise InputError(f"{path} holds {sorted(arrays)}; expected an HR-MSI array ({'/'.join(HR_KEYS)}) and an "
                             f"LR-HSI array ({'/'.join(LR_KEYS)}), or pass two files (HR LR)")
        if arrays[hr_key] is None:  # an .h5 in our layout: only the item asked for is read
            hr, lr = _read_h5(path, (hr_key, lr_key), index)
            index = None
        else:
            hr, lr = arrays[hr_key], arrays[lr_key]
    elif len(paths) == 2:
        pair = []
        for path in paths:
            images.append(path.suffix.lower() in IMAGE_SUFFIXES)
            arrays = read_arrays(path)
            if len(arrays) != 1:
                key = pick_key(arrays, HR_KEYS + LR_KEYS)
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
    hr = _select(_to_chw(np.asarray(hr), n_msi_bands, layout), index, "hr_msi")
    lr = _select(_to_chw(np.asarray(lr), n_bands, layout), index, "lr_hsi")
    where = " + ".join(str(p) for p in paths)
    images = images or [False, False]
    hr = apply_input_scale(hr, f"{where}: hr_msi", InputScale() if images[0] else scale)
    lr = apply_input_scale(lr, f"{where}: lr_hsi", InputScale() if images[1] else scale)
    return replace(_fit_pair(hr, lr, crop, where), input_scale=scale.record())


# ------------------------------------------------------------------------------------------ headers only
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
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            with open(path, "rb") as fh:
                return {path.stem: npy_header(fh)}
        if suffix == ".npz":
            return _npz_headers(path)
        if suffix in H5_SUFFIXES:
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


def declared_scene(paths: PathLike | Sequence[PathLike], *, index: int | None = None, ratio: int | None = None,
                   lr_from: str = "auto", layout: str = "auto", n_msi_bands: int = 3,
                   n_bands: int = 31) -> DeclaredScene | None:
    """The scene ``paths`` declare, from headers only (``.npz``, ``.npy``, ``.h5`` in both layouts), with the
    arguments of :func:`read_scene`; None where a format declares nothing readable here (``.mat``, images: their
    readers check each read)."""
    paths = _as_paths(paths)
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
    if len(singles) == 2:  # which is which: the larger image is the HR-MSI (as read_scene decides by bands)
        sizes = [_spatial(tuple(int(d) for d in s[0]), b, layout)
                 for s, b in zip(singles, (n_msi_bands, n_bands), strict=True)]
        first, second = sizes
        big = 0 if first is None or second is None or first[1] * first[2] >= second[1] * second[2] else 1
        arrays.update({"hr_msi": singles[big], "lr_hsi": singles[1 - big]})
    where = " + ".join(str(p) for p in paths)
    gt_key = pick_key(arrays, GT_KEYS)
    ours = pick_key(arrays, HR_KEYS[:1]) and pick_key(arrays, LR_KEYS[:1])
    if len(paths) == 1 and paths[0].suffix.lower() in H5_SUFFIXES and gt_key and not ours \
            and lr_from != "file":  # community: items read one at a time, LR-HSI made from GT
        shape = tuple(int(d) for d in arrays[gt_key][0])
        if len(shape) not in (3, 4):
            return None
        n = shape[0] if len(shape) == 4 else 1
        height, width = shape[-2:]
        ratio = ratio or 4
        batch = 1 if index is not None else n
        item = array_bytes((n_bands + n_msi_bands, height, width), 4)
        return DeclaredScene(batch, height, width, height // ratio, width // ratio, read_bytes=3 * item,
                             held_factor=2, what=f"{where}: {batch} item(s) of {height}x{width} (GT {shape})")
    hr_key, lr_key = pick_key(arrays, HR_KEYS), pick_key(arrays, LR_KEYS)
    if hr_key is None or lr_key is None:
        return None
    hr = _spatial(tuple(int(d) for d in arrays[hr_key][0]), n_msi_bands, layout)
    lr = _spatial(tuple(int(d) for d in arrays[lr_key][0]), n_bands, layout)
    if hr is None or lr is None:
        return None
    read = 0
    for shape, dtype in (arrays[hr_key], arrays[lr_key]):
        read += array_bytes(shape, _itemsize(dtype)) + array_bytes(shape, 4)
    batch = 1 if index is not None else hr[0]
    if index is not None and hr[0] > 1 and paths[0].suffix.lower() in H5_SUFFIXES:
        read //= hr[0]  # one item's slice (read_scene reads only it)
    return DeclaredScene(batch, hr[1], hr[2], lr[1], lr[2], read_bytes=read, held_factor=1,
                         what=f"{where}: {hr_key} {tuple(arrays[hr_key][0])}, {lr_key} {tuple(arrays[lr_key][0])}")
