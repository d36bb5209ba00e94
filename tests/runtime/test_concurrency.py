"""Runners called from many threads: every output equals the single-threaded one; release waits for calls."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from lso.runtime import OrtRunner, TorchRunner
from lso.runtime.base import RunnerStateError

from rt_fixtures import scene

THREADS = 8
SECONDS = 10.0


def _cases():
    """Different shapes and ratios, so that threads run different work at the same time."""
    return [scene(32, 48, 4, seed=0), scene(48, 32, 4, seed=1), scene(30, 45, 3, seed=2),
            scene(32, 32, 2, batch=2, seed=3)]


def _stress(runner, cases, expected, seconds, *, extent=False):
    """THREADS threads call runner.fuse on random cases until the time is up; returns (calls, mismatches, errors)."""
    stop = time.monotonic() + seconds
    calls, mismatches, errors = [0] * THREADS, [], []

    def work(t):
        rng = np.random.default_rng(t)
        try:
            while time.monotonic() < stop:
                i = int(rng.integers(len(cases)))
                hr, lr = cases[i]
                out = runner.fuse(hr, lr)
                calls[t] += 1
                if not np.array_equal(out, expected[i]):
                    mismatches.append((t, i, float(np.abs(out - expected[i]).max())))
        except BaseException as exc:  # anything, reported to the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(seconds + 60)
    assert not any(th.is_alive() for th in threads), "a thread hung"
    return calls, mismatches, errors


@pytest.mark.slow
def test_ort_runner_from_8_threads_matches_single_thread(tiny_onnx):
    cases = _cases()
    with OrtRunner(tiny_onnx, threads=1) as runner:
        assert runner.concurrent
        expected = [runner.fuse(hr, lr) for hr, lr in cases]  # single-threaded results
        calls, mismatches, errors = _stress(runner, cases, expected, SECONDS)
    assert not errors, errors[:3]
    assert not mismatches, mismatches[:5]
    assert all(c > 0 for c in calls), calls  # every thread got calls through
    assert sum(calls) >= 2 * THREADS


@pytest.mark.slow
def test_torch_runner_from_8_threads_matches_single_thread(rt_model):
    cases = _cases()
    with TorchRunner(rt_model) as runner:
        assert runner.concurrent
        expected = [runner.fuse(hr, lr) for hr, lr in cases]
        calls, mismatches, errors = _stress(runner, cases, expected, 3.0)
    assert not errors and not mismatches, (errors[:3], mismatches[:5])
    assert all(c > 0 for c in calls), calls


def test_serialising_runner_runs_one_call_at_a_time(rt_model, monkeypatch):
    """A runner that is not concurrent (TensorRT's kind) never has two calls inside _fuse at once."""
    runner = TorchRunner(rt_model)
    monkeypatch.setattr(TorchRunner, "concurrent", property(lambda self: False))
    inside, peak, lock = [0], [0], threading.Lock()
    original = TorchRunner._fuse

    def counting(self, *args, **kwargs):
        with lock:
            inside[0] += 1
            peak[0] = max(peak[0], inside[0])
        try:
            time.sleep(0.01)
            return original(self, *args, **kwargs)
        finally:
            with lock:
                inside[0] -= 1

    monkeypatch.setattr(TorchRunner, "_fuse", counting)
    hr, lr = scene(16, 16, 4)
    with runner:
        threads = [threading.Thread(target=lambda: [runner.fuse(hr, lr) for _ in range(3)]) for _ in range(THREADS)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(60)
    assert peak[0] == 1


def test_deactivate_waits_for_calls_in_flight_and_refuses_new_ones(rt_model, monkeypatch):
    runner = TorchRunner(rt_model).activate()
    started, release = threading.Event(), threading.Event()
    original = TorchRunner._fuse

    def slow(self, *args, **kwargs):
        started.set()
        release.wait(10)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(TorchRunner, "_fuse", slow)
    hr, lr = scene(16, 16, 4)
    result, closed = [], threading.Event()
    caller = threading.Thread(target=lambda: result.append(runner.fuse(hr, lr)))
    caller.start()
    assert started.wait(10)
    closer = threading.Thread(target=lambda: (runner.deactivate(), closed.set()))
    closer.start()
    time.sleep(0.2)
    assert not closed.is_set()  # still waiting for the call in flight
    with pytest.raises(RunnerStateError, match="being released"):
        runner.fuse(hr, lr)
    release.set()
    caller.join(10)
    closer.join(10)
    assert closed.is_set() and not runner.is_active
    assert result and result[0].shape == (1, 31, 16, 16)
