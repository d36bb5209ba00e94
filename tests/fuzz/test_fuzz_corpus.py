"""Regressions: every committed fuzz input (seeds, minimised corpus, and each finding of the atheris runs)
goes through its target once and must end in a result or one of our errors (see fuzz/results/atheris_summary.md)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parents[2] / "fuzz"
_spec = importlib.util.spec_from_file_location("lso_fuzz_targets", FUZZ / "targets.py")
targets = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(targets)


def _inputs(target: str) -> list[Path]:
    folders = (FUZZ / "seeds" / target, FUZZ / "corpus" / target, FUZZ / "results" / "findings" / target)
    return [p for folder in folders if folder.is_dir() for p in sorted(folder.iterdir()) if p.is_file()]


@pytest.fixture(autouse=True)
def _fuzz_budget(monkeypatch):
    monkeypatch.setenv("LSO_MEMORY_BUDGET", targets.FUZZ_MEMORY_BUDGET)


def test_findings_are_kept():
    """Each crash the fuzzer found is committed and replayed below (it was fixed in the code)."""
    assert len(_inputs("readers")) > 10 and _inputs("validation") and _inputs("cli")


@pytest.mark.slow
@pytest.mark.parametrize("target", sorted(targets.TARGETS))
def test_replay_committed_inputs(target):
    run = targets.TARGETS[target]
    for path in _inputs(target):
        try:
            run(path.read_bytes())
        except Exception as exc:  # any failure: name the input that regressed
            raise AssertionError(f"{path.relative_to(FUZZ)}: {type(exc).__name__}: {exc}") from exc
