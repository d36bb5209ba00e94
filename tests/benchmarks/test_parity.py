"""benchmarks/parity.py and the one tolerance table it shares with the rest of the package."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lso import LSO, LSOConfig
from lso import tolerances as T
from lso.benchmarks import parity
from lso.calibration.feeds import held_out_scenes


def test_tolerance_table_is_the_one_everyone_reads():
    from lso.calibration import int8
    from lso.calibration.run import CalibrateOptions
    from lso.export import parity as export_parity

    assert export_parity.DEFAULT_ATOL == T.TOLERANCES["fp32"].max_abs
    assert int8.DEFAULT_TARGET_DPSNR == T.TOLERANCES["int8"].dpsnr
    import dataclasses

    default = {f.name: f.default for f in dataclasses.fields(CalibrateOptions)}["target_dpsnr"]
    assert default == T.TOLERANCES["int8"].dpsnr
    assert T.TOLERANCES["fp16"].dpsnr <= 0.05  # a default deployment keeps the paper's 0.16 dB lead


def test_violations_names_each_exceeded_bound():
    assert T.violations("fp16", {"dpsnr": 0.01, "dsam": 0.001}) == []
    bad = T.violations("fp16", {"dpsnr": 0.2, "dsam": 0.001})
    assert len(bad) == 1 and bad[0].startswith("dpsnr 0.2")
    assert T.violations("fp32", {"max_abs": float("nan")})  # NaN is never within tolerance
    with pytest.raises(KeyError, match="known"):
        T.tolerance("int4")


def test_run_parity_flags_a_variant_beyond_its_tolerance():
    scenes = held_out_scenes(1, size=32, ratio=4)
    rng = np.random.default_rng(0)

    def ref(hr, lr):
        return np.clip(np.repeat(hr[:1], 31, axis=0), 0, 1)

    def close(hr, lr):
        return ref(hr, lr) + 1e-6

    def noisy(hr, lr):
        return ref(hr, lr) + rng.normal(0, 0.05, size=(31,) + hr.shape[1:]).astype(np.float32)

    res = parity.run_parity({"torch-ref": ref, "ort-fp32": close, "ort-fp16": noisy},
                            {"torch-ref": "fp32", "ort-fp32": "fp32", "ort-fp16": "fp16"}, scenes, 4)
    rows = {r["variant"]: r for r in res["rows"]}
    assert rows["ort-fp32"]["passed"] and rows["ort-fp32"]["max_abs"] == pytest.approx(1e-6, rel=0.1)
    assert not rows["ort-fp16"]["passed"] and rows["ort-fp16"]["dpsnr"] > 0.05
    assert not res["passed"]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from lso.checkpoint import save_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("parity") / "tiny.safetensors"
    save_checkpoint(LSO(LSOConfig.tiny()).eval(), path)
    return path


def test_main_writes_the_table_and_exits_by_tolerance(tiny_checkpoint, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    argv = ["--checkpoint", str(tiny_checkpoint), "--scenes", "1", "--size", "32", "--variants",
            "torch-ref,torch-folded,ort-fp32", "--threads", "1", "--out", str(tmp_path)]
    assert parity.main(argv) == 0
    data = json.loads((tmp_path / "parity.json").read_text())
    assert [r["variant"] for r in data["rows"]] == ["torch-ref", "torch-folded", "ort-fp32"]
    assert all(r["max_abs"] < 1e-4 for r in data["rows"]) and data["passed"]
    assert "ort-fp32" in (tmp_path / "parity.md").read_text()
    # the same run against a bound nothing can meet (exact equality) fails with status 1
    monkeypatch.setitem(T.TOLERANCES, "fp32", T.Tolerance(max_abs=0.0))
    assert parity.main(argv + ["--name", "strict"]) == 1
    strict = json.loads((tmp_path / "strict.json").read_text())
    assert not strict["passed"] and any(r["violations"] for r in strict["rows"])
