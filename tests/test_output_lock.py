"""Two runs writing the same output cannot corrupt each other (issue 18): :func:`lso.artifacts.output_lock` refuses the
second, naming the first (PID, host, start time, command); a lock left by a dead local run is taken over with a
warning; one left on another host is refused, saying so. ``lso train --out`` and ``lso batch -o`` are locked before
they touch their folder (``lso infer``: tests/runtime/test_infer_resume.py)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lso.artifacts import lock_path, output_lock
from lso.cli import main
from lso.errors import ArtifactError

_HOLD = textwrap.dedent("""
    import sys, time
    from lso.artifacts import output_lock
    with output_lock(sys.argv[1], folder=sys.argv[2] == "folder", command=sys.argv[3]):
        print("locked", flush=True)
        time.sleep(600)
""")


def _hold(target: Path, command: str, *, folder: bool = False) -> subprocess.Popen:
    """A process holding the lock of ``target`` (started and locked when this returns)."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(target), "folder" if folder else "file", command],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(30)


def test_second_writer_is_refused_naming_the_first_and_stale_locks_are_handled(tmp_path, caplog):
    out = tmp_path / "fused.npz"
    holder = _hold(out, "lso infer model.onnx scene.npz -o fused.npz --tile 64")
    try:
        with pytest.raises(ArtifactError) as err, output_lock(out):
            pass
        text = str(err.value)
        assert "\n" not in text and str(out) in text
        assert f"PID {holder.pid} on host {socket.gethostname()}" in text
        assert "started 20" in text and "command `lso infer model.onnx scene.npz -o fused.npz --tile 64`" in text
        assert lock_path(out).is_file()  # the refused run removed nothing of the live one's
        holder.send_signal(signal.SIGKILL)  # no clean-up runs: the lock file stays, the kernel drops the lock
        holder.wait(30)
    finally:
        _stop(holder)
    assert json.loads(lock_path(out).read_text())["pid"] == holder.pid
    with output_lock(out) as path:  # a dead local run's lock: taken over, with a warning naming it
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert f"taking over the lock of a run that ended without releasing it (PID {holder.pid}" in caplog.text
    assert not lock_path(out).exists()  # removed on leaving

    # left by a run on another machine: whether it still runs cannot be checked from here
    lock_path(out).write_text(json.dumps({"pid": 4242, "host": "render-node-7", "started": "2026-12-01T10:00:00Z",
                                          "command": "lso infer m.onnx s.npz -o fused.npz"}))
    with pytest.raises(ArtifactError, match=r"another machine: PID 4242 on host render-node-7, started "
                                            r"2026-12-01T10:00:00Z.*delete .*\.fused\.npz\.lock"), output_lock(out):
        pass
    assert lock_path(out).is_file()


def test_long_output_names_get_a_short_lock_name(tmp_path):
    out = tmp_path / ("x" * 250 + ".npz")
    with output_lock(out) as path:
        assert len(path.name) < 255 and path.is_file()
    assert not path.exists()


@pytest.mark.parametrize("command", ["train", "batch"])
def test_train_and_batch_refuse_a_folder_another_run_writes(command, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "last.pt").write_bytes(b"the other run's resume state")
    holder = _hold(out, f"lso {command} ... {out}", folder=True)
    try:
        if command == "train":
            argv = ["train", "--out", str(out), "--resume", "--max-steps", "1", "--no-progress"]
        else:
            scenes = tmp_path / "scenes"
            scenes.mkdir()
            argv = ["batch", "@demo", str(scenes), "-o", str(out), "--no-progress"]
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert f"is being written by another run: PID {holder.pid} on host {socket.gethostname()}" in err
        assert f"command `lso {command} ... {out}`" in err
        assert sorted(p.name for p in out.iterdir()) == [".lso.lock", "last.pt"]  # nothing touched
        assert (out / "last.pt").read_bytes() == b"the other run's resume state"
    finally:
        _stop(holder)


def test_a_file_system_without_locks_runs_with_a_warning(tmp_path, monkeypatch, caplog):
    import errno
    import fcntl

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    out = tmp_path / "fused.npz"
    with output_lock(out):
        out.write_bytes(b"written")
    assert "does not support locks" in caplog.text and "not detected" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fused.npz"]
