"""Exact tiled fusion: the stitched result equals whole-image fusion."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from lso import LSO, LSOConfig
from lso.errors import InputError
from lso.runtime import OrtRunner, TorchRunner, fuse_tiled
from lso.runtime.tiling import exact_overlap, plan_tiles, receptive_margin, tile_alignment

from rt_fixtures import reference, scene


@pytest.mark.slow
def test_paper_config_256_tiles_equal_whole_image():
    """The issue's acceptance test: paper config, 256x256 scene, 128-px cores -> >= 4 tiles, <= 1e-5."""
    torch.manual_seed(0)
    model = LSO(LSOConfig.paper()).eval()
    hr, lr = scene(256, 256, 4)
    cfg = model.config
    tiles = plan_tiles(256, 256, tile=128, overlap=exact_overlap(cfg, 4), align=tile_alignment(cfg, 4))
    assert len(tiles) >= 4
    assert all((t.row1 - t.row0) * (t.col1 - t.col0) < 256 * 256 for t in tiles)
    whole = reference(model, hr, lr)
    tiled = fuse_tiled(model, hr, lr, tile=128)
    err = float(np.abs(tiled - whole).max())
    assert err <= 1e-5, err


@pytest.mark.parametrize("height, width, ratio, tile", [
    (160, 224, 4, 64),    # non-square
    (150, 198, 3, 96),    # x3: not a multiple of 4, alignment 48
    (128, 192, 8, 64),    # x8
    (100, 132, 2, 48),    # x2, borders not multiples of 16
])
def test_tiny_model_tiles_equal_whole_image(rt_model, height, width, ratio, tile):
    hr, lr = scene(height, width, ratio)
    tiled = fuse_tiled(rt_model, hr, lr, tile=tile)
    assert np.abs(tiled - reference(rt_model, hr, lr)).max() <= 1e-5


def test_onnx_runner_tiles_exactly(rt_model, tiny_onnx_tileable):
    hr, lr = scene(176, 144, 4)
    with OrtRunner(tiny_onnx_tileable) as r:
        tiled = fuse_tiled(r, hr[0], lr[0], tile=64)  # 3-D in, 3-D out
    assert tiled.shape == (31, 176, 144)
    assert np.abs(tiled - reference(rt_model, hr, lr)[0]).max() <= 1e-5


def test_graph_without_extent_cannot_tile(rt_model, tiny_onnx):
    hr, lr = scene(128, 128, 4)
    with OrtRunner(tiny_onnx) as r:
        with pytest.raises(InputError, match="tileable=True"):
            fuse_tiled(r, hr, lr, tile=32)
        whole = fuse_tiled(r, hr, lr, tile=128)  # one tile: the whole image, no extent needed
    assert np.abs(whole - reference(rt_model, hr, lr)).max() <= 1e-5


def test_memmap_output_torch_input_and_progress(rt_model, tmp_path):
    hr, lr = scene(64, 64, 4)
    out = np.lib.format.open_memmap(tmp_path / "out.npy", mode="w+", dtype=np.float32, shape=(1, 31, 64, 64))
    assert fuse_tiled(rt_model, hr, lr, tile=32, out=out, progress=True) is out
    want = reference(rt_model, hr, lr)
    assert np.abs(np.asarray(out) - want).max() <= 1e-5
    got = fuse_tiled(TorchRunner(rt_model), torch.from_numpy(hr), torch.from_numpy(lr), tile=32)
    assert isinstance(got, torch.Tensor) and (got.numpy() - want).__abs__().max() <= 1e-5


def test_small_overlap_warns(rt_model, caplog):
    hr, lr = scene(64, 64, 4)
    with caplog.at_level(logging.WARNING, logger="lso.runtime.tiling"):
        fuse_tiled(rt_model, hr, lr, tile=32, overlap=16)
    assert "not exact" in caplog.text


def test_inputs_checked_once_for_the_whole_scene(rt_model):
    hr, lr = scene(64, 64, 4)
    hr[0, 1, 60, 3] = np.nan
    with pytest.raises(InputError, match="hr_msi has 1 NaN"):
        fuse_tiled(rt_model, hr, lr, tile=32)
    with pytest.raises(InputError, match="integer"):
        fuse_tiled(rt_model, np.zeros(hr.shape, np.uint8), lr, tile=32)


def test_plan_cores_partition_the_scene_and_windows_align():
    cfg = LSOConfig()
    align, halo = tile_alignment(cfg, 3), exact_overlap(cfg, 3)
    assert (align, tile_alignment(cfg, 4), tile_alignment(cfg, 8), tile_alignment(cfg, 5)) == (48, 16, 16, 80)
    tiles = plan_tiles(300, 453, tile=96, overlap=halo, align=align)
    cover = np.zeros((300, 453), int)
    for t in tiles:
        cover[t.core_row0:t.core_row1, t.core_col0:t.core_col1] += 1
        assert t.row0 % align == 0 and t.col0 % align == 0
        assert t.row0 <= t.core_row0 - min(halo, t.core_row0) and t.row1 >= min(t.core_row1 + halo, 300)
    assert (cover == 1).all()
    with pytest.raises(InputError, match="multiples"):
        plan_tiles(100, 100, tile=40, overlap=48, align=16)


def test_receptive_margin_of_the_paper_model():
    assert receptive_margin(LSOConfig(), 4) == 45
    assert exact_overlap(LSOConfig(), 4) == 48
    assert exact_overlap(LSOConfig(), 8) > exact_overlap(LSOConfig(), 4) - 16


def test_nested_lists_and_bad_tile_values(rt_model):
    """Found by fuzzing: fuse_tiled took only objects with .shape/.dtype (AttributeError on lists)."""
    hr, lr = scene(32, 32, 4)
    out = fuse_tiled(rt_model, hr[0].tolist(), lr[0].tolist(), tile=16)
    assert np.abs(out - reference(rt_model, hr, lr)[0]).max() <= 1e-5
    for bad in (0, -16, 2.5, "16", True):
        with pytest.raises(InputError, match="tile must be an integer"):
            fuse_tiled(rt_model, hr, lr, tile=bad)
    with pytest.raises(InputError, match="cannot be read as an array"):
        fuse_tiled(rt_model, [[1.0], [1.0, 2.0]], lr)


class _ProfiledRunner(TorchRunner):
    """A PyTorch runner that behaves like an engine with an optimization profile (max 128x128 at x4)."""

    max_side = 128
    takes_extent = True

    @property
    def profile(self):
        from lso import io_spec

        side = self.max_side
        return io_spec.default_profile(self.config, batch=(1, 1, 2), hr=((16, 16), (64, 64), (side, side)),
                                       lr=((4, 4), (16, 16), (side // 4, side // 4)))

    @property
    def tileable(self):
        return self.takes_extent

    def _fuse(self, inputs, extent, out, **options):
        self.shapes.append(tuple(inputs.hr_msi.shape))
        return super()._fuse(inputs, extent, out, **options)


def test_scene_larger_than_the_profile_is_tiled_inside_it_with_few_window_shapes(rt_model):
    hr, lr = scene(304, 224, 4, batch=2)  # 304 is off the 16-px grid in neither axis, 224 neither
    runner = _ProfiledRunner(rt_model)
    runner.shapes = []
    with runner:
        got = runner.fuse(hr, lr)
    assert np.abs(got - reference(rt_model, hr, lr)).max() <= 1e-5
    assert len(runner.shapes) > 1 and all(s[2] <= 128 and s[3] <= 128 for s in runner.shapes)
    assert len({s[2:] for s in runner.shapes}) == 1  # border windows extended inward: one window shape
    hr, lr = scene(200, 136, 4)  # off the grid in both axes: at most two lengths per axis
    runner.shapes = []
    with runner:
        np.testing.assert_allclose(runner.fuse(hr, lr), reference(rt_model, hr, lr), rtol=0, atol=1e-5)
    assert len({s[2] for s in runner.shapes}) <= 2 and len({s[3] for s in runner.shapes}) <= 2


def test_scene_larger_than_the_profile_of_a_non_tileable_engine_names_the_fix(rt_model):
    runner = _ProfiledRunner(rt_model)
    runner.takes_extent = False
    runner.shapes = []
    hr, lr = scene(192, 192, 4)
    with runner, pytest.raises(InputError, match="outside the engine's optimization profile"):
        runner.fuse(hr, lr)
    hr, lr = scene(256, 256, 4, batch=3)  # batch over the profile: not tiled either
    runner.takes_extent = True
    with runner, pytest.raises(InputError, match="outside the engine's optimization profile"):
        runner.fuse(hr, lr)
