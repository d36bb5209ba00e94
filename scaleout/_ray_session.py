"""Starting or joining a Ray cluster, shared by ``lso batch`` and ``lso serve`` (ray imported lazily).

A local Ray (no ``address``) ends with the process that started it, however that process ends: Ray itself ties
its GCS server and raylet to the driver (``PR_SET_PDEATHSIG``), but not the dashboard and runtime-env agents
or workers the raylet starts, which outlive a driver killed with ``SIGKILL``. So before ``ray.init`` a small
watchdog (:mod:`lso.scaleout._ray_reaper`, standard library only) is started in a session of its own, holding
the reading end of a pipe from the driver; the driver tells it the processes ``ray.init`` started, the session
folder and an environment marker only this Ray's processes inherit (``LSO_RAY_OWNER``). When the pipe closes
(the driver ended, or :func:`shutdown_ray` closed it after ``ray.shutdown``) it kills what is left of that Ray,
and nothing else. Linux only (it reads ``/proc``); elsewhere Ray's own clean-up applies.
"""
from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lso.deps import require

__all__ = ["ray_session", "init_ray", "shutdown_ray", "MARKER_ENV"]

log = logging.getLogger(__name__)


def init_ray(address: str | None = None, num_cpus: int | None = None) -> tuple[Any, bool]:
    """``(ray, owned)``: join ``address`` (a running cluster: ``"auto"``, ``"ray://host:10001"``, ``"host:6379"``)
    or start a local one with ``num_cpus`` CPUs (default: all of this machine's). ``owned`` is False when Ray
    was already initialised in this process (then nothing is changed and the caller must not shut it down).
    """
    ray = require("ray")
    if ray.is_initialized():
        return ray, False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reporting from a library call
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
    if address:
        kwargs["address"] = address
    else:
        kwargs["num_cpus"] = int(num_cpus) if num_cpus else os.cpu_count()
    log.info("starting Ray (%s)", f"address {address}" if address else f"local, {kwargs['num_cpus']} CPUs")
    reaper = None if address else _start_reaper()
    marker = os.environ.get(MARKER_ENV, "")
    try:
        ray.init(**kwargs)
    except BaseException:
        _stop_reaper(reaper)
        raise
    finally:
        # only what ray.init started carries it (and what they start): not processes this one starts later
        os.environ.pop(MARKER_ENV, None)
    if reaper is not None:
        _tell_reaper(reaper, ray, marker)
    return ray, True


def shutdown_ray(ray: Any) -> None:
    """``ray.shutdown()``, then the watchdog of a local Ray this process started removes whatever is left."""
    try:
        ray.shutdown()
    finally:
        _stop_reaper(_REAPER.pop("process", None))


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[Any]:
    """:func:`init_ray` for the ``with`` block; shuts Ray down afterwards only if this call started it."""
    ray, owned = init_ray(address, num_cpus)
    try:
        yield ray
    finally:
        if owned:
            shutdown_ray(ray)


# ------------------------------------------------------------------------------------------ the watchdog
MARKER_ENV = "LSO_RAY_OWNER"
"""Environment variable set (to a fresh value) for the processes of a local Ray this package starts."""

_REAPER: dict[str, subprocess.Popen] = {}


def _start_reaper() -> subprocess.Popen | None:
    """Start :mod:`lso.scaleout._ray_reaper` for a local Ray about to start (None where it cannot run)."""
    if not sys.platform.startswith("linux") or not os.path.isdir("/proc"):
        return None
    _stop_reaper(_REAPER.pop("process", None))  # the watchdog of an earlier Ray of this process
    script = Path(__file__).with_name("_ray_reaper.py")
    try:
        process = subprocess.Popen([sys.executable, "-I", str(script), str(os.getpid())], stdin=subprocess.PIPE,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=True,
                                   start_new_session=True)
    except OSError as exc:
        log.warning("could not start the watchdog of the local Ray (%s): if this process is killed, Ray's agents "
                    "may outlive it", exc)
        return None
    # inherited by the Ray processes ray.init starts (and theirs), not by the watchdog started before; init_ray
    # removes it once ray.init has returned
    os.environ[MARKER_ENV] = uuid.uuid4().hex
    _REAPER["process"] = process
    return process


def _tell_reaper(reaper: subprocess.Popen, ray: Any, marker: str) -> None:
    """Send the watchdog what identifies the Ray just started: its processes, session folder and marker."""
    lines = [f"marker {MARKER_ENV}={marker}"] if marker else []
    try:
        node = ray._private.worker._global_node  # ray 2.x: the Node this driver started
        lines += [f"root {info.process.pid}" for infos in node.all_processes.values() for info in infos
                  if getattr(info, "process", None) is not None]
        lines.append(f"session {node.get_session_dir_path()}")
    except Exception as exc:  # another Ray version: the marker alone still finds most processes
        log.warning("could not tell the Ray watchdog which processes to watch (%s: %s)", type(exc).__name__, exc)
    if reaper.stdin is None:  # _start_reaper always gives it a pipe
        return
    try:
        reaper.stdin.write(("\n".join(lines) + "\n").encode())
        reaper.stdin.flush()
    except OSError as exc:
        log.warning("the Ray watchdog is gone (%s)", exc)


def _stop_reaper(reaper: subprocess.Popen | None) -> None:
    """Close the watchdog's pipe (it kills what is left of its Ray and exits) and wait for it briefly."""
    if reaper is None:
        return
    if reaper.stdin is not None:
        with contextlib.suppress(OSError):
            reaper.stdin.close()
    try:
        reaper.wait(timeout=10)
    except subprocess.TimeoutExpired:
        log.warning("the Ray watchdog (PID %d) did not exit within 10 s", reaper.pid)
