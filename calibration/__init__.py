"""lso.calibration: calibration feeds, the FP16 mixed-precision graph and INT8 Q/DQ graphs.

::

    from lso.calibration import calibration_feeds, convert_fp16, quantize_int8
    feeds = calibration_feeds(count=16)                                  # synthetic training scenes, 512², x4
    convert_fp16("model.onnx", "model.fp16.onnx", feeds=feeds)          # FP32 islands: solver, softmax, grid, range
    quantize_int8("model.onnx", "model.int8.onnx", feeds=feeds, flavour="tensorrt")

Command line: ``lso calibrate model.onnx --precision fp16|int8``. Names are imported lazily:
``import lso.calibration`` imports neither onnx nor onnxruntime.
"""
from __future__ import annotations

from lso._lazy import lazy_attributes

__all__ = ["calibration_feeds", "CalibrationFeeds", "held_out_scenes", "make_ort_reader", "convert_fp16",
           "fp32_islands", "to_mixed_fp16", "to_naive_fp16", "emulate_fp16", "quantize_int8", "sensitivity_sweep",
           "float_block_curve", "choose_float_blocks", "compare", "calibrate", "CalibrateOptions"]

_LAZY = {
    "calibration_feeds": "lso.calibration.feeds",
    "CalibrationFeeds": "lso.calibration.feeds",
    "held_out_scenes": "lso.calibration.feeds",
    "make_ort_reader": "lso.calibration.feeds",
    "convert_fp16": "lso.calibration.fp16",
    "fp32_islands": "lso.calibration.fp16",
    "to_mixed_fp16": "lso.calibration.fp16",
    "to_naive_fp16": "lso.calibration.fp16",
    "emulate_fp16": "lso.calibration.fp16",
    "quantize_int8": "lso.calibration.int8",
    "sensitivity_sweep": "lso.calibration.int8",
    "float_block_curve": "lso.calibration.int8",
    "choose_float_blocks": "lso.calibration.int8",
    "compare": "lso.calibration.accuracy",
    "calibrate": "lso.calibration.run",
    "CalibrateOptions": "lso.calibration.run",
}


__getattr__, __dir__ = lazy_attributes('lso.calibration', _LAZY, globals())
