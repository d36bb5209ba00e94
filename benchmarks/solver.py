"""Time and peak memory of the reference vs folded trigonometric solver.

Latent size of a 512x512 image at level 1: 16384 patches x 64 channels x 8 tokens, Q = 24.
Time: both forms interleaved in one process (median of --repeats). Memory: each form in its own
subprocess, peak RSS above the process's baseline (the peak counter is reset after the inputs exist).

    python benchmarks/solver.py [--patches 16384] [--repeats 7] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _memory_child(form: str, patches: int, threads: int) -> None:
    import torch

    from lso.solver import solve

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(patches, 64, 8, generator=g)
    w = torch.randn(64, 48, generator=g) * 0.1
    modes = torch.arange(1, 25, dtype=torch.float32)
    with torch.no_grad():
        solve(z[:64], w, modes, form)  # load kernels before measuring
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS counter (VmHWM)
        base = _rss_kib("VmRSS")
        out = solve(z, w, modes, form)
        peak = _rss_kib("VmHWM")
    print(json.dumps({"form": form, "baseline_mib": base / 1024, "peak_above_baseline_mib": (peak - base) / 1024,
                      "output_mib": out.numel() * 4 / 2**20}))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patches", type=int, default=16384, help="patches (16384 = 512x512 image, level 1)")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per form (median reported)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--no-write", action="store_true", help="print only, do not write benchmarks/results")
    parser.add_argument("--_child", choices=["reference", "folded"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._child:
        _memory_child(args._child, args.patches, args.threads)
        return 0

    import torch

    from lso.solver import solve, solve_folded, solve_reference

    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(args.patches, 64, 8, generator=g)
    w = torch.randn(64, 48, generator=g) * 0.1
    modes = torch.arange(1, 25, dtype=torch.float32)
    times: dict[str, list[float]] = {"reference": [], "folded": []}
    with torch.no_grad():
        max_err = (solve_reference(z, w, modes) - solve_folded(z, w)).abs().max().item()
        for _ in range(args.repeats):
            for form in times:
                t0 = time.perf_counter()
                solve(z, w, modes, form)
                times[form].append(time.perf_counter() - t0)
    med = {f: sorted(t)[len(t) // 2] for f, t in times.items()}
    mem = {}
    for form in times:
        proc = subprocess.run([sys.executable, __file__, "--_child", form, "--patches", str(args.patches),
                               "--threads", str(args.threads)], capture_output=True, text=True, check=True)
        mem[form] = json.loads(proc.stdout.strip().splitlines()[-1])
    speedup = med["reference"] / med["folded"]
    mem_ratio = mem["reference"]["peak_above_baseline_mib"] / max(mem["folded"]["peak_above_baseline_mib"], 1e-9)
    data = {
        "shape": [args.patches, 64, 8], "num_basis": 24, "threads": args.threads, "repeats": args.repeats,
        "median_s": med, "all_s": times, "memory": mem, "speedup": speedup, "memory_ratio": mem_ratio,
        "max_abs_diff": max_err, "targets": {"speedup_min": 3.0, "memory_ratio_min": 10.0},
        "pass": speedup >= 3.0 and mem_ratio >= 10.0,
    }
    from lso.benchmarks._report import markdown_table, write_results

    md = "# Trigonometric solver: reference (basis) vs folded (Clenshaw)\n\n"
    md += (f"Latent {args.patches}x64x8 (a 512x512 image, level 1), Q = 24, {args.threads} threads, "
           f"median of {args.repeats}.\n\n")
    md += markdown_table(["form", "median time (ms)", "peak memory above baseline (MiB)"],
                         [[f, med[f] * 1e3, mem[f]["peak_above_baseline_mib"]] for f in ("reference", "folded")])
    md += (f"\n\nFolded is **{speedup:.1f}x faster** (target >= 3x) and needs **{mem_ratio:.1f}x less peak memory** "
           f"(target >= 10x); max abs difference {max_err:.2e}.")
    print(md)
    if not args.no_write:
        write_results("solver", data, md)
    return 0 if data["pass"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
