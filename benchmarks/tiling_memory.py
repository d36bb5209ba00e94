"""Peak memory of exact tiled fusion on a large scene: memory is bounded by the tile, not the scene.

Runs :func:`lso.runtime.fuse_tiled` on a random ``size x size`` x``ratio`` scene (default 2048x2048
x4: HR-MSI 3x2048x2048, LR-HSI 31x512x512) with the paper configuration of LSO in a fresh
subprocess, and records that process's own peak resident set size (``VmHWM`` of ``/proc/self/status``,
read by the child itself) and the wall time. Not ``ru_maxrss``: a child started by ``fork`` + ``exec``
inherits its parent's high-water mark there, so it reports the larger of the two peaks. The budget
checked is 3 GB peak RSS. The peak includes Python, torch, the model, the inputs (82 MB) and the float32
output (31x2048x2048 = 520 MB); the rest is one tile's activations.

Weights: random (seeded, ``--weights random``, the default; memory and time do not depend on the
values) or a checkpoint path (``--weights PATH``).

    python benchmarks/tiling_memory.py [--size 2048] [--ratio 4] [--tile 256] [--threads 0] [--no-write]

Writes ``benchmarks/results/tiling_memory.json`` and ``.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

BUDGET_BYTES = 3 * 10**9


def _child(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    from lso import LSO, LSOConfig, load_checkpoint
    from lso.memory import proc_status_kib
    from lso.runtime import TorchRunner, fuse_tiled
    from lso.runtime.tiling import exact_overlap, plan_tiles, tile_alignment

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.weights == "random":
        torch.manual_seed(0)
        model = LSO(LSOConfig.paper()).eval()
    else:
        model = load_checkpoint(args.weights)
    rng = np.random.default_rng(0)
    size, ratio = args.size, args.ratio
    hr = rng.random((1, 3, size, size), dtype=np.float32)
    lr = rng.random((1, 31, size // ratio, size // ratio), dtype=np.float32)
    before = proc_status_kib("VmHWM") * 1024
    cfg = model.config
    align = tile_alignment(cfg, ratio)
    overlap = exact_overlap(cfg, ratio)
    core = -(-args.tile // align) * align
    tiles = plan_tiles(size, size, tile=core, overlap=overlap, align=align)
    start = time.perf_counter()
    with TorchRunner(model) as runner:
        out = fuse_tiled(runner, hr, lr, tile=core, progress=False)
    seconds = time.perf_counter() - start
    peak = proc_status_kib("VmHWM") * 1024
    return {
        "size": size, "ratio": ratio, "tile_core": core, "overlap": overlap, "tiles": len(tiles),
        "largest_window": max(t.row1 - t.row0 for t in tiles),
        "weights": "random (seed 0), paper config" if args.weights == "random" else str(args.weights),
        "config": cfg.to_dict(), "torch_threads": torch.get_num_threads(),
        "rss_before_fusion_bytes": before, "peak_rss_bytes": peak, "seconds": seconds,
        "seconds_per_tile": seconds / len(tiles), "output_bytes": int(out.nbytes),
        "output_finite": bool(np.isfinite(out).all()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="scene size (HR pixels per side)")
    parser.add_argument("--ratio", type=int, default=4, help="scale ratio")
    parser.add_argument("--tile", type=int, default=256, help="tile core size")
    parser.add_argument("--weights", default="random", help="'random' or a checkpoint path")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--no-write", action="store_true", help="print only, write no results")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args)))
        return 0
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--size", str(args.size), "--ratio", str(args.ratio),
           "--tile", str(args.tile), "--weights", args.weights, "--threads", str(args.threads)]
    load_before = os.getloadavg()[0]
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["load_average_1min"] = {"before": load_before, "after": os.getloadavg()[0]}
    result["budget_bytes"] = BUDGET_BYTES
    result["within_budget"] = result["peak_rss_bytes"] < BUDGET_BYTES
    gb = 1e9
    print(f"{args.size}x{args.size} x{args.ratio}: {result['tiles']} tiles (core {result['tile_core']}, overlap "
          f"{result['overlap']}), peak RSS {result['peak_rss_bytes'] / gb:.2f} GB (budget 3 GB), "
          f"{result['seconds']:.0f} s")
    if not args.no_write:
        from lso.benchmarks._report import markdown_table, write_results

        rows = [[f"{args.size}x{args.size} x{args.ratio}", f"{result['tile_core']} / {result['overlap']}",
                 result["tiles"], f"{result['rss_before_fusion_bytes'] / gb:.2f}",
                 f"{result['peak_rss_bytes'] / gb:.2f}",
                 f"{result['output_bytes'] / gb:.2f}", f"{result['seconds']:.0f}", f"{result['seconds_per_tile']:.1f}",
                 "yes" if result["within_budget"] else "NO"]]
        md = ("# Tiled fusion: peak memory on a large scene\n\n"
              "`python benchmarks/tiling_memory.py` — exact tiled fusion (`lso.runtime.fuse_tiled`, PyTorch runner, "
              f"CPU), LSO paper configuration, weights: {result['weights']}. Peak RSS of the fusing process "
              "(its own `VmHWM`), which includes the inputs and the float32 output. Times depend on what else ran on "
              f"the machine (1-min load average {result['load_average_1min']['before']:.1f} before, "
              f"{result['load_average_1min']['after']:.1f} after).\n\n"
              + markdown_table(["scene", "core / overlap (px)", "tiles", "RSS before (GB)", "peak RSS (GB)",
                                "output (GB)", "time (s)", "s / tile", "< 3 GB"], rows))
        write_results("tiling_memory", result, md)
    return 0 if result["within_budget"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
