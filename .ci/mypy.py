"""mypy on the package ``lso`` laid out as setuptools installs it.

pyproject.toml's ``[tool.setuptools] package-dir`` maps ``lso`` -> src/lso, ``lso.export`` -> export/,
``lso.runtime`` -> runtime/, and so on. mypy finds a module by its folders alone (it would call export/parity.py
``export.parity``), and the editable install serves the mapping through an import hook
(``__editable___lso_deploy_*_finder.py``) that mypy does not run. So this script lays the package out as links,
as setuptools' ``editable_mode=strict`` would: build/mypy/lso/ holds links to what src/lso holds, and each mapped
subpackage gets its own folder of links (build/mypy/lso/export/* -> export/*). It then runs
``mypy -p lso`` with ``MYPYPATH=build/mypy`` (the settings are pyproject.toml's ``[tool.mypy]``) and reports
the repository's paths (build/mypy/lso/export/parity.py -> export/parity.py).

Usage: ``.venv/bin/python .ci/mypy.py [mypy options]``; exit status is mypy's.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: mypy depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
TREE = Path("build") / "mypy"  # relative to ROOT (build/ is ignored by git)


def package_dirs() -> dict[str, Path]:
    """``{package: folder}`` from pyproject.toml's package-dir."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return {pkg: Path(folder) for pkg, folder in config["tool"]["setuptools"]["package-dir"].items()}


def link_tree(dirs: dict[str, Path]) -> dict[str, str]:
    """Lay the packages out under TREE as links; return ``{tree prefix: source prefix}`` for the paths."""
    shutil.rmtree(ROOT / TREE, ignore_errors=True)
    prefixes = {}
    for pkg in sorted(dirs, key=lambda p: p.count(".")):  # parents before their mapped subpackages
        dest = TREE.joinpath(*pkg.split("."))
        (ROOT / dest).mkdir(parents=True)
        mapped = {child.rpartition(".")[2] for child in dirs if child.rpartition(".")[0] == pkg}
        for entry in sorted((ROOT / dirs[pkg]).iterdir()):
            if entry.name not in mapped and entry.name != "__pycache__":
                (ROOT / dest / entry.name).symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
        prefixes[f"{dest.as_posix()}/"] = f"{dirs[pkg].as_posix()}/"
    return prefixes


def main(argv: list[str]) -> int:
    prefixes = link_tree(package_dirs())
    pattern = re.compile("|".join(re.escape(p) for p in sorted(prefixes, key=len, reverse=True)))
    env = {**os.environ, "MYPYPATH": str(TREE)}
    proc = subprocess.run([sys.executable, "-m", "mypy", "-p", "lso", *argv], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout.splitlines():
        print(pattern.sub(lambda m: prefixes[m.group(0)], line))
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
