"""Training runs, saves, resumes where it stopped, and keeps the best checkpoint."""
from __future__ import annotations

import json

import pytest
import torch

from lso import load_checkpoint
from lso.train import TrainConfig, train

TINY = {"guide_dim": 8, "n_resblocks": 1, "width": 8, "num_token": 2, "num_basis": 3, "heads": 2}


def _cfg(out, **kw) -> TrainConfig:
    base = dict(out=str(out), crop=16, batch=2, max_steps=4, val_every=2, save_every=1, log_every=1, scene_size=32,
                pool=2, refresh_every=2, val_scenes=1, val_size=32, model=TINY, threads=1)
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.slow
def test_train_resume_and_best(tmp_path):
    cfg = _cfg(tmp_path)
    best = train(cfg, progress=False)
    model = load_checkpoint(best)
    assert model.config.width == 8
    state = torch.load(tmp_path / "last.pt", weights_only=False)
    assert state["step"] == 4
    lines = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "val_psnr" in x] == [2, 4]
    # resume extends the same run: it continues at step 4, not from scratch
    train(_cfg(tmp_path, max_steps=6), resume=True, progress=False)
    state = torch.load(tmp_path / "last.pt", weights_only=False)
    assert state["step"] == 6
    lines = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "val_psnr" in x] == [2, 4, 6]


def test_resume_without_state_is_a_clear_error(tmp_path):
    from lso.errors import ArtifactError

    with pytest.raises(ArtifactError, match="does not exist"):
        train(_cfg(tmp_path), resume=True, progress=False)


def test_crop_must_fit_ratio(tmp_path):
    from lso.errors import InputError

    with pytest.raises(InputError, match="multiple"):
        train(_cfg(tmp_path, crop=18), progress=False)


# ----------------------------------------------------------------------------------- ratio mix (issue 21)
def _mix_cfg(out, **kw) -> TrainConfig:
    from lso.config import LSOConfig

    base = dict(out=str(out), ratios=[4, 8, 16, 32], fixed_ratio_form=0.5, crop=32, batch=2, scene_size=64, pool=1,
                refresh_every=0, val_scenes=1, val_size=32, model=LSOConfig.tiny().to_dict(), threads=1)
    base.update(kw)
    return TrainConfig(**base)


def test_paper_recipe_is_one_direct_mode(tmp_path):
    from lso.train import SyntheticCrops, validation_groups

    cfg = _cfg(tmp_path)
    assert cfg.mix_ratios == [4] and cfg.modes == [(4, False)]
    data = SyntheticCrops(cfg)
    gt, msi, lr = data.batch()
    assert data.last_mode == (4, False) and tuple(lr.shape) == (2, 31, 4, 4)
    assert list(validation_groups(cfg)) == ["x4"]


def test_ratio_mix_batches_have_the_right_shapes_and_alignment(tmp_path):
    import numpy as np

    from lso.data import degrade, fft_resize
    from lso.train import SyntheticCrops, validation_groups

    cfg = _mix_cfg(tmp_path)
    assert cfg.modes == [(4, False), (8, False), (16, False), (32, False), (8, True), (16, True), (32, True)]
    data = SyntheticCrops(cfg)
    scene_gt = data.scenes[0][0]
    _, scene_lr = degrade(scene_gt, 16)
    # the fixed-ratio form resamples the whole degraded scene (not each crop) to scene / f
    np.testing.assert_allclose(data.scenes[0][2][(16, True)], fft_resize(scene_lr, (16, 16)), atol=1e-6)
    seen = set()
    for _ in range(200):
        gt, msi, lr = data.batch()
        r, fixed = data.last_mode
        at = 4 if fixed else r
        seen.add((r, fixed))
        assert tuple(gt.shape) == (2, 31, 32, 32) and tuple(msi.shape) == (2, 3, 32, 32)
        assert tuple(lr.shape) == (2, 31, 32 // at, 32 // at)
        # each item's LR crop sits at the GT crop's origin / ratio in the whole-scene LR-HSI of its mode
        g, item_lr = gt[0].numpy(), lr[0].numpy()
        hits = [(i, j) for i in range(0, 64 - 32 + 1, at) for j in range(0, 64 - 32 + 1, at)
                if np.array_equal(scene_gt[:, i:i + 32, j:j + 32], g)]
        assert len(hits) == 1
        i, j = hits[0]
        rows, cols = slice(i // at, i // at + 32 // at), slice(j // at, j // at + 32 // at)
        np.testing.assert_array_equal(data.scenes[0][2][(r, fixed)][:, rows, cols], item_lr)
        if len(seen) == 7:
            break
    assert seen == set(cfg.modes)
    groups = validation_groups(cfg)
    assert list(groups) == ["x4", "x8", "x16", "x32", "x8/f4", "x16/f4", "x32/f4"]
    assert groups["x32"][0][2].shape == (31, 1, 1) and groups["x32/f4"][0][2].shape == (31, 8, 8)


def test_ratio_mix_needs_a_crop_that_fits_every_ratio(tmp_path):
    from lso.errors import InputError

    with pytest.raises(InputError, match="multiple of 32"):
        train(_mix_cfg(tmp_path, crop=48), progress=False)
    with pytest.raises(InputError, match="scene-size"):
        train(_mix_cfg(tmp_path, scene_size=80), progress=False)
    with pytest.raises(InputError, match="probability"):
        train(_mix_cfg(tmp_path, fixed_ratio_form=1.5), progress=False)


def test_ratio_mix_trains_validates_per_mode_and_resumes(tmp_path):
    cfg = _mix_cfg(tmp_path, ratios=[4, 8], crop=16, scene_size=32, max_steps=2, val_every=2, save_every=1,
                   log_every=1)
    train(cfg, progress=False)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["step"] == 2 and state["train_config"]["ratios"] == [4, 8]
    assert state["train_config"]["fixed_ratio_form"] == 0.5
    lines = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    val = [x for x in lines if "val_psnr" in x][-1]
    assert set(val["val_modes"]) == {"x4", "x8", "x8/f4"}
    assert val["val_psnr"] == pytest.approx(sum(val["val_modes"].values()) / 3)
    assert all(set(x["loss_modes"]) <= {"x4", "x8", "x8/f4"} for x in lines if "loss_modes" in x)
    # resume keeps the mix (the command line's length options only) and continues the data stream
    train(_cfg(tmp_path, max_steps=3), resume=True, progress=False)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["step"] == 3 and state["train_config"]["ratios"] == [4, 8] and state["data"]["steps"] == 3


def test_cli_ratio_mix_flags():
    from lso.cli import build_parser
    from lso.train import TrainConfig

    args = build_parser().parse_args(["train", "--ratios", "4,8,16,32", "--fixed-ratio-form", "0.5"])
    fields = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__ and v is not None}
    cfg = TrainConfig(**fields)
    assert cfg.ratios == [4, 8, 16, 32] and cfg.fixed_ratio_form == 0.5 and cfg.fixed_ratio == 4
    assert TrainConfig(**{k: v for k, v in vars(build_parser().parse_args(["train"])).items()
                          if k in TrainConfig.__dataclass_fields__ and v is not None}).ratios is None
