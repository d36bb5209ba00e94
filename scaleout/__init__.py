"""lso.scaleout: serving and fleet processing on existing distributed engines (docs/architecture.md).

- :func:`write_triton_repo` (``lso triton-repo``): a Triton Inference Server model repository from our
  ONNX graph (onnxruntime backend) and/or TensorRT plan (tensorrt backend), one ``config.pbtxt`` per
  model derived from :mod:`lso.io_spec`.
- :func:`run_batch` (``lso batch``): every scene of a folder or HDF5 file fused by a Ray Data actor
  pool, one output per scene, a manifest, resumable.
- :func:`start_serve` / :func:`serve_forever` (``lso serve``): an HTTP endpoint on Ray Serve; the wire
  format is in :mod:`lso.scaleout.wire`, a Python client in :func:`lso.scaleout.client.fuse_remote`.

Names are imported lazily: ``import lso.scaleout`` imports neither ray nor tritonclient.
"""
from __future__ import annotations

from lso._lazy import lazy_attributes

__all__ = ["write_triton_repo", "TritonRepoOptions", "TritonModel", "run_batch", "BatchOptions", "BatchReport",
           "ServeOptions", "build_app", "start_serve", "serve_forever", "fuse_remote", "RemoteError"]

_LAZY = {
    "write_triton_repo": "lso.scaleout.triton_repo",
    "TritonRepoOptions": "lso.scaleout.triton_repo",
    "TritonModel": "lso.scaleout.triton_repo",
    "run_batch": "lso.scaleout.batch",
    "BatchOptions": "lso.scaleout.batch",
    "BatchReport": "lso.scaleout.batch",
    "ServeOptions": "lso.scaleout.serve",
    "build_app": "lso.scaleout.serve",
    "start_serve": "lso.scaleout.serve",
    "serve_forever": "lso.scaleout.serve",
    "fuse_remote": "lso.scaleout.client",
    "RemoteError": "lso.scaleout.client",
}

__getattr__, __dir__ = lazy_attributes("lso.scaleout", _LAZY, globals())
