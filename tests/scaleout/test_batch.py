"""``lso batch`` end to end on a handful of small synthetic scenes (one local Ray, 2 CPUs, two actors):
outputs equal direct fusion, tiling of large scenes, metrics with ground truth, failures recorded, resume."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lso.cli import main
from lso.data import degrade
from lso.metrics import evaluate

pytest_plugins = ["so_fixtures"]
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
    corrupt = tmp_path / "bad.onnx"
    corrupt.write_bytes(b"garbage")
    with pytest.raises(ArtifactError):  # checked on the driver, before any actor starts
        run_batch(BatchOptions(artifact=corrupt, inputs=(scene_dir,), out=tmp_path / "o"))
