"""No lost work: a killed `lso infer --tile` leaves no output file, and the same command completes the rest."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lso.artifacts import read_sidecar
from lso.runtime.infer import InferOptions, infer, resume_dir

from rt_fixtures import reference, scene


def _lso(*args: str) -> list[str]:
    return [sys.executable, "-m", "lso", *args]


@pytest.mark.slow
def test_killed_tiled_infer_leaves_no_output_and_rerun_completes(rt_model, tiny_onnx_tileable, tmp_path):
    hr, lr = scene(384, 384, 4)  # 16-px cores: 576 tiles, several seconds of work
    np.savez(tmp_path / "scene.npz", hr_msi=hr, lr_hsi=lr)
    out = tmp_path / "fused.npz"
    cmd = _lso("infer", str(tiny_onnx_tileable), str(tmp_path / "scene.npz"), "-o", str(out), "--tile", "16",
               "--threads", "1", "--no-progress", "--no-preview")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    state = resume_dir(out) / "state.json"
    deadline, done = time.monotonic() + 300, []
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if state.is_file():
                done = json.loads(state.read_text())["done"]
                if len(done) >= 20:
                    break
            time.sleep(0.05)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.communicate()}"
        proc.send_signal(signal.SIGKILL)  # no cleanup handler runs: the harshest interruption
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert 20 <= len(done) < 576
    assert not out.exists(), "a partial output exists under the final name"
    leftovers = sorted(p.name for p in tmp_path.iterdir()
                       if p.name not in ("scene.npz", f".{out.name}.partial", f".{out.name}.lock"))
    assert leftovers == [], leftovers  # no temporary files either: the kill came while fusing tiles

    rerun = subprocess.run([*cmd[:3], "-v", *cmd[3:]], env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    resumed = int(rerun.stderr.split("resuming fused.npz: ")[1].split(" tile")[0])
    assert resumed >= len(done)  # the finished tiles were skipped, not redone
    assert "576 tile(s) of core 16" in rerun.stderr and f"{resumed} already done" in rerun.stderr
    assert f"taking over the lock of a run that ended without releasing it (PID {proc.pid}" in rerun.stderr
    assert not resume_dir(out).exists()  # cleaned up once the output is written
    assert not (tmp_path / f".{out.name}.lock").exists()
    got = np.load(out)["hr_hsi"]
    assert np.abs(got - reference(rt_model, hr, lr)).max() <= 1e-5  # complete and exact
    assert read_sidecar(out)["sha256"]


@pytest.mark.slow
def test_second_run_writing_the_same_output_is_refused_and_the_first_completes(rt_model, tiny_onnx_tileable, tmp_path,
                                                                               capsys):
    """Two `lso infer --tile` runs writing one output (issue 18): the second exits 1 with one line naming the first
    (PID, host, start time, command) before touching the output or its resume state; the first completes, exact."""
    import socket

    from lso.cli import main

    hr, lr = scene(256, 256, 4)  # 256 tiles of core 16: a few seconds of work
    np.savez(tmp_path / "scene.npz", hr_msi=hr, lr_hsi=lr)
    out = tmp_path / "fused.npz"
    args = ["infer", str(tiny_onnx_tileable), str(tmp_path / "scene.npz"), "-o", str(out), "--tile", "16",
            "--threads", "1", "--no-progress", "--no-preview"]
    first = subprocess.Popen(_lso(*args), env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    state = resume_dir(out) / "state.json"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and first.poll() is None and not state.is_file():
            time.sleep(0.05)
        assert first.poll() is None and state.is_file(), f"the first run ended early: {first.communicate()}"
        before = json.loads(state.read_text())
        assert main(args) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert f"lso infer: error: {out} is being written by another run: PID {first.pid} on host " \
               f"{socket.gethostname()}, started " in err
        assert f"command `lso {' '.join(args)}`" in err
        assert state.is_file() and first.poll() is None  # the first run's resume state is intact, and it goes on
        assert json.loads(state.read_text())["key"] == before["key"]
        _, stderr = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, stderr
    assert np.abs(np.load(out)["hr_hsi"] - reference(rt_model, hr, lr)).max() <= 1e-5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fused.npz", "fused.npz.json", "scene.npz"]


def test_stale_partial_result_of_another_run_is_discarded(rt_model, tiny_onnx_tileable, tmp_path, caplog):
    hr, lr = scene(64, 64, 4)
    np.savez(tmp_path / "scene.npz", hr_msi=hr, lr_hsi=lr)
    out = tmp_path / "fused.npz"
    work = resume_dir(out)
    work.mkdir()
    (work / "state.json").write_text(json.dumps({"key": "another run", "done": [0, 1, 2]}))
    (work / "hr_hsi.f32").write_bytes(b"\xff" * 64)
    opts = InferOptions(artifact=tiny_onnx_tileable, inputs=(tmp_path / "scene.npz",), out=out, tile=16,
                        preview=False, progress=False)
    infer(opts)
    assert "belongs to another run" in caplog.text
    assert np.abs(np.load(out)["hr_hsi"] - reference(rt_model, hr, lr)).max() <= 1e-5
    assert not work.exists()


def test_untiled_infer_interrupted_while_writing_leaves_nothing(rt_model, tiny_onnx_tileable, tmp_path, monkeypatch):
    """Ctrl-C during the final write: the temporary file is removed and no output appears."""
    import lso.runtime.infer as infer_mod

    hr, lr = scene(32, 32, 4)
    np.savez(tmp_path / "scene.npz", hr_msi=hr, lr_hsi=lr)

    def interrupted(fh, **_arrays):
        fh.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(infer_mod.np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        infer(InferOptions(artifact=tiny_onnx_tileable, inputs=(tmp_path / "scene.npz",), out=tmp_path / "o.npz",
                           preview=False, progress=False))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.npz"]


def test_the_partial_result_belongs_to_one_backend_and_device():
    """Tiles of another runtime are not mixed into a resumed output: the backend and device are in the run's key."""
    from lso.runtime.infer import _fingerprint

    def key(**fields):
        opts = InferOptions(artifact=Path(__file__), inputs=(Path(__file__),), out=Path("o.npz"), tile=16, **fields)
        return _fingerprint(opts, (1, 3, 64, 64), (1, 31, 16, 16))

    assert key() == key()
    assert len({key(), key(backend="onnxruntime"), key(backend="openvino"), key(device="cpu")}) == 4
