"""The one argparse definition of the export options, shared by ``python export/to_onnx.py`` and ``lso export``.

Light on purpose: importing it (to build ``--help``) imports neither onnx nor onnxruntime.
"""
from __future__ import annotations

import argparse
from typing import Any

from lso.export.parity import DEFAULT_ATOL, DEFAULT_CASES, ParityCase, ParityReport

__all__ = ["DESCRIPTION", "add_export_arguments", "export_kwargs", "run_export"]

DESCRIPTION = """\
Export an LSO checkpoint (official .pth.tar or ours .safetensors) to ONE self-contained ONNX file
that serves every image size and every integer scale ratio (x2, x3, x4 ... x32): batch, HR and LR
height/width are independent dynamic axes. The trigonometric solver is folded (one Sin and one Cos
per spectral block); every node is checked against TensorRT's ONNX parser table; constants are
folded with onnxslim. The file is then run with ONNX Runtime (CPU) and PyTorch on a table of seeded
inputs, and only a graph within --atol of PyTorch is kept. A JSON sidecar <out>.json records the
config, opset, versions, checkpoint sha256, input/output spec and the parity table.

default parity table: """ + ", ".join(c.name for c in DEFAULT_CASES)


def add_export_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the export options to ``parser`` (kebab-case flags; defaults shown by the caller's formatter)."""
    parser.add_argument("--checkpoint", metavar="PATH",
                        help="checkpoint to export: official .pth.tar/.pth/.pt, ours .safetensors, or @demo (the "
                             "bundled demo checkpoint, also used without this option when this install has it)")
    parser.add_argument("--out", metavar="PATH", default="model.onnx",
                        help="ONNX file to write (its folder must exist); the sidecar is <out>.json")
    from lso.checkpoint import add_config_argument

    add_config_argument(parser)
    parser.add_argument("--opset", type=int, default=18, choices=(18, 19, 20),
                        help="ai.onnx opset: 18 is what the exporter emits natively (no version conversion); "
                             "TensorRT 10/11 and ONNX Runtime >= 1.14 read it; 19 and 20 are converted from it")
    parser.add_argument("--tileable", action="store_true",
                        help="add the int64 input 'extent' [4] = (row0, col0, H_full, W_full) so a runtime can fuse "
                             "tiles with global coordinates; without it the graph has exactly two inputs, hr_msi and "
                             "lr_hsi")
    parser.add_argument("--simplify", action=argparse.BooleanOptionalAction, default=True,
                        help="fold constants and clean up with onnxslim (if it fails the unsimplified graph is kept)")
    parser.add_argument("--skip-check", action="store_true",
                        help="do not run the ONNX Runtime vs PyTorch parity table")
    parser.add_argument("--case", dest="cases", metavar="R:HxW[:B]", action="append", type=ParityCase.parse,
                        help="parity case (repeatable), e.g. --case 4:64x64 --case 3:75x57 --case 4:48x80:2; "
                             "without it, the default table above")
    parser.add_argument("--atol", type=float, default=DEFAULT_ATOL,
                        help="fail when any case's max abs error between ONNX Runtime and PyTorch exceeds this")
    parser.add_argument("--seed", type=int, default=0, help="seed of the parity inputs")
    parser.add_argument("--solver-chunk", type=int, metavar="N", default=None,
                        help="for ONNX Runtime on CPU: run each solver chain in a Scan over chunks of N patches "
                             "(128 is a good value), so its ~90 element-wise nodes work on cache-sized tensors "
                             "instead of streaming [2, N, 8, 8, 8] tensors through memory (0.4-0.5 s less at 512² on "
                             "2 cores; outputs unchanged). Leave it off for TensorRT engines, which fuse the chain")
    parser.add_argument("--align-channels", type=int, metavar="M", default=None,
                        help="for ONNX Runtime on CPU: pad convolutions' channel counts to a multiple of M (16) "
                             "with zero weights, so every convolution runs in ONNX Runtime's blocked NCHWc layout "
                             "(the head's 34, inc's 130 and the decoder's 131/65 channels otherwise do not, and "
                             "the residual adds around them stay unfused). Outputs unchanged up to rounding; "
                             "leave it off for TensorRT, which pads internally")
    parser.add_argument("--allow-unsupported", action="store_true",
                        help="write the graph even if nodes fail the TensorRT operator lint (they are listed)")
    parser.add_argument("--target", choices=("portable", "tensorrt"), default="portable",
                        help="what the graph is for, recorded in its metadata and sidecar: portable (every runtime) "
                             "or tensorrt (the same graph, every node checked against TensorRT's parser, no CPU "
                             "passes); --solver-chunk/--align-channels make the 'cpu' variant, which lso build, "
                             "--print-trtexec and triton-repo --plan refuse")
    return parser


def export_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of :func:`lso.export.export_onnx` from parsed options."""
    from lso.checkpoint import parse_config_arg

    return {
        "config": parse_config_arg(args.config),
        "opset": args.opset,
        "tileable": args.tileable,
        "simplify": args.simplify,
        "check": not args.skip_check,
        "cases": tuple(args.cases) if args.cases else None,
        "atol": args.atol,
        "seed": args.seed,
        "allow_unsupported": args.allow_unsupported,
        "solver_chunk": args.solver_chunk or None,
        "align_channels": args.align_channels or None,
        "target": args.target,
    }


def run_export(args: argparse.Namespace) -> int:
    """Parse -> one library call -> a short report on stdout. Errors propagate (the caller prints them)."""
    import logging

    from lso._io import read_sidecar
    from lso.export import export_onnx

    export_log = logging.getLogger("lso.export")
    if export_log.getEffectiveLevel() > logging.INFO:
        export_log.setLevel(logging.INFO)  # show the steps: export takes tens of seconds
    out = export_onnx(args.checkpoint, args.out, **export_kwargs(args))
    side = read_sidecar(out, verify=False) or {}
    graph = side.get("graph", {})
    print(f"wrote {out} ({graph.get('bytes', 0) / 1e6:.2f} MB, {graph.get('nodes')} nodes, opset {side.get('opset')}, "
          f"inputs {', '.join(i['name'] for i in side.get('inputs', []))}) and {out.name}.json")
    if side.get("weights_sha256"):  # lso info --checkpoint X prints the same for the checkpoint
        print(f"weights sha256 {side['weights_sha256']} (lso.checkpoint.weights_fingerprint)")
    counts = sorted(graph.get("op_counts", {}).items(), key=lambda kv: (-kv[1], kv[0]))
    print("nodes by type: " + ", ".join(f"{k} {v}" for k, v in counts))
    table = side.get("parity", {})
    if table.get("skipped"):
        print("parity check skipped (--skip-check)")
        return 0
    report = ParityReport.from_dict(table)
    print(f"parity, {report.runtime} vs {report.reference} (seed {report.seed}):")
    print(report.format_table())
    print(f"all {len(report.rows)} case(s) within {report.atol:g} (largest max abs error {report.max_abs:.2e})")
    return 0
