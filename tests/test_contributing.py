"""CONTRIBUTING.md's "Where to change what" table names only paths and definitions that exist.

Every backticked ``path`` in the table (a token with a ``/`` whose last part has a file suffix, or ``path::name``)
must exist in the repository; for ``path::name`` the file must define ``name`` (``def name``, ``class name``, or
``name =`` / ``name:`` at the start of a line). Templates such as ``runtime/<name>_runner.py`` and ``_add_<name>``
are skipped. Cheap: text only, nothing is imported.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONTRIBUTING = ROOT / "CONTRIBUTING.md"
SECTION = "## Where to change what"

TICKS = re.compile(r"`([^`]+)`")
PATH = re.compile(r"^[\w.-]+(?:/[\w.-]+)*\.(?:py|toml|md|csv|cfg|yaml|yml|json)$")


def table_rows() -> list[str]:
    text = CONTRIBUTING.read_text(encoding="utf-8")
    assert SECTION in text, f"CONTRIBUTING.md has no {SECTION!r} section"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return rows[2:]  # after the header and separator lines


def references() -> list[tuple[str, str | None]]:
    refs: list[tuple[str, str | None]] = []
    for row in table_rows():
        for token in TICKS.findall(row):
            if "<" in token:  # a template: runtime/<name>_runner.py, _add_<name>
                continue
            path, _, name = token.partition("::")
            if PATH.match(path):
                refs.append((path, name or None))
    return refs


def defines(source: str, name: str) -> bool:
    pattern = rf"^\s*(?:async\s+)?(?:def|class)\s+{re.escape(name)}\b|^{re.escape(name)}\s*[:=]"
    return re.search(pattern, source, re.MULTILINE) is not None


def test_the_table_has_the_rows_asked_for():
    firsts = [row.split("|")[1].strip().lower() for row in table_rows()]
    for topic in ("profile range", "precision island", "backend", "scene reader", "scene writer", "metric",
                  "cli option", "tolerance", "tensorrt version", "install line", "graph pass"):
        assert any(topic in first for first in firsts), f"no row for {topic!r}"
    assert len(references()) >= 20  # the parser found the table's paths


@pytest.mark.parametrize("path,name", sorted(set(references()), key=str), ids=lambda v: str(v))
def test_every_path_and_definition_exists(path, name):
    file = ROOT / path
    assert file.is_file(), f"CONTRIBUTING.md names {path}, which does not exist"
    if name is not None:
        assert defines(file.read_text(encoding="utf-8"), name.split(".")[-1]), f"{path} defines no {name}"


def test_the_symbol_check_sees_a_missing_name():
    source = "def a():\n    pass\nclass B:\n    pass\nC = 1\nD: int = 2\n"
    assert all(defines(source, n) for n in ("a", "B", "C", "D"))
    assert not defines(source, "E") and not defines(source, "a_b")
