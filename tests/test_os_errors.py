"""Every OS-level failure of a command that writes is one line naming the path, exit status 1, no traceback and no
file left behind (issue 18): a name over 255 bytes, a missing folder, a file where a folder should be, a read-only
file system, a full disk and a nearly full one (the write fails half-way), for ``lso infer``, ``export``, ``eval``,
``calibrate``, ``triton-repo``, ``batch`` and ``train``.

Read-only and full file systems are real where this process may mount (root with CAP_SYS_ADMIN, as in the
development VM): a tmpfs remounted read-only, and a tmpfs filled to the last byte. Elsewhere (an unprivileged CI
container) they are simulated: ``os.open``/``os.mkdir``/``os.access`` under the folder answer ``EROFS`` (every writer
makes its temporary file with ``os.open`` first), and ``os.replace`` into the folder answers ``ENOSPC`` (the last
step of every atomic write); the test id says which.
"""
from __future__ import annotations

import errno
import gc
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from lso.cli import main

LONG = "n" * 300  # bytes: over the 255 a file name may have


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, rt_model, tiny_onnx) -> dict[str, Path]:
    """The tiny model as a checkpoint and an ONNX graph, a 32x32 scene, an empty scene folder."""
    from lso.checkpoint import save_checkpoint

    folder = tmp_path_factory.mktemp("inputs")
    save_checkpoint(rt_model, folder / "tiny.safetensors")
    rng = np.random.default_rng(0)
    np.savez(folder / "scene.npz", hr_msi=rng.random((3, 32, 32), dtype=np.float32),
             lr_hsi=rng.random((31, 8, 8), dtype=np.float32))
    (folder / "no_scenes").mkdir()
    return {"ckpt": folder / "tiny.safetensors", "onnx": tiny_onnx, "scene": folder / "scene.npz",
            "scenes": folder / "no_scenes"}


#: command -> (argv for an output at OUT, the name of OUT's last part, whether OUT is a file (its folder must exist))
COMMANDS: dict[str, tuple[Callable[[dict, Path], list[str]], bool]] = {
    "infer": (lambda i, o: ["infer", str(i["ckpt"]), str(i["scene"]), "-o", f"{o}.npz"], True),
    "export": (lambda i, o: ["export", "--checkpoint", str(i["ckpt"]), "--out", f"{o}.onnx", "--skip-check",
                             "--no-simplify"], True),
    "calibrate": (lambda i, o: ["calibrate", str(i["onnx"]), "--precision", "fp16", "--out", f"{o}.onnx",
                                "--count", "1", "--min-count", "1", "--size", "32", "--ratio", "4"], True),
    "eval": (lambda i, o: ["eval", "--checkpoint", str(i["ckpt"]), "-n", "1", "--size", "32", "--out", str(o),
                           "--no-png", "--no-progress"], False),
    "triton-repo": (lambda i, o: ["triton-repo", str(o), "--onnx", str(i["onnx"])], False),
    "batch": (lambda i, o: ["batch", str(i["onnx"]), str(i["scenes"]), "-o", str(o), "--no-progress"], False),
    "train": (lambda i, o: ["train", "--out", str(o), "--max-steps", "1", "--batch", "1", "--crop", "16",
                            "--scene-size", "32", "--pool", "1", "--val-every", "1", "--no-progress",
                            "--config", ("patch_size=4,width=16,num_basis=6,num_token=4,guide_dim=16,n_resblocks=1,"
                                         "heads=2")], False),
}
CASES = ("long_name", "missing_folder", "not_a_folder", "read_only", "disk_full", "disk_nearly_full")
#: commands whose output is larger than what a nearly full disk has left (so the write fails half-way)
LARGE_OUTPUT = ("infer", "calibrate", "triton-repo", "train")
NEARLY_FULL_FREE = 16 * 1024
SLOW = {("export", "disk_full")}  # the export runs whole before its write fails: a minute on 2 busy cores


def _can_mount() -> bool:
    """Whether real tmpfs mounts can be made here (``LSO_TEST_SIMULATE_FS=1`` forces the simulation)."""
    if os.environ.get("LSO_TEST_SIMULATE_FS") == "1":
        return False
    if not sys.platform.startswith("linux") or os.geteuid() != 0 or not shutil.which("mount"):
        return False
    probe = Path(f"/tmp/lso-mount-probe-{os.getpid()}")
    probe.mkdir(exist_ok=True)
    try:
        ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)],
                            capture_output=True, check=False).returncode == 0
        if ok:
            subprocess.run(["umount", str(probe)], capture_output=True, check=False)
        return ok
    finally:
        probe.rmdir()


MOUNT = _can_mount()


def _fill(folder: Path, leave: int = 0) -> None:
    """Fill the file system of ``folder``, then free ``leave`` bytes."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, bytes(65536))
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    fd = os.open(folder / "filler", os.O_WRONLY)
    try:  # the last bytes of the last page
        while True:
            os.write(fd, b"\0")
    except OSError:
        pass
    finally:
        os.close(fd)
    if leave:
        os.truncate(folder / "filler", max(os.path.getsize(folder / "filler") - leave, 0))


def _simulate(monkeypatch, folder: Path, code: int) -> None:
    """``EROFS``: writing anything under ``folder`` fails; ``ENOSPC``: renaming into it does (see the docstring)."""
    inside = str(folder)

    def under(path) -> bool:
        try:
            return os.path.abspath(os.fsdecode(path)).startswith(inside)
        except TypeError:
            return False

    def fail(path):
        raise OSError(code, os.strerror(code), os.fsdecode(path))

    if code == errno.EROFS:
        real_open, real_mkdir, real_access = os.open, os.mkdir, os.access
        writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC

        def fake_open(path, flags, *args, **kwargs):
            if flags & writing and under(path):
                fail(path)
            return real_open(path, flags, *args, **kwargs)

        def fake_mkdir(path, *args, **kwargs):
            if under(path):
                if os.path.isdir(path):
                    raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), os.fsdecode(path))
                fail(path)
            return real_mkdir(path, *args, **kwargs)

        monkeypatch.setattr(os, "open", fake_open)
        monkeypatch.setattr(os, "mkdir", fake_mkdir)
        monkeypatch.setattr(os, "access", lambda p, m, *a, **k: False if m & os.W_OK and under(p)
                            else real_access(p, m, *a, **k))
    else:
        real_replace = os.replace

        def fake_replace(src, dst, *args, **kwargs):
            if under(dst):
                fail(dst)
            return real_replace(src, dst, *args, **kwargs)

        monkeypatch.setattr(os, "replace", fake_replace)


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir()}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("command", list(COMMANDS))
def test_os_errors_are_one_line_naming_the_path_and_leave_nothing(command, case, inputs, tmp_path, monkeypatch,
                                                                   capsys):
    make, is_file = COMMANDS[command]
    if case == "missing_folder" and not is_file:
        pytest.skip(f"lso {command} creates its output folder with its parents")
    if case == "disk_nearly_full" and command not in LARGE_OUTPUT:
        pytest.skip(f"lso {command}'s outputs fit in the {NEARLY_FULL_FREE} bytes left (disk_full covers it)")
    if (command, case) in SLOW:
        pytest.skip("the export runs whole before its write can fail (a minute); the write path is atomic_path's, "
                    "covered by the other commands")
    base = tmp_path / "work"
    base.mkdir()
    mounted = False
    out = base / "out"
    if case == "long_name":
        out = base / LONG
        named = LONG
    elif case == "missing_folder":
        out = base / "missing" / "out"
        named = str(base / "missing")
    elif case == "not_a_folder":
        (base / "file").write_text("a file, not a folder\n")
        out = base / "file" / "out"
        named = str(base / "file")
    else:
        named = str(base)
        if MOUNT:
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(base)], check=True)
            mounted = True
            if case != "read_only":
                _fill(base, NEARLY_FULL_FREE if case == "disk_nearly_full" else 0)
            else:
                subprocess.run(["mount", "-o", "remount,ro", str(base)], check=True)
        else:
            _simulate(monkeypatch, base, errno.EROFS if case == "read_only" else errno.ENOSPC)  # both full cases
    try:
        before = _files(base)
        code = main(make(inputs, out))
        err = capsys.readouterr().err
        left = _files(base) - before
    finally:
        monkeypatch.undo()
        if mounted:
            gc.collect()  # a writer's file object held by a traceback keeps the mount busy
            if subprocess.run(["umount", str(base)], capture_output=True, check=False).returncode != 0:
                subprocess.run(["umount", "-l", str(base)], check=True)
    assert code == 1, err
    assert "Traceback" not in err and err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith(f"lso {command}: error: ") and named in err, err
    assert left == set(), f"files left behind: {sorted(left)}"
