"""SECURITY.md names, for every promise, the test that shows it, and says what is not promised (issue 18)."""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REF = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def _section(text: str, title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    assert match, f"SECURITY.md has no section '## {title}'"
    return match.group(1)


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test_")}


def test_every_promise_names_a_test_that_exists():
    text = (ROOT / "SECURITY.md").read_text(encoding="utf-8")
    table = _section(text, "Promises and the tests that show them")
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| promise")]
    assert len(rows) >= 15, "the promise table is missing or short"
    missing = []
    for row in rows:
        refs = REF.findall(row)
        assert refs, f"a promise without its test: {row[:100]}"
        for file, name in refs:
            path = ROOT / file
            if not path.is_file() or name not in _test_names(path):
                missing.append(f"{file}::{name}")
    assert not missing, f"SECURITY.md names tests that do not exist: {missing}"
    # anything else the page cites as a test exists too
    for file, name in REF.findall(text):
        assert (ROOT / file).is_file() and name in _test_names(ROOT / file), f"{file}::{name}"


def test_what_is_not_promised_is_said_plainly():
    text = (ROOT / "SECURITY.md").read_text(encoding="utf-8")
    limits = _section(text, "What is not promised")
    assert "another model with the same input" in limits
    assert "weights_fingerprint" in limits
