"""``lso`` command line: one entry point, one subcommand per stage.

Each subcommand is: parse -> one library call (imported inside the handler, so ``lso --help`` needs
only torch and numpy). Errors from this package exit non-zero with their message; ``-v`` shows the
traceback and debug logging.

Adding a subcommand: write ``_add_<name>(sub)`` (argparse only, no heavy imports) and ``_run_<name>(args)``
(imports the library inside), and list it in ``_SUBCOMMANDS``.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable, Optional, Sequence

__all__ = ["main", "build_parser"]

log = logging.getLogger("lso")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def _sub(sub, name: str, help: str, description: str = "") -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help, description=description or help, formatter_class=_Formatter)


# ------------------------------------------------------------------------------------------- info
def _add_info(sub) -> None:
    p = _sub(sub, "info", "Show versions, optional dependencies and the model configuration.")
    p.add_argument("--checkpoint", help="checkpoint to describe (default: the paper configuration)")


def _run_info(args) -> int:
    import json

    import torch

    import lso
    from lso._deps import available
    from lso.config import LSOConfig

    cfg = lso.load_checkpoint(args.checkpoint).config if args.checkpoint else LSOConfig()
    model = lso.LSO(cfg)
    info = {
        "lso-deploy": lso.__version__,
        "torch": torch.__version__,
        "config": cfg.to_dict(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "optional": {m: available(m) for m in ("onnx", "onnxruntime", "onnxslim", "h5py", "scipy", "tensorrt", "cupy")},
    }
    print(json.dumps(info, indent=2))
    return 0


# ------------------------------------------------------------------------------ subcommand table
_SUBCOMMANDS: list[tuple[Callable, Callable]] = [
    (_add_info, _run_info),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lso",
        description="lso-deploy: the Latent Spectral Operator (LSO) from checkpoint to production "
                    "(export, precision, engines, runtimes, benchmarks).",
        formatter_class=_Formatter,
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging; -v also shows tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for add, run in _SUBCOMMANDS:
        before = set(sub.choices)
        add(sub)
        for name in set(sub.choices) - before:
            sub.choices[name].set_defaults(_run=run)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose > 1 else logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    from lso.errors import LSOError

    try:
        return int(args._run(args) or 0)
    except LSOError as exc:
        if args.verbose:
            raise
        print(f"lso {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"lso {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
