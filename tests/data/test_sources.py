"""lso.data.SceneSource: the same scenes (seeds, order, values) as the generator and the file give directly, so every
figure computed from them (training validation, lso eval, calibration, the precision and parity benchmarks) stays."""
from __future__ import annotations

import numpy as np
import pytest

from lso.data import SceneSource, degrade
from lso.errors import InputError

pytest.importorskip("skimage")
pytest.importorskip("colour")


def test_held_out_scenes_are_the_generators_eval_seeds():
    from lso.data.synthetic import synthetic_scene

    scenes = list(SceneSource(size=48).scenes(2))
    assert [s.name for s in scenes] == ["synth_101", "synth_202"]  # EVAL_SEEDS, in order
    for scene, seed in zip(scenes, (101, 202), strict=True):
        np.testing.assert_array_equal(scene.gt, synthetic_scene(seed, 48))
        assert scene.rgb is None


def test_degraded_training_scenes_match_the_old_calibration_recipe():
    """calibration/feeds: split_seeds("train", offset + count)[offset:], each degraded at the ratio, float32."""
    from lso.calibration.feeds import held_out_scenes
    from lso.data.synthetic import split_seeds, synthetic_scene

    got = list(SceneSource(split="train", size=32).degraded(4, 2, offset=3, exact=True))
    seeds = split_seeds("train", 5)[3:]
    assert [s.name for s in got] == [f"synth_{seed}" for seed in seeds] == ["synth_1003", "synth_1004"]
    for scene, seed in zip(got, seeds, strict=True):
        gt = synthetic_scene(seed, 32)
        hr, lr = degrade(gt, 4)
        np.testing.assert_array_equal(scene.gt, gt)
        np.testing.assert_array_equal(scene.hr_msi, np.asarray(hr, np.float32))
        np.testing.assert_array_equal(scene.lr_hsi, np.asarray(lr, np.float32))
    held = held_out_scenes(1, size=32, ratio=4)[0]
    np.testing.assert_array_equal(held.lr_hsi, np.asarray(degrade(synthetic_scene(101, 32), 4)[1], np.float32))


def test_training_seeds_and_validation_split():
    from lso.data.synthetic import TRAIN_SEEDS, synthetic_scene
    from lso.train import VAL_RESERVED

    train = SceneSource(seeds=TRAIN_SEEDS[VAL_RESERVED:], size=32)
    assert train[0].name == f"synth_{1000 + VAL_RESERVED}"
    np.testing.assert_array_equal(train.scene_of_seed(1000).gt, synthetic_scene(1000, 32))
    val = SceneSource(seeds=TRAIN_SEEDS[:2], size=32)
    assert [s.name for s in val.scenes()] == ["synth_1000", "synth_1001"] and len(val) == 2


def test_counts_and_errors():
    source = SceneSource(size=32)
    assert len(source) == 8 and source.count() == 8 and source.count(3) == 3
    with pytest.raises(InputError, match="the eval split has 8 scenes, asked for 9"):
        source.count(9)
    with pytest.raises(InputError, match="the synthetic 'eval' split has 2 scenes after offset 6; asked for 3"):
        next(source.scenes(3, offset=6, exact=True))
    with pytest.raises(InputError, match="open-ended"):
        next(SceneSource(split="train").scenes())
    with pytest.raises(InputError, match="split"):
        len(SceneSource(split="test"))


def test_a_file_source_gives_the_files_items(tmp_path):
    h5py = pytest.importorskip("h5py")
    from lso.data.readers import H5Dataset

    rng = np.random.default_rng(0)
    gt, rgb = rng.random((3, 31, 20, 20), dtype=np.float32), rng.random((3, 3, 20, 20), dtype=np.float32)
    path = tmp_path / "set.h5"
    with h5py.File(path, "w") as f:
        f["GT"], f["RGB"] = gt, rgb
    with SceneSource(path) as source, H5Dataset(path) as ds:
        scenes = list(source.scenes())
        assert [s.name for s in scenes] == ["set_0", "set_1", "set_2"] and source.count(10) == 3
        for i, scene in enumerate(scenes):
            np.testing.assert_array_equal(scene.gt, ds[i]["gt"])
            np.testing.assert_array_equal(scene.rgb, ds[i]["rgb"])
    with SceneSource(path, size=16, centre_crop=True) as source:  # calibration's feed crop
        scene = next(source.degraded(4, 1, offset=1))
        np.testing.assert_array_equal(scene.gt, gt[1][:, 2:18, 2:18])
        with pytest.raises(InputError, match="has 3 images; 3 scenes were asked for after offset 1"):
            next(source.scenes(3, offset=1, exact=True))
    with SceneSource(path, size=32, centre_crop=True) as source, pytest.raises(InputError, match="smaller than"):
        source[0]
