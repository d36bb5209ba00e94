"""Tune a CPU deployment on the machine it runs on (``lso export --target cpu``).

Which graph and runtime are fastest on a CPU depends on the CPU family: the ``Scan``-chunked solver
(:func:`lso.export.passes.chunk_solver`) and channel alignment (:func:`lso.export.passes.align_conv_channels`)
were tuned on an Intel Xeon, where both gained; on a 2-core AMD EPYC (Zen 4) the chunked solver costs about
1 s more at 512² and alignment gains nothing. So, like a TensorRT build, the CPU export measures where it runs:

1. every candidate graph (:data:`GRAPHS`: plain, chunked solver at a few chunk sizes, aligned channels and
   their combinations) is made from the one captured graph;
2. each runs on every available CPU backend (:func:`cpu_backends`: ONNX Runtime, and OpenVINO where its
   backend is registered and importable), always through :func:`lso.runtime.load` ``(path, backend=,
   threads=)``, at each thread setting (:func:`thread_settings`), on the representative shapes
   (:data:`TUNING_CASES`, seeded random inputs of the I/O spec): one warm-up run, whose output is checked
   against PyTorch FP32 with the export's tolerance (:func:`lso.export.parity.compare`), then ``repeats``
   timed runs. The plain graph on the first backend is the baseline, measured at every shape; then every
   other candidate at the smallest shape; then, shape by shape, those not more than :data:`PRUNE_RATIO` times
   slower than the best there, fastest first;
3. a step (a candidate at a shape) starts only if it fits the time budget (:data:`DEFAULT_BUDGET_S`,
   ``--tune-budget``; the PyTorch reference outputs count in it) with room left for one candidate at the
   larger shapes (costs estimated from the steps so far); the search then goes on to the larger shapes with
   what it has, and stops, keeping what it measured, with a progress line per candidate;
4. the choice is the **fastest candidate that passes parity** (sum over the shapes of each shape's best
   time); a candidate that fails parity is never chosen, however fast;
5. **memory breaks ties**: the candidates whose time is within the run's own noise of the fastest (the widest
   spread between one candidate's repeated runs, at least :data:`TIE_MIN` and at most :data:`TIE_MAX`) are
   a tie on speed; each is run once more, fastest first, in a fresh child process at the largest shape, which
   reads its own peak resident set size (``VmHWM``), and the tie goes to the lowest peak (within
   :data:`MEMORY_TIE` of it, the fastest). On a 2-core AMD EPYC the OpenVINO graphs came within 3 % of one
   another while their peaks at 512² differed by 0.4 GB. The budget keeps room for the probes a tie could need
   (one per candidate that would be complete, from two up to :data:`MEMORY_PROBES`; the search of the times
   stops that much earlier); a search that compares nothing warns, naming a budget that would. Without
   ``/proc`` (not Linux), with ``memory=False`` or where the probes fail, the fastest is chosen.

:func:`tune` returns a :class:`TuningResult`; the export writes the chosen graph and records
:meth:`TuningResult.to_dict` as the ``cpu_tuning`` block of its sidecar (the choice, every candidate's
timings and parity, the budget and the CPU model, :func:`lso.artifacts.cpu_model`). :func:`lso.runtime.load`
then runs that choice by default (:func:`tuned_defaults`); loaded on another CPU model it warns
(:class:`CpuTuningWarning`) naming both, and runs. Exporting again re-tunes.

The clock (``timer=``) and the memory probe (``peak_rss=``) are parameters so that tests drive the search with
fakes.
"""
from __future__ import annotations

import logging
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lso.errors import ArtifactError, ExportError, InputError
from lso.export.parity import DEFAULT_ATOL, ParityCase, ParityRow

__all__ = ["DEFAULT_BUDGET_S", "TUNING_CASES", "GRAPHS", "REPEATS", "PRUNE_RATIO", "SIDECAR_KEY", "GraphOptions",
           "TIE_MIN", "TIE_MAX", "MEMORY_TIE", "MEMORY_PROBES", "Candidate", "Measurement", "TuningResult",
           "CpuTuningWarning", "parse_budget", "graph_candidates", "cpu_backends", "thread_settings", "candidates",
           "apply_graph_options", "tune", "child_peak_rss", "format_tuning", "tuned_choice", "tuned_defaults"]

log = logging.getLogger(__name__)

#: Default time budget of the search, seconds (the issue's "at most 5 minutes on 2 cores").
DEFAULT_BUDGET_S = 300.0
#: The representative shapes: x4 at 256² and 512² (batch 1), smallest first (pruning uses the small one).
TUNING_CASES: tuple[ParityCase, ...] = (ParityCase(4, 256, 256), ParityCase(4, 512, 512))
#: Timed runs per shape after the warm-up (the best of them counts: the CPU may be shared).
REPEATS = 2
#: A candidate slower than this times the best so far at a shape (parity passed) is not run at the larger shapes.
PRUNE_RATIO = 1.5
#: Candidates within this fraction of the fastest's time are a tie at least (the run's measured noise, the widest
#: spread of one candidate's repeated runs, widens it up to TIE_MAX: memory never buys more time than that).
TIE_MIN = 0.01
TIE_MAX = 0.05
#: Peaks within this fraction of the lowest count as equal (then the faster wins).
MEMORY_TIE = 0.02
#: At most this many memory probes are kept room for in the budget (more run where time is left).
MEMORY_PROBES = 3
#: A memory probe's cost before its own run (a fresh interpreter importing the runtime), seconds: the estimate
#: until the first probe is measured.
PROBE_START_S = 2.0
#: The sidecar key of the tuning record.
SIDECAR_KEY = "cpu_tuning"

_TIMER_NAMES = {time.perf_counter: "time.perf_counter", time.monotonic: "time.monotonic"}


class CpuTuningWarning(UserWarning):
    """A CPU-tuned graph is loaded on another CPU model than the one it was tuned on (it still runs)."""


# ------------------------------------------------------------------------------------------ candidates
@dataclass(frozen=True)
class GraphOptions:
    """The CPU passes of one candidate graph (None: the pass is not applied)."""

    solver_chunk: int | None = None
    align_channels: int | None = None

    @property
    def name(self) -> str:
        parts = ([f"align{self.align_channels}"] if self.align_channels else []) + \
                ([f"chunk{self.solver_chunk}"] if self.solver_chunk else [])
        return "+".join(parts) or "plain"

    def to_dict(self) -> dict[str, int | None]:
        return {"solver_chunk": self.solver_chunk, "align_channels": self.align_channels}


#: The candidate graphs, in the order they are measured (the likeliest first: the budget may stop the search).
GRAPHS: tuple[GraphOptions, ...] = (
    GraphOptions(),
    GraphOptions(solver_chunk=128),
    GraphOptions(align_channels=16),
    GraphOptions(solver_chunk=128, align_channels=16),
    GraphOptions(solver_chunk=64),
    GraphOptions(solver_chunk=256),
    GraphOptions(solver_chunk=64, align_channels=16),
    GraphOptions(solver_chunk=256, align_channels=16),
)


@dataclass(frozen=True)
class Candidate:
    """One measured setting: a graph, the backend that runs it and its intra-op threads."""

    graph: GraphOptions
    backend: str
    threads: int | None = None

    @property
    def name(self) -> str:
        return f"{self.graph.name} {self.backend}" + (f" threads={self.threads}" if self.threads else "")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "graph": self.graph.to_dict(), "backend": self.backend, "threads": self.threads}


def graph_candidates(solver_chunk: int | None = None, align_channels: int | None = None) -> tuple[GraphOptions, ...]:
    """:data:`GRAPHS`, or only the graph the caller fixed (``--solver-chunk``/``--align-channels`` given with
    ``--target cpu``: then only the backend and threads are tuned)."""
    if solver_chunk or align_channels:
        return (GraphOptions(solver_chunk or None, align_channels or None),)
    return GRAPHS


def cpu_backends() -> tuple[str, ...]:
    """The CPU backends to measure: ``onnxruntime`` always; ``openvino`` when that backend is registered in
    :data:`lso.runtime.base.BACKENDS` and the ``openvino`` package is importable."""
    import importlib.util

    from lso.runtime.base import BACKENDS

    found = ["onnxruntime"]
    if "openvino" in BACKENDS and importlib.util.find_spec("openvino") is not None:
        found.append("openvino")
    return tuple(found)


def _physical_cores() -> int | None:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    cores = set(re.findall(r"physical id\s*:\s*(\d+)[\s\S]*?core id\s*:\s*(\d+)", text))
    return len(cores) or None


def thread_settings() -> tuple[int, ...]:
    """Intra-op thread counts to try: the cores this process may run on, and the physical cores where fewer
    (SMT siblings share a core's vector units), largest first."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    physical = _physical_cores()
    counts = {usable} | ({physical} if physical and physical < usable else set())
    return tuple(sorted(counts, reverse=True))


def candidates(graphs: Sequence[GraphOptions] = GRAPHS, backends: Sequence[str] | None = None,
               threads: Sequence[int | None] | None = None) -> list[Candidate]:
    """Every (graph, backend, threads) to measure, graph by graph in the order given."""
    backends = tuple(backends) if backends is not None else cpu_backends()
    threads = tuple(threads) if threads is not None else thread_settings()
    return [Candidate(g, b, t) for g in graphs for b in backends for t in threads]


def apply_graph_options(proto: Any, graph: GraphOptions) -> Any:
    """``proto`` (the plain graph; modified in place) with ``graph``'s passes applied, alignment first (as the
    export applies them)."""
    from lso.export import passes

    if graph.align_channels:
        proto = passes.align_conv_channels(proto, int(graph.align_channels))
    if graph.solver_chunk:
        proto = passes.chunk_solver(proto, int(graph.solver_chunk))
    return proto


# ------------------------------------------------------------------------------------------ budget
_BUDGET = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(s|sec|m|min)?\s*$", re.IGNORECASE)
_BUDGET_FIX = "give seconds or minutes, e.g. --tune-budget 300, 90s or 5m (more than 0)"


def parse_budget(value: float | int | str | None) -> float:
    """The tuning budget in seconds: None = :data:`DEFAULT_BUDGET_S`; a number of seconds; or ``"90s"``/``"5m"``.

    Raises:
        InputError: anything else, zero or negative, or not finite; the message says what to give.
    """
    if value is None:
        return DEFAULT_BUDGET_S
    if isinstance(value, bool):
        raise InputError(f"tune budget {value!r} is not a time: {_BUDGET_FIX}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _BUDGET.match(str(value))
        if not match:
            raise InputError(f"tune budget {value!r} is not a time: {_BUDGET_FIX}")
        seconds = float(match.group(1)) * (60.0 if (match.group(2) or "s").lower().startswith("m") else 1.0)
    if not math.isfinite(seconds) or seconds <= 0:
        raise InputError(f"tune budget {value!r} must be more than 0 seconds: {_BUDGET_FIX}")
    return seconds


# ------------------------------------------------------------------------------------------ measuring
@dataclass
class Measurement:
    """What one candidate did: per-shape timings (seconds), its parity rows and its status.

    ``status`` is ``"ok"`` (every shape measured, parity passed), ``"parity failed"``, ``"slower"`` (pruned
    after a shape), ``"stopped: budget"`` (measured at some shapes when the budget ran out), ``"not measured:
    budget"`` or ``"error: ..."`` (``"running"`` only during the search).
    """

    candidate: Candidate
    times_s: dict[str, list[float]] = field(default_factory=dict)
    parity: list[ParityRow] = field(default_factory=list)
    status: str = "not measured: budget"
    seconds: float = 0.0  # what measuring it cost, building its graph included
    peak_bytes: int | None = None  # peak RSS of a fresh process running it at the largest shape (ties only)
    memory: str = ""  # "" (not a tie), "measured", "not measured: budget", "not measured: no /proc", "error: ..."

    @property
    def passed(self) -> bool:
        """Every shape it ran on is within the tolerance (and it ran on at least one)."""
        return bool(self.parity) and all(r.passed for r in self.parity)

    @property
    def complete(self) -> bool:
        return self.status == "ok"

    def best_s(self, case: str) -> float | None:
        times = self.times_s.get(case)
        return min(times) if times else None

    @property
    def score_s(self) -> float | None:
        """Sum over the shapes of each one's best time (None unless complete)."""
        if not self.complete:
            return None
        return sum(min(t) for t in self.times_s.values())

    @property
    def spread(self) -> float:
        """The widest relative spread of its repeated runs at one shape (max/min - 1; 0 with one run)."""
        return max((max(t) / min(t) - 1.0 for t in self.times_s.values() if len(t) > 1 and min(t) > 0), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        # passed: None where parity was never checked (not measured), not False (which reads as a failure)
        return {**self.candidate.to_dict(), "status": self.status, "passed": self.passed if self.parity else None,
                "score_s": _round(self.score_s),
                "best_s": {case: _round(min(t)) for case, t in self.times_s.items()},
                "times_s": {case: [_round(v) for v in t] for case, t in self.times_s.items()},
                "parity": [{"case": r.case, "max_abs": r.max_abs,
                            "psnr_db": "inf" if math.isinf(r.psnr_db) else round(r.psnr_db, 2),
                            "passed": r.passed} for r in self.parity],
                "seconds": _round(self.seconds, 2),
                **({"memory": self.memory} if self.memory else {}),
                **({"peak_mib": round(self.peak_bytes / 2**20, 1)} if self.peak_bytes else {})}


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


@dataclass
class TuningResult:
    """The search: every measurement, the choice, the budget and the CPU it ran on."""

    measurements: list[Measurement]
    choice: Measurement
    budget_s: float
    elapsed_s: float
    stopped_early: bool
    cases: tuple[ParityCase, ...]
    repeats: int
    atol: float
    cpu: str
    cores: int | None
    timer: str = "time.perf_counter"
    fastest: Measurement | None = None  # the fastest passing candidate (the choice unless memory broke a tie)
    tie_window: float = TIE_MIN  # candidates within this fraction of the fastest's time were a tie
    memory_case: str | None = None  # the shape the tied candidates' peaks were measured at

    @property
    def graph(self) -> GraphOptions:
        return self.choice.candidate.graph

    def to_dict(self) -> dict[str, Any]:
        """The sidecar's ``cpu_tuning`` block."""
        choice = self.choice
        fastest = self.fastest or choice
        return {
            "choice": {**choice.candidate.to_dict(), "score_s": _round(choice.score_s)},
            "rule": (f"the fastest candidate that passes parity; candidates within {self.tie_window:.1%} of its time "
                     f"(this run's noise, at least {TIE_MIN:.0%}, at most {TIE_MAX:.0%}) are a tie, which the lowest "
                     f"peak RSS of a fresh process at {self.memory_case or 'the largest shape'} breaks"),
            "fastest": {"name": fastest.candidate.name, "score_s": _round(fastest.score_s)},
            "tie_window": round(self.tie_window, 4),
            "memory_case": self.memory_case,
            "cpu": self.cpu,
            "cores": self.cores,
            "budget_s": self.budget_s,
            "elapsed_s": round(self.elapsed_s, 2),
            "stopped_early": self.stopped_early,
            "measured": sum(1 for m in self.measurements if not m.status.startswith("not measured")),
            "complete": sum(1 for m in self.measurements if m.complete),
            "cases": [c.name for c in self.cases],
            "repeats": self.repeats,
            "score": "sum over the cases of each case's best time, s",
            "parity_atol": self.atol,
            "parity_reference": "PyTorch eager (folded solver), CPU, float32",
            "timer": self.timer,
            "candidates": [m.to_dict() for m in self.measurements],
        }

    def format_table(self) -> str:
        """:func:`format_tuning` of :meth:`to_dict`."""
        return format_tuning(self.to_dict())


def format_tuning(block: Mapping[str, Any]) -> str:
    """A sidecar's ``cpu_tuning`` block as text: one line on the choice, then a Markdown table of the candidates."""
    cases = list(block.get("cases") or [])
    choice = block.get("choice") or {}
    head = (f"tuned on {block.get('cpu')} ({block.get('cores')} threads usable) in {block.get('elapsed_s')} s of a "
            f"{block.get('budget_s')} s budget{' (stopped early)' if block.get('stopped_early') else ''}: "
            f"{block.get('measured')} of {len(block.get('candidates') or [])} candidates measured, "
            f"{block.get('complete')} at every shape; chose "
            f"{choice.get('name')} ({choice.get('score_s')} s = sum of the best times at {', '.join(cases)})")
    fastest = (block.get("fastest") or {}).get("name")
    rows = list(block.get("candidates") or [])
    probed = [r for r in rows if r.get("memory")]
    if probed:
        measured = sum(1 for r in probed if r.get("peak_mib"))
        head += (f". Memory broke the tie on time: {len(probed)} candidates were within "
                 f"{block.get('tie_window', 0):.1%} of the fastest ({fastest}; the window is this run's own timing "
                 f"noise, {TIE_MIN:.0%} to {TIE_MAX:.0%}), {measured} of them had their peak RSS measured in a fresh "
                 f"process at {block.get('memory_case')}, and the choice had the lowest (peaks within "
                 f"{MEMORY_TIE:.0%} of it count as equal, and then the faster wins)")
    memory = f" | peak MiB at {block.get('memory_case')}" if probed else ""
    lines = [head, "", "| candidate | " + " | ".join(f"{n} best s" for n in cases) + memory
             + " | parity max abs | status |", "|---|" + "---|" * (len(cases) + bool(probed)) + "---|---|"]
    for row in rows:
        best = row.get("best_s") or {}
        cells = [f"{best[n]:.3f}" if best.get(n) is not None else "–" for n in cases]
        if probed:
            cells.append(f"{row['peak_mib']:.0f}" if row.get("peak_mib") else (row.get("memory") or "–"))
        worst = max((r["max_abs"] for r in row.get("parity") or []), default=None)
        mark = " **chosen**" if row.get("name") == choice.get("name") else ""
        lines.append(f"| {row.get('name')}{mark} | " + " | ".join(cells) + " | "
                     + (f"{worst:.1e}" if worst is not None else "–") + f" | {row.get('status')} |")
    return "\n".join(lines)


def _run(runner: Any, inputs: dict) -> Any:
    from lso import io_spec

    return runner.fuse(inputs[io_spec.HR_MSI], inputs[io_spec.LR_HSI], extent=inputs.get(io_spec.EXTENT))


def tune(
    build: Callable[[GraphOptions], Any],
    reference: Any,
    *,
    graphs: Sequence[GraphOptions] = GRAPHS,
    backends: Sequence[str] | None = None,
    threads: Sequence[int | None] | None = None,
    cases: Sequence[ParityCase] = TUNING_CASES,
    budget_s: float | int | str | None = None,
    repeats: int = REPEATS,
    atol: float = DEFAULT_ATOL,
    seed: int = 0,
    tileable: bool = False,
    timer: Callable[[], float] = time.perf_counter,
    workdir: str | os.PathLike | None = None,
    peak_rss: Callable[..., int | None] | None = None,
    memory: bool = True,
) -> TuningResult:
    """Measure the candidates and choose the fastest that passes parity, memory breaking ties.

    The order, so that a budget that runs out still leaves the best answer it can: the first candidate (the
    plain graph) is measured at every shape whatever the budget, as the baseline; then every other candidate at
    the first (smallest) shape; then, shape by shape, the candidates not pruned at the shape before, fastest
    first. A (candidate, shape) step starts only if it fits in the budget together with what one candidate
    would still need at the larger shapes (the mean cost of the steps at each shape so far), so that the
    fastest candidates at the small shape can still be measured at the large ones, and room for the memory
    probes of the tie it could make (one per candidate that would be complete, from two up to
    :data:`MEMORY_PROBES`). Only a candidate measured at every shape can be chosen. The candidates
    within the tie window of the fastest (its time, widened by the run's noise: :data:`TIE_MIN` to
    :data:`TIE_MAX`) are probed, fastest first while the budget lasts, and the one with the lowest peak RSS wins.

    Args:
        build: makes the ONNX ``ModelProto`` of a candidate graph (the export passes the captured plain graph
            through :func:`apply_graph_options`).
        reference: the PyTorch model (FP32, CPU) whose outputs every candidate must match.
        graphs, backends, threads: what to try (default: :data:`GRAPHS`, :func:`cpu_backends`,
            :func:`thread_settings`).
        cases: the shapes, smallest first (inputs drawn as :func:`lso.export.parity.case_inputs` draws them,
            from ``seed``).
        budget_s: the time budget (:func:`parse_budget`; default :data:`DEFAULT_BUDGET_S`); the PyTorch reference
            outputs count in it.
        repeats: timed runs per shape after the warm-up.
        atol: the export's parity tolerance (max abs error against ``reference``).
        tileable: the graphs take the ``extent`` input.
        timer: the clock (seconds, monotonic): the timings and the budget both read it.
        workdir: where the candidate graphs are written (default: a temporary folder, removed afterwards).
        peak_rss: the memory probe, ``peak_rss(candidate, graph_path, inputs, timeout_s=)`` -> peak RSS in bytes
            (None: not measurable here); default :func:`child_peak_rss` (a fresh child process).
        memory: False: no memory probes and no room kept for them (the fastest is chosen).

    Returns:
        The :class:`TuningResult`; ``result.graph`` is the chosen graph's options.

    Raises:
        ExportError: no candidate passed parity (the table says why).
        InputError: a bad budget, no candidate, no case, ``repeats`` < 1.
    """
    from lso.artifacts import cpu_model
    from lso.export.parity import case_inputs

    budget = parse_budget(budget_s)
    todo = candidates(graphs, backends, threads)
    cases = tuple(cases)
    if not todo or not cases:
        raise InputError("nothing to tune: no candidate graph, backend, thread setting or shape")
    if int(repeats) < 1:
        raise InputError(f"repeats must be at least 1, got {repeats}")
    start = timer()
    cfg = reference.config
    feeds = [case_inputs(c, cfg.n_msi_bands, cfg.n_bands, seed=seed, index=i, tileable=tileable)
             for i, c in enumerate(cases)]
    measurements = [Measurement(c) for c in todo]
    search = _Search(measurements, cases, feeds, reference, build, int(repeats), atol, timer)
    stopped, held = False, 0.0
    with tempfile.TemporaryDirectory(prefix="lso-tune-", dir=workdir) as folder:
        search.folder = folder
        search.run(measurements[0], range(len(cases)))  # the baseline, at every shape
        _progress(measurements[0], cases, timer() - start, budget)
        for index in range(len(cases)):
            queue = measurements[1:] if index == 0 else sorted(
                (m for m in measurements[1:] if m.status == "running" and len(m.times_s) == index),
                key=lambda m: m.best_s(cases[index - 1].name) or math.inf)
            for m in queue:
                # this step, what one candidate would still need at the larger shapes, and the memory probes of
                # the tie it could make (none until a second candidate would be complete)
                complete = sum(1 for other in measurements if other.complete) + 1
                probes = min(MEMORY_PROBES, complete) if memory and complete > 1 else 0
                reserve = probes * search.probe_cost()
                if timer() - start + sum(search.mean_cost(i) for i in range(index, len(cases))) + reserve > budget:
                    stopped, held = True, reserve
                    break  # on to the larger shapes with the candidates measured so far, fastest first
                search.run(m, [index])
                if m.status != "running":
                    _progress(m, cases, timer() - start, budget)
        for m in measurements:
            if m.status == "running":
                m.status = "stopped: budget"
                _progress(m, cases, timer() - start, budget)
        complete = sum(1 for m in measurements if m.complete)
        if stopped:
            log.info("tuning: budget of %.0f s reached after %.0f s (%.0f s held for the memory tie-break): %d of %d "
                     "candidates measured at every shape", budget, timer() - start, held, complete, len(measurements))
        if complete < 2 and len(measurements) > 1:
            log.warning("CPU tuning compared nothing: only %s was measured at every shape, in %.0f s of a %.0f s "
                        "budget (the PyTorch reference outputs and that baseline always run); give it more time, "
                        "e.g. --tune-budget %.0fs or more on this machine, for the %d other candidates to be compared",
                        measurements[0].candidate.name, timer() - start, budget,
                        max(DEFAULT_BUDGET_S, 5 * (timer() - start)), len(measurements) - 1)
        passing = [m for m in measurements if m.complete and m.passed]
        if not passing:
            table = "\n".join(f"  {m.candidate.name}: {m.status}" for m in measurements)
            raise ExportError(f"CPU tuning: no candidate passed parity (max abs error <= {atol:g} against PyTorch "
                              f"FP32) on {', '.join(c.name for c in cases)}; no file written.\n{table}")
        fastest = min(passing, key=lambda m: m.score_s or 0.0)  # the first of equals: the preference order
        window = min(TIE_MAX, max(TIE_MIN, max(m.spread for m in passing)))
        tied = sorted((m for m in passing if (m.score_s or 0.0) <= (fastest.score_s or 0.0) * (1.0 + window)),
                      key=lambda m: m.score_s or 0.0)
        choice = fastest
        if memory and len(tied) > 1:
            search.probe(tied, peak_rss or child_peak_rss, start, budget)
            measured = [m for m in tied if m.peak_bytes]
            if len(measured) > 1:
                low = min(m.peak_bytes or 0 for m in measured)
                choice = min((m for m in measured if (m.peak_bytes or 0) <= low * (1.0 + MEMORY_TIE)),
                             key=lambda m: m.score_s or 0.0)
    result = TuningResult(measurements, choice, budget, timer() - start, stopped, cases, int(repeats), atol,
                          cpu_model(), thread_settings()[0], _TIMER_NAMES.get(timer, getattr(timer, "__name__",
                                                                                             type(timer).__name__)),
                          fastest=fastest, tie_window=window, memory_case=cases[-1].name)
    log.info("tuning: chose %s (%.3f s over %s%s) of %d measured candidates in %.0f s", choice.candidate.name,
             choice.score_s or 0.0, ", ".join(c.name for c in cases),
             "" if choice is fastest else f"; a tie on time with the fastest, {fastest.candidate.name}, "
                                          f"{fastest.score_s or 0.0:.3f} s, and the lowest peak memory",
             result.to_dict()["measured"], result.elapsed_s)
    return result


_MEMORY_CHILD = """
import sys
import numpy as np
import lso.runtime
from lso import io_spec
path, backend, threads, feeds = sys.argv[1:5]
inputs = dict(np.load(feeds))
with lso.runtime.load(path, backend=backend, threads=int(threads) or None) as runner:
    runner.fuse(inputs[io_spec.HR_MSI], inputs[io_spec.LR_HSI], extent=inputs.get(io_spec.EXTENT))
from lso.memory import proc_status_kib
print(proc_status_kib("VmHWM") * 1024)
"""


def child_peak_rss(candidate: Candidate, path: str | os.PathLike, inputs: Mapping[str, Any], *,
                   timeout_s: float | None = None) -> int | None:
    """The peak resident set size (bytes) of a fresh Python process that loads ``path`` with the candidate's
    backend and threads (:func:`lso.runtime.load`) and fuses ``inputs`` once: its own ``VmHWM``, the figure
    ``benchmarks/memory_profile.py`` reports (a child's ``ru_maxrss`` would carry this process's peak across
    ``fork`` + ``exec``). None where ``/proc`` is not there (not Linux).

    Raises:
        RuntimeError: the child failed (its last line of output) or ran past ``timeout_s``.
    """
    import numpy as np

    if not Path("/proc/self/status").is_file():
        return None
    feeds = Path(path).with_name("memory-inputs.npz")
    if not feeds.is_file():
        arrays: dict[str, Any] = {name: np.asarray(value) for name, value in inputs.items()}
        np.savez(feeds, **arrays)
    cmd = [sys.executable, "-c", _MEMORY_CHILD, str(path), candidate.backend, str(candidate.threads or 0), str(feeds)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"the memory probe ran past {timeout_s:.0f} s") from exc
    lines = (proc.stdout or "").strip().splitlines()
    if proc.returncode != 0 or not lines or not lines[-1].isdigit():
        last = ((proc.stderr or proc.stdout or "").strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        raise RuntimeError(f"the memory probe failed: {last}")
    return int(lines[-1])


@dataclass
class _Search:
    """The state of one :func:`tune`: runs (candidate, shapes) steps and fills the measurements."""

    measurements: list[Measurement]
    cases: tuple[ParityCase, ...]
    feeds: list[dict]
    reference: Any
    build: Callable[[GraphOptions], Any]
    repeats: int
    atol: float
    timer: Callable[[], float]
    folder: str = ""
    expected: dict[int, Any] = field(default_factory=dict)  # PyTorch's outputs, made when a shape is first needed
    step_costs: dict[int, list[float]] = field(default_factory=dict)  # shape index -> what each step there cost
    files: dict[GraphOptions, Path | Exception] = field(default_factory=dict)
    probe_costs: list[float] = field(default_factory=list)  # what each memory probe cost

    def reference_output(self, index: int) -> Any:
        if index not in self.expected:
            import torch

            from lso import io_spec

            inputs = self.feeds[index]
            args = [torch.from_numpy(inputs[n]) for n in (io_spec.HR_MSI, io_spec.LR_HSI, io_spec.EXTENT)
                    if n in inputs]
            t0 = self.timer()
            with torch.inference_mode():
                self.expected[index] = self.reference.eval()(*args).numpy()
            log.info("tuning: PyTorch FP32 reference at %s in %.1f s", self.cases[index].name, self.timer() - t0)
        return self.expected[index]

    def graph_file(self, graph: GraphOptions) -> Path:
        """The candidate graph on disk (built once per graph; a graph that failed to build fails every time)."""
        if graph not in self.files:
            from lso.deps import require

            onnx = require("onnx")
            path = Path(self.folder) / f"candidate-{graph.name.replace('+', '-')}.onnx"
            try:
                onnx.save_model(self.build(graph), str(path), save_as_external_data=False)
                self.files[graph] = path
            except Exception as exc:  # a pass that does not apply to this graph: its candidates fail, others run
                self.files[graph] = exc
        found = self.files[graph]
        if isinstance(found, Exception):
            raise found
        return found

    def mean_cost(self, index: int) -> float:
        """The mean cost of the steps at shape ``index`` so far (0 before the first)."""
        costs = self.step_costs.get(index) or [0.0]
        return sum(costs) / len(costs)

    def probe_cost(self) -> float:
        """The expected cost of a memory probe: the mean of those so far, else one run at the largest shape (a
        step there is a warm-up and ``repeats`` runs) plus :data:`PROBE_START_S`."""
        if self.probe_costs:
            return sum(self.probe_costs) / len(self.probe_costs)
        return self.mean_cost(len(self.cases) - 1) / (self.repeats + 1) + PROBE_START_S

    def probe(self, tied: Sequence[Measurement], peak_rss: Callable[..., int | None], start: float,
              budget: float) -> None:
        """Measure the peak memory of the ``tied`` candidates at the largest shape, fastest first, while each
        probe fits in the budget; fills ``peak_bytes`` and ``memory``."""
        case, inputs = self.cases[-1], self.feeds[-1]
        for m in tied:
            expected = self.probe_cost()
            if self.timer() - start + expected > budget:
                m.memory = "not measured: budget"
                continue
            t0 = self.timer()
            try:
                path = self.graph_file(m.candidate.graph)
                peak = peak_rss(m.candidate, path, inputs, timeout_s=max(60.0, 10.0 * expected))
                m.peak_bytes = int(peak) if peak else None
                m.memory = "measured" if peak else "not measured: no /proc"
            except Exception as exc:  # a probe that fails leaves the candidate out of the tie-break, not the search
                m.memory = f"error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
            cost = self.timer() - t0
            self.probe_costs.append(cost)
            m.seconds += cost
            log.info("tuning memory %s: %s at %s (%.1f s)", m.candidate.name,
                     f"peak {m.peak_bytes / 2**20:.0f} MiB" if m.peak_bytes else m.memory, case.name, cost)
            if m.memory == "not measured: no /proc":
                break  # not measurable on this system: no point in the others

    def best_passing(self, index: int) -> float | None:
        """The best time at shape ``index`` of the candidates still in the race."""
        name = self.cases[index].name
        best = [b for m in self.measurements if m.passed and m.status in ("ok", "running")
                and (b := m.best_s(name)) is not None]
        return min(best) if best else None

    def run(self, m: Measurement, indices: Sequence[int]) -> None:
        """Measure ``m`` at the shapes ``indices`` in one session: warm-up + parity, then the timed runs. Leaves
        ``m.status`` ``"running"`` (shapes to go), ``"ok"``, ``"parity failed"``, ``"slower"`` or ``"error: ..."``."""
        import lso.runtime
        from lso.export.parity import compare

        timer, cand = self.timer, m.candidate
        m.status = "running"
        t_step = timer()
        try:
            path = self.graph_file(cand.graph)
            wanted = {i: self.reference_output(i) for i in indices}
            m.seconds += timer() - t_step
            t_step = timer()  # PyTorch's time is not the candidate's
            with lso.runtime.load(path, backend=cand.backend, threads=cand.threads) as runner:
                for index in indices:
                    case, inputs = self.cases[index], self.feeds[index]
                    t0 = timer()
                    got = _run(runner, inputs)  # the warm-up: its output is the one checked
                    row = compare(case, inputs, got, wanted[index], atol=self.atol, run_s=timer() - t0)
                    m.parity.append(row)
                    if not row.passed:
                        m.status = "parity failed"
                        break
                    times = []
                    for _ in range(self.repeats):
                        t0 = timer()
                        _run(runner, inputs)
                        times.append(timer() - t0)
                    m.times_s[case.name] = times
                    self.step_costs.setdefault(index, []).append(timer() - t_step)
                    m.seconds += timer() - t_step
                    t_step = timer()
                    best = self.best_passing(index)
                    if best is not None and min(times) > PRUNE_RATIO * best:
                        m.status = "slower"
                        break
        except Exception as exc:  # a backend that cannot run this graph is a result, not the end of the search
            m.status = f"error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
            log.debug("tuning: %s failed", cand.name, exc_info=True)
        m.seconds += timer() - t_step
        if m.status == "running" and len(m.times_s) == len(self.cases):
            m.status = "ok"


def _progress(m: Measurement, cases: Sequence[ParityCase], elapsed: float, budget: float) -> None:
    """The progress line of a candidate whose measuring has ended."""
    times = ", ".join(f"{c.name} {b:.3f} s" for c in cases if (b := m.best_s(c.name)) is not None)
    worst = max((r.max_abs for r in m.parity), default=None)
    parity = f"parity max abs {worst:.1e}" if worst is not None else "no parity"
    log.info("tuning %s: %s; %s; %s (%.0f of %.0f s)", m.candidate.name, times or "no timing", parity, m.status,
             elapsed, budget)


# ------------------------------------------------------------------------------------------ loading
def tuned_choice(sidecar: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The ``choice`` of a sidecar's ``cpu_tuning`` block with the CPU it was made on, or None if it has none."""
    block = (sidecar or {}).get(SIDECAR_KEY)
    if not isinstance(block, dict) or not isinstance(block.get("choice"), dict):
        return None
    choice = block["choice"]
    if not isinstance(choice.get("backend"), str):
        return None
    return {**choice, "cpu": str(block.get("cpu") or "an unrecorded CPU")}


def tuned_defaults(path: str | os.PathLike, backend: str | None, options: dict[str, Any], *,
                   device: Any = None) -> tuple[str | None, dict[str, Any]]:
    """What :func:`lso.runtime.load` runs a CPU-tuned graph with: ``(backend, options)``.

    For what the caller left open — ``backend`` None, no ``threads`` (or None) — the values recorded by
    ``lso export --target cpu`` in the graph's sidecar; anything the caller gave wins. The recorded threads
    apply only where the recorded backend runs. A graph without a tuning record, or asked for on a device
    other than the CPU, is returned as given. On another CPU model than the one recorded it warns
    (:class:`CpuTuningWarning`, naming both) and runs the recorded choice all the same; a recorded backend that
    is not available here falls back to the suffix's, with a warning.
    """
    from lso import artifacts
    from lso.runtime.base import BACKENDS

    if device is not None and str(device) != "cpu":
        return backend, options
    try:
        choice = tuned_choice(artifacts.read_sidecar(path, verify=False))
    except ArtifactError:
        return backend, options  # an unreadable sidecar: the runner reports it when it opens the graph
    if choice is None:
        return backend, options
    name = Path(path).name
    here = artifacts.cpu_model()
    if choice["cpu"] != here:
        message = (f"{name} was tuned on {choice['cpu']} (lso export --target cpu chose {choice.get('name')}); "
                   f"this CPU is {here}: it runs with that choice, which may not be the fastest here; export it "
                   f"again on this machine (lso export --target cpu) to re-tune")
        warnings.warn(message, CpuTuningWarning, stacklevel=3)  # at the caller of lso.runtime.load; on stderr
    options = dict(options)
    if backend is None:
        if choice["backend"] in BACKENDS and (choice["backend"] != "openvino" or "openvino" in cpu_backends()):
            backend = choice["backend"]
        else:
            warnings.warn(f"{name} was tuned to run on {choice['backend']}, which is not available here; running it "
                          f"on the default backend for its suffix", CpuTuningWarning, stacklevel=3)
            return backend, options
    if backend == choice["backend"] and options.get("threads") is None and choice.get("threads"):
        options["threads"] = int(choice["threads"])
    log.info("%s: running the CPU tuning's choice, %s (recorded by lso export --target cpu on %s): backend %s, "
             "threads %s", name, choice.get("name"), choice["cpu"], backend, options.get("threads") or "default")
    return backend, options
