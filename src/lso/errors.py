"""Errors raised by lso-deploy.

One base class, :class:`LSOError`, and a few subclasses. Every message says what failed, what was
expected or found, and how to fix it.
"""
from __future__ import annotations

__all__ = ["LSOError", "InputError", "ArtifactError", "MissingDependencyError", "DeviceUnavailableError",
           "ExportError"]


class LSOError(Exception):
    """Base class of every error this package raises on purpose."""


class InputError(LSOError, ValueError):
    """A readable file or array with the wrong content (keys, shapes, bands, dtype, range)."""


class ArtifactError(LSOError):
    """A file that cannot be read, is corrupt, or does not match its sidecar or the model."""


class MissingDependencyError(LSOError, ImportError):
    """An optional dependency is not installed; the message names the pip extra that fixes it."""


class DeviceUnavailableError(MissingDependencyError):
    """No usable CUDA device (or a CPU-only torch build) where one is needed.

    Raised by :func:`lso.runtime.cuda_arrays.require_cuda`; here so that the runtime names it without torch.
    """


class ExportError(LSOError):
    """Export or a graph pass failed (unsupported operator, parity check failed, ...)."""
