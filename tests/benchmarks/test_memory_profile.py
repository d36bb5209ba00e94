"""benchmarks/memory_profile.py: a fresh process reads its own peak, the arena profile, the graph's live tensors."""
from __future__ import annotations

import pytest

from lso.benchmarks import memory_profile
from lso.benchmarks.memory_profile import arena_profile, graph_profile, proc_status_kib

pytest.importorskip("onnxruntime")


def test_each_cell_reads_its_own_peak_in_a_fresh_process(tiny_onnx):
    """VmHWM of the child itself: after loading <= after each run; not the parent's (larger) high-water mark."""
    spec = {"kind": "whole", "backend": "onnxruntime", "variant": "plain", "artifact": str(tiny_onnx), "size": 32,
            "ratio": 4, "threads": 1, "runs": 2, "setting": "default"}
    cell = memory_profile._spawn(spec)
    assert "error" not in cell, cell.get("error")
    peaks = [cell["peak_rss_after_load_bytes"], *(r["peak_rss_bytes"] for r in cell["runs"])]
    assert peaks == sorted(peaks) and 0 < peaks[-1] <= cell["peak_rss_bytes"]
    assert cell["output_finite"] and len(cell["runs"]) == 2
    assert proc_status_kib("VmHWM") > 0 and proc_status_kib("NoSuchField") == 0


def test_arena_profile_finds_the_peak_of_each_run():
    def node(name, ts, in_use, held, out):
        return {"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": 1,
                "args": {"op_name": name.title(), "mem_bytes_in_use": str(in_use), "mem_arena_held": str(held),
                         "output_size": str(out), "output_type_shape": [{"float": [1]}]}}

    events = [{"cat": "Session", "name": "model_run", "ts": 0, "dur": 100},
              node("conv", 10, 500, 2000, 300), node("add", 20, 800, 2000, 100), node("relu", 30, 200, 2000, 50),
              {"cat": "Session", "name": "model_run", "ts": 200, "dur": 100},
              node("conv", 210, 900, 4000, 300)]
    first, second = arena_profile(events)
    assert first["peak_in_use_bytes"] == 800 and first["peak_arena_held_bytes"] == 2000
    assert first["node_at_peak"]["name"] == "add" and first["nodes"] == 3
    assert [o["name"] for o in first["largest_outputs"]] == ["conv", "add", "relu"]
    assert second["peak_in_use_bytes"] == 900 and second["peak_arena_held_bytes"] == 4000


def test_graph_profile_is_linear_in_pixels(tiny_onnx):
    """Every tensor's bytes per HR pixel, and the live peak's, are the same at 32² and 64²: nothing super-linear."""
    small, large = graph_profile(tiny_onnx, 32), graph_profile(tiny_onnx, 64)
    assert small["peak_live_bytes"] > 0 and small["live_at_peak"]
    assert large["bytes_per_pixel_max"] == pytest.approx(small["bytes_per_pixel_max"], rel=0.05)
    assert large["peak_live_bytes_per_pixel"] == pytest.approx(small["peak_live_bytes_per_pixel"], rel=0.2)
