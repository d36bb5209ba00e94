"""Export an LSO checkpoint to one ONNX file and prove it computes what PyTorch computes.

    python export/to_onnx.py --checkpoint model_best.pth.tar --out model.onnx

Same options as ``lso export`` (one shared definition: ``lso.export.options``); ``--help`` lists them.
Exit status: 0 on success, 1 on an error (bad checkpoint, unsupported operator, parity failure), with
no file left behind.
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from lso.cli import HelpFormatter
from lso.export.options import DESCRIPTION, add_export_arguments, run_export


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python export/to_onnx.py", description=DESCRIPTION,
                                     formatter_class=HelpFormatter)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging; -v also shows tracebacks")
    return add_export_arguments(parser)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose > 1 else logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from lso.errors import LSOError

    try:
        return run_export(args)
    except LSOError as exc:
        if args.verbose:
            raise
        print(f"to_onnx: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("to_onnx: interrupted (no file written)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
