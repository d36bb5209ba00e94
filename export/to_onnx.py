"""Export an LSO checkpoint to one ONNX file and prove it computes what PyTorch computes (= ``lso export``).

    python export/to_onnx.py --checkpoint model_best.pth.tar --out model.onnx

A script only: the options are ``lso export``'s (one definition, :mod:`lso.cli`); ``--help`` lists them.
Exit status: 0 on success, 1 on an error (bad checkpoint, unsupported operator, parity failure), with
no file left behind.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lso.cli import command_parser, script_main

PROG = "python export/to_onnx.py"


def build_parser() -> argparse.ArgumentParser:
    return command_parser("export", PROG)


def main(argv: Sequence[str] | None = None) -> int:
    return script_main("export", PROG, argv)


if __name__ == "__main__":
    sys.exit(main())
