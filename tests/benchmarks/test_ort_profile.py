"""benchmarks/ort_profile.py: the profile of a CPU graph, with the Scan bodies counted once."""
from __future__ import annotations

import pytest

from lso.benchmarks.ort_profile import summarize


def _kernel(name: str, op: str, ts: int, dur: int) -> dict:
    return {"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur, "args": {"op_name": op}}


def test_nodes_inside_scan_bodies_are_not_counted_twice():
    events = [
        {"cat": "Session", "name": "model_run", "ts": 0, "dur": 10_000},
        _kernel("conv", "Conv", 10, 2_000_000),
        _kernel("solver_scan", "Scan", 2_000_100, 1_000_000),
        _kernel("body_mul", "Mul", 2_000_200, 300_000),  # inside the Scan's span
        _kernel("body_add", "Add", 2_500_000, 400_000),
        _kernel("residual_add", "Add", 3_100_000, 100_000),  # after it
    ]
    res = summarize(events, runs=1, walls=[3.3])
    by_op = {o["op"]: o["s"] for o in res["by_op"]}
    assert by_op == pytest.approx({"Conv": 2.0, "Scan": 1.0, "Add": 0.1})
    assert res["kernel_s"] == pytest.approx(3.1)
    assert {o["op"]: o["s"] for o in res["inside_by_op"]} == pytest.approx({"Mul": 0.3, "Add": 0.4})
    assert [n["node"] for n in res["top_nodes"]] == ["conv", "solver_scan", "residual_add"]
