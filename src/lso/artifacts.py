"""The artifact writer: every file this package writes goes through here (public: ``lso.artifacts``).

- **Atomic writes**: :func:`atomic_path` (a temporary file beside the target, renamed on success, removed on any
  failure), :func:`atomic_write_bytes`, :func:`atomic_write_text`, :func:`check_writable_target`.
- **Digest and sidecar**: :func:`sha256_file`; :func:`write_sidecar` writes ``<artifact>.json`` with what made the
  artifact plus its sha256, :func:`read_sidecar` checks it; :func:`tool_versions` is the ``versions`` record,
  :func:`cpu_model` names the CPU a measurement recorded in a sidecar was made on.
- **One run per output**: :func:`output_lock`.
- **No output over an input**: :func:`check_no_clash`, :class:`OutputFolder`, :func:`with_sidecars`.

Readers' helpers that share the same checks (:func:`read_bytes_checked`, :func:`npy_header`) and the
``OSError`` wording (:func:`os_error_message`) live here too.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import shlex
import socket
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

from lso.errors import ArtifactError, InputError, LSOError

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "sha256_file", "sidecar_path",
           "write_sidecar", "read_sidecar", "check_writable_target", "read_bytes_checked", "output_lock",
           "lock_path", "os_error_message", "npy_header", "tool_versions", "cpu_model", "OutputFolder",
           "check_no_clash", "with_sidecars", "NAME_MAX", "LOCK_NAME", "MAX_SIDECAR_BYTES", "FULL_DISK_BYTES",
           "MAX_FOLDER_ENTRIES", "OFFICIAL_SUFFIXES", "CHECKPOINT_SUFFIXES", "WEIGHTS_FINGERPRINT_KEY",
           "recorded_fingerprint"]

log = logging.getLogger(__name__)

NAME_MAX = 255
#: The authors' checkpoint suffixes, and ours (safetensors); here, not in lso.checkpoint, so that the runtime
#: tells a checkpoint by its name without importing torch.
OFFICIAL_SUFFIXES = (".pth.tar", ".pth", ".pt", ".tar", ".ckpt")
CHECKPOINT_SUFFIXES = OFFICIAL_SUFFIXES + (".safetensors",)
#: the graph metadata (``metadata_props``) and sidecar key of the weights' fingerprint (lso.checkpoint computes it)
WEIGHTS_FINGERPRINT_KEY = "weights_sha256"
"""Longest file name (bytes) of the usual Linux/macOS file systems."""

PathLike: TypeAlias = str | os.PathLike

MAX_SIDECAR_BYTES = 16 * 2**20
"""A sidecar is a few kB of JSON; anything larger is refused unread."""


_ERRNO_HINTS = {
    errno.ENAMETOOLONG: f"a file name may have at most {NAME_MAX} bytes: choose a shorter name",
    errno.EROFS: "the file system is read-only: choose another folder",
    errno.ENOSPC: "the disk is full: free space or choose another folder",
    errno.EDQUOT: "the disk quota is exceeded: free space or choose another folder",
    errno.ENOENT: "a folder on the way does not exist: create it first",
    errno.ENOTDIR: "a part of the path is a file, not a folder: check the path",
    errno.EACCES: "permission denied: choose a folder you may write to",
    errno.EPERM: "operation not permitted: choose a folder you may write to",
    errno.EISDIR: "it is a folder: give a file name",
    errno.EEXIST: "it already exists",
}


def os_error_message(exc: OSError, *paths: PathLike) -> str:
    """One line for an ``OSError``: the system's reason, its errno name and the fix.

    The file the error names (``exc.filename``) is added unless it is one of ``paths`` (already named by the
    caller, or the caller's own temporary file).

    Args:
        exc: the error.
        paths: files the caller's message names already.
    """
    reason = exc.strerror or str(exc) or type(exc).__name__
    code = errno.errorcode.get(exc.errno or 0)
    text = " ".join(f"{reason} [{code}]".split()) if code else " ".join(reason.split())
    named = {os.fsdecode(os.fspath(p)) for p in paths}
    others = [os.fsdecode(n) for n in (exc.filename, exc.filename2) if n is not None]
    if others and not named.intersection(others):  # about another file than the caller's: name it
        text += f" ({' -> '.join(others)})"
    hint = _ERRNO_HINTS.get(exc.errno or 0)
    return f"{text}; {hint}" if hint else text


FULL_DISK_BYTES = 1 << 20
"""A file system with less free space than this, when a writer failed, is taken as the reason."""


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def _disk_full(exc: BaseException, folder: Path) -> bool:
    """Whether a writer's own error (not an OSError) comes from a full disk: it says so (errno 28, "No space left"),
    or ``folder``'s file system has (almost) no space left while the temporary file still holds what was written."""
    text = str(exc)
    if "No space left" in text or "os error 28" in text or "ENOSPC" in text:
        return True
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):
        return False
    return st.f_bavail * st.f_frsize < FULL_DISK_BYTES


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & getattr(os, "ST_RDONLY", 1))
    except (OSError, AttributeError):
        return False


def _check_name_length(path: Path) -> None:
    """ArtifactError when a part of ``path`` is longer than a file name may be (before the OS says it)."""
    for part in path.parts:
        size = len(os.fsencode(part))
        if size > NAME_MAX:
            shown = part if len(part) <= 40 else part[:32] + "…" + part[-8:]
            raise ArtifactError(f"cannot write {path}: the name {shown!r} is {size} bytes, more than the {NAME_MAX} "
                                f"a file name may have; choose a shorter name")


def check_writable_target(path: PathLike) -> Path:
    """Fail early with ArtifactError if ``path``'s folder is missing or not writable, or its name too long."""
    path = Path(path)
    _check_name_length(path)
    parent = path.parent if str(path.parent) else Path(".")
    try:
        if not parent.is_dir():
            if parent.exists():
                raise ArtifactError(f"cannot write {path}: {parent} is a file, not a folder (check the path)")
            raise ArtifactError(f"cannot write {path}: folder {parent} does not exist (create it first)")
        if not os.access(parent, os.W_OK):
            why = "is on a read-only file system" if _read_only(parent) else "is not writable"
            raise ArtifactError(f"cannot write {path}: folder {parent} {why} (choose another --out)")
        if path.is_dir():
            raise ArtifactError(f"cannot write {path}: it is a folder; give a file name")
    except OSError as exc:
        raise ArtifactError(f"cannot write {path}: {os_error_message(exc, path)}") from exc
    return path


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``.

    On any exception (KeyboardInterrupt included) the temporary file is removed and ``path`` is left
    as it was, so no half-written artifact ever exists under the final name.
    """
    path = check_writable_target(path)
    _check_name_length(path)
    prefix = f".{path.name}."
    if len(os.fsencode(prefix)) + 12 > NAME_MAX:  # mkstemp adds 8 random characters and ".tmp"
        prefix = os.fsdecode(os.fsencode(prefix)[:NAME_MAX - 13]).rstrip("\ufffd") + "."
    try:
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
    except OSError as exc:  # read-only file system, no space, permissions os.access did not foresee
        raise ArtifactError(f"cannot write {path}: {os_error_message(exc, path)}") from exc
    tmp_path = Path(tmp)
    try:
        os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the final file the usual permissions
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException as exc:
        full = not isinstance(exc, (OSError, LSOError)) and isinstance(exc, Exception) and _disk_full(exc, path.parent)
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        if isinstance(exc, OSError):  # disk full, read-only, quota: one message naming the file, nothing left
            raise ArtifactError(f"cannot write {path}: {os_error_message(exc, path, tmp_path)}; nothing was "
                                f"written") from exc
        if full:  # a writer that reports a full disk as its own error (torch.save, safetensors)
            raise ArtifactError(f"cannot write {path}: no space left on the device ({_one_line(exc)}); "
                                f"{_ERRNO_HINTS[errno.ENOSPC]}; nothing was written") from exc
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


def tool_versions(*dists: str) -> dict[str, str | None]:
    """The ``versions`` record of a sidecar: ``lso-deploy`` and Python, plus each distribution's installed version
    (None when it is not installed)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import lso

    out: dict[str, str | None] = {"lso-deploy": lso.__version__, "python": platform.python_version()}
    for dist in dists:
        try:
            out[dist] = version(dist)
        except (PackageNotFoundError, ValueError):
            out[dist] = None
    return out


def cpu_model() -> str:
    """The CPU this process runs on, as sidecars record it: the model name of ``/proc/cpuinfo`` (else
    :func:`platform.processor`) plus, where the kernel reports them, the vendor, family and model numbers, which
    tell apart CPU generations that share a marketing name (``AMD EPYC (AuthenticAMD family 25 model 17)``)."""
    import platform

    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if not line.strip():
                break  # the first processor's block is enough
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or platform.machine() or "unknown CPU"
    ids = [f"{fields['vendor_id']}" if fields.get("vendor_id") else "",
           f"family {fields['cpu family']}" if fields.get("cpu family") else "",
           f"model {fields['model']}" if fields.get("model") else ""]
    ids = [i for i in ids if i]
    return f"{name} ({' '.join(ids)})" if ids else name


def read_sidecar(artifact: PathLike, *, verify: bool = True) -> dict[str, Any] | None:
    """Read ``<artifact>.json`` if it exists (None otherwise); with ``verify`` check the sha256.

    A sidecar exists to pin its artifact: one without a ``sha256`` string (``{}`` included) is refused with
    ``verify``, never taken as a pass.

    Raises:
        ArtifactError: an unreadable sidecar, one without its ``sha256`` (with ``verify``), or an artifact that
            does not match it.
    """
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
    if verify and not (isinstance(data.get("sha256"), str) and data["sha256"]):
        raise ArtifactError(
            f"sidecar {side} records no sha256 of {Path(artifact).name} (keys: {sorted(data)[:8]}), so it cannot "
            f"vouch for it: delete the sidecar, or pin the file again with lso.artifacts.write_sidecar (or re-export "
            f"it)")
    if verify:
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


# ------------------------------------------------------------------------------------------ output locks
LOCK_NAME = ".lso.lock"
"""The lock file of an output folder (``lso batch``, ``lso train``)."""


def lock_path(target: PathLike, *, folder: bool = False) -> Path:
    """The lock file of an output: ``<folder>/.lso.lock`` for a folder, ``.<name>.lock`` beside a file.

    Args:
        target: the output file or folder.
        folder: ``target`` is a folder (its lock lies inside it).
    """
    target = Path(target)
    if folder:
        return target / LOCK_NAME
    name = f".{target.name}.lock"
    if len(os.fsencode(name)) > NAME_MAX:  # a long (valid) output name: a fixed-length name derived from it
        name = f".{hashlib.sha256(os.fsencode(target.name)).hexdigest()[:32]}.lock"
    return target.with_name(name)


def _command_line() -> str:
    """This process's command line as the user typed it (``python -m lso`` shows as ``lso``)."""
    argv = list(sys.argv) or ["python"]
    prog = Path(argv[0]).name
    return shlex.join(["lso" if prog in ("__main__.py", "lso") else prog, *argv[1:]])


def _read_holder(fd: int) -> dict[str, Any]:
    """The record in an open lock file ({} when empty or unreadable: its writer had not written it yet)."""
    try:
        data = json.loads(os.pread(fd, 65536, 0).decode("utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _pid_alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError, OverflowError):
        return False
    except PermissionError:
        return True
    return True


def _describe_holder(holder: dict[str, Any]) -> str:
    """``PID 123 on host h, started 2026-12-05T08:30:00Z (42 s ago), command `lso infer ...```."""
    if not holder:
        return "another run (it has not written its PID, host and command yet)"
    text = f"PID {holder.get('pid', '?')} on host {holder.get('host', '?')}"
    started = holder.get("started")
    if started:
        text += f", started {started}"
        with contextlib.suppress(KeyError, TypeError, ValueError):
            text += f" ({max(time.time() - float(holder['started_unix']), 0):.0f} s ago)"
    if holder.get("command"):
        text += f", command `{holder['command']}`"
    return text


_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EINVAL}
"""What ``flock`` answers on a file system that has no locks."""


@contextlib.contextmanager
def output_lock(target: PathLike, *, folder: bool = False, command: str | None = None) -> Iterator[Path]:
    """Hold an exclusive lock on an output (file or folder) for the ``with`` block; yield the lock file.

    Two runs writing the same output (and its resume state) would corrupt each other; the second one gets an
    ``ArtifactError`` naming the first (PID, host, start time, command) instead. The lock is ``flock`` on
    :func:`lock_path`, which holds a JSON record of its owner; the kernel releases it when its process ends,
    however it ends (``SIGKILL`` included). A lock file left behind by a run that ended without removing it is
    taken over with a warning when it was made on this host; one made on another host is refused, naming that
    host (whether that run still lives cannot be checked from here, and not every network file system shares
    ``flock`` between hosts): delete the lock file if that run is gone. The lock file is removed on leaving. On a
    file system without locks (``ENOLCK``) the run goes on with a warning saying that a second run is not detected.

    Args:
        target: the output file or folder (a folder must exist).
        folder: ``target`` is a folder: the lock is ``<target>/.lso.lock``.
        command: what the record says this run is (default: this process's command line).

    Raises:
        ArtifactError: another run holds the lock, a stale lock from another host, or the lock file cannot be
            made (missing or read-only folder, full disk, ...).
    """
    try:
        import fcntl
    except ImportError:  # no flock (Windows): no lock
        log.debug("no fcntl: %s is not locked", target)
        yield lock_path(target, folder=folder)
        return
    path = lock_path(target, folder=folder)
    host = socket.gethostname()
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as exc:
            raise ArtifactError(f"cannot write {target}: its lock file {path}: {os_error_message(exc, path)}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            where = "" if not holder or holder.get("host") == host else " (another machine)"
            gone = (" — that PID is no longer running, but a process it started holds the lock"
                    if holder.get("host") == host and "pid" in holder and not _pid_alive(holder["pid"]) else "")
            raise ArtifactError(
                f"{target} is being written by another run: {_describe_holder(holder)}{where}{gone}; wait for it "
                f"to finish or choose another output (its lock: {path})") from None
        except OSError as exc:
            if exc.errno not in _NO_LOCKS:
                os.close(fd)
                raise ArtifactError(f"cannot lock {target} ({path}): {os_error_message(exc, path)}") from exc
            # a file system without locks (NFS without lockd, some FUSE mounts): run, but say what is not checked
            with contextlib.suppress(OSError):
                if os.fstat(fd).st_size == 0:
                    os.unlink(path)
            os.close(fd)
            log.warning("%s: the file system does not support locks (%s): another run writing the same output "
                        "at the same time is not detected", target, os_error_message(exc, path))
            yield path
            return
        try:  # a run that just finished may have removed this file after we opened it: then lock the new one
            st, now = os.fstat(fd), os.stat(path)
            if (st.st_dev, st.st_ino) == (now.st_dev, now.st_ino):
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        previous = _read_holder(fd)
        if previous:
            if previous.get("host") not in (None, host):
                raise ArtifactError(
                    f"{target} was locked by a run on another machine: {_describe_holder(previous)}; it cannot be "
                    f"checked from {host} whether it still runs: if it does not, delete {path} and run again")
            log.warning("%s: taking over the lock of a run that ended without releasing it (%s; PID %s is %s)",
                        target, _describe_holder(previous), previous.get("pid", "?"),
                        "now another process" if _pid_alive(previous.get("pid")) else "gone")
        record = {"pid": os.getpid(), "host": host, "command": command or _command_line(),
                  "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "started_unix": round(time.time(), 3),
                  "target": os.fspath(target)}
        data = (json.dumps(record) + "\n").encode("utf-8")
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
    except OSError as exc:  # a full disk: the lock file is ours (locked), and goes
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)
        raise ArtifactError(f"cannot write {target}: its lock file {path}: {os_error_message(exc, path)}") from exc
    except BaseException:
        os.close(fd)
        raise
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            st, now = os.fstat(fd), os.stat(path)
            if (st.st_dev, st.st_ino) == (now.st_dev, now.st_ino):
                os.unlink(path)  # while still holding it: a run starting now locks a new file
        os.close(fd)


# ------------------------------------------------------------------------------------------ no output over an input
# Every output path a command will write (the main output, its sidecar ``<file>.json``, previews, ENVI ``.hdr/.img``
# pairs, resume folders, calibration caches, run folders, ...) is compared with every input path (artifacts, scene
# files and folders, data files, and the sidecars read beside them) *before anything runs*. Two paths clash when,
# after resolving symbolic links and ``..``, they are the same path, or when both exist and are the same file
# (``os.stat`` ``st_dev``/``st_ino``: hard links, case-insensitive file systems, bind mounts). An output *folder*
# (whose files the command writes, e.g. ``lso batch -o OUT``) clashes with every input inside it whose name the
# command may write (``OutputFolder.pattern``; ``None``: any name), and with an input folder that is that folder. A
# clash is an :class:`~lso.errors.InputError` naming both paths and the fix::
#
#     check_no_clash([("input", "scene.npz")], [("output", "scene.npz")])   # InputError
Labelled: TypeAlias = PathLike | tuple[str, PathLike | None] | None

MAX_FOLDER_ENTRIES = 20000
"""Files looked at inside one output folder for hard links to an input (a bound on the work of the check)."""


@dataclass(frozen=True)
class OutputFolder:
    """A folder whose files a command writes.

    Attributes:
        path: the folder (it need not exist yet).
        pattern: regular expression (``re.fullmatch``) on the path relative to the folder (``/``-separated) of
            the files the command may write there; ``None``: any file inside it is an output.
        label: how messages name it (``"output folder"``, ``"resume folder"``, ...).
        recursive: the command writes into sub-folders too (else only files directly in the folder).
    """

    path: PathLike
    pattern: str | None = None
    label: str = "output folder"
    recursive: bool = True


def with_sidecars(paths: Iterable[PathLike | None], label: str = "input") -> list[tuple[str, Path]]:
    """``(label, path)`` and ``(label + " sidecar", path.json)`` for each path (None skipped).

    The sidecar ``<file>.json`` beside an input is read with it (its sha256); beside an output it is written.
    """
    result: list[tuple[str, Path]] = []
    for p in paths:
        if p is None:
            continue
        result.append((label, Path(p)))
        result.append((f"{label} sidecar", sidecar_path(p)))
    return result


def _labelled(items: Iterable[Labelled], default: str) -> list[tuple[str, Path]]:
    result = []
    for item in items:
        if item is None:
            continue
        label, path = item if isinstance(item, tuple) else (default, item)
        if path is None or os.fspath(path) == "":
            continue
        result.append((label, Path(path)))
    return result


def _real(path: Path) -> Path:
    """Absolute path with symbolic links and ``..`` resolved (for a path that does not exist: as far as it does)."""
    return Path(os.path.realpath(os.path.abspath(os.path.expanduser(os.fspath(path)))))


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def _inside(child: Path, folder: Path) -> str | None:
    """``child`` relative to ``folder`` (``/``-separated) when it lies inside it, else None."""
    try:
        rel = child.relative_to(folder)
    except ValueError:
        return None
    return rel.as_posix() if rel.parts else None


def _refuse(out_label: str, out: Path, in_label: str, inp: Path, how: str) -> None:
    raise InputError(f"{out_label} {out} would overwrite the {in_label} {inp} ({how}): a command never writes over "
                     f"its own input; choose another output path (or move the input)")


def check_no_clash(inputs: Iterable[Labelled], outputs: Iterable[Labelled] = (), *,
                   folders: Iterable[OutputFolder | PathLike | None] = ()) -> None:
    """Refuse (``InputError``) when an output would be written over (or into) an input; call before any work.

    Args:
        inputs: paths the command reads: a path, or ``(label, path)`` (``None`` entries and paths skipped).
        outputs: files (or single-purpose folders such as a resume folder) the command may write, same forms.
        folders: output folders whose files the command writes (:class:`OutputFolder`; a bare path: any name).

    Raises:
        InputError: an output is an input (same resolved path, or the same existing file through a hard link), an
            input lies inside an output folder under a name the command writes, or an input folder is an output
            folder; the message names both paths.
    """
    ins = [(label, p, _real(p), _identity(p)) for label, p in _labelled(inputs, "input")]
    if not ins:
        return
    outs = [(label, p, _real(p), _identity(p)) for label, p in _labelled(outputs, "output")]
    for out_label, out, out_real, out_id in outs:
        for in_label, inp, in_real, in_id in ins:
            if out_real == in_real:
                _refuse(out_label, out, in_label, inp, "the same file" if out_real == Path(os.path.abspath(out))
                        else f"the same file, {out_real}")
            if out_id is not None and out_id == in_id:
                _refuse(out_label, out, in_label, inp, "the same file through a hard link or another name")
            if _inside(in_real, out_real) is not None:  # an output that is a folder (a resume folder)
                _refuse(out_label, out, in_label, inp, "it lies inside that folder, which the command replaces")
    in_ids = {in_id: (label, inp) for label, inp, _, in_id in ins if in_id is not None}
    for folder in folders:
        if folder is None:
            continue
        if not isinstance(folder, OutputFolder):
            folder = OutputFolder(folder)
        root = _real(Path(folder.path))
        pattern = re.compile(folder.pattern) if folder.pattern is not None else None
        for in_label, inp, in_real, _ in ins:
            if in_real == root:
                _refuse(folder.label, Path(folder.path), in_label, inp, "the same folder: outputs would be written "
                        "among the inputs")
            rel = _inside(in_real, root)
            if rel is not None and not folder.recursive and "/" in rel:
                rel = None
            if rel is not None and (pattern is None or pattern.fullmatch(rel)):
                _refuse(folder.label, Path(folder.path), in_label, inp,
                        f"the command writes {rel} in that folder" if pattern is not None
                        else "it lies inside that folder, where the command writes")
        if in_ids and root.is_dir():  # hard links: an existing output-named file that is an input under another name
            seen = 0
            for dirpath, dirnames, filenames in os.walk(root):
                if not folder.recursive:
                    dirnames[:] = []
                for name in filenames:
                    seen += 1
                    if seen > MAX_FOLDER_ENTRIES:
                        log.debug("%s: more than %d files, hard links not checked further", root, MAX_FOLDER_ENTRIES)
                        break
                    path = Path(dirpath) / name
                    rel = path.relative_to(root).as_posix()
                    if pattern is not None and not pattern.fullmatch(rel):
                        continue
                    ident = _identity(path)
                    if ident in in_ids:
                        in_label, inp = in_ids[ident]
                        _refuse(folder.label, Path(folder.path), in_label, inp,
                                f"{path} in that folder, which the command writes, is the same file through a hard "
                                f"link")
                else:
                    continue
                break


def recorded_fingerprint(path: Path, graph_value: Any, sidecar: dict | None) -> str | None:
    """The weights' fingerprint a graph records: its metadata's ``graph_value``, else its sidecar's; None if neither.

    Raises:
        ArtifactError: the two record different fingerprints (one of them was edited).
    """
    found = {where: value for where, value in (("graph metadata", graph_value),
                                               ("sidecar", (sidecar or {}).get(WEIGHTS_FINGERPRINT_KEY)))
             if isinstance(value, str) and value}
    if len(set(found.values())) > 1:
        raise ArtifactError(f"{path}: its graph metadata and its sidecar record different weight fingerprints "
                            f"({found}); one of them was edited: re-export it")
    return next(iter(found.values()), None)
