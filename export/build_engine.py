"""Build a TensorRT engine (plan) from an LSO ONNX graph: FP32, FP16 mixed or INT8 Q/DQ (= ``lso build``).

::

    python export/build_engine.py model.fp16.onnx --out model.fp16.plan       # same as: lso build ...
    python export/build_engine.py model.int8.onnx --print-trtexec             # the equivalent trtexec line

A script only: the options are ``lso build``'s (one definition, :mod:`lso.cli`), the library is
:func:`lso.export.build_engine` (:mod:`lso.export.engine_builder`, with :mod:`lso.export.profiles`,
:mod:`lso.export.trtexec` and :mod:`lso.export.plan_io`). Import those, not this file: importing it as
``lso.export.build_engine`` would hide the function of that name behind this module.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lso.cli import command_parser, script_main

PROG = "python export/build_engine.py"


def build_parser() -> argparse.ArgumentParser:
    return command_parser("build", PROG)


def main(argv: Sequence[str] | None = None) -> int:
    return script_main("build", PROG, argv)


if __name__ == "__main__":
    sys.exit(main())
