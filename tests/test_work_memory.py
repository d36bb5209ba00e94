"""The memory budget counts the whole work, from declared sizes, before anything is read (issue 18).

A 2 KB community ``.h5`` declaring 300 items, an ``.npz`` declaring 40 scenes and one ``lso batch`` scene holding
40 scenes must each be refused with an ``InputError`` naming what they declare before a single item is read (the
readers are replaced by ones that fail the test if called); one item of the same file (``--index``) still runs.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lso import LSO, LSOConfig, save_checkpoint
from lso.errors import InputError
from lso.runtime.infer import InferOptions, infer

h5py = pytest.importorskip("h5py")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(LSO(LSOConfig.tiny()).eval(), tmp_path_factory.mktemp("wm") / "tiny.safetensors")


def _community(path: Path, n: int, size: int = 64) -> Path:
    with h5py.File(path, "w") as f:  # chunked and compressed: nothing stored, everything declared
        for key, bands in (("GT", 31), ("RGB", 3)):
            f.create_dataset(key, shape=(n, bands, size, size), dtype="f4", chunks=(1, bands, size, size),
                             compression="gzip", fillvalue=0.25)
    return path


def _no_reads(monkeypatch) -> None:
    def refuse(*_args, **_kwargs):
        raise AssertionError("an item was read before the memory budget was checked")

    from lso.data.readers import H5Dataset

    monkeypatch.setattr(H5Dataset, "_read", refuse)
    monkeypatch.setattr(np, "load", refuse)


def test_every_item_of_a_file_is_counted_before_any_is_read(ckpt, tmp_path, monkeypatch):
    path = _community(tmp_path / "c.h5", 300)
    assert path.stat().st_size < 64 * 1024
    np.savez(tmp_path / "many.npz", hr_msi=np.full((40, 3, 64, 64), 0.5, np.float32),
             lr_hsi=np.full((40, 31, 16, 16), 0.5, np.float32))
    # one item fits the budget (and runs)
    res = infer(InferOptions(artifact=ckpt, inputs=(path,), out=tmp_path / "one.npz", index=3, preview=False,
                             memory_budget="48M"))
    assert res.shape == (31, 64, 64)
    _no_reads(monkeypatch)
    with pytest.raises(InputError, match=r"300 item\(s\) of 64x64.*as declared.*--index"):
        infer(InferOptions(artifact=ckpt, inputs=(path,), out=tmp_path / "all.npz", preview=False,
                           memory_budget="48M"))
    with pytest.raises(InputError, match=r"hr_msi \(40, 3, 64, 64\).*as declared"):
        infer(InferOptions(artifact=ckpt, inputs=(tmp_path / "many.npz",), out=tmp_path / "many_out.npz",
                           preview=False, memory_budget="48M"))
    assert not list(tmp_path.glob("all*")) and not list(tmp_path.glob("many_out*"))


def test_a_batch_scene_is_counted_before_it_is_read(ckpt, tmp_path, monkeypatch):
    from lso.runtime import load
    from lso.scaleout.batch import BatchOptions, SceneRef, fuse_scene

    np.savez(tmp_path / "many.npz", hr_msi=np.full((40, 3, 64, 64), 0.5, np.float32),
             lr_hsi=np.full((40, 31, 16, 16), 0.5, np.float32))
    opts = BatchOptions(artifact=ckpt, inputs=(tmp_path,), out=tmp_path / "out")
    _no_reads(monkeypatch)
    with load(ckpt) as runner:
        record = fuse_scene(runner, SceneRef("many", tmp_path / "many.npz"), opts, memory_budget=2 * 2**20)
    assert record["status"] == "failed" and "as declared" in record["error"], record
    assert "(40, 3, 64, 64)" in record["error"]


def test_calibration_feeds_are_counted_before_any_scene_is_made(monkeypatch):
    """``lso calibrate`` keeps every calibration scene in memory: all of them are counted up front."""
    from lso.calibration import feeds as feeds_mod

    def refuse(*_args, **_kwargs):
        raise AssertionError("a calibration scene was made before the memory budget was checked")

    monkeypatch.setattr(feeds_mod, "_scenes", refuse)
    monkeypatch.setenv("LSO_MEMORY_BUDGET", "4M")
    assert len(feeds_mod.calibration_feeds("synthetic", count=4, size=64, ratio=4, min_count=1)) == 4
    with pytest.raises(InputError, match=r"64 calibration scene\(s\) of 64x64 .*all held in memory"):
        feeds_mod.calibration_feeds("synthetic", count=64, size=64, ratio=4, min_count=1)
