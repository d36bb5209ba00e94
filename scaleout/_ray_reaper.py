"""Watchdog of a local Ray started by ``lso batch``/``lso serve``: when the driver ends, however it ends (``SIGKILL``
included), every process of that Ray ends too.

Ray ties its GCS server and raylet to the driver (``PR_SET_PDEATHSIG``), but not what the raylet starts: the
dashboard and runtime-env agents outlive a killed driver, and so may a worker started just before. This script
is started by :func:`lso.scaleout._ray_session.init_ray` before ``ray.init``, in a session of its own (a signal
to the driver's process group does not reach it), with a pipe from the driver on its standard input. The driver
writes what identifies its Ray on it, one line each:

- ``root <pid>``: a process ``ray.init`` started (GCS server, raylet, monitors);
- ``session <dir>``: the Ray session folder (every Ray process keeps files open in it);
- ``marker <NAME=value>``: an environment entry that only this Ray's processes inherited.

While the driver runs, every 0.5 s it records the descendants of the roots (pid and start time), since once the
raylet is gone its children are re-parented and cannot be found through it. When the pipe closes (the driver
ended, or shut Ray down and closed it), it kills with ``SIGKILL``: the recorded processes still alive (same
start time), processes with a file open in the session folder or naming it in their command line, processes
whose environment holds the marker, and all their descendants; it repeats until none is left (at most a few
seconds), then exits. It never kills the driver or itself, and nothing else: every process it kills is
identified by this Ray's own process tree, folder or marker.

Standard library only (it runs as a script, ``python -I _ray_reaper.py DRIVER_PID``, without importing lso).
"""
from __future__ import annotations

import os
import select
import signal
import sys
import time

POLL_S = 0.5
"""How often the process tree is recorded while the driver runs."""
REAP_S = 5.0
"""How long the reaper keeps looking for processes to kill once the driver has ended."""


def _stat(pid: int) -> tuple[int, str, int] | None:
    """``(ppid, state, start time in clock ticks)`` of a process, None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = data[data.rindex(")") + 2:].split()
    return int(fields[1]), fields[0], int(fields[19])


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _table() -> dict[int, tuple[int, str, int]]:
    table = {}
    for pid in _pids():
        info = _stat(pid)
        if info is not None:
            table[pid] = info
    return table


def _descendants(table: dict[int, tuple[int, str, int]], roots: set[int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _references(pid: int, session: str | None, marker: bytes | None) -> bool:
    """Whether a process names the session folder (open files, command line) or carries the marker."""
    if marker is not None:
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                if marker in fh.read().split(b"\0"):
                    return True
        except OSError:
            pass
    if session is None:
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            if session.encode() in fh.read():
                return True
        fd_dir = f"/proc/{pid}/fd"
        for fd in os.listdir(fd_dir):
            try:
                if os.readlink(f"{fd_dir}/{fd}").startswith(session):
                    return True
            except OSError:
                continue
    except OSError:
        pass
    return False


class Reaper:
    """What identifies the driver's Ray, and the killing of it."""

    def __init__(self, driver: int) -> None:
        self.driver = driver
        self.me = os.getpid()
        self.seen: dict[int, int] = {}  # pid -> start time: the roots and every descendant seen so far
        self.session: str | None = None
        self.marker: bytes | None = None

    def command(self, line: str) -> None:
        kind, _, value = line.strip().partition(" ")
        if kind == "root" and value.isdigit():
            info = _stat(int(value))
            if info is not None:
                self.seen.setdefault(int(value), info[2])
        elif kind == "session" and value:
            self.session = os.path.join(os.path.realpath(value), "")
        elif kind == "marker" and "=" in value:
            self.marker = value.encode()
        self.record()

    def record(self) -> None:
        """Add the live descendants of the processes seen so far (a PID reused by another process is not one)."""
        table = _table()
        ours = {pid for pid, start in self.seen.items() if pid in table and table[pid][2] == start}
        for pid in _descendants(table, ours):
            self.seen.setdefault(pid, table[pid][2])

    def victims(self) -> set[int]:
        table = _table()
        alive = {pid for pid, (_, state, _) in table.items() if state not in ("Z", "X")}
        found = {pid for pid, start in self.seen.items() if pid in alive and table[pid][2] == start}
        if self.session is not None or self.marker is not None:
            found |= {pid for pid in alive - found if _references(pid, self.session, self.marker)}
        found |= _descendants(table, found) & alive
        return found - {self.me, self.driver, os.getppid()}

    def reap(self) -> int:
        killed = 0
        deadline = time.monotonic() + REAP_S
        quiet = 0
        while time.monotonic() < deadline and quiet < 3:
            victims = self.victims()
            quiet = 0 if victims else quiet + 1
            for pid in victims:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
                except OSError:
                    pass
            time.sleep(0.1)
        return killed


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver's Ctrl-C is the driver's business
    reaper = Reaper(int(argv[1]) if len(argv) > 1 else os.getppid())
    stdin = sys.stdin.buffer.raw if hasattr(sys.stdin.buffer, "raw") else sys.stdin.buffer
    pending = b""
    while True:
        ready, _, _ = select.select([stdin], [], [], POLL_S)
        if ready:
            chunk = os.read(stdin.fileno(), 65536)
            if not chunk:
                break  # the driver ended or closed the pipe
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                reaper.command(line.decode("utf-8", "replace"))
        reaper.record()
    reaper.reap()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
