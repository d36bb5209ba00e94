"""benchmarks/latency.py (issue 20): interleaved rounds, each cell's own peak, accuracy against PyTorch FP32, peers."""
from __future__ import annotations

import json

import numpy as np
import pytest

from lso.benchmarks import latency


def _cell(backend, size, median, peak, ratio=4):
    return {"backend": backend, "size": size, "ratio": ratio, "times": [median], "median_s": median,
            "p90_s": median, "mp_per_s": 1.0, "peak_mib": peak, "peak_kind": "rss"}


def test_summary_pools_rounds_takes_largest_peak_and_diffs_against_pytorch_fp32(tmp_path):
    ref = np.zeros((1, 31, 8, 8), np.float32)
    np.save(tmp_path / f"out_{latency.REFERENCE}_4_8.npy", ref)
    off = ref.copy()
    off[0, 3, 2, 1] = 0.25
    np.save(tmp_path / "out_ov-default_4_8.npy", off)
    runs = {(latency.REFERENCE, 8, 4): [_cell(latency.REFERENCE, 8, 2.0, 100)],
            ("torch-ref", 8, 4): [_cell("torch-ref", 8, 4.0, 300), _cell("torch-ref", 8, 6.0, 200)],
            ("ov-default", 8, 4): [_cell("ov-default", 8, 1.0, 50)]}
    cells = latency._summarize([latency.REFERENCE, "torch-ref", "ov-default", "peer-ov-plain"], [8], [4], runs,
                               {("peer-ov-plain", 8, 4): "not available on this machine"}, {8: 1e9}, 1e9, tmp_path)
    by = {c["backend"]: c for c in cells}
    assert by["torch-ref"]["median_s"] == 5.0 and by["torch-ref"]["rounds"] == 2
    assert by["torch-ref"]["peak_mib"] == 300  # the largest of its rounds, not the last
    assert by["ov-default"]["max_abs_diff"] == pytest.approx(0.25)
    assert by[latency.REFERENCE]["max_abs_diff"] == 0.0
    assert by["ov-default"]["speedup_vs_baseline"] == pytest.approx(5.0)
    assert by["peer-ov-plain"]["skipped"] == "not available on this machine"
    assert by["ov-default"]["x_floor"] == pytest.approx(1.0 / 2.0)
    assert not list(tmp_path.glob("out_*.npy"))  # outputs are removed once compared


def test_every_peer_and_hazard_is_a_default_cell_with_its_kind():
    assert set(latency.PEERS) <= set(latency.CPU_BACKENDS) and set(latency.HAZARDS) <= set(latency.CPU_BACKENDS)
    assert [latency._kind(b) for b in ("torch-ref", latency.REFERENCE, "ov-fp32", "ov-default", "peer-ort-plain")] \
        == ["baseline", "reference", "ours", "hazard", "peer"]


@pytest.mark.slow
def test_a_tiny_run_interleaves_rounds_and_reports_peers(tmp_path, tiny_model):
    from lso.checkpoint import save_checkpoint
    from lso.export import ParityCase, export_onnx

    ckpt = save_checkpoint(tiny_model, tmp_path / "tiny.safetensors")
    graph = export_onnx(tiny_model, tmp_path / "tiny.onnx", cases=[ParityCase(4, 32, 32)])
    out = tmp_path / "results"
    code = latency.main(["--checkpoint", str(ckpt), "--graph", str(graph), "--sizes", "32", "--rounds", "2",
                         "--repeats", "1", "--threads", "1", "--backends", "torch-ref,ort-fp32,peer-ort-plain",
                         "--out", str(out), "--name", "tiny"])
    assert code == 0
    data = json.loads((out / "tiny.json").read_text())
    by = {c["backend"]: c for c in data["cells"]}
    assert set(by) == {latency.REFERENCE, "torch-ref", "ort-fp32", "peer-ort-plain"}  # the reference is added
    for name in ("torch-ref", "ort-fp32", "peer-ort-plain"):
        assert by[name]["rounds"] == 2 and len(by[name]["times"]) == 2, name
        assert by[name]["peak_mib"] > 0 and by[name]["max_abs_diff"] < 1e-4, name
    assert data["machine"]["cpu"] in (out / "tiny.md").read_text()
