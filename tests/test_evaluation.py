"""`lso eval` writes per-image metrics for LSO, bicubic and GSA, a summary and PNGs."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lso import LSO, LSOConfig, save_checkpoint
from lso.errors import ArtifactError


@pytest.fixture()
def tiny_ckpt(tmp_path):
    torch.manual_seed(0)
    return save_checkpoint(LSO(LSOConfig.tiny()), tmp_path / "tiny.safetensors")


def test_eval_synthetic_writes_report_and_png(tmp_path, tiny_ckpt):
    from lso.cli import main

    out = tmp_path / "ev"
    rc = main(["eval", "--checkpoint", str(tiny_ckpt), "--size", "48", "-n", "1", "--out", str(out), "--no-progress",
               "--ratio", "4"])
    assert rc == 0
    report = json.loads((out / "eval_x4.json").read_text())
    assert report["scenes"] == 1
    row = report["per_image"][0]
    for method in ("bicubic", "gsa", "lso"):
        assert set(row[method]) == {"psnr", "sam", "ergas", "ergas_paper", "ssim"}
    # the classical baseline beats bicubic on these scenes (an untrained tiny LSO need not)
    assert row["gsa"]["psnr"] > row["bicubic"]["psnr"]
    assert (out / f"{row['scene']}_x4.png").stat().st_size > 1000
    assert "| gsa |" in (out / "eval_x4.md").read_text()


def test_eval_on_h5(tmp_path, tiny_ckpt):
    h5py = pytest.importorskip("h5py")
    from lso.evaluation import EvalConfig, evaluate_set

    rng = np.random.default_rng(0)
    path = tmp_path / "test.h5"
    with h5py.File(path, "w") as f:
        f["GT"] = rng.random((2, 31, 40, 40), dtype=np.float32)
        f["RGB"] = rng.random((2, 3, 40, 40), dtype=np.float32)
    report = evaluate_set(EvalConfig(checkpoint=str(tiny_ckpt), data=str(path), ratio=8, out=str(tmp_path / "o"),
                                     png=False), progress=False)
    assert report["scenes"] == 2 and report["ratio"] == 8
    assert report["per_image"][0]["size"] == [40, 40]


def test_eval_without_checkpoint_or_bundle_is_clear(tmp_path, monkeypatch):
    import lso.weights as weights

    monkeypatch.setattr(weights, "DEMO_CHECKPOINT", "does_not_exist.safetensors")
    from lso.evaluation import EvalConfig, evaluate_set

    with pytest.raises(ArtifactError, match="--checkpoint"):
        evaluate_set(EvalConfig(out=str(tmp_path), size=32, n=1), progress=False)
