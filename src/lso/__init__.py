"""lso-deploy: the Latent Spectral Operator (LSO) from checkpoint to production.

``import lso`` needs only torch and numpy. Public names::

    from lso import LSO, LSOConfig, load_checkpoint

``LSO`` is imported on first use, so a process that only runs exported graphs on the CPU (ONNX Runtime,
OpenVINO: :mod:`lso.runtime`) never imports torch (about 0.19 GB of resident memory).
"""
from __future__ import annotations

import logging

from lso._lazy import lazy_attributes
from lso.config import LSOConfig

__all__ = ["LSO", "LSOConfig", "load_checkpoint", "save_checkpoint", "__version__"]
__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

__getattr__, __dir__ = lazy_attributes("lso", {"LSO": "lso.model"}, globals())


def load_checkpoint(path, config=None, *, map_location="cpu", strict=True, **fields):
    """Load an official (``.pth.tar``/``.pth``/``.pt``) or our own (``.safetensors``) checkpoint, or ``@demo``.

    The checkpoint's own configuration is used; ``config``/``fields`` (e.g. ``patch_size=2``) add what it does
    not record and must agree with what it does. See :func:`lso.checkpoint.load_checkpoint`. Returns an
    :class:`LSO` in eval mode.
    """
    from lso.checkpoint import load_checkpoint as _load

    return _load(path, config, map_location=map_location, strict=strict, **fields)


def save_checkpoint(model, path, **metadata):
    """Save ``model`` as safetensors with its config in the metadata. See :mod:`lso.checkpoint`."""
    from lso.checkpoint import save_checkpoint as _save

    return _save(model, path, **metadata)
