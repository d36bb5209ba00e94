"""No command writes over one of its own inputs: one check, run by every command that writes files.

Every output path a command will write (the main output, its sidecar ``<file>.json``, previews, ENVI
``.hdr/.img`` pairs, resume folders, calibration caches, run folders, ...) is compared with every input path
(artifacts, scene files and folders, data files, and the sidecars read beside them) *before anything runs*.
Two paths clash when, after resolving symbolic links and ``..``, they are the same path, or when both exist
and are the same file (``os.stat`` ``st_dev``/``st_ino``: hard links, case-insensitive file systems, bind
mounts). An output *folder* (whose files the command writes, e.g. ``lso batch -o OUT``) clashes with every
input inside it whose name the command may write (``OutputFolder.pattern``; ``None``: any name), and with an
input folder that is that folder. A clash is an :class:`~lso.errors.InputError` naming both paths and the fix.

Example::

    from lso._clash import OutputFolder, check_no_clash
    check_no_clash([("input", "scene.npz")], [("output", "scene.npz")])   # InputError
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

from lso.errors import InputError

__all__ = ["OutputFolder", "check_no_clash", "with_sidecars"]

log = logging.getLogger(__name__)

PathLike: TypeAlias = str | os.PathLike
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
    from lso._io import sidecar_path

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
