"""Memory budget: smaller tiles instead of failure, and huge sizes refused before anything is allocated."""
from __future__ import annotations

import logging
import tracemalloc

import numpy as np
import pytest

from lso import LSOConfig
from lso.errors import InputError
from lso.memory import (
    DEFAULT_BUDGET_FRACTION,
    ENV_VAR,
    bytes_per_pixel,
    default_memory_budget,
    format_bytes,
    fusion_bytes,
    parse_bytes,
)
from lso.runtime import TorchRunner, fuse_tiled
from lso.runtime.tiling import choose_tile, exact_overlap, tile_alignment, tile_bytes

from rt_fixtures import reference, scene


# ------------------------------------------------------------------------------------------ the budget
@pytest.mark.parametrize("text, expected", [("4G", 4 * 10**9), ("512MiB", 512 * 2**20), ("1.5GB", 1.5e9),
                                            ("1e6", 10**6), (" 64 kib ", 64 * 1024), (4096, 4096)])
def test_parse_bytes(text, expected):
    assert parse_bytes(text) == int(expected)


@pytest.mark.parametrize("bad", ["", "x", "4X", "-1G", "0", "nan", "inf", "1e400", True, -5, 2**70, 0.5])
def test_parse_bytes_refuses_nonsense(bad):
    with pytest.raises(InputError, match="memory budget"):
        parse_bytes(bad)


def test_default_budget_is_documented_fraction_or_env(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    import os

    physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert default_memory_budget() == int(physical * DEFAULT_BUDGET_FRACTION)
    monkeypatch.setenv(ENV_VAR, "3GiB")
    assert default_memory_budget() == 3 * 2**30


def test_estimator_matches_the_calibration():
    assert bytes_per_pixel(LSOConfig()) == 12_832 and bytes_per_pixel(LSOConfig.tiny()) == 2_592
    # paper config, 2048x2048 x4 tiled with 256-px cores (352x352 windows): measured 2.38 GB peak RSS including
    # 0.33 GB before fusion and the 0.52 GB output; the estimate must not be below the measured working memory
    window = tile_bytes(LSOConfig(), 1, 2048, 2048, core=256, overlap=48)
    assert window + 31 * 2048 * 2048 * 4 >= 2.383e9 - 0.330e9
    assert fusion_bytes(LSOConfig(), 1, 510, 510) == fusion_bytes(LSOConfig(), 1, 512, 512)  # padded to 4


# ------------------------------------------------------------------------------------------ tiles shrink
def test_small_budget_chooses_smaller_tiles_instead_of_failing(rt_model, caplog):
    hr, lr = scene(192, 192, 4)
    cfg, budget = rt_model.config, 56 * 2**20
    overlap, align = exact_overlap(cfg, 4), tile_alignment(cfg, 4)
    output = 31 * 192 * 192 * 4
    assert tile_bytes(cfg, 1, 192, 192, core=96, overlap=overlap) > budget - output  # the request does not fit
    core = choose_tile(cfg, 1, 192, 192, tile=96, overlap=overlap, align=align, budget=budget - output)
    assert 16 <= core < 96 and tile_bytes(cfg, 1, 192, 192, core=core, overlap=overlap) <= budget - output
    with caplog.at_level(logging.WARNING, logger="lso.runtime.tiling"):
        tiled = fuse_tiled(rt_model, hr, lr, tile=96, memory_budget=budget)
    assert f"using tile {core}" in caplog.text
    assert np.abs(tiled - reference(rt_model, hr, lr)).max() <= 1e-5  # still exact


def test_auto_tile_is_the_largest_that_fits(rt_model):
    hr, lr = scene(128, 96, 4)
    out = fuse_tiled(rt_model, hr, lr, tile=None, memory_budget="1G")  # fits whole: one tile
    assert np.abs(out - reference(rt_model, hr, lr)).max() <= 1e-5


def test_budget_too_small_even_for_one_tile_names_estimate_and_fix(rt_model):
    hr, lr = scene(256, 256, 4)
    with pytest.raises(InputError, match=r"even the smallest tile .* needs an estimated .*--memory-budget"):
        fuse_tiled(rt_model, hr, lr, tile=64, memory_budget="12MiB")


def test_output_larger_than_budget_suggests_memmap(rt_model, tmp_path):
    hr, lr = scene(128, 128, 4)
    with pytest.raises(InputError, match=r"float32 output needs an estimated .* np\.memmap"):
        fuse_tiled(rt_model, hr, lr, tile=64, memory_budget="1MiB")
    out = np.lib.format.open_memmap(tmp_path / "out.npy", mode="w+", dtype=np.float32, shape=(1, 31, 128, 128))
    fuse_tiled(rt_model, hr, lr, tile=64, memory_budget="48MiB", out=out)  # the output no longer counts
    assert np.abs(out - reference(rt_model, hr, lr)).max() <= 1e-5


# ------------------------------------------------------------------------------------------ refused early
def _peak_alloc(fn) -> int:
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_huge_input_refused_before_allocation_with_the_estimate(rt_model):
    hr = np.broadcast_to(np.float32(0.5), (1, 3, 400_000, 400_000))  # 1.9 TB if it were real: no memory behind it
    lr = np.broadcast_to(np.float32(0.5), (1, 31, 100_000, 100_000))
    with TorchRunner(rt_model) as runner:
        def call():
            with pytest.raises(InputError) as info:
                runner.fuse(hr, lr)
            msg = str(info.value)
            assert "needs an estimated" in msg and "memory budget" in msg and "fuse_tiled" in msg
            assert format_bytes(fusion_bytes(rt_model.config, 1, 400_000, 400_000) + 31 * 4 * 400_000**2) in msg
        assert _peak_alloc(call) < 16 * 2**20


def test_big_endian_huge_input_is_not_copied_before_the_check(rt_model):
    """Found by fuzzing: the byte-order copy used to come before the size check (an 8 GB allocation)."""
    hr = np.broadcast_to(np.asarray(0.5, dtype=">f4"), (1, 3, 200_000, 200_000))
    lr = np.broadcast_to(np.asarray(0.5, dtype=">f4"), (1, 31, 50_000, 50_000))
    with TorchRunner(rt_model) as runner:
        assert _peak_alloc(lambda: pytest.raises(InputError, runner.fuse, hr, lr)) < 16 * 2**20


def test_runner_memory_budget_attribute_and_load_option(rt_model, tmp_path):
    from lso import save_checkpoint
    from lso.runtime import load

    hr, lr = scene(64, 64, 4)
    path = save_checkpoint(rt_model, tmp_path / "m.safetensors")
    with load(path, memory_budget="1MiB") as runner:
        with pytest.raises(InputError, match=r"over the memory budget of 1 MiB \(memory_budget\)"):
            runner.fuse(hr, lr)
        runner.memory_budget = "1G"
        assert runner.fuse(hr, lr).shape == (1, 31, 64, 64)


def test_hdf5_header_claiming_huge_images_is_refused_unread(tmp_path):
    h5py = pytest.importorskip("h5py")
    from lso.data.readers import H5Dataset

    path = tmp_path / "bomb.h5"
    with h5py.File(path, "w") as f:  # chunked, nothing written: a few kB on disk
        f.create_dataset("GT", shape=(1, 31, 10**6, 10**6), dtype="f4", chunks=(1, 1, 64, 64))
        f.create_dataset("RGB", shape=(1, 3, 10**6, 10**6), dtype="f4", chunks=(1, 1, 64, 64))
    assert path.stat().st_size < 100_000
    with pytest.raises(InputError, match=r"bomb.h5: reading one item of 1000000x1000000 pixels .* needs an estimated"):
        _peak_alloc(lambda: H5Dataset(path))


def test_npy_header_claiming_huge_array_is_refused_unread(tmp_path):
    from lso.data import read_arrays as _arrays

    path = tmp_path / "hr.npy"
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False,
                                                 "shape": (3, 10**6, 10**6)})
    with pytest.raises(InputError, match=r"hr.npy: reading hr \(3, 1000000, 1000000\) .* needs an estimated"):
        _arrays(path)


def test_cli_memory_budget_flag(rt_model, tmp_path, capsys):
    from lso import save_checkpoint
    from lso.cli import main

    hr, lr = scene(128, 128, 4)
    np.savez(tmp_path / "scene.npz", hr_msi=hr, lr_hsi=lr)
    ckpt = save_checkpoint(rt_model, tmp_path / "m.safetensors")
    args = ["infer", str(ckpt), str(tmp_path / "scene.npz"), "-o", str(tmp_path / "out.npz"), "--no-preview",
            "--no-progress"]
    assert main([*args, "--memory-budget", "8MiB"]) == 1
    assert "--tile" in capsys.readouterr().err  # whole image refused, the fix named
    assert main([*args, "--memory-budget", "48MiB", "--tile", "128"]) == 0
    got = np.load(tmp_path / "out.npz")["hr_hsi"]
    assert np.abs(got - reference(rt_model, hr, lr)).max() <= 1e-5
    assert main([*args, "--memory-budget", "lots"]) == 1
    assert "not a size" in capsys.readouterr().err


def test_infer_tiles_get_the_budget_less_the_inputs_it_holds(rt_model, tmp_path, monkeypatch):
    """lso infer --tile: the tile size is chosen from the budget minus the inputs already read and held (the output
    is memory-mapped on disk), so held inputs plus one tile stay within --memory-budget."""
    import lso.runtime.tiling as tiling
    from lso import save_checkpoint
    from lso.cli import main

    hr, lr = scene(128, 128, 4)
    np.savez(tmp_path / "scene.npz", hr_msi=hr, lr_hsi=lr)
    ckpt = save_checkpoint(rt_model, tmp_path / "m.safetensors")
    seen = []
    real = tiling.fuse_tiled

    def spy(*args, memory_budget=None, **kwargs):
        seen.append(memory_budget)
        return real(*args, memory_budget=memory_budget, **kwargs)

    monkeypatch.setattr(tiling, "fuse_tiled", spy)
    assert main(["infer", str(ckpt), str(tmp_path / "scene.npz"), "-o", str(tmp_path / "out.npz"), "--no-preview",
                 "--no-progress", "--memory-budget", "48MiB", "--tile", "64"]) == 0
    assert seen == [48 * 2**20 - hr.nbytes - lr.nbytes]
    np.testing.assert_allclose(np.load(tmp_path / "out.npz")["hr_hsi"], reference(rt_model, hr, lr), atol=1e-5)
