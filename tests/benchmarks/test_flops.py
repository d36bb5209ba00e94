"""The MAC counter reproduces the paper's 1.94 M / 222.85 G and agrees with thop on convolutions."""
from __future__ import annotations

import importlib.util

import pytest

from lso import LSO, LSOConfig
from lso.benchmarks.flops import count_macs, thop_conv_macs


def test_paper_convention_reproduced():
    model = LSO(LSOConfig()).eval()
    counts = count_macs(model, (64, 64), 4)
    assert sum(p.numel() for p in model.parameters()) == 1_942_703
    assert counts["conv"] == pytest.approx(6.9576e9, rel=1e-5)
    assert round(32 * counts["paper_thop"] / 1e9, 2) == 222.85


def test_counts_scale_with_area_and_solver_forms_differ():
    model = LSO(LSOConfig.tiny()).eval()
    a = count_macs(model, (32, 32))
    b = count_macs(model, (64, 64))
    assert b["conv"] == pytest.approx(4 * a["conv"], rel=0.02)
    assert a["full_folded"] < a["full_reference"]


@pytest.mark.skipif(importlib.util.find_spec("thop") is None, reason="thop not installed (dev extra)")
def test_thop_agrees_on_convolutions():
    model = LSO(LSOConfig.tiny()).eval()
    assert thop_conv_macs(model, (32, 48)) == pytest.approx(count_macs(model, (32, 48))["conv"], abs=1)
