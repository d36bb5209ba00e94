"""``lso batch`` end to end on a handful of small synthetic scenes (one local Ray, 2 CPUs, two actors):
outputs equal direct fusion, tiling of large scenes, metrics with ground truth, failures recorded, resume,
tiling to fit a memory budget, and a run killed with SIGKILL that the same command completes."""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from lso.cli import main
from lso.data import degrade
from lso.metrics import evaluate

h5py = pytest.importorskip("h5py")


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory) -> Path:
    """3 npz scenes with GT, a 2-scene community .h5, a 64x80 scene (tiled), a corrupt .h5, a wrong-band .npz."""
    folder = tmp_path_factory.mktemp("scenes")
    rng = np.random.default_rng(7)
    for i in range(3):
        gt = rng.random((31, 32, 32), dtype=np.float32)
        hr, lr = degrade(gt, 4)
        np.savez(folder / f"s{i}.npz", hr_msi=hr, lr_hsi=lr, gt=gt)
    with h5py.File(folder / "cave.h5", "w") as f:
        f["GT"] = rng.random((2, 31, 32, 32), dtype=np.float32)
        f["RGB"] = rng.random((2, 3, 32, 32), dtype=np.float32)
    gt = rng.random((31, 64, 80), dtype=np.float32)
    hr, lr = degrade(gt, 4)
    np.savez(folder / "large.npz", hr_msi=hr, lr_hsi=lr)
    (folder / "corrupt.h5").write_bytes(b"this is not HDF5")
    np.savez(folder / "wrong_bands.npz", hr_msi=rng.random((5, 32, 32), dtype=np.float32),
             lr_hsi=rng.random((31, 8, 8), dtype=np.float32))
    return folder


def _opts(artifact, scenes, out, **kw):
    from lso.scaleout.batch import BatchOptions

    base = dict(artifact=Path(artifact), inputs=(scenes,), out=out, actors=2, num_cpus_per_actor=0.5, threads=1,
                auto_tile_pixels=48 * 48, auto_tile=16, progress=False)
    base.update(kw)
    return BatchOptions(**base)


def _direct(artifact, hr, lr):
    from lso.runtime import load

    with load(artifact, threads=1) as runner:
        return runner.fuse(hr, lr)


def test_batch_end_to_end_with_failures_and_resume(ray_local, tiny_onnx_tileable, scene_dir, tmp_path, capsys):
    from lso.scaleout.batch import MANIFEST, read_record, run_batch

    out = tmp_path / "fused"
    report = run_batch(_opts(tiny_onnx_tileable, scene_dir, out))
    assert (report.ok, report.skipped, report.failed) == (6, 0, 2)
    manifest = json.loads((out / MANIFEST).read_text())
    status = {r["scene_id"]: r["status"] for r in manifest["scenes"]}
    assert status == {"s0": "ok", "s1": "ok", "s2": "ok", "cave_0000": "ok", "cave_0001": "ok", "large": "ok",
                      "corrupt": "failed", "wrong_bands": "failed"}
    errors = {r["scene_id"]: r["error"] for r in manifest["scenes"] if r["status"] == "failed"}
    assert "ArtifactError" in errors["corrupt"] and "corrupt.h5" in errors["corrupt"]
    assert "InputError" in errors["wrong_bands"] and "5 bands" in errors["wrong_bands"]
    assert manifest["summary"]["failed"] == 2 and manifest["summary"]["scored"] == 5
    written = sorted(p.name for p in out.iterdir() if not p.name.endswith(".npz.json"))  # outputs' sidecars aside
    assert written == sorted([MANIFEST] + [f"{k}.npz" for k, v in status.items() if v == "ok"])  # no temp files
    # each output equals direct fusion; the large scene was tiled (exact) and has no GT, so no metrics
    with np.load(scene_dir / "s1.npz") as data:
        hr, lr, gt = data["hr_msi"], data["lr_hsi"], data["gt"]
    with np.load(out / "s1.npz") as data:
        fused = data["hr_hsi"]
        assert data["wavelengths_nm"][-1] == 700
    np.testing.assert_allclose(fused, _direct(tiny_onnx_tileable, hr, lr), atol=1e-6)
    record = read_record(out / "s1.npz")
    want = evaluate(gt, fused, 4)
    assert record["metrics"]["psnr"] == pytest.approx(want["psnr"], rel=1e-9)
    assert record["metrics"]["sam"] == pytest.approx(want["sam"], rel=1e-9)
    with np.load(scene_dir / "large.npz") as data:
        hr, lr = data["hr_msi"], data["lr_hsi"]
    large = read_record(out / "large.npz")
    assert large["tile"] == 16 and large["metrics"] is None
    with np.load(out / "large.npz") as data:
        np.testing.assert_allclose(data["hr_hsi"], _direct(tiny_onnx_tileable, hr, lr), atol=1e-5)
    # community file: LR-HSI regenerated from GT at x4, scored against that GT
    cave1 = read_record(out / "cave_0001.npz")
    with h5py.File(scene_dir / "cave.h5") as f:
        gt1, rgb1 = f["GT"][1], f["RGB"][1]
    _, lr1 = degrade(gt1, 4)
    with np.load(out / "cave_0001.npz") as data:
        np.testing.assert_allclose(data["hr_hsi"], _direct(tiny_onnx_tileable, rgb1, lr1.astype(np.float32)),
                                   atol=1e-5)
        assert cave1["metrics"]["psnr"] == pytest.approx(evaluate(gt1, data["hr_hsi"], 4)["psnr"], rel=1e-9)

    # resume: finished scenes are skipped (files untouched), failed ones are tried again
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.npz")}
    report = run_batch(_opts(tiny_onnx_tileable, scene_dir, out))
    assert (report.ok, report.skipped, report.failed) == (0, 6, 2)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.npz")} == mtimes
    manifest = json.loads((out / MANIFEST).read_text())
    assert {r["scene_id"]: r.get("metrics") for r in manifest["scenes"] if r["status"] == "skipped"}["s1"] == \
        record["metrics"]  # metrics of skipped scenes come from their outputs

    # through the CLI: one output removed, one damaged -> only those are fused again; exit 3 as scenes failed
    (out / "s2.npz").unlink()
    damaged = bytearray((out / "s0.npz").read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    (out / "s0.npz").write_bytes(bytes(damaged))
    rc = main(["batch", str(tiny_onnx_tileable), str(scene_dir), "-o", str(out), "--actors", "1",
               "--num-cpus-per-actor", "0.5", "--no-progress"])
    assert rc == 3
    captured = capsys.readouterr()
    assert "2 fused, 4 already done, 2 failed" in captured.out and "wrong_bands" in captured.err
    assert read_record(out / "s2.npz")["status"] == "ok" and read_record(out / "s0.npz")["status"] == "ok"


def test_discovery_and_option_errors(tiny_onnx_tileable, scene_dir, tmp_path):
    from lso.errors import ArtifactError, InputError
    from lso.scaleout.batch import BatchOptions, discover_scenes, run_batch

    scenes, failures = discover_scenes([scene_dir / "cave.h5", scene_dir / "s0.npz"])
    assert [(s.scene_id, s.index) for s in scenes] == [("cave_0000", 0), ("cave_0001", 1), ("s0", None)]
    assert failures == []
    with pytest.raises(ArtifactError, match="does not exist"):
        discover_scenes([tmp_path / "missing"])
    with pytest.raises(InputError, match="npz or 'h5'|'npz' or 'h5'"):
        run_batch(BatchOptions(artifact=tiny_onnx_tileable, inputs=(scene_dir,), out=tmp_path, output_format="tif"))
    with pytest.raises(InputError, match="memory budget 'lots' is not a size"):  # before Ray starts
        run_batch(BatchOptions(artifact=tiny_onnx_tileable, inputs=(scene_dir,), out=tmp_path, memory_budget="lots"))
    corrupt = tmp_path / "bad.onnx"
    corrupt.write_bytes(b"garbage")
    with pytest.raises(ArtifactError):  # checked on the driver, before any actor starts
        run_batch(BatchOptions(artifact=corrupt, inputs=(scene_dir,), out=tmp_path / "o"))



def test_runner_options_reach_the_actor_s_runner_and_the_driver_s_check(tiny_onnx, scene_dir, tmp_path):
    """--runner-option goes to lso.runtime.load in each actor (the actor class built here, without Ray) and in the
    driver's check of the artifact, which refuses an option the backend does not take before Ray starts."""
    pytest.importorskip("openvino", reason="openvino is not installed")
    from dataclasses import replace

    from lso.errors import InputError
    from lso.scaleout.batch import SceneFuser, run_batch

    out = tmp_path / "o"
    out.mkdir()
    opts = _opts(tiny_onnx, scene_dir, out, backend="openvino", runner_options={"shapes": "dynamic"})
    fuser = SceneFuser(opts, "sha")
    try:
        assert fuser._runner.backend == "openvino" and fuser._runner.settings["shapes"] == "dynamic"
        rows = fuser({"scene_id": np.array(["s0"]), "path": np.array([str(scene_dir / "s0.npz")]),
                      "index": np.array([-1])})
        assert json.loads(rows["record"][0])["status"] == "ok"
    finally:
        fuser._runner.deactivate()
    with np.load(scene_dir / "s0.npz") as data, np.load(out / "s0.npz") as fused:
        np.testing.assert_allclose(fused["hr_hsi"], _direct(tiny_onnx, data["hr_msi"], data["lr_hsi"]), atol=1e-5)
    with pytest.raises(InputError, match="openvino backend takes no option 'cuda_graph'"):
        run_batch(replace(opts, out=tmp_path / "o2", runner_options={"cuda_graph": True}))
    with pytest.raises(InputError, match="use --memory-budget instead"):
        run_batch(replace(opts, out=tmp_path / "o3", runner_options={"memory_budget": "1G"}))

def test_resume_skips_only_scenes_of_the_same_artifact_backend_and_runner_options():
    from lso.scaleout.batch import finished_by

    record = {"status": "ok", "artifact_sha256": "a", "backend": "onnxruntime", "runner_options": {}}
    assert finished_by(record, "a", "onnxruntime", None)
    assert not finished_by(record, "b", "onnxruntime", None)  # another artifact
    assert not finished_by(record, "a", "openvino", None)  # another runtime: fused again
    assert not finished_by(record, "a", "onnxruntime", {"memory_arena": "none"})
    assert finished_by({**record, "runner_options": {"x": 1}}, "a", "onnxruntime", {"x": 1})
    assert not finished_by({**record, "status": "failed"}, "a", "onnxruntime", None)
    assert not finished_by(None, "a", "onnxruntime", None)
    old = {"status": "ok", "artifact_sha256": "a"}  # written before records named their backend
    assert finished_by(old, "a", "openvino", None) and finished_by(old, "a", "onnxruntime", None)


def test_scene_sizes_not_fitting_the_ratio_fail_unless_crop(tiny_onnx_tileable, tmp_path):
    """The rule of ``lso infer``: no silent crop; ``crop`` crops the inputs and the ground truth, recorded (no Ray)."""
    from lso.runtime import load
    from lso.scaleout.batch import SceneRef, discover_scenes, fuse_scene

    rng = np.random.default_rng(3)
    gt = rng.random((31, 34, 34), dtype=np.float32)
    rgb = rng.random((3, 34, 34), dtype=np.float32)
    with h5py.File(tmp_path / "odd.h5", "w") as f:
        f["GT"], f["RGB"] = gt, rgb  # one scene without the N axis, 34x34 at x4
    (ref,), failures = discover_scenes([tmp_path / "odd.h5"])
    assert failures == [] and ref == SceneRef("odd", tmp_path / "odd.h5", None)
    with load(tiny_onnx_tileable, threads=1) as runner:
        refused = fuse_scene(runner, ref, _opts(tiny_onnx_tileable, tmp_path, tmp_path / "a"))
        assert refused["status"] == "failed" and "top-left 32x32" in refused["error"] and "--crop" in refused["error"]
        assert not (tmp_path / "a" / "odd.npz").exists()
        (tmp_path / "b").mkdir()
        record = fuse_scene(runner, ref, _opts(tiny_onnx_tileable, tmp_path, tmp_path / "b", crop=True))
    assert record["status"] == "ok", record
    assert record["crop"] == "GT/RGB 34x34 -> top-left 32x32 (a multiple of the ratio 4)"
    with np.load(tmp_path / "b" / "odd.npz") as data:
        fused = data["hr_hsi"]
        assert str(data["crop"]) == record["crop"] and list(data["crop_box"]) == [0, 0, 32, 32]
    hr, lr = degrade(gt[:, :32, :32], 4)
    np.testing.assert_allclose(fused[0], _direct(tiny_onnx_tileable, rgb[None, :, :32, :32], lr[None])[0], atol=1e-5)
    assert record["metrics"]["psnr"] == pytest.approx(evaluate(gt[:, :32, :32], fused[0], 4)["psnr"], rel=1e-6)


# ------------------------------------------------------------------------------------------ memory budget
@pytest.fixture(scope="module")
def budget_dir(tmp_path_factory) -> Path:
    """A 160x160 scene (tiny model: ~66 MiB in one piece, ~46 MiB with 32-px tiles) and a 32x32 one."""
    folder = tmp_path_factory.mktemp("budget_scenes")
    rng = np.random.default_rng(11)
    for name, size in (("big", 160), ("small", 32)):
        np.savez(folder / f"{name}.npz", hr_msi=rng.random((3, size, size), dtype=np.float32),
                 lr_hsi=rng.random((31, size // 4, size // 4), dtype=np.float32))
    return folder


def test_memory_budget_tiles_instead_of_failing(ray_local, tiny_onnx, tiny_onnx_tileable, budget_dir, tmp_path):
    """A budget below the big scene's whole-image estimate: tiled to fit (exact), not failed; a non-tileable graph
    records that scene as failed with the budget's message and fuses the rest."""
    from lso.config import LSOConfig
    from lso.memory import array_bytes, fusion_bytes, parse_bytes
    from lso.scaleout.batch import MANIFEST, read_record, run_batch

    budget = "50MB"
    config = LSOConfig.tiny()
    assert fusion_bytes(config, 1, 160, 160) + array_bytes((1, 31, 160, 160)) > parse_bytes(budget)  # whole: over
    out = tmp_path / "tiled"
    report = run_batch(_opts(tiny_onnx_tileable, budget_dir, out, memory_budget=budget, auto_tile_pixels=10**9))
    assert (report.ok, report.failed) == (2, 0)
    big, small = read_record(out / "big.npz"), read_record(out / "small.npz")
    # the largest core whose 128-px window (core + 2 x 48 overlap) fits: 32 px, 5 x 5 tiles; the small scene fits
    assert (big["tile"], big["tiles"], big["memory_budget"]) == (32, 25, parse_bytes(budget))
    assert (small["tile"], small["tiles"]) == (None, 1)
    manifest = {r["scene_id"]: r for r in json.loads((out / MANIFEST).read_text())["scenes"]}
    assert manifest["big"]["tile"] == 32 and manifest["small"]["tile"] is None
    for name in ("big", "small"):
        with np.load(budget_dir / f"{name}.npz") as data:
            hr, lr = data["hr_msi"], data["lr_hsi"]
        with np.load(out / f"{name}.npz") as data:
            np.testing.assert_allclose(data["hr_hsi"], _direct(tiny_onnx_tileable, hr, lr), atol=1e-5)

    # an artifact without the extent input cannot tile: that scene fails with the budget's message, the other is fused
    report = run_batch(_opts(tiny_onnx, budget_dir, tmp_path / "plain", memory_budget=budget, actors=1,
                             auto_tile_pixels=10**9))
    assert (report.ok, report.failed) == (1, 1)
    failed = next(r for r in report.records if r["status"] == "failed")
    assert failed["scene_id"] == "big" and failed["error"].startswith("InputError: scene big")
    assert "over the memory budget" in failed["error"] and "cannot be tiled" in failed["error"]
    assert (tmp_path / "plain" / "small.npz").is_file() and not (tmp_path / "plain" / "big.npz").exists()


# ------------------------------------------------------------------------------------------ killed mid-run
_TEMPORARY = re.compile(r"^\.(k\d\.npz|k\d\.npz\.json|manifest\.json)\.[a-z0-9_]{8}\.tmp$")  # lso.artifacts.atomic_path


def _tagged(tag: str, ray_tmp: Path) -> list[int]:
    """Live processes of one test run: the killed run and every Ray process it started, found by the run's own
    marks, never by name (other tests may run Ray meanwhile): the environment carries ``LSO_TEST_RUN=tag``, or a
    file open in, or the command line names, the run's own ``RAY_TMPDIR`` (Ray's agents retitle themselves with
    setproctitle, which may overwrite the environment /proc shows; Ray's workers run in process groups of their
    own, so the run's process group does not hold them all). Zombies (dead, not yet reaped) are not counted."""
    needle, where, pids = f"LSO_TEST_RUN={tag}".encode(), str(ray_tmp.resolve()), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            stat = (entry / "stat").read_text()
            if stat[stat.rindex(")") + 2] in "ZX":
                continue
            found = (needle in (entry / "environ").read_bytes().split(b"\0")
                     or where.encode() in (entry / "cmdline").read_bytes())
            if not found:
                for fd in (entry / "fd").iterdir():
                    with contextlib.suppress(OSError):
                        if os.readlink(fd).startswith(where):
                            found = True
                            break
        except OSError:  # gone meanwhile
            continue
        if found:
            pids.append(int(entry.name))
    return pids


def _wait_gone(tag: str, ray_tmp: Path, seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while (left := _tagged(tag, ray_tmp)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def _describe(pids: list[int]) -> list[str]:
    out = []
    for pid in pids:
        with contextlib.suppress(OSError):
            out.append(f"{pid}: {Path(f'/proc/{pid}/cmdline').read_bytes().replace(bytes(1), b' ').decode()[:120]}")
    return out


def _killable_batch(artifact: Path, tmp_path: Path, n: int, *, seed: int):
    """``n`` scenes of 128x128 (tiled under a 40 MB budget, about a second each) and the ``lso batch`` command,
    environment (its own local Ray in a short ``RAY_TMPDIR``, tagged ``LSO_TEST_RUN``), Ray folder and tag."""
    scenes, out = tmp_path / "scenes", tmp_path / "fused"
    scenes.mkdir()
    rng = np.random.default_rng(seed)
    for i in range(n):
        np.savez(scenes / f"k{i}.npz", hr_msi=rng.random((3, 128, 128), dtype=np.float32),
                 lr_hsi=rng.random((31, 32, 32), dtype=np.float32))
    cmd = [sys.executable, "-m", "lso", "batch", str(artifact), str(scenes), "-o", str(out),
           "--actors", "1", "--num-cpus", "1", "--num-cpus-per-actor", "1", "--memory-budget", "40MB",
           "--no-progress"]
    ray_tmp = Path(tempfile.mkdtemp(prefix="lsoray", dir="/tmp"))  # short: Ray's socket paths must stay < 108 bytes
    tag = uuid.uuid4().hex
    env = dict(os.environ, OMP_NUM_THREADS="1", RAY_TMPDIR=str(ray_tmp), RAY_USAGE_STATS_ENABLED="0",
               LSO_TEST_RUN=tag)
    env.pop("RAY_ADDRESS", None)  # its own local Ray, never this session's
    return scenes, out, cmd, env, ray_tmp, tag


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the run's Ray processes in /proc")
def test_killed_batch_leaves_only_complete_outputs_and_rerun_completes(tiny_onnx_tileable, tmp_path):
    """SIGKILL to ``lso batch``'s process group once the first scenes are written: no Ray process outlives it, every
    output under a final name is complete, and the same command fuses only the rest (temporaries of the scene being
    written at the kill, simulated here as well, are removed)."""
    pytest.importorskip("ray.data")
    from lso.scaleout.batch import MANIFEST, read_record

    n = 8
    scenes, out, cmd, env, ray_tmp, tag = _killable_batch(tiny_onnx_tileable, tmp_path, n, seed=5)
    try:
        with open(tmp_path / "killed.log", "wb") as log:
            proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and proc.poll() is None and not list(out.glob("k*.npz")):
                time.sleep(0.05)
            assert proc.poll() is None, \
                f"the run ended before it could be killed: {(tmp_path / 'killed.log').read_text()}"
            assert list(out.glob("k*.npz")), "no scene finished within 90 s"
            os.killpg(proc.pid, signal.SIGKILL)  # the driver and Ray's daemons; no cleanup handler runs
            proc.wait(30)
        # Ray's workers (own process groups) die with their raylet; none may linger
        left = _wait_gone(tag, ray_tmp, 30)
        assert left == [], f"Ray processes of the killed run still alive 30 s after the kill: {_describe(left)}"

        outputs = sorted(p.name for p in out.glob("k*.npz"))
        assert 1 <= len(outputs) < n, outputs
        for name in outputs:  # every output under a final name is complete
            record = read_record(out / name)
            assert record is not None and record["status"] == "ok" and record["tile"] == 16, name
            with np.load(out / name) as data:
                assert data["hr_hsi"].shape == (31, 128, 128) and np.isfinite(data["hr_hsi"]).all()
        others = sorted(p.name for p in out.iterdir() if p.name not in outputs
                        and p.name not in [f"{o}.json" for o in outputs] + [MANIFEST, ".lso.lock"])
        assert all(_TEMPORARY.match(name) for name in others), others  # at most the write the kill interrupted
        missing = sorted({f"k{i}.npz" for i in range(n)} - set(outputs))
        (out / f".{missing[0]}.a1b2c3d4.tmp").write_bytes(b"PK\x03\x04 half a zip")  # as a kill mid-write leaves
        mtimes = {name: (out / name).stat().st_mtime_ns for name in outputs}

        rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False,
                               start_new_session=True)
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        assert f"{n} scene(s): {n - len(outputs)} fused, {len(outputs)} already done, 0 failed" in rerun.stdout
        assert "temporary file(s) left" in rerun.stderr
        assert _describe(_wait_gone(tag, ray_tmp, 30)) == []  # a run that ends normally stops its Ray too
    finally:
        for pid in _tagged(tag, ray_tmp):  # whatever survived a failed assertion above: processes this test started
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(ray_tmp, ignore_errors=True)

    manifest = json.loads((out / MANIFEST).read_text())
    status = {r["scene_id"]: r["status"] for r in manifest["scenes"]}
    assert status == {f"k{i}": ("skipped" if f"k{i}.npz" in outputs else "ok") for i in range(n)}
    assert {name: (out / name).stat().st_mtime_ns for name in outputs} == mtimes  # finished scenes untouched
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [MANIFEST] + [f"k{i}.npz{s}" for i in range(n) for s in ("", ".json")])  # no temporaries left
    for i in (0, n - 1):  # complete and exact (tiled = whole image)
        with np.load(scenes / f"k{i}.npz") as data:
            hr, lr = data["hr_msi"], data["lr_hsi"]
        with np.load(out / f"k{i}.npz") as data:
            np.testing.assert_allclose(data["hr_hsi"], _direct(tiny_onnx_tileable, hr, lr), atol=1e-5)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the run's Ray processes in /proc")
def test_sigkill_of_the_driver_alone_leaves_no_ray_process(tiny_onnx_tileable, tmp_path):
    """Issue 18: ``SIGKILL`` to the ``lso batch`` driver only (not its process group: what ``kill -9 PID`` or the OOM
    killer does) while its actor pool runs: within 15 s no process of its local Ray is left (GCS server, raylet,
    dashboard and runtime-env agents, workers), found by this run's marks only (:func:`_tagged`)."""
    pytest.importorskip("ray.data")
    scenes, out, cmd, env, ray_tmp, tag = _killable_batch(tiny_onnx_tileable, tmp_path, 4, seed=6)
    try:
        with open(tmp_path / "driver.log", "wb") as log:
            proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and proc.poll() is None and not list(out.glob("k*.npz")):
                time.sleep(0.05)
            assert proc.poll() is None, \
                f"the run ended before it could be killed: {(tmp_path / 'driver.log').read_text()}"
            running = _describe(_tagged(tag, ray_tmp))
            assert any("raylet" in p for p in running) and any("ray::" in p for p in running), running
            os.kill(proc.pid, signal.SIGKILL)  # the driver alone: its Ray's processes are left to themselves
            proc.wait(30)
        left = _wait_gone(tag, ray_tmp, 15)
        assert left == [], f"processes of the killed driver's Ray still alive 15 s after the kill: {_describe(left)}"
    finally:
        for pid in _tagged(tag, ray_tmp):  # whatever survived a failed assertion above: processes this test started
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(ray_tmp, ignore_errors=True)
