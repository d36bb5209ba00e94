"""lso.export: checkpoint -> one ONNX graph (dynamic sizes, folded solver), graph passes, TensorRT lint.

::

    from lso.export import export_onnx
    export_onnx("model_best.pth.tar", "model.onnx")          # + model.onnx.json, parity checked

Command line: ``python export/to_onnx.py --checkpoint CKPT --out model.onnx`` (same as ``lso export``).
Names are imported lazily: ``import lso.export`` imports neither onnx nor onnxruntime.
"""
from __future__ import annotations

from lso._lazy import lazy_attributes

__all__ = ["export_onnx", "lint_model", "check_trt_support", "LintIssue", "run_parity", "ParityCase",
           "ParityReport", "DEFAULT_CASES", "build_engine"]

_LAZY = {
    "export_onnx": "lso.export.onnx_export",
    "lint_model": "lso.export.lint",
    "check_trt_support": "lso.export.lint",
    "LintIssue": "lso.export.lint",
    "run_parity": "lso.export.parity",
    "ParityCase": "lso.export.parity",
    "ParityReport": "lso.export.parity",
    "DEFAULT_CASES": "lso.export.parity",
    "build_engine": "lso.export.engine_builder",
}


__getattr__, __dir__ = lazy_attributes('lso.export', _LAZY, globals())
