"""benchmarks/parity.py runs its ONNX Runtime variants through Polygraphy's comparator: same figures as a direct
ONNX Runtime call on the same graph and scenes, plus Polygraphy's own accuracy verdict per row."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("polygraphy")
pytest.importorskip("onnxruntime")

from lso import LSO, LSOConfig
from lso.benchmarks import parity
from lso.calibration.feeds import held_out_scenes


@pytest.fixture(scope="module")
def tiny_and_graph(tmp_path_factory):
    from lso.export import export_onnx

    torch.manual_seed(0)
    model = LSO(LSOConfig.tiny()).eval()
    return model, export_onnx(model, tmp_path_factory.mktemp("pg-parity") / "tiny.onnx", check=False)


@pytest.mark.parametrize("threads", [None, 1])
def test_comparator_rows_equal_direct_onnxruntime(tiny_and_graph, threads):
    from lso.calibration.accuracy import ort_runner
    from lso.calibration.feeds import Scene

    model, graph = tiny_and_graph
    direct = ort_runner(graph)
    runners = {"torch-ref": parity._torch_runner(model, "reference"),
               "ort-fp32": parity._ort_runner(graph, threads, "ort-fp32"),
               "ort-direct": lambda hr, lr: direct(Scene("", np.empty(0), hr, lr))}
    assert parity._is_polygraphy_runner(runners["ort-fp32"])
    scenes = held_out_scenes(2, size=32, ratio=4)
    res = parity.run_parity(runners, {"torch-ref": "fp32", "ort-fp32": "fp32", "ort-direct": "fp32"}, scenes, 4)
    rows = {r["variant"]: r for r in res["rows"]}
    for key in ("psnr", "sam", "ergas", "ssim", "dpsnr", "max_abs", "fidelity_psnr"):
        assert rows["ort-fp32"][key] == pytest.approx(rows["ort-direct"][key], rel=1e-6, abs=1e-9), key
    assert rows["ort-fp32"]["backend"] == "polygraphy" and rows["torch-ref"]["backend"] == "pytorch"
    check = rows["ort-fp32"]["comparator"]
    assert check["checked"] and check["passed"] and check["atol"] == parity.TOLERANCES["fp32"].max_abs
    assert rows["ort-fp32"]["seconds"] > 0 and res["passed"]


def test_comparator_verdict_fails_beyond_the_bound(tiny_and_graph, monkeypatch):
    from lso import tolerances as T

    model, graph = tiny_and_graph
    monkeypatch.setitem(T.TOLERANCES, "fp32", T.Tolerance(max_abs=1e-12))
    runners = {"torch-ref": parity._torch_runner(model, "reference"),
               "ort-fp32": parity._ort_runner(graph, None, "ort-fp32")}
    res = parity.run_parity(runners, {"torch-ref": "fp32", "ort-fp32": "fp32"}, held_out_scenes(1, size=32, ratio=4), 4)
    row = next(r for r in res["rows"] if r["variant"] == "ort-fp32")
    assert not row["passed"] and row["comparator"] == {"checked": True, "passed": False, "atol": 1e-12,
                                                        "check_error_stat": "max"}


def test_plan_without_a_gpu_is_skipped_with_the_reason(tiny_and_graph, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("checks the no-GPU path")
    model, _ = tiny_and_graph
    plan = tmp_path / "m.plan"
    plan.write_bytes(b"plan")
    runners, precision, skipped = parity.build_variants(model, "tiny", tmp_path, ["torch-ref"], feeds=None,
                                                        threads=None, plans=[str(plan)])
    assert "trt-m" in skipped and "CUDA GPU" in skipped["trt-m"] and "trt-m" not in runners
