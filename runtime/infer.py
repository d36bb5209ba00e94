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
band count makes it unambiguous). Values must already be floats in [0, 1] (integers are rejected,
except images whose bit depth gives the scale).

Outputs: ``.npz`` (``hr_hsi``, ``wavelengths_nm``) or ``.h5`` (dataset ``hr_hsi`` with attributes),
written to a temporary file and renamed; optionally an ENVI pair (``.hdr`` + ``.img``, BSQ float32,
wavelengths in the header) for remote-sensing tools; and a false-colour PNG preview (bands near
650/550/450 nm, 1-99 % stretch). ``--tile`` fuses large scenes exactly in tiles
(:func:`lso.runtime.fuse_tiled`).
"""
from __future__ import annotations

import logging
import os
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from lso._deps import require
from lso._io import atomic_path, atomic_write_bytes, atomic_write_text, check_writable_target
from lso.errors import ArtifactError, InputError

__all__ = ["InferOptions", "InferResult", "infer", "read_scene", "write_png", "false_colour", "write_envi"]

log = logging.getLogger(__name__)

HR_KEYS = ("hr_msi", "msi", "rgb", "hrmsi", "hr_rgb")
LR_KEYS = ("lr_hsi", "lrhsi", "lr", "hsi_lr", "hsi")
GT_KEYS = ("gt",)
OUTPUT_SUFFIXES = (".npz", ".h5", ".hdf5")
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")


@dataclass(frozen=True)
class InferOptions:
    """What ``lso infer`` does (one field per flag).

    Attributes:
        artifact: checkpoint, ONNX graph or TensorRT plan (the runner is chosen from it).
        inputs: one scene file, or the HR-MSI and LR-HSI files.
        out: output ``.npz`` or ``.h5``.
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
    """

    artifact: Path
    inputs: tuple[Path, ...]
    out: Path
    device: Optional[str] = None
    tile: Optional[int] = None
    overlap: Optional[int] = None
    index: Optional[int] = None
    ratio: Optional[int] = None
    lr_from: str = "auto"
    layout: str = "auto"
    envi: bool = False
    preview: bool = True
    threads: Optional[int] = None
    progress: bool = True


@dataclass
class InferResult:
    """What was written."""

    output: Path
    shape: tuple[int, ...]
    seconds: float
    runner: str
    preview: list[Path] = field(default_factory=list)
    envi: list[Path] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ reading
def _pick(keys: Any, candidates: tuple[str, ...]) -> Optional[str]:
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


def _select(arr: np.ndarray, index: Optional[int], name: str) -> np.ndarray:
    if index is None or arr.ndim != 4:
        return arr
    if not -arr.shape[0] <= index < arr.shape[0]:
        raise InputError(f"--index {index} is out of range: {name} holds {arr.shape[0]} scene(s)")
    return arr[index]


def _read_image(path: Path) -> np.ndarray:
    image_mod = require("PIL.Image")
    try:
        with image_mod.open(path) as img:
            arr = np.asarray(img)
    except OSError as exc:
        raise ArtifactError(f"{path}: not a readable image ({exc})") from exc
    if arr.dtype == np.uint8:
        scaled = arr.astype(np.float32) / 255.0
    elif arr.dtype in (np.uint16, np.int32):  # PIL reads 16-bit PNGs as int32 ("I" mode)
        scaled = arr.astype(np.float32) / 65535.0
    else:
        raise InputError(f"{path}: image of dtype {arr.dtype} has no known scale; save it as .npy floats in [0, 1]")
    if scaled.ndim == 3 and scaled.shape[-1] == 4:
        scaled = scaled[..., :3]  # drop alpha
    return scaled


def _mat_arrays(path: Path) -> dict[str, np.ndarray]:
    h5py = require("h5py")
    if h5py.is_hdf5(str(path)):  # MATLAB v7.3: HDF5, arrays stored transposed (column-major)
        with h5py.File(path, "r") as f:
            return {k: np.asarray(f[k]).T for k in f.keys() if isinstance(f[k], h5py.Dataset)}
    scipy_io = require("scipy.io")
    try:
        data = scipy_io.loadmat(str(path))
    except (ValueError, OSError, NotImplementedError) as exc:
        raise ArtifactError(f"{path}: not a readable .mat file ({exc})") from exc
    return {k: v for k, v in data.items() if not k.startswith("__") and isinstance(v, np.ndarray)}


def _arrays(path: Path) -> dict[str, Any]:
    """Named arrays of a file (lazy h5py datasets for .h5)."""
    if not path.is_file():
        raise ArtifactError(f"{path} does not exist (or is not a file)")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return {path.stem: np.load(path, allow_pickle=False)}
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
    except (ValueError, OSError, EOFError) as exc:
        raise ArtifactError(f"{path}: not a readable numpy file ({exc})") from exc
    if suffix == ".mat":
        return _mat_arrays(path)
    if suffix in (".h5", ".hdf5"):
        h5py = require("h5py")
        try:
            with h5py.File(path, "r") as f:
                return {k: np.asarray(f[k]) for k in f.keys() if isinstance(f[k], h5py.Dataset)}
        except OSError as exc:
            raise ArtifactError(f"{path}: not a readable HDF5 file ({exc})") from exc
    if suffix in IMAGE_SUFFIXES:
        return {"rgb": _read_image(path)}
    raise ArtifactError(f"{path}: unknown input format {suffix!r}; expected .h5, .npz, .mat, .npy or an image")


def _community(path: Path, opts: InferOptions, n_bands: int) -> tuple[np.ndarray, np.ndarray]:
    """RGB + LR-HSI regenerated from GT with the paper's protocol (or the file's LRHSI with lr_from='file')."""
    if opts.lr_from == "file":
        keys = _h5_keys(path)
        hr_key, lr_key = _pick(keys, HR_KEYS), _pick(keys, LR_KEYS)
        if hr_key is None or lr_key is None:
            raise InputError(f"{path}: --lr-from file needs RGB and LRHSI datasets (found {sorted(keys)})")
        hr, lr = _read_h5(path, (hr_key, lr_key))
        return _select(hr, opts.index, hr_key), _select(lr, opts.index, lr_key)
    if opts.lr_from not in ("auto", "gt"):
        raise InputError(f"lr_from must be 'auto', 'gt' or 'file', got {opts.lr_from!r}")
    from lso.data import degrade
    from lso.data.readers import H5Dataset

    ratio = opts.ratio or 4
    with H5Dataset(path) as ds:
        indices = [opts.index] if opts.index is not None else list(range(len(ds)))
        if opts.index is not None and not -len(ds) <= opts.index < len(ds):
            raise InputError(f"--index {opts.index} is out of range: {path} holds {len(ds)} scene(s)")
        hrs, lrs = [], []
        for i in indices:
            item = ds[i]
            height, width = item["gt"].shape[-2:]
            gt = item["gt"][:, : height - height % ratio, : width - width % ratio]
            _, lr = degrade(gt, ratio)
            hrs.append(item["rgb"][:, : gt.shape[1], : gt.shape[2]])
            lrs.append(lr.astype(np.float32))
    log.info("%s: community layout; LR-HSI regenerated from GT with the paper's protocol at x%d", path.name, ratio)
    if opts.index is not None:
        return hrs[0], lrs[0]
    return np.stack(hrs), np.stack(lrs)


def _h5_keys(path: Path) -> list[str]:
    h5py = require("h5py")
    if not path.is_file():
        raise ArtifactError(f"{path} does not exist (or is not a file)")
    try:
        with h5py.File(path, "r") as f:
            return [k for k in f.keys() if isinstance(f[k], h5py.Dataset)]
    except OSError as exc:
        raise ArtifactError(f"{path}: not a readable HDF5 file ({exc})") from exc


def _read_h5(path: Path, keys: tuple[str, ...]) -> list[np.ndarray]:
    h5py = require("h5py")
    with h5py.File(path, "r") as f:
        return [np.asarray(f[k]) for k in keys]


def _has_bands(a: np.ndarray, bands: int) -> bool:
    return a.ndim >= 3 and (a.shape[-3] == bands or a.shape[-1] == bands)


def read_scene(opts: InferOptions, *, n_msi_bands: int = 3, n_bands: int = 31) -> tuple[np.ndarray, np.ndarray]:
    """``(hr_msi, lr_hsi)`` as channels-first numpy arrays from ``opts.inputs`` (see the module docstring)."""
    paths = tuple(Path(p) for p in opts.inputs)
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
    else:
        raise InputError(f"give one scene file or two files (HR-MSI, LR-HSI), got {len(paths)}")
    hr = _select(_to_chw(np.asarray(hr), n_msi_bands, opts.layout, "hr_msi"), opts.index, "hr_msi")
    lr = _select(_to_chw(np.asarray(lr), n_bands, opts.layout, "lr_hsi"), opts.index, "lr_hsi")
    return hr, lr


# ------------------------------------------------------------------------------------------ writing
def _band_indices(n_bands: int) -> tuple[int, int, int]:
    if n_bands == 31:  # 400..700 nm at 10 nm: 650, 550, 450 nm
        return 25, 15, 5
    return tuple(int(round(f * (n_bands - 1))) for f in (0.83, 0.5, 0.17))  # type: ignore[return-value]


def false_colour(hsi: np.ndarray, bands: Optional[tuple[int, int, int]] = None) -> np.ndarray:
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


def write_envi(stem: Path, hsi: np.ndarray, *, wavelengths: Optional[np.ndarray] = None,
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


def _write_output(path: Path, hsi: np.ndarray, attrs: dict[str, Any]) -> None:
    suffix = path.suffix.lower()
    if suffix == ".npz":
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:  # a file object: np.savez would append .npz to a path
                np.savez(fh, hr_hsi=hsi, **{k: np.asarray(v) for k, v in attrs.items()})
    elif suffix in (".h5", ".hdf5"):
        h5py = require("h5py")
        with atomic_path(path) as tmp:
            with h5py.File(tmp, "w") as f:
                dset = f.create_dataset("hr_hsi", data=hsi)
                for key, value in attrs.items():
                    dset.attrs[key] = value
    else:
        raise InputError(f"output {path.name}: expected one of {', '.join(OUTPUT_SUFFIXES)}")


# ------------------------------------------------------------------------------------------ entry
def infer(opts: InferOptions) -> InferResult:
    """Read ``opts.inputs``, fuse with the runner for ``opts.artifact``, write ``opts.out`` (+ extras).

    Raises:
        ArtifactError: unreadable artifact or input file, unwritable output.
        InputError: wrong content (keys, shapes, bands, dtype, values).
    """
    from lso.runtime.base import backend_for, load
    from lso.runtime.ort_runner import OrtRunner
    from lso.runtime.tiling import fuse_tiled

    out = Path(opts.out)
    if out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise InputError(f"output {out.name}: expected one of {', '.join(OUTPUT_SUFFIXES)}")
    check_writable_target(out)
    options: dict[str, Any] = {}
    if opts.threads is not None and backend_for(opts.artifact) is OrtRunner:
        options["threads"] = opts.threads
    runner = load(opts.artifact, device=opts.device, **options)
    start = time.perf_counter()
    with runner:
        hr, lr = read_scene(opts, n_msi_bands=runner.n_msi_bands, n_bands=runner.n_bands)
        log.info("fusing hr_msi %s with lr_hsi %s using %r", hr.shape, lr.shape, runner)
        if opts.tile:
            hsi = fuse_tiled(runner, hr, lr, tile=opts.tile, overlap=opts.overlap, progress=opts.progress)
        else:
            if hr.shape[-1] * hr.shape[-2] > 1024 * 1024:
                log.warning("fusing a %dx%d scene in one piece; --tile 256 bounds memory (and is exact)",
                            hr.shape[-2], hr.shape[-1])
            hsi = runner.fuse(hr, lr)
    seconds = time.perf_counter() - start
    hsi = np.asarray(hsi, dtype=np.float32)
    n_bands = hsi.shape[-3]
    wavelengths = np.arange(400, 701, 10) if n_bands == 31 else None
    attrs: dict[str, Any] = {"artifact": str(Path(opts.artifact).name),
                             "inputs": ";".join(Path(p).name for p in opts.inputs)}
    if wavelengths is not None:
        attrs["wavelengths_nm"] = wavelengths
    _write_output(out, hsi, attrs)
    result = InferResult(output=out, shape=tuple(hsi.shape), seconds=seconds, runner=repr(runner))
    scenes = hsi if hsi.ndim == 4 else hsi[None]
    for i, scene in enumerate(scenes):
        suffix = f"_{i}" if len(scenes) > 1 else ""
        stem = out.with_name(out.stem + suffix)
        if opts.preview:
            result.preview.append(write_png(stem.with_suffix(".png"), false_colour(scene)))
        if opts.envi:
            result.envi += write_envi(stem, scene, wavelengths=wavelengths)
    log.info("wrote %s %s in %.2f s", out, hsi.shape, seconds)
    return result
