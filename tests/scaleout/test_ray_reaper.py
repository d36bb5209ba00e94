"""The watchdog of a local Ray (scaleout/_ray_reaper.py) kills what its driver's Ray left, and nothing else (issue 18).

No Ray here: a stand-in process tree plays the raylet and its agents (the end-to-end test, SIGKILL to a real
``lso batch`` driver, is tests/scaleout/test_batch.py::test_sigkill_of_the_driver_alone_leaves_no_ray_process).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the watchdog reads /proc")

REAPER = Path(__file__).resolve().parents[2] / "scaleout" / "_ray_reaper.py"


def _alive(pid: int) -> bool:
    """Running (not gone, not a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_watchdog_kills_the_tree_the_session_and_the_marker_and_nothing_else(tmp_path):
    session = tmp_path / "session_1"
    session.mkdir()
    bystander = subprocess.Popen(["sleep", "300"])  # started by the same driver, not part of its Ray
    reaper = subprocess.Popen([sys.executable, "-I", str(REAPER), str(os.getpid())], stdin=subprocess.PIPE,
                              start_new_session=True)
    # "the raylet": two children ("agents") that outlive it once it is killed (re-parented, out of its tree)
    raylet = subprocess.Popen(["sh", "-c", "sleep 301 & sleep 302 & wait"])
    # a process with a file open in the session folder, and one carrying the marker: not in the tree
    logger = subprocess.Popen(["sh", "-c", f"exec 3>>'{session}/worker.out'; exec sleep 303"])
    marked = subprocess.Popen(["sleep", "304"], env=dict(os.environ, LSO_RAY_OWNER="m-1"))
    victims: list[int] = []
    try:
        deadline = time.monotonic() + 10
        while len(_children(raylet.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        agents = _children(raylet.pid)
        assert len(agents) == 2
        victims = [raylet.pid, *agents, logger.pid, marked.pid]
        reaper.stdin.write(f"root {raylet.pid}\nsession {session}\nmarker LSO_RAY_OWNER=m-1\n".encode())
        reaper.stdin.flush()
        time.sleep(1.5)  # a few of its 0.5 s rounds: the agents are recorded while the raylet lives
        raylet.send_signal(signal.SIGKILL)  # as the kernel does to a raylet whose driver died
        raylet.wait(10)
        assert all(_alive(p) for p in agents)  # re-parented: only the watchdog's record finds them now
        reaper.stdin.close()  # the driver ended
        assert reaper.wait(20) == 0
        for proc in (logger, marked):
            assert proc.wait(10) == -signal.SIGKILL
        assert not any(_alive(p) for p in agents)
        assert bystander.poll() is None and _alive(os.getpid())  # nothing else
    finally:
        for pid in victims:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        for proc in (bystander, reaper, raylet, logger, marked):
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
