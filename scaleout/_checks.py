"""Checks run on the driver before any Ray actor or replica starts."""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lso.errors import ArtifactError

__all__ = ["check_artifact"]


def check_artifact(artifact: str | os.PathLike, *, device: str | None = None, num_gpus: float = 0.0,
                   config: Mapping[str, Any] | None = None, backend: str | None = None,
                   runner_options: Mapping[str, Any] | None = None) -> Path:
    """Fail early, with the runtime's own ArtifactError, for a missing, unknown or corrupt artifact.

    CPU artifacts (checkpoints, ONNX graphs run on CPU) are loaded once here, so a corrupt file (or a checkpoint
    that contradicts ``config``, the ``--config`` fields) is reported before the actors start (each would
    otherwise fail and be retried by Ray). Plans and GPU runs are only checked for existence and kind: the
    driver may have no GPU.

    ``backend`` is the runner's backend (None: the one the artifact's suffix picks); ``runner_options`` the runner's
    other options (``--runner-option``): an option the backend does not take is refused here for every artifact
    (:func:`lso.runtime.base.backend_options`), and CPU artifacts are loaded with them.

    Returns:
        the artifact's absolute path (``@demo``: the bundled demo checkpoint's).
    """
    from lso.runtime.base import backend_of, backend_options, load
    from lso.weights import resolve_checkpoint

    path = resolve_checkpoint(artifact).resolve()
    if not path.is_file():
        raise ArtifactError(f"{artifact} does not exist (or is not a file)")
    entry = backend_of(path, backend)
    options = dict(runner_options or {})
    backend_options(entry, options)  # InputError for an option the backend does not take, also where not loaded
    if entry.gpu_only or num_gpus > 0 or (device or "cpu") != "cpu":
        return path
    # threads: a hint, ignored where a backend has none
    with load(path, config=config, threads=1, backend=backend, **options):
        pass
    return path
