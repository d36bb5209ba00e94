"""benchmarks/ov_profile.py: OpenVINO's per-node counters summed by kernel, static and open shapes alike."""
from __future__ import annotations

import pytest

pytest.importorskip("openvino", reason="openvino is not installed")


def test_profile_sums_the_node_times_of_both_compiles(tiny_onnx):
    from lso.benchmarks.ov_profile import _conv_seconds, profile

    for static in (True, False):
        result = profile(str(tiny_onnx), 32, 4, static=static, threads=1, runs=2)
        kinds = {k["kind"] for k in result["by_kind"]}
        assert any(k.startswith("Convolution [") for k in kinds), kinds
        assert result["node_sum_s"] == pytest.approx(sum(k["seconds"] for k in result["by_kind"]))
        assert 0 < _conv_seconds(result) <= result["node_sum_s"]
        assert sum(k["share"] for k in result["by_kind"]) == pytest.approx(1.0)
        assert result["wall_s"] > 0 and len(result["top_nodes"]) <= 8
