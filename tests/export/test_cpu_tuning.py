"""lso export --target cpu: the CPU deployment tuned where it runs (lso.export.cpu_tuning, issue 20).

A fake clock drives every timing (no timing asserts): a wrapper of ``lso.runtime.load`` runs the real ONNX Runtime
runner on the tiny graph and advances the clock by a cost set per (graph, backend), and can spoil a candidate's
output so that it fails parity. One real capture for the module (the tuned export); the other searches start
from the shared tiny export (``ex_onnx``).
"""
from __future__ import annotations

import dataclasses
import inspect
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

import lso.runtime
from lso import cli
from lso.errors import ExportError, InputError
from lso.export import cpu_tuning
from lso.export.cpu_tuning import CpuTuningWarning, GraphOptions
from lso.export.parity import ParityCase
from lso.runtime.base import BACKENDS, Backend

pytest.importorskip("onnxruntime")

CASES = (ParityCase(4, 32, 32), ParityCase(4, 64, 64))
PLAIN, CHUNK, ALIGN = GraphOptions(), GraphOptions(solver_chunk=16), GraphOptions(align_channels=16)
GRAPHS = (PLAIN, CHUNK, ALIGN)
FAKE = "fakecpu"  # a second CPU backend (registered only where a test loads through it)
TUNED_CPU = "Tuning Test CPU (family 1 model 2)"


class Clock:
    """Seconds that pass only when a fake runner says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class TimedRunner:
    """The real runner; each fuse advances the clock by ``cost`` and, if ``spoil``, returns a wrong image."""

    def __init__(self, runner, clock: Clock, cost: float, spoil: bool) -> None:
        self.runner, self.clock, self.cost, self.spoil = runner, clock, cost, spoil

    def __enter__(self):
        self.runner.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.runner.__exit__(*exc)

    def fuse(self, hr, lr, **kwargs):
        out = self.runner.fuse(hr, lr, **kwargs)
        self.clock.now += self.cost
        return out + 1e-2 if self.spoil else out


def graph_of(path) -> str:
    """The candidate's graph name from its file (``candidate-align16-chunk16.onnx`` -> ``align16+chunk16``)."""
    return Path(path).stem.removeprefix("candidate-").replace("-", "+")


def fake_load(monkeypatch, clock: Clock, costs: dict, spoil: set = frozenset()) -> list:
    """Route the search's lso.runtime.load through TimedRunner; returns the list of (graph, backend, threads) loaded."""
    real = lso.runtime.load
    calls = []

    def load(path, backend=None, threads=None, **options):
        key = (graph_of(path), backend)
        calls.append((*key, threads))
        runner = real(path, backend="onnxruntime", threads=threads, **options)
        return TimedRunner(runner, clock, costs[key], key in spoil)

    monkeypatch.setattr(lso.runtime, "load", load)
    return calls


@pytest.fixture
def build(ex_onnx):
    import onnx

    return lambda graph: cpu_tuning.apply_graph_options(onnx.load(str(ex_onnx)), graph)


COSTS = {("plain", "onnxruntime"): 0.8, ("plain", FAKE): 0.75,
         ("chunk16", "onnxruntime"): 0.7, ("chunk16", FAKE): 0.3,   # the fastest, but spoiled: fails parity
         ("align16", "onnxruntime"): 0.65, ("align16", FAKE): 0.6}  # the fastest that passes
SPOILED = {("chunk16", FAKE)}


@pytest.fixture(scope="module")
def tuned(ex_model, tmp_path_factory):
    """``ex_model`` exported with target="cpu": the search of COSTS on a fake clock, on TUNED_CPU."""
    from lso.export import export_onnx

    out = tmp_path_factory.mktemp("tuned") / "tiny.cpu.onnx"
    clock = Clock()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("lso.artifacts.cpu_model", lambda: TUNED_CPU)
        calls = fake_load(mp, clock, COSTS, SPOILED)
        export_onnx(ex_model, out, target="cpu", cases=[ParityCase.parse("4:32x32")], tune_budget="5m",
                    tuning={"cases": CASES, "graphs": GRAPHS, "backends": ("onnxruntime", FAKE), "threads": (1,),
                            "timer": clock})
    return out, calls


# ------------------------------------------------------------------------------------------ the choice
def test_fastest_passing_candidate_is_written_and_recorded(tuned):
    import onnx

    from lso.artifacts import read_sidecar
    from lso.export.variants import read_variant

    out, calls = tuned
    assert len(set(calls)) == 6  # every candidate measured
    side = read_sidecar(out)
    block = side["cpu_tuning"]
    assert block["choice"]["name"] == "align16 fakecpu threads=1"
    assert block["choice"]["graph"] == {"solver_chunk": None, "align_channels": 16}
    assert (block["choice"]["backend"], block["choice"]["threads"]) == (FAKE, 1)
    assert block["cpu"] == TUNED_CPU and block["budget_s"] == 300.0 and not block["stopped_early"]
    assert block["cases"] == [c.name for c in CASES] and block["timer"] == "Clock"
    rows = {r["name"]: r for r in block["candidates"]}
    assert len(rows) == 6
    assert rows["chunk16 fakecpu threads=1"]["status"] == "parity failed"
    assert not rows["chunk16 fakecpu threads=1"]["passed"]
    assert rows["align16 fakecpu threads=1"]["best_s"] == {"x4 32x32": 0.6, "x4 64x64": 0.6}
    assert rows["align16 fakecpu threads=1"]["score_s"] == pytest.approx(1.2)
    assert all(r["passed"] and r["status"] == "ok" for n, r in rows.items() if n != "chunk16 fakecpu threads=1")
    assert all(p["max_abs"] <= side["parity"]["atol"] for r in rows.values() if r["passed"] for p in r["parity"])
    # the artifact is the chosen graph: aligned, not chunked, the cpu variant, parity-checked as every export
    assert side["align_channels"] == 16 and side["solver_chunk"] is None
    assert side["variant"] == "cpu" and side["passes"] == ["align_conv_channels:16"]
    assert read_variant(onnx.load(str(out))).passes == ("align_conv_channels:16",)
    assert side["parity"]["passed"]


def test_a_candidate_that_fails_parity_is_never_chosen(monkeypatch, build, ex_model):
    clock = Clock()
    costs = {("plain", "onnxruntime"): 1.0, ("chunk16", "onnxruntime"): 0.01, ("align16", "onnxruntime"): 2.0}
    fake_load(monkeypatch, clock, costs, spoil={("chunk16", "onnxruntime")})
    result = cpu_tuning.tune(build, ex_model, graphs=GRAPHS, backends=("onnxruntime",), threads=(2,), cases=CASES,
                             timer=clock)
    by_graph = {m.candidate.graph: m for m in result.measurements}
    assert by_graph[CHUNK].status == "parity failed" and by_graph[CHUNK].parity[0].max_abs > 1e-3
    assert result.graph == PLAIN and result.choice.candidate.threads == 2
    assert "parity failed" in result.format_table() and "**chosen**" in result.format_table()


def test_no_passing_candidate_is_an_export_error(monkeypatch, build, ex_model):
    clock = Clock()
    fake_load(monkeypatch, clock, {("plain", "onnxruntime"): 1.0}, spoil={("plain", "onnxruntime")})
    with pytest.raises(ExportError, match="no candidate passed parity"):
        cpu_tuning.tune(build, ex_model, graphs=(PLAIN,), backends=("onnxruntime",), threads=(1,), cases=CASES[:1],
                        timer=clock)


def test_slower_candidates_are_not_run_at_the_larger_shapes(monkeypatch, build, ex_model):
    clock = Clock()
    costs = {("plain", "onnxruntime"): 1.0, ("chunk16", "onnxruntime"): 5.0}
    calls = fake_load(monkeypatch, clock, costs)
    result = cpu_tuning.tune(build, ex_model, graphs=(PLAIN, CHUNK), backends=("onnxruntime",), threads=(1,),
                             cases=CASES, timer=clock)
    slow = result.measurements[1]
    assert slow.status == "slower" and list(slow.times_s) == [CASES[0].name]
    assert result.graph == PLAIN and len(calls) == 2


# ------------------------------------------------------------------------------------------ the budget
def test_the_budget_stops_the_search_and_keeps_the_best_so_far(monkeypatch, build, ex_model, caplog):
    clock = Clock()
    costs = {("plain", "onnxruntime"): 10.0, ("chunk16", "onnxruntime"): 1.0, ("align16", "onnxruntime"): 1.0}
    calls = fake_load(monkeypatch, clock, costs)
    # the baseline takes 2 shapes x (warm-up + 2 runs) x 10 s = 60 s, always; a step at the first shape is
    # estimated at its 30 s there: 90 s does not fit in 80 s
    result = cpu_tuning.tune(build, ex_model, graphs=GRAPHS, backends=("onnxruntime",), threads=(1,), cases=CASES,
                             budget_s="80s", timer=clock)
    assert len(calls) == 1 and result.stopped_early and result.elapsed_s == pytest.approx(60.0)
    assert [m.status for m in result.measurements] == ["ok", "not measured: budget", "not measured: budget"]
    assert result.graph == PLAIN
    block = result.to_dict()
    assert block["measured"] == 1 and block["budget_s"] == 80.0 and block["stopped_early"]
    assert [r["passed"] for r in block["candidates"]] == [True, None, None]  # never checked, not failed
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("compared nothing" in w and "--tune-budget 300s" in w for w in warned), warned


def test_the_budget_keeps_room_for_the_fastest_at_the_larger_shape(monkeypatch, build, ex_model):
    clock = Clock()
    costs = {("plain", "onnxruntime"): 1.0, ("chunk16", "onnxruntime"): 0.9, ("align16", "onnxruntime"): 0.9}
    calls = fake_load(monkeypatch, clock, costs)
    # baseline 6 s (3 s per shape); chunk16 at the first shape fits with room for its second (6 + 3 + 3 <= 13);
    # align16 would not leave that room (8.7 + 2.85 + 3 > 13), so chunk16 goes on to the second shape instead
    # (no memory probes: they would keep room of their own, see test_the_budget_keeps_room_for_memory_probes)
    result = cpu_tuning.tune(build, ex_model, graphs=GRAPHS, backends=("onnxruntime",), threads=(1,), cases=CASES,
                             budget_s=13, timer=clock, memory=False)
    assert [c[0] for c in calls] == ["plain", "chunk16", "chunk16"]
    assert [m.status for m in result.measurements] == ["ok", "ok", "not measured: budget"]
    assert result.graph == CHUNK and result.stopped_early and result.elapsed_s <= 13


def test_candidates_cut_short_by_the_budget_are_not_chosen(monkeypatch, build, ex_model):
    clock = Clock()
    costs = {("plain", "onnxruntime"): 1.0, ("chunk16", "onnxruntime"): 1.4, ("align16", "onnxruntime"): 0.9}
    fake_load(monkeypatch, clock, costs)
    # both run at the first shape (to 12.9 s); at the second, align16 (the faster) goes first (to 15.6 s) and
    # chunk16 no longer fits in 17 s: measured at one shape only, it cannot be chosen
    result = cpu_tuning.tune(build, ex_model, graphs=GRAPHS, backends=("onnxruntime",), threads=(1,), cases=CASES,
                             budget_s=17, timer=clock, memory=False)
    assert [m.status for m in result.measurements] == ["ok", "stopped: budget", "ok"]
    assert list(result.measurements[1].times_s) == [CASES[0].name]
    assert result.graph == ALIGN and result.stopped_early


def test_larger_shapes_go_to_the_fastest_first(monkeypatch, build, ex_model):
    clock = Clock()
    costs = {("plain", "onnxruntime"): 1.0, ("chunk16", "onnxruntime"): 0.9, ("align16", "onnxruntime"): 0.7}
    calls = fake_load(monkeypatch, clock, costs)
    result = cpu_tuning.tune(build, ex_model, graphs=GRAPHS, backends=("onnxruntime",), threads=(1,), cases=CASES,
                             timer=clock)
    assert [c[0] for c in calls] == ["plain", "chunk16", "align16", "align16", "chunk16"]
    assert [m.status for m in result.measurements] == ["ok", "ok", "ok"] and result.graph == ALIGN


# ------------------------------------------------------------------------------------------ memory breaks ties
class Probe:
    """A fake memory probe: peak bytes per graph name; each probe advances the clock by ``cost``."""

    def __init__(self, clock: Clock, peaks: dict, cost: float = 1.0, fail: set = frozenset()) -> None:
        self.clock, self.peaks, self.cost, self.fail, self.calls = clock, peaks, cost, fail, []

    def __call__(self, candidate, path, inputs, *, timeout_s):
        self.calls.append(candidate.graph.name)
        self.clock.now += self.cost
        assert Path(path).is_file() and timeout_s >= 60
        assert inputs["hr_msi"].shape[-2:] == (CASES[-1].height, CASES[-1].width)  # the largest shape
        if candidate.graph.name in self.fail:
            raise RuntimeError("child died")
        return self.peaks[candidate.graph.name]


def test_a_tie_on_time_goes_to_the_lowest_peak(monkeypatch, build, ex_model):
    clock = Clock()
    # chunk16 and align16 within 1 % of plain: a tie; chunk16's peak is the lowest
    costs = {("plain", "onnxruntime"): 1.0, ("chunk16", "onnxruntime"): 1.005, ("align16", "onnxruntime"): 1.008}
    fake_load(monkeypatch, clock, costs)
    probe = Probe(clock, {"plain": 900 * 2**20, "chunk16": 700 * 2**20, "align16": 800 * 2**20})
    result = cpu_tuning.tune(build, ex_model, graphs=GRAPHS, backends=("onnxruntime",), threads=(1,), cases=CASES,
                             timer=clock, peak_rss=probe)
    assert probe.calls == ["plain", "chunk16", "align16"]  # fastest first
    assert result.graph == CHUNK and result.fastest.candidate.graph == PLAIN
    block = json.loads(json.dumps(result.to_dict()))
    assert block["choice"]["name"] == "chunk16 onnxruntime threads=1"
    assert block["fastest"]["name"] == "plain onnxruntime threads=1" and block["tie_window"] == 0.01
    assert block["memory_case"] == CASES[-1].name
    rows = {r["name"]: r for r in block["candidates"]}
    assert rows["chunk16 onnxruntime threads=1"]["peak_mib"] == 700.0
    assert rows["plain onnxruntime threads=1"]["memory"] == "measured"
    text = cpu_tuning.format_tuning(block)
    assert "peak MiB at x4 64x64" in text and "| 700 |" in text and "3 of them had their peak RSS measured" in text


def test_memory_does_not_buy_time_beyond_the_tie_window(monkeypatch, build, ex_model):
    clock = Clock()
    # align16 is 3 % slower than plain, outside the 1 % window of a noiseless run: not a tie, never probed
    costs = {("plain", "onnxruntime"): 1.0, ("chunk16", "onnxruntime"): 1.005, ("align16", "onnxruntime"): 1.03}
    fake_load(monkeypatch, clock, costs)
    probe = Probe(clock, {"plain": 900, "chunk16": 850, "align16": 100})
    result = cpu_tuning.tune(build, ex_model, graphs=GRAPHS, backends=("onnxruntime",), threads=(1,), cases=CASES,
                             timer=clock, peak_rss=probe)
    assert probe.calls == ["plain", "chunk16"] and result.graph == CHUNK
    assert "memory" not in {r["name"]: r for r in result.to_dict()["candidates"]}["align16 onnxruntime threads=1"]


class NoisyRunner(TimedRunner):
    """Every second fuse costs ``1 + noise`` times as much: repeats that disagree widen the tie window."""

    def __init__(self, *args, noise: float) -> None:
        super().__init__(*args)
        self.noise, self.count = noise, 0

    def fuse(self, hr, lr, **kwargs):
        self.count += 1
        extra = self.cost * self.noise if self.count % 2 == 0 else 0.0
        self.clock.now += extra
        return super().fuse(hr, lr, **kwargs)


@pytest.mark.parametrize("noise, chosen", [(0.0, PLAIN), (0.04, ALIGN), (0.2, PLAIN)])
def test_the_tie_window_is_the_runs_own_noise_within_bounds(monkeypatch, build, ex_model, noise, chosen):
    """align16 is 3 % slower (6 % with the widest noise): a tie only where the repeats spread by as much, and
    never beyond TIE_MAX = 5 %."""
    clock = Clock()
    costs = {("plain", "onnxruntime"): 1.0, ("align16", "onnxruntime"): 1.03 if noise < 0.1 else 1.06}
    real = lso.runtime.load

    def load(path, backend=None, threads=None, **options):
        runner = real(path, backend="onnxruntime", threads=threads, **options)
        return NoisyRunner(runner, clock, costs[(graph_of(path), backend)], False, noise=noise)

    monkeypatch.setattr(lso.runtime, "load", load)
    probe = Probe(clock, {"plain": 900, "align16": 500})
    result = cpu_tuning.tune(build, ex_model, graphs=(PLAIN, ALIGN), backends=("onnxruntime",), threads=(1,),
                             cases=CASES, timer=clock, peak_rss=probe)
    assert result.tie_window == pytest.approx(min(cpu_tuning.TIE_MAX, max(cpu_tuning.TIE_MIN, noise)), rel=1e-3)
    assert result.graph == chosen


def test_equal_peaks_go_to_the_faster_and_failed_probes_are_left_out(monkeypatch, build, ex_model):
    clock = Clock()
    costs = {("plain", "onnxruntime"): 1.0, ("chunk16", "onnxruntime"): 1.002, ("align16", "onnxruntime"): 1.004}
    fake_load(monkeypatch, clock, costs)
    # align16 would be the leanest, but its probe fails; chunk16's peak is within MEMORY_TIE of plain's
    probe = Probe(clock, {"plain": 1000, "chunk16": 990, "align16": 10}, fail={"align16"})
    result = cpu_tuning.tune(build, ex_model, graphs=GRAPHS, backends=("onnxruntime",), threads=(1,), cases=CASES,
                             timer=clock, peak_rss=probe)
    assert result.graph == PLAIN
    rows = {m.candidate.graph: m for m in result.measurements}
    assert rows[ALIGN].memory.startswith("error: RuntimeError: child died") and rows[ALIGN].peak_bytes is None


def test_a_candidate_that_fails_parity_is_never_chosen_for_its_memory(monkeypatch, build, ex_model):
    clock = Clock()
    costs = {("plain", "onnxruntime"): 1.0, ("chunk16", "onnxruntime"): 1.0, ("align16", "onnxruntime"): 1.0}
    fake_load(monkeypatch, clock, costs, spoil={("chunk16", "onnxruntime")})
    probe = Probe(clock, {"plain": 900, "chunk16": 1, "align16": 800})
    result = cpu_tuning.tune(build, ex_model, graphs=GRAPHS, backends=("onnxruntime",), threads=(1,), cases=CASES,
                             timer=clock, peak_rss=probe)
    assert "chunk16" not in probe.calls and result.graph == ALIGN


def test_the_budget_keeps_room_for_memory_probes(monkeypatch, build, ex_model):
    clock = Clock()
    costs = {("plain", "onnxruntime"): 1.0, ("chunk16", "onnxruntime"): 1.0, ("align16", "onnxruntime"): 1.0}
    calls = fake_load(monkeypatch, clock, costs)
    probe = Probe(clock, {"plain": 900, "chunk16": 800, "align16": 700}, cost=3.0)
    # baseline 6 s; a probe is estimated at 3 s / 3 + PROBE_START_S = 3 s, and room is kept for as many as the tie
    # could hold: 2 while one candidate is complete (chunk16 and align16 at 256², 6 + 3 + 3 + 6 <= 23 and
    # 9 + 3 + 3 + 6 <= 23; chunk16 at 512², 12 + 3 + 6 <= 23), then 3 (align16 at 512²: 15 + 3 + 9 > 23)
    result = cpu_tuning.tune(build, ex_model, graphs=GRAPHS, backends=("onnxruntime",), threads=(1,), cases=CASES,
                             budget_s=23, timer=clock, peak_rss=probe)
    assert [c[0] for c in calls] == ["plain", "chunk16", "align16", "chunk16"]
    assert result.measurements[2].status == "stopped: budget"
    assert probe.calls == ["plain", "chunk16"] and result.graph == CHUNK
    assert result.elapsed_s == pytest.approx(21.0)


def test_probes_that_no_longer_fit_are_skipped_and_the_fastest_stays(monkeypatch, build, ex_model):
    clock = Clock()
    costs = {("plain", "onnxruntime"): 1.0, ("chunk16", "onnxruntime"): 1.0}
    fake_load(monkeypatch, clock, costs)
    # the probes cost 20 s each, far more than estimated: the first runs, the second no longer fits
    probe = Probe(clock, {"plain": 900, "chunk16": 100}, cost=20.0)
    result = cpu_tuning.tune(build, ex_model, graphs=(PLAIN, CHUNK), backends=("onnxruntime",), threads=(1,),
                             cases=CASES, budget_s=40, timer=clock, peak_rss=probe)
    assert probe.calls == ["plain"] and result.graph == PLAIN
    assert result.measurements[1].memory == "not measured: budget"


def test_the_child_probe_reads_a_fresh_process_peak(ex_onnx, tmp_path):
    """The real probe: a child process runs the graph and reports its own VmHWM (well under this process's)."""
    from lso.export.cpu_tuning import Candidate
    from lso.export.parity import case_inputs

    if not Path("/proc/self/status").is_file():
        pytest.skip("no /proc on this system: the probe returns None")
    graph = tmp_path / "candidate-plain.onnx"
    graph.write_bytes(Path(ex_onnx).read_bytes())
    inputs = case_inputs(CASES[0], 3, 31, seed=0, index=0)
    peak = cpu_tuning.child_peak_rss(Candidate(PLAIN, "onnxruntime", 1), graph, inputs, timeout_s=120)
    assert 20 * 2**20 < peak < 2**31
    bad = tmp_path / "candidate-bad.onnx"
    bad.write_bytes(b"not a graph")
    with pytest.raises(RuntimeError, match="the memory probe failed"):
        cpu_tuning.child_peak_rss(Candidate(PLAIN, "onnxruntime", 1), bad, inputs, timeout_s=120)


@pytest.mark.parametrize("value, seconds", [(None, 300.0), (90, 90.0), ("90", 90.0), ("90s", 90.0), ("2.5m", 150.0),
                                            ("5 min", 300.0)])
def test_budget_values(value, seconds):
    assert cpu_tuning.parse_budget(value) == seconds


@pytest.mark.parametrize("value", ["soon", "0", "-5", "5h", "", True, float("inf"), float("nan")])
def test_a_bad_budget_is_an_input_error_naming_the_fix(value):
    with pytest.raises(InputError, match=r"--tune-budget 300, 90s or 5m"):
        cpu_tuning.parse_budget(value)


def test_export_checks_the_budget_before_any_work(ex_model, tmp_path):
    from lso.export import export_onnx

    with pytest.raises(InputError, match="5m"):
        export_onnx(ex_model, tmp_path / "m.onnx", target="cpu", tune_budget="a while")
    with pytest.raises(InputError, match="add --target cpu"):
        export_onnx(ex_model, tmp_path / "m.onnx", tune_budget=60)
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------ loading
class Recorder:
    """Stands in for a runner class: records what load() built it with."""

    def __init__(self, target, **options) -> None:
        self.target, self.options = target, options


class RecordingBackend(Backend):
    def runner_class(self) -> type:
        return Recorder


@pytest.fixture
def fake_backend(monkeypatch):
    monkeypatch.setitem(BACKENDS, FAKE, RecordingBackend(FAKE, "unused:Unused", (".fakecpu",),
                                                         frozenset({"threads", "verify"}), frozenset({"threads"})))


def test_load_runs_the_recorded_backend_and_threads(tuned, fake_backend, monkeypatch):
    out, _ = tuned
    monkeypatch.setattr("lso.artifacts.cpu_model", lambda: TUNED_CPU)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CpuTuningWarning)  # same CPU: no warning
        runner = lso.runtime.load(out)
        assert isinstance(runner, Recorder) and runner.options == {"threads": 1}
        assert lso.runtime.load(out, threads=2).options == {"threads": 2}  # the caller's threads win
        asked = lso.runtime.load(out, backend="onnxruntime")  # and the caller's backend (then no recorded threads)
    assert type(asked).__name__ == "OrtRunner" and asked.backend == "onnxruntime"


def test_load_on_another_cpu_model_warns_naming_both_and_runs(tuned, fake_backend, monkeypatch):
    out, _ = tuned
    monkeypatch.setattr("lso.artifacts.cpu_model", lambda: "Other Test CPU 9000")
    with pytest.warns(CpuTuningWarning) as record:
        runner = lso.runtime.load(out)
    text = str(record[0].message)
    assert TUNED_CPU in text and "Other Test CPU 9000" in text and "--target cpu" in text
    assert record[0].filename == __file__  # reported where load() was called
    assert isinstance(runner, Recorder) and runner.options == {"threads": 1}


def test_load_runs_the_tuned_graph_with_onnx_runtime(tuned, monkeypatch):
    """Recorded onnxruntime with threads: the real runner opens and fuses the chosen graph."""
    out, _ = tuned
    copy = out.with_name("ort.cpu.onnx")
    copy.write_bytes(out.read_bytes())
    side = json.loads(out.with_name(out.name + ".json").read_text())
    side["cpu_tuning"]["choice"].update(backend="onnxruntime", name="align16 onnxruntime threads=1")
    copy.with_name(copy.name + ".json").write_text(json.dumps(side))
    monkeypatch.setattr("lso.artifacts.cpu_model", lambda: TUNED_CPU)
    hr = np.random.default_rng(0).random((1, 3, 32, 32), dtype=np.float32)
    lr = np.random.default_rng(1).random((1, 31, 8, 8), dtype=np.float32)
    assert cpu_tuning.tuned_defaults(copy, None, {}) == ("onnxruntime", {"threads": 1})
    with lso.runtime.load(copy) as runner:
        assert runner.backend == "onnxruntime"
        assert runner.fuse(hr, lr).shape == (1, 31, 32, 32)


def test_graphs_without_a_tuning_record_load_as_before(ex_onnx):
    assert cpu_tuning.tuned_defaults(ex_onnx, None, {}) == (None, {})
    assert cpu_tuning.tuned_choice({"cpu_tuning": {"choice": {}}}) is None


# ------------------------------------------------------------------------------------------ the CLI
def test_the_cli_flags_map_onto_export_onnx():
    args = cli.build_parser().parse_args(["export", "--target", "cpu", "--tune-budget", "90s"])
    kwargs = cli.export_kwargs(args)
    assert kwargs["target"] == "cpu" and kwargs["tune_budget"] == "90s"
    assert cli.export_kwargs(cli.build_parser().parse_args(["export"]))["tune_budget"] is None
    from lso.export.onnx_export import export_onnx

    params = set(inspect.signature(export_onnx).parameters)
    assert set(kwargs) <= params
    parser = cli.command_parser("export", "python export/to_onnx.py")
    dests = {a.dest for a in parser._actions} - {"help", "verbose", "checkpoint", "out", "skip_check"}
    assert dests <= set(kwargs), "every lso export flag reaches export_onnx"
    assert "--tune-budget" in parser.format_help() and "cpu" in parser.format_help()


def test_result_records_are_json(monkeypatch, build, ex_model):
    clock = Clock()
    fake_load(monkeypatch, clock, {("plain", "onnxruntime"): 1.0})
    result = cpu_tuning.tune(build, ex_model, graphs=(PLAIN,), backends=("onnxruntime",), threads=(1,),
                             cases=CASES[:1], timer=clock)
    block = json.loads(json.dumps(result.to_dict()))
    assert block["choice"]["backend"] == "onnxruntime" and block["cpu"]
    assert dataclasses.asdict(result.graph) == {"solver_chunk": None, "align_channels": None}
    assert cpu_tuning.format_tuning(block).startswith("tuned on ")
