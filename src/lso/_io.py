"""The old private name of :mod:`lso.artifacts` (the artifact writer), kept for code not yet moved to it."""
from __future__ import annotations

from lso.artifacts import *  # noqa: F403
from lso.artifacts import __all__  # noqa: F401
