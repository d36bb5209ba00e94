"""Writers of fused scenes: one per format (``.npz``, ``.h5``, ``.mat``, ENVI, PNG previews).

Every file is written to a temporary name beside its final one and renamed (:func:`lso.artifacts.atomic_path`), so
no partial file ever has the final name. :func:`write_output` picks the writer from the suffix
(:data:`OUTPUT_SUFFIXES`) and adds the sidecar ``<file>.json`` (sha256, shape and the attributes).

- :func:`write_npz`: array ``hr_hsi`` and one array per attribute.
- :func:`write_h5`: dataset ``hr_hsi`` (chunked, Fletcher-32 checksums) with the attributes as its attributes.
- :func:`write_mat`: MATLAB v5 (:func:`scipy.io.savemat`), variable ``hr_hsi`` and one per attribute; at most
  :data:`MAT_MAX_BYTES` per variable (:func:`check_mat_size`).
- :func:`write_envi`: ``<stem>.img`` (BSQ float32) and ``<stem>.hdr`` with the wavelengths.
- :func:`write_png` / :func:`false_colour`: an 8-bit RGB PNG (no imaging library), a false-colour preview.

Example::

    from lso.data import write_output, write_png, false_colour
    write_output("fused.h5", hsi, {"artifact": "model.onnx"})      # + fused.h5.json
    write_png("fused.png", false_colour(hsi))
"""
from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lso.artifacts import atomic_path, atomic_write_bytes, atomic_write_text, sidecar_path, write_sidecar
from lso.deps import require
from lso.errors import ArtifactError, InputError
from lso.memory import array_bytes

__all__ = ["write_output", "write_npz", "write_h5", "write_mat", "write_envi", "write_png", "false_colour",
           "check_mat_size", "OUTPUT_SUFFIXES", "MAT_MAX_BYTES", "OUTPUT_KIND"]

PathLike = str | os.PathLike

OUTPUT_SUFFIXES = (".npz", ".h5", ".hdf5", ".mat")
MAT_MAX_BYTES = 2**31 - 1
"""MATLAB v5 files hold at most this many bytes per variable (larger results: write ``.h5``)."""
OUTPUT_KIND = "lso infer output"
"""The ``kind`` recorded in the sidecar of a fused scene."""


def _attr_arrays(attrs: Mapping[str, Any] | None) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in (attrs or {}).items()}


def _npz_body(tmp: Path, hsi: np.ndarray, attrs: Mapping[str, Any] | None) -> None:
    savez: Any = np.savez  # the attributes are keyword arrays (numpy's stubs type every keyword as an option)
    with open(tmp, "wb") as fh:  # a file object: np.savez would append .npz to a path
        savez(fh, hr_hsi=hsi, **_attr_arrays(attrs))


def _mat_body(tmp: Path, hsi: np.ndarray, attrs: Mapping[str, Any] | None) -> None:
    scipy_io = require("scipy.io")
    with open(tmp, "wb") as fh:  # a file object: savemat would append .mat to the temporary name
        scipy_io.savemat(fh, {"hr_hsi": hsi, **_attr_arrays(attrs)}, format="5", oned_as="row")


def _h5_body(tmp: Path, hsi: np.ndarray, attrs: Mapping[str, Any] | None) -> None:
    h5py = require("h5py")
    with h5py.File(tmp, "w") as f:
        # chunked with Fletcher-32 checksums: h5py refuses a corrupted chunk on reading
        dset = f.create_dataset("hr_hsi", data=hsi, chunks=True, fletcher32=True)
        for key, value in (attrs or {}).items():
            dset.attrs[key] = value


def check_mat_size(path: PathLike, hsi_shape: tuple[int, ...]) -> None:
    """InputError when a float32 ``hsi_shape`` is more than a MATLAB v5 variable holds (call it with the expected
    shape before fusing, to refuse early)."""
    size = array_bytes(hsi_shape, 4)
    if size > MAT_MAX_BYTES:
        raise InputError(f"output {Path(path).name}: hr_hsi {'x'.join(map(str, hsi_shape))} is "
                         f"{size / 2**30:.1f} GiB, more than the 2 GiB a MATLAB v5 .mat variable holds; write .h5 "
                         f"instead (MATLAB reads it with h5read)")


def _write(path: PathLike, hsi: np.ndarray, attrs: Mapping[str, Any] | None,
           body: Callable[[Path, np.ndarray, Mapping[str, Any] | None], None], sidecar: bool) -> Path:
    """``body`` into a temporary file renamed to ``path``, then the sidecar; a stale sidecar is removed first."""
    path = Path(path)
    if sidecar:
        sidecar_path(path).unlink(missing_ok=True)  # never leave a sidecar that describes an older file
    try:
        with atomic_path(path) as tmp:
            body(tmp, hsi, attrs)
    except OSError as exc:  # disk full, quota, a file system that went away: the temporary file is gone
        raise ArtifactError(f"cannot write {path}: {exc.strerror or exc}; nothing was written (free space or "
                            f"choose another --out)") from exc
    if sidecar:
        write_sidecar(path, {"kind": OUTPUT_KIND, "shape": list(hsi.shape), "dtype": "float32",
                             **{k: (v.tolist() if isinstance(v, np.ndarray) else v)
                                for k, v in (attrs or {}).items()}})
    return path


def write_npz(path: PathLike, hsi: np.ndarray, attrs: Mapping[str, Any] | None = None, *,
              sidecar: bool = True) -> Path:
    """``.npz`` with ``hr_hsi`` and one array per attribute, atomically (then its sidecar unless ``sidecar=False``)."""
    return _write(path, hsi, attrs, _npz_body, sidecar)


def write_h5(path: PathLike, hsi: np.ndarray, attrs: Mapping[str, Any] | None = None, *,
             sidecar: bool = True) -> Path:
    """``.h5`` with dataset ``hr_hsi`` (chunked, Fletcher-32) carrying the attributes, atomically (then its
    sidecar)."""
    require("h5py")
    return _write(path, hsi, attrs, _h5_body, sidecar)


def write_mat(path: PathLike, hsi: np.ndarray, attrs: Mapping[str, Any] | None = None, *,
              sidecar: bool = True) -> Path:
    """MATLAB v5 ``.mat`` with ``hr_hsi`` and one variable per attribute, atomically (then its sidecar).

    Raises:
        InputError: ``hr_hsi`` is larger than a MATLAB v5 variable holds (:func:`check_mat_size`).
    """
    require("scipy.io")
    check_mat_size(path, tuple(hsi.shape))
    return _write(path, hsi, attrs, _mat_body, sidecar)


_WRITERS: dict[str, Callable[..., Path]] = {".npz": write_npz, ".h5": write_h5, ".hdf5": write_h5,
                                            ".mat": write_mat}


def write_output(path: PathLike, hsi: np.ndarray, attrs: Mapping[str, Any] | None = None) -> Path:
    """Write a fused result with the writer its suffix names (:data:`OUTPUT_SUFFIXES`), atomically, then its
    sidecar (sha256, shape, the attributes); a stale sidecar is removed first.

    Raises:
        InputError: an unknown suffix; a ``.mat`` too large for MATLAB v5.
        ArtifactError: the file could not be written (nothing is left under its name).
    """
    path = Path(path)
    writer = _WRITERS.get(path.suffix.lower())
    if writer is None:
        raise InputError(f"output {path.name}: expected one of {', '.join(OUTPUT_SUFFIXES)}")
    return writer(path, hsi, attrs)


def write_envi(stem: PathLike, hsi: np.ndarray, *, wavelengths: np.ndarray | None = None,
               description: str = "lso-deploy fused HSI") -> list[Path]:
    """Write ``<stem>.img`` (BSQ float32, little-endian) and ``<stem>.hdr`` for ``[C, H, W]``; returns both."""
    stem = Path(stem)
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


def _band_indices(n_bands: int) -> tuple[int, int, int]:
    if n_bands == 31:  # 400..700 nm at 10 nm: 650, 550, 450 nm
        return 25, 15, 5
    first, second, third = (int(round(f * (n_bands - 1))) for f in (0.83, 0.5, 0.17))
    return first, second, third


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


def write_png(path: PathLike, rgb: np.ndarray) -> Path:
    """Write an ``[H, W, 3]`` uint8 image as PNG (zlib only, no imaging library), atomically."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    height, width = rgb.shape[:2]

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(height))
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))
    return atomic_write_bytes(path, data)
