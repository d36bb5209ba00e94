"""The old private name of :mod:`lso.artifacts`' output-over-input check, kept for code not yet moved to it."""
from __future__ import annotations

from lso.artifacts import MAX_FOLDER_ENTRIES, OutputFolder, check_no_clash, with_sidecars

__all__ = ["OutputFolder", "check_no_clash", "with_sidecars", "MAX_FOLDER_ENTRIES"]
