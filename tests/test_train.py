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
