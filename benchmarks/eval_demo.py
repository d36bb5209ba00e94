"""Evaluate the demo checkpoint on the held-out synthetic scenes: x4 (its training ratio) and scale
transfer to x8, x16, x32 (LR-HSI made by the same protocol), against bicubic and GSA.

    python benchmarks/eval_demo.py [--checkpoint CKPT] [--size 512] [--n 8] [--ratios 4,8,16,32]
Writes benchmarks/results/demo_eval_x4.{json,md}, demo_eval_scales.{json,md} and one PNG (x4, first scene).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="default: the bundled demo checkpoint")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--n", type=int, help="scenes (default: all 8 evaluation scenes)")
    parser.add_argument("--ratios", default="4,8,16,32")
    args = parser.parse_args(argv)

    from lso.evaluation import EvalConfig, evaluate_set, markdown_summary

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _report import RESULTS, markdown_table, write_results

    work = Path(tempfile.mkdtemp(prefix="lso_eval_"))
    reports = {}
    for r in (int(x) for x in args.ratios.split(",")):
        reports[r] = evaluate_set(EvalConfig(checkpoint=args.checkpoint, ratio=r, size=args.size, n=args.n,
                                             out=str(work / f"x{r}"), png=(r == 4)), progress=True)
    r4 = reports[4]
    s = r4["summary"]
    verdict = (f"LSO - GSA: {s['lso']['psnr']['mean'] - s['gsa']['psnr']['mean']:+.2f} dB PSNR, "
               f"{s['lso']['sam']['mean'] - s['gsa']['sam']['mean']:+.3f} deg SAM; "
               f"LSO - bicubic: {s['lso']['psnr']['mean'] - s['bicubic']['psnr']['mean']:+.2f} dB.")
    md = f"# Demo checkpoint on held-out synthetic scenes, x4 ({args.size}x{args.size})\n\n" + markdown_summary(r4) + "\n" + verdict
    write_results("demo_eval_x4", r4, md)
    first = r4["per_image"][0]["scene"]
    shutil.copy(work / "x4" / f"{first}_x4.png", RESULTS / "demo_eval_x4.png")
    rows = []
    for r, rep in reports.items():
        for m in ("bicubic", "gsa", "lso"):
            q = rep["summary"][m]
            rows.append([f"x{r}", m, f"{q['psnr']['mean']:.3f}", f"{q['sam']['mean']:.3f}", f"{q['ergas']['mean']:.3f}",
                         f"{q['ergas_paper']['mean']:.3f}", f"{q['ssim']['mean']:.4f}"])
    md2 = (f"# Scale transfer of the x4 demo checkpoint ({args.size}x{args.size}, {r4['scenes']} held-out scenes, mean)\n\n"
           + markdown_table(["ratio", "method", "PSNR", "SAM", "ERGAS", "ERGAS (paper r=4)", "SSIM"], rows))
    write_results("demo_eval_scales", {str(r): rep["summary"] for r, rep in reports.items()}, md2)
    print(md)
    print(md2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
