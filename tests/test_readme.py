"""The README's code blocks: every block is marked runnable or not, and every runnable one runs as copied.

Markers: the line right before each fenced block (blank lines aside) is ``<!-- runnable -->`` or
``<!-- not runnable: REASON -->`` (a GPU, a Triton server, a cluster, docker, the test command itself ...).

:func:`test_runnable_blocks_run_as_copied` plays a fresh clone: a temporary folder holding links to the
repository's tracked top-level files and folders (``export/``, ``benchmarks/`` ... so that
``python export/to_onnx.py`` works) is the working directory, and the runnable blocks run there in
README order — ``bash`` blocks with ``bash -e``, ``python`` blocks with this interpreter — with the
interpreter's folder (the venv's ``lso`` and ``python``) first on ``PATH``. Files a block writes stay in
that folder for the blocks after it. The test provides one fixture, the file a user brings:

- ``model_best.pth.tar``: the bundled demo weights saved exactly as the authors' training script saves
  its checkpoints (``epoch``, ``model_state_dict``, ``model_name``, ``config`` with their option names,
  ``source_checkpoint``), standing in for their published file.

Every other input a block uses (example scenes, ``model.onnx`` ...) is written by an earlier runnable
block, at small sizes (64x64), so the whole run takes a few minutes on a 2-core CPU.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

MARKER = re.compile(r"^<!-- (runnable|not runnable: \S.*\S) -->$")
FENCE = re.compile(r"^\s*```(\S*)\s*$")  # indented fences (inside list items) count too
RUNNABLE_LANGUAGES = ("bash", "python")
SETUP_COMMANDS = (
    'python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && pip install -e ".[onnx,data]" '
    "&& lso demo",
    "bash .ci/run",
)
# what a fresh clone holds at its top level (tracked files only: nothing a previous run left behind)
CLONE_ENTRIES = (".ci", "README.md", "SECURITY.md", "pyproject.toml", "benchmarks", "calibration", "docs", "export",
                 "fuzz", "runtime", "scaleout", "src", "tests")
BLOCK_TIMEOUT_S = 900  # per block; the whole run takes ~2-3 min on an idle 2-core machine


@dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the opening fence
    language: str
    body: str
    marker: str  # the line before the fence (stripped), "" when there is none

    @property
    def runnable(self) -> bool:
        return self.marker == "<!-- runnable -->"

    def describe(self) -> str:
        first = self.body.strip().splitlines()[0] if self.body.strip() else ""
        return f"README.md:{self.line} ({self.language or 'no language'}: {first[:60]})"


def readme_blocks() -> list[Block]:
    lines = README.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        end = i + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        before = [ln.strip() for ln in lines[:i] if ln.strip()]
        body = textwrap.dedent("\n".join(lines[i + 1:end]))
        blocks.append(Block(i + 1, match.group(1), body, before[-1] if before else ""))
        i = end + 1
    return blocks


def _subcommands() -> set[str]:
    import argparse

    from lso.cli import build_parser

    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    raise AssertionError("lso's parser has no subcommands")


def test_every_block_is_marked():
    blocks = readme_blocks()
    assert blocks, "no fenced code blocks found in README.md"
    unmarked = [b.describe() for b in blocks if not MARKER.match(b.marker)]
    assert unmarked == [], "blocks without a '<!-- runnable -->' / '<!-- not runnable: why -->' line before them"
    wrong_language = [b.describe() for b in blocks if b.runnable and b.language not in RUNNABLE_LANGUAGES]
    assert wrong_language == [], f"runnable blocks must be one of {RUNNABLE_LANGUAGES}"


def test_setup_commands_come_first_unchanged_and_are_not_run():
    first = readme_blocks()[:2]
    assert tuple(b.body.strip() for b in first) == SETUP_COMMANDS
    assert all(b.marker.startswith("<!-- not runnable:") for b in first)


def test_command_table_lists_every_subcommand():
    text = README.read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| `lso ([a-z][a-z-]*)` \|", text, flags=re.M))
    commands = _subcommands()
    assert commands - listed == set(), "subcommands of `lso --help` missing from the README's command table"
    assert listed - commands == set(), "the README's command table names commands `lso` does not have"


def _authors_checkpoint(path: Path) -> None:
    """The bundled demo weights in the authors' exact checkpoint format (their option names in ``config``)."""
    import torch

    import lso
    from lso.weights import demo_checkpoint

    model = lso.load_checkpoint(demo_checkpoint())
    cfg = model.config
    config = {  # vars(opt) of their training script: architecture, dataset and training options together
        "model": "LSO", "num_token": cfg.num_token, "num_basis": cfg.num_basis, "width": cfg.width,
        "patch_size": cfg.patch_size, "n_resblocks": cfg.n_resblocks, "guide_dim": cfg.guide_dim,
        "n_bands": cfg.n_bands, "n_bands_rgb": cfg.n_msi_bands, "sf": 4, "image_size": 64, "dataset": "cave",
        "lr": 3e-4, "weight_decay": 1e-4, "batchSize": 16, "nEpochs": 1001, "step": 300, "gamma": 0.6,
        "seed": 0, "save_dir": "checkpoints/cave/lso_x4", "data_path": "data/train_cave(with_up)x4.h5",
    }
    torch.save({"epoch": 0, "model_state_dict": model.state_dict(), "model_name": "LSO", "config": config,
                "source_checkpoint": None}, path)


@pytest.mark.slow
def test_runnable_blocks_run_as_copied(tmp_path):
    blocks = [b for b in readme_blocks() if b.runnable]
    assert blocks, "the README has no runnable block"
    work = tmp_path / "clone"
    work.mkdir()
    for name in CLONE_ENTRIES:
        if (ROOT / name).exists():
            (work / name).symlink_to(ROOT / name)
    _authors_checkpoint(work / "model_best.pth.tar")
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["MPLBACKEND"] = "Agg"
    for block in blocks:
        started = time.monotonic()
        if block.language == "bash":
            command, stdin = ["bash", "-e", "-c", block.body], None
        else:
            command, stdin = [sys.executable, "-"], block.body
        try:
            done = subprocess.run(command, cwd=work, env=env, input=stdin, capture_output=True, text=True,
                                  timeout=BLOCK_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"{block.describe()} ran over {BLOCK_TIMEOUT_S} s:\n{block.body}\n{exc.stderr or ''}")
        if done.returncode != 0:
            pytest.fail(f"{block.describe()} exited with {done.returncode}:\n{block.body}\n--- stdout\n"
                        f"{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}")
        print(f"{block.describe()}: {time.monotonic() - started:.1f} s")  # shown with -rP / -s


RECIPE_TEST = "tests/test_readme.py::test_demo_recipe_runs_one_step"


def _demo_recipe() -> str:
    """The README's training recipe of the bundled demo checkpoint: the one block whose marker names this test."""
    found = [b for b in readme_blocks() if RECIPE_TEST in b.marker]
    assert len(found) == 1, f"exactly one README block must be marked as run by {RECIPE_TEST}; found {len(found)}"
    lines = [ln for ln in found[0].body.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("lso train "), "the recipe is one `lso train` command"
    return lines[0].strip()


def test_demo_recipe_is_the_one_recorded_in_the_bundled_checkpoint():
    from safetensors import safe_open

    from lso.weights import demo_checkpoint

    with safe_open(str(demo_checkpoint()), "pt") as f:
        recorded = f.metadata()["recipe"]
    assert _demo_recipe() == recorded


@pytest.mark.slow
def test_demo_recipe_runs_one_step(tmp_path):
    """The recipe as written (in a fresh-clone folder), with ``--max-steps 1`` appended (the last flag wins)."""
    import json

    from safetensors import safe_open

    from lso.weights import demo_checkpoint

    work = tmp_path / "clone"
    work.mkdir()
    for name in CLONE_ENTRIES:
        if (ROOT / name).exists():
            (work / name).symlink_to(ROOT / name)
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    command = f"{_demo_recipe()} --max-steps 1 --no-progress"
    done = subprocess.run(["bash", "-e", "-c", command], cwd=work, env=env, capture_output=True, text=True,
                          timeout=BLOCK_TIMEOUT_S)
    assert done.returncode == 0, f"{command}\n--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"
    out = work / "runs" / "demo"
    steps = [json.loads(line).get("step") for line in (out / "log.jsonl").read_text().splitlines() if line.strip()]
    assert max(s for s in steps if s is not None) == 1
    with safe_open(str(out / "best.safetensors"), "pt") as new, safe_open(str(demo_checkpoint()), "pt") as bundled:
        meta, shipped = new.metadata(), bundled.metadata()
    assert json.loads(meta["lso_config"]) == json.loads(shipped["lso_config"])  # the paper configuration, kept
    assert json.loads(meta["ratios"]) == json.loads(shipped["ratios"]) == [4, 8, 16, 32]
