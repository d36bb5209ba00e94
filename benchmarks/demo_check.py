"""The bundled demo checkpoint's small cross-scale case, committed so CI can hold the shipped weights to it.

    python benchmarks/demo_check.py

Runs exactly ``lso eval --cross-scale --ratios 4,16 --size 64 -n 2`` (two held-out synthetic scenes at 64x64,
both forms: the model at the true ratio and the authors' fixed-ratio form) on the bundled demo checkpoint and
writes benchmarks/results/demo_check.{json,md}: the command, the checkpoint's weights fingerprint and the mean
PSNR / SAM of LSO (both forms) and GSA at each ratio. ``tests/benchmarks/test_demo_check.py`` reruns the command
and checks that the PSNR figures agree within 0.05 dB and that the fingerprint is the shipped weights' (so the
committed figures are regenerated whenever the bundled weights change). Takes ~15 s of CPU.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

EVAL_ARGS = ["eval", "--cross-scale", "--ratios", "4,16", "--size", "64", "-n", "2", "--no-png", "--no-progress"]
METHODS = ("lso_direct", "lso_fixed_ratio", "gsa")
TOLERANCE_DB = 0.05


def run_case(out_dir: Path) -> dict:
    """Run the case with ``lso eval`` into ``out_dir``; the mean PSNR/SAM per ratio and method."""
    from lso.cli import main as lso_main

    code = lso_main([*EVAL_ARGS, "--out", str(out_dir)])
    if code:
        raise SystemExit(f"lso eval failed with exit code {code}")
    report = json.loads((out_dir / "cross_scale.json").read_text())
    return {f"x{r}": {m: {k: report["results"][r]["summary"][m][k]["mean"] for k in ("psnr", "sam")}
                      for m in METHODS}
            for r in report["results"]}


def bundled_fingerprint() -> str:
    from lso.checkpoint import weights_fingerprint
    from lso.weights import demo_checkpoint

    return weights_fingerprint(demo_checkpoint())


def main(argv=None) -> int:
    from lso.benchmarks._report import markdown_table, write_results

    with tempfile.TemporaryDirectory() as tmp:
        figures = run_case(Path(tmp))
    fingerprint = bundled_fingerprint()
    rows = [[ratio, *(f"{figures[ratio][m]['psnr']:.3f} / {figures[ratio][m]['sam']:.3f}" for m in METHODS)]
            for ratio in figures]
    md = ("# Demo checkpoint: the small cross-scale case CI checks\n\n"
          f"`lso {' '.join(EVAL_ARGS)}` on the bundled demo checkpoint (weights fingerprint `{fingerprint}`); "
          f"mean PSNR (dB) / SAM (deg) over the two scenes. CI reruns it and allows {TOLERANCE_DB} dB.\n\n"
          + markdown_table(["ratio", "LSO (direct)", "LSO (fixed-ratio f=4)", "GSA"], rows) + "\n")
    write_results("demo_check", {"command": ["lso", *EVAL_ARGS], "weights_fingerprint": fingerprint,
                                 "tolerance_db": TOLERANCE_DB, "figures": figures}, md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
