"""Coverage-guided fuzzing of lso-deploy's input surfaces with atheris (libFuzzer for Python).

    python fuzz/run_atheris.py readers --seconds 600        # one target, in this process
    python fuzz/run_atheris.py --all --seconds 600          # every target in turn, then the summary
    python fuzz/run_atheris.py --replay                     # run every committed corpus file once (no atheris)

Targets are in ``fuzz/targets.py`` (readers, validation, cli). Each run starts from the committed
seeds (``fuzz/seeds/<target>``, ``python fuzz/make_seeds.py``) and corpus (``fuzz/corpus/<target>``),
instruments the ``lso`` package (plus ``scipy.io``, ``PIL`` and ``argparse`` where first imported
here) for coverage, and stops after ``--seconds``. With ``--all`` the corpus is then minimised
(libFuzzer ``-set_cover_merge=1``: the fewest inputs that keep the coverage) back into
``fuzz/corpus/<target>``, and ``fuzz/results/atheris_summary.md`` and ``.json`` record executions,
coverage, time and findings per target. Findings (crash-*, timeout-*, oom-*) land in
``fuzz/results/findings/<target>/``; ``fuzz/results/atheris_findings.md`` says what each was and how it
was fixed (it is appended to the summary).

libFuzzer limits: ``-timeout=20`` s per input (a hang is a finding), ``-rss_limit_mb=3072`` (the
harness sets ``LSO_MEMORY_BUDGET=256M``, so an allocation the budget should have refused is an OOM
finding), ``-max_len=65536``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
LIBFUZZER_FLAGS = ["-timeout=20", "-rss_limit_mb=3072", "-max_len=65536", "-print_final_stats=1"]
TARGET_NAMES = ("readers", "validation", "cli")


def _load_targets(instrument: bool):
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("LSO_MEMORY_BUDGET", "256M")  # targets.FUZZ_MEMORY_BUDGET
    import torch

    torch.set_num_threads(1)  # one core per fuzzing process
    if not instrument:
        import targets

        return targets
    import atheris

    with atheris.instrument_imports(include=["lso", "targets", "scipy.io", "PIL", "argparse"]):
        import scipy.io  # noqa: F401  (instrumented: the .mat parser)
        from PIL import Image, PngImagePlugin  # noqa: F401

        import lso.checkpoint
        import lso.cli
        import lso.data.readers
        import lso.runtime.infer
        import lso.runtime.ort_runner
        import lso.runtime.tiling
        import lso.runtime.trt_runner
        import lso.runtime.validation  # noqa: F401  (imported to be instrumented)

        import targets
    return targets


def fuzz_one(name: str, seconds: int, extra: list[str]) -> None:
    import atheris

    targets = _load_targets(instrument=True)
    target = targets.TARGETS[name]
    corpus, seeds = ROOT / "corpus" / name, ROOT / "seeds" / name
    findings = RESULTS / "findings" / name
    corpus.mkdir(parents=True, exist_ok=True)
    findings.mkdir(parents=True, exist_ok=True)
    argv = [sys.argv[0], *LIBFUZZER_FLAGS, f"-max_total_time={seconds}", f"-artifact_prefix={findings}/", *extra,
            str(corpus), str(seeds)]
    atheris.Setup(argv, target)
    atheris.Fuzz()


def _parse_stats(log: str) -> dict:
    stats: dict = {}
    for key, value in re.findall(r"stat::(\w+):\s+(\d+)", log):
        stats[key] = int(value)
    done = re.findall(r"#(\d+)\s+DONE\s+cov: (\d+) ft: (\d+) corp: (\d+)/(\S+)", log)
    pulses = re.findall(r"#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)/(\S+)", log)
    last = done[-1] if done else (pulses[-1] if pulses else None)
    if last:
        stats.update(executions=int(last[0]), coverage_edges=int(last[1]), features=int(last[2]),
                     corpus_units=int(last[3]), corpus_size=last[4])
    inited = re.findall(r"INITED cov: (\d+) ft: (\d+)", log)
    if inited:
        stats.update(coverage_edges_seeds=int(inited[0][0]), features_seeds=int(inited[0][1]))
    return stats


def run_all(seconds: int, names: list[str]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    summary_path = RESULTS / "atheris_summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {"targets": {}}
    env = dict(os.environ, LSO_MEMORY_BUDGET=os.environ.get("LSO_MEMORY_BUDGET", "256M"))
    for name in names:
        log_path = RESULTS / f"atheris_{name}.log"
        start = time.time()
        with open(log_path, "w") as log:
            proc = subprocess.run([sys.executable, __file__, name, "--seconds", str(seconds)], stdout=log,
                                  stderr=subprocess.STDOUT, env=env)
        wall = time.time() - start
        text = log_path.read_text(errors="replace")
        findings = sorted(p.name for p in (RESULTS / "findings" / name).glob("*") if p.is_file())
        stats = _parse_stats(text)
        # minimise: keep only the inputs that add coverage (the committed corpus stays small)
        corpus = ROOT / "corpus" / name
        merged = ROOT / "corpus" / f".{name}.merged"
        shutil.rmtree(merged, ignore_errors=True)
        merged.mkdir(parents=True)
        subprocess.run([sys.executable, __file__, name, "--merge", str(merged), str(corpus)], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if any(merged.iterdir()):
            shutil.rmtree(corpus)
            merged.rename(corpus)
        else:
            shutil.rmtree(merged)
        stats.update(seconds_requested=seconds, wall_seconds=round(wall, 1), exit_code=proc.returncode,
                     findings=findings, corpus_files_after_merge=sum(1 for _ in corpus.iterdir()),
                     log=str(log_path.relative_to(ROOT.parent)))
        summary["targets"][name] = stats
        print(f"{name}: {stats}", flush=True)
    from importlib.metadata import version

    import atheris  # noqa: F401  (for the version)

    summary["machine"] = {"python": platform.python_version(), "platform": platform.platform(),
                          "cpu_count": os.cpu_count(), "atheris": version("atheris"),
                          "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "nice": os.nice(0),
                          "memory_budget": env["LSO_MEMORY_BUDGET"]}
    summary["libfuzzer_flags"] = LIBFUZZER_FLAGS
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    _write_markdown(summary)


def _write_markdown(summary: dict) -> None:
    rows = ["| target | seconds | executions | exec/s | coverage (edges) corpus -> end | features | corpus (merged) "
            "| peak RSS MB | exit | findings kept (all runs, all fixed) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in summary["targets"].items():
        kept = ", ".join(f[:14] + "…" for f in s.get("findings") or []) or "none"
        rows.append(f"| {name} | {s.get('wall_seconds')} | {s.get('executions', s.get('number_of_executed_units'))} | "
                    f"{s.get('average_exec_per_sec')} | {s.get('coverage_edges_seeds')} -> {s.get('coverage_edges')} | "
                    f"{s.get('features')} | {s.get('corpus_files_after_merge')} | {s.get('peak_rss_mb')} | "
                    f"{s.get('exit_code')} | {kept} |")
    for name, s in summary["targets"].items():
        for run in s.get("earlier_runs", []):
            rows.append(f"\nEarlier {name} run: {run['seconds']} s, {run['executions']} executions, stopped by "
                        f"{run['stopped_by']}.")
        if s.get("note"):
            rows.append(f"\n{name}: {s['note']}.")
    m = summary.get("machine", {})
    notes = (RESULTS / "atheris_findings.md").read_text() if (RESULTS / "atheris_findings.md").exists() else ""
    text = ("# Atheris (coverage-guided) fuzzing\n\n"
            f"`python fuzz/run_atheris.py --all --seconds N`, one target after the other on one core (nice "
            f"{m.get('nice')}), atheris {m.get('atheris')}, Python {m.get('python')}, {m.get('platform')}, "
            f"{m.get('date')}; LSO_MEMORY_BUDGET={m.get('memory_budget')}; libFuzzer flags "
            f"`{' '.join(summary.get('libfuzzer_flags', []))}`.\n\n" + "\n".join(rows) + "\n\n"
            "Each row is the last full run of the target (exit 0: the time ran out without a finding). Coverage "
            "counts instrumented edges of `lso` (and of `PIL`, `argparse` where instrumented; `.mat` parsing runs in a "
            "child process since finding 11, so scipy is no longer counted) from the loaded corpus to the end. The "
            "corpus is minimised with `-set_cover_merge=1` and committed under `fuzz/corpus/`.\n\n"
            + notes)
    (RESULTS / "atheris_summary.md").write_text(text)


def replay() -> int:
    """Run every seed and corpus file through its target once, without atheris (for CI and regressions)."""
    targets = _load_targets(instrument=False)
    count = 0
    for name, target in targets.TARGETS.items():
        for folder in (ROOT / "seeds" / name, ROOT / "corpus" / name, RESULTS / "findings" / name):
            for path in sorted(folder.glob("*")) if folder.is_dir() else []:
                target(path.read_bytes())
                count += 1
    print(f"replayed {count} inputs: no finding")
    return 0


def _child_command(name: str) -> str:
    """What libFuzzer runs (through the shell) for its merge subprocesses: this script in child mode."""
    return f"{sys.executable} {Path(__file__).resolve()} --libfuzzer-child {name}"


def _libfuzzer(name: str, flags: list[str]) -> None:
    """Run libFuzzer on target ``name`` with ``flags``; argv[0] re-invokes this script (merge needs it)."""
    import atheris

    targets = _load_targets(instrument=True)
    atheris.Setup([_child_command(name), *flags], targets.TARGETS[name])
    atheris.Fuzz()


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--libfuzzer-child":  # a merge subprocess started by libFuzzer
        _libfuzzer(sys.argv[2], sys.argv[3:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", nargs="?", choices=TARGET_NAMES)
    parser.add_argument("--seconds", type=int, default=600, help="time per target (-max_total_time)")
    parser.add_argument("--all", action="store_true", help="every target in turn, then minimise and summarise")
    parser.add_argument("--only", help="with --all: comma-separated targets")
    parser.add_argument("--replay", action="store_true", help="run the committed inputs once, no fuzzing")
    parser.add_argument("--merge", nargs=2, metavar=("OUT", "IN"), help=argparse.SUPPRESS)
    args, extra = parser.parse_known_args()
    if args.replay:
        return replay()
    if args.all:
        run_all(args.seconds, args.only.split(",") if args.only else list(TARGET_NAMES))
        return 0
    if not args.target:
        parser.error("give a target or --all")
    if args.merge:
        _libfuzzer(args.target, ["-set_cover_merge=1", *LIBFUZZER_FLAGS, *args.merge])
        return 0
    fuzz_one(args.target, args.seconds, extra)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
