"""Trained weights shipped as package data (the demo checkpoint), found with importlib.resources.

Wherever a checkpoint is accepted (``lso infer``, ``eval``, ``export``, ``train --init``, ``demo``, ``batch``,
``serve``, ``info``; :func:`lso.load_checkpoint`, :func:`lso.runtime.load`), the bundled demo checkpoint is
spelled ``@demo`` (:data:`DEMO_NAME`); :func:`resolve_checkpoint` is the one place that turns it into a path.
A file really named ``@demo`` is reached as ``./@demo``.
"""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from lso.errors import ArtifactError

__all__ = ["DEMO_CHECKPOINT", "DEMO_NAME", "demo_checkpoint", "has_demo_checkpoint", "is_demo_name",
           "resolve_checkpoint"]

DEMO_CHECKPOINT = "lso_synth.safetensors"
DEMO_NAME = "@demo"


def has_demo_checkpoint() -> bool:
    """Whether this install carries the bundled demo checkpoint."""
    return resources.files(__name__).joinpath(DEMO_CHECKPOINT).is_file()


def demo_checkpoint() -> Path:
    """Path of the bundled demo checkpoint (paper configuration, synthetic scenes: trained at x4, then fine-tuned on
    a mix of x4, x8, x16 and x32)."""
    res = resources.files(__name__).joinpath(DEMO_CHECKPOINT)
    if not res.is_file():
        raise ArtifactError(
            f"the bundled demo checkpoint {DEMO_CHECKPOINT} ({DEMO_NAME}) is not installed with this copy of "
            "lso-deploy; pass an official .pth.tar or one of ours (.safetensors) instead (--checkpoint PATH, or the "
            "command's checkpoint argument)"
        )
    return Path(str(res))


def is_demo_name(spec: str | os.PathLike | None) -> bool:
    """True for the spelling of the bundled demo checkpoint, ``@demo`` (not for ``./@demo``)."""
    return spec is not None and os.fspath(spec) == DEMO_NAME


def resolve_checkpoint(spec: str | os.PathLike) -> Path:
    """The file a checkpoint argument names: ``@demo`` -> the bundled demo checkpoint, anything else as a path.

    Raises:
        ArtifactError: ``@demo`` on an install without the bundled checkpoint.
    """
    return demo_checkpoint() if is_demo_name(spec) else Path(spec)
