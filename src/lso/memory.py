"""Memory budget: estimate what a fusion or a read will allocate, and refuse it *before* allocating.

Every size that comes from outside (an array's shape, a file header, a CLI flag) passes through
:func:`check_bytes` before the memory is taken, so a header that claims 10^6 x 10^6 pixels or a
scene too large to fuse in one piece fails at once with an :class:`~lso.errors.InputError` that
names the estimate, the budget and the fix, instead of swapping, being killed by the OOM killer or
raising ``MemoryError`` half-way.

The budget (bytes of *working* memory one call may take, on top of what the process already holds:
Python, torch, the runtime and the model, about 0.3 GB on CPU):

1. the ``memory_budget=`` argument of the call (``--memory-budget`` on the command line), else
2. the environment variable ``LSO_MEMORY_BUDGET`` (bytes, or ``"8G"``, ``"512MiB"``, ...), else
3. :data:`DEFAULT_BUDGET_FRACTION` (75 %) of the machine's physical memory
   (:func:`default_memory_budget`; on a machine whose memory cannot be read, :data:`FALLBACK_BUDGET`).

Estimator (:func:`fusion_bytes`): ``bytes_per_pixel(config) * B * H * W`` with ``H, W`` padded to a
multiple of 4, ``bytes_per_pixel = 4 * (16 * (guide_dim + width) + 4 * (n_bands + n_msi_bands))``:
12,832 B for the paper configuration, 2,592 B for the tiny test preset. Calibrated on the 2-core CPU
machine (peak RSS above the baseline, 2 threads): paper config, PyTorch eager 5.1-7.1 KB/px at
128-384 px, ONNX Runtime 4.2-4.8 KB/px at 128-384 px and 8.3 KB/px at 512 px (its arena grows in
steps), exact tiled fusion of a 2048x2048 x4 scene with 352x352 windows 12.4 KB/px (allocator
fragmentation over 64 tiles: the worst case, and what the constant covers); tiny config 1.2-1.45
KB/px for both backends. So the estimate is an upper bound on this machine, not a prediction.
"""
from __future__ import annotations

import math
import os
import re
from typing import Any

from lso.errors import InputError

__all__ = ["DEFAULT_BUDGET_FRACTION", "FALLBACK_BUDGET", "ENV_VAR", "default_memory_budget", "resolve_budget",
           "parse_bytes", "format_bytes", "bytes_per_pixel", "fusion_bytes", "check_bytes", "array_bytes",
           "proc_status_kib"]

DEFAULT_BUDGET_FRACTION = 0.75
"""Default budget: this share of the machine's physical memory."""

FALLBACK_BUDGET = 8 * 2**30
"""Default budget where physical memory cannot be read (8 GiB)."""

ENV_VAR = "LSO_MEMORY_BUDGET"

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6, "mib": 2**20,
          "g": 10**9, "gb": 10**9, "gib": 2**30, "t": 10**12, "tb": 10**12, "tib": 2**40}


def parse_bytes(value: str | int | float) -> int:
    """``"8G"``, ``"512MiB"``, ``"1.5e9"``, ``4096`` -> bytes (K/M/G/T are powers of 1000, KiB/MiB/GiB of 1024)."""
    if isinstance(value, bool):
        raise InputError(f"memory budget must be a size such as 8G or 512MiB, got {value!r}")
    if isinstance(value, (int, float)):
        number, unit = float(value), ""
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*", str(value))
        if not match or match.group(2).lower() not in _UNITS:
            raise InputError(f"memory budget {value!r} is not a size: write bytes or a number with a unit, e.g. "
                             f"8G, 512MiB, 2.5GB")
        number, unit = float(match.group(1)), match.group(2).lower()
    result = number * _UNITS[unit]
    if not math.isfinite(result) or result < 1 or result >= 2**63:
        raise InputError(f"memory budget {value!r} must be a positive size below 2^63 bytes (e.g. 8G)")
    return int(result)


def format_bytes(n: float) -> str:
    """``1536 * 2**20`` -> ``"1.50 GiB"``."""
    n = float(n)
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}" if n / size < 1e5 else f"{n / size:.3e} {unit}"
    return f"{int(n)} B"


def _physical_memory() -> int | None:
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
    return int(pages) * int(page_size) if pages > 0 and page_size > 0 else None


def default_memory_budget() -> int:
    """``LSO_MEMORY_BUDGET`` if set, else 75 % of physical memory (8 GiB if that cannot be read)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return parse_bytes(env)
    physical = _physical_memory()
    return int(physical * DEFAULT_BUDGET_FRACTION) if physical else FALLBACK_BUDGET


def resolve_budget(memory_budget: None | str | int | float = None) -> int:
    """The budget in bytes: ``memory_budget`` if given, else :func:`default_memory_budget`."""
    return default_memory_budget() if memory_budget is None else parse_bytes(memory_budget)


def bytes_per_pixel(config: Any = None) -> int:
    """Estimated working bytes per HR pixel (one image of the batch) for ``config`` (default: the paper's)."""
    if config is None:
        from lso.config import LSOConfig

        config = LSOConfig()
    return 4 * (16 * (int(config.guide_dim) + int(config.width)) + 4 * (int(config.n_bands) + int(config.n_msi_bands)))


def fusion_bytes(config: Any, batch: int, height: int, width: int) -> int:
    """Estimated peak working memory of fusing a ``[batch, *, height, width]`` input in one piece."""
    pad = lambda n: -(-int(n) // 4) * 4  # noqa: E731  (the model pads to a multiple of 4)
    return bytes_per_pixel(config) * int(batch) * pad(height) * pad(width)


def array_bytes(shape: Any, itemsize: int = 4) -> int:
    """``prod(shape) * itemsize`` as a Python int (no overflow, whatever the dimensions)."""
    total = int(itemsize)
    for s in shape:
        total *= max(int(s), 0)
    return total


def check_bytes(nbytes: int, what: str, *, memory_budget: None | str | int | float = None,
                fix: str = "") -> int:
    """Raise :class:`InputError` if ``nbytes`` exceeds the budget; returns the budget in bytes.

    Args:
        nbytes: the estimate.
        what: what would be allocated (``"fusing hr_msi 1x3x8192x8192 in one piece"``).
        memory_budget: explicit budget (bytes or a size string); default :func:`default_memory_budget`.
        fix: how to get under the budget (appended to the message).
    """
    budget = resolve_budget(memory_budget)
    if nbytes > budget:
        source = ("memory_budget" if memory_budget is not None
                  else f"${ENV_VAR}" if os.environ.get(ENV_VAR) else
                  f"default: {DEFAULT_BUDGET_FRACTION:.0%} of physical memory")
        raise InputError(f"{what} needs an estimated {format_bytes(nbytes)}, over the memory budget of "
                         f"{format_bytes(budget)} ({source}); refused before allocating anything. Fix: "
                         + (fix + "; or, " if fix else "")
                         + f"if the machine has the memory, raise the budget (memory_budget=/--memory-budget, "
                           f"or {ENV_VAR}=...)")
    return budget


def proc_status_kib(field: str) -> int:
    """``field`` (``VmHWM``, ``VmRSS``) of /proc/self/status in KiB (0 where /proc is not there).

    ``VmHWM`` is this process's own peak resident set size; a child's ``ru_maxrss`` would carry its parent's
    high-water mark across ``fork`` + ``exec``.
    """
    try:
        with open("/proc/self/status", encoding="utf-8") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0
