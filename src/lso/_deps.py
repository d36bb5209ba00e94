"""The old private name of :mod:`lso.deps` (optional imports and their install lines), kept for code not yet
moved to it."""
from __future__ import annotations

from lso.deps import *  # noqa: F403
from lso.deps import __all__  # noqa: F401
