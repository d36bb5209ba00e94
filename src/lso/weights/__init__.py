"""Trained weights shipped as package data (the demo checkpoint), found with importlib.resources."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from lso.errors import ArtifactError

__all__ = ["DEMO_CHECKPOINT", "demo_checkpoint", "has_demo_checkpoint"]

DEMO_CHECKPOINT = "lso_synth_x4.safetensors"


def has_demo_checkpoint() -> bool:
    return resources.files(__name__).joinpath(DEMO_CHECKPOINT).is_file()


def demo_checkpoint() -> Path:
    """Path of the bundled demo checkpoint (paper configuration, trained on synthetic scenes at x4)."""
    res = resources.files(__name__).joinpath(DEMO_CHECKPOINT)
    if not res.is_file():
        raise ArtifactError(
            f"the bundled demo checkpoint {DEMO_CHECKPOINT} is not installed with this copy of lso-deploy; "
            "pass --checkpoint with an official .pth.tar or one of ours (.safetensors)"
        )
    return Path(str(res))
