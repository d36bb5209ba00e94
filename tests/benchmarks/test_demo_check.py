"""Issue 21: the shipped demo weights reproduce the committed small cross-scale case (lso eval, x4 and x16)."""
from __future__ import annotations

import json

import pytest

from lso.benchmarks._report import RESULTS
from lso.benchmarks.demo_check import EVAL_ARGS, METHODS, TOLERANCE_DB, bundled_fingerprint, run_case

COMMITTED = RESULTS / "demo_check.json"


def _committed() -> dict:
    return json.loads(COMMITTED.read_text())


def test_committed_figures_belong_to_the_shipped_weights():
    data = _committed()
    assert data["command"] == ["lso", *EVAL_ARGS]
    assert data["weights_fingerprint"] == bundled_fingerprint(), (
        "the bundled demo weights changed: rerun `python benchmarks/demo_check.py` and commit its results")


@pytest.mark.slow
def test_lso_eval_reproduces_the_committed_psnr(tmp_path):
    committed = _committed()["figures"]
    got = run_case(tmp_path)
    assert set(got) == set(committed) == {"x4", "x16"}
    for ratio, methods in committed.items():
        for method in METHODS:
            want = methods[method]["psnr"]
            assert got[ratio][method]["psnr"] == pytest.approx(want, abs=TOLERANCE_DB), (ratio, method)
