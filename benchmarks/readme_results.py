"""Regenerate the README's results section from the committed reports in benchmarks/results/.

The section between ``<!-- RESULTS:START -->`` and ``<!-- RESULTS:END -->`` is replaced by the
Markdown reports listed in ``REPORTS`` (those that exist), headings demoted to level 3. Nothing in
that section is typed by hand.

    python benchmarks/readme_results.py [--check]   # --check: exit 1 if the README is out of date
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
REPORTS = ("demo", "demo_eval_x4", "demo_eval_scales", "solver", "flops", "export_report", "precision_fp16",
           "precision_int8", "bf16_sensitivity", "bf16_sensitivity_chunk256", "parity", "latency", "ov_profile",
           "cpu_tuning_latency_run", "cpu_tuning", "cpu_tuning_20m", "memory_profile", "latency_512_repeat",
           "ort_profile", "tiling_memory", "training/scale_transfer", "synthetic_sanity", "load_test", "gpu_check")
START, END = "<!-- RESULTS:START -->", "<!-- RESULTS:END -->"


def render() -> str:
    parts = []
    for name in REPORTS:
        path = RESULTS / f"{name}.md"
        if not path.exists():
            continue
        text = path.read_text(encoding="utf-8").strip()
        text = re.sub(r"^(#+) ", lambda m: "#" * min(len(m.group(1)) + 2, 6) + " ", text, flags=re.M)
        if not text.startswith("###"):
            text = f"### {name}\n\n{text}"
        parts.append(f"{text}\n\n(source: `benchmarks/results/{name}.md`)")
    return "\n\n".join(parts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check that the README is up to date")
    args = parser.parse_args(argv)
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    if START not in text or END not in text:
        print(f"README.md lacks the {START} / {END} markers", file=sys.stderr)
        return 2
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{START}\n{render()}\n{END}{tail}"
    if args.check:
        return 0 if new == text else 1
    from lso.artifacts import atomic_write_text

    atomic_write_text(readme, new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
