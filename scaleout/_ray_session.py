"""Starting or joining a Ray cluster, shared by ``lso batch`` and ``lso serve`` (ray imported lazily)."""
from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Iterator, Optional

from lso._deps import require

__all__ = ["ray_session", "init_ray"]

log = logging.getLogger(__name__)


def init_ray(address: Optional[str] = None, num_cpus: Optional[int] = None) -> tuple[Any, bool]:
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
    ray.init(**kwargs)
    return ray, True


@contextlib.contextmanager
def ray_session(address: Optional[str] = None, num_cpus: Optional[int] = None) -> Iterator[Any]:
    """:func:`init_ray` for the ``with`` block; shuts Ray down afterwards only if this call started it."""
    ray, owned = init_ray(address, num_cpus)
    try:
        yield ray
    finally:
        if owned:
            ray.shutdown()
