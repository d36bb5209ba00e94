"""Small file helpers shared by every writer: atomic writes, sha256, JSON sidecars."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Union

from lso.errors import ArtifactError

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "sha256_file", "sidecar_path",
           "write_sidecar", "read_sidecar", "check_writable_target", "read_bytes_checked"]

PathLike = Union[str, os.PathLike]

MAX_SIDECAR_BYTES = 16 * 2**20
"""A sidecar is a few kB of JSON; anything larger is refused unread."""


def check_writable_target(path: PathLike) -> Path:
    """Fail early with ArtifactError if ``path``'s folder is missing or not writable."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise ArtifactError(f"cannot write {path}: folder {parent} does not exist (create it first)")
    if not os.access(parent, os.W_OK):
        raise ArtifactError(f"cannot write {path}: folder {parent} is not writable (choose another --out)")
    if path.is_dir():
        raise ArtifactError(f"cannot write {path}: it is a folder; give a file name")
    return path


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``.

    On any exception (KeyboardInterrupt included) the temporary file is removed and ``path`` is left
    as it was, so no half-written artifact ever exists under the final name.
    """
    path = check_writable_target(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:  # read-only file system, no space, permissions os.access did not foresee
        raise ArtifactError(f"cannot write {path}: {exc.strerror or exc} (choose another place)") from exc
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the final file the usual permissions
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(chunk), b""):
                digest.update(block)
    except OSError as exc:
        raise ArtifactError(f"cannot read {path}: {exc}") from exc
    return digest.hexdigest()


def sidecar_path(artifact: PathLike) -> Path:
    """``model.onnx`` -> ``model.onnx.json`` (the artifact's full file name plus ``.json``)."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".json")


def write_sidecar(artifact: PathLike, info: dict[str, Any]) -> Path:
    """Write ``<artifact>.json`` with ``info`` plus the artifact's sha256 (atomically)."""
    data = dict(info)
    data["artifact"] = Path(artifact).name
    data["sha256"] = sha256_file(artifact)
    return atomic_write_text(sidecar_path(artifact), json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def read_sidecar(artifact: PathLike, *, verify: bool = True) -> dict[str, Any] | None:
    """Read ``<artifact>.json`` if it exists (None otherwise); with ``verify`` check the sha256."""
    side = sidecar_path(artifact)
    if not side.exists():
        return None
    try:
        if side.stat().st_size > MAX_SIDECAR_BYTES:
            raise ValueError(f"{side.stat().st_size} bytes, more than a sidecar's {MAX_SIDECAR_BYTES}")
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ArtifactError(f"sidecar {side} is unreadable or not JSON ({exc}); delete it or re-export") from exc
    if not isinstance(data, dict):
        raise ArtifactError(f"sidecar {side} holds a JSON {type(data).__name__}, not an object; delete it or re-export")
    if verify and data.get("sha256"):
        actual = sha256_file(artifact)
        if actual != data["sha256"]:
            raise ArtifactError(
                f"{artifact} does not match its sidecar {side.name}: sha256 {actual[:12]}… != recorded "
                f"{str(data['sha256'])[:12]}…; the file was modified or corrupted — re-export it"
            )
    return data


def read_bytes_checked(path: PathLike, what: str = "file") -> bytes:
    """A file's bytes, its size checked against the memory budget first (:mod:`lso.memory`).

    For parsers that trust the sizes a header declares (scipy's ``loadmat`` reads ``n`` bytes with
    ``file.read(n)``, allocating ``n`` before noticing the file is shorter): given an ``io.BytesIO`` of
    these bytes instead, an oversized read returns what exists instead of allocating what was claimed.
    """
    from lso.memory import check_bytes

    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ArtifactError(f"cannot read {path}: {exc}") from exc
    check_bytes(size, f"reading the {what} {path} ({size} bytes)")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"cannot read {path}: {exc}") from exc


def npy_header(fh: Any) -> tuple[tuple[int, ...], Any]:
    """Shape and dtype from the header of a ``.npy`` stream (the data is not read; nothing is unpickled).

    Raises ValueError for a damaged header or a format version other than 1.0/2.0 (the ones numpy writes).
    """
    import numpy as np

    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
    else:
        raise ValueError(f"unsupported .npy format version {version}; save it with numpy's default format")
    return tuple(int(s) for s in shape), np.dtype(dtype)
