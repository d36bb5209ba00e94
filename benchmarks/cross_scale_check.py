"""Training monitor for issue 21: a checkpoint against GSA at x4/x8/x16/x32, in both cross-scale forms.

    python benchmarks/cross_scale_check.py [--checkpoint CKPT] [--name NAME] [--n 2] [--size 256]

Held-out synthetic evaluation scenes (``split_seeds("eval", n)``), degraded with the paper's protocol at
each ratio r (sigma = 0.5 r). Two forms of the model's run:
- direct: the model at the true ratio r (one graph, any ratio);
- fixed (the authors' form, f = 4): the LR-HSI FFT-resampled (``lso.data.fft_resize``) to H/f x W/f and
  the model run at x f (at r = f this is the direct form).
GSA always runs at the true ratio on the unresampled LR-HSI. PSNR / SAM per scene (output clamped to
[0, 1]), mean over scenes. The issue's targets: LSO - GSA >= 3 dB at x4 and >= 0.5 dB at the other ratios,
and a lower SAM, in both forms. A small, quick monitor (a few minutes on 2 CPU cores at 2 x 256^2), not
the official evaluation (``lso eval``); figures at 256^2 are not those at 512^2.

Writes benchmarks/results/training/cross_scale_<name>.{json,md}.
"""
from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np


def target_margin(ratio: int) -> float:
    """The PSNR lead over GSA that issue 21 asks for at ``ratio`` (dB)."""
    return 3.0 if ratio == 4 else 0.5


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="checkpoint to check (default: the bundled demo checkpoint)")
    parser.add_argument("--name", default="bundled", help="results name: cross_scale_<name>.{json,md}")
    parser.add_argument("--n", type=int, default=2, help="held-out evaluation scenes (the first n)")
    parser.add_argument("--size", type=int, default=256, help="scene size (a multiple of every ratio)")
    parser.add_argument("--ratios", default="4,8,16,32")
    parser.add_argument("--fixed-ratio", type=int, default=4, help="f of the fixed-ratio form")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = parser.parse_args(argv)

    import torch

    from lso.baselines import gsa_fusion
    from lso.benchmarks._report import RESULTS, markdown_table, write_results
    from lso.checkpoint import load_checkpoint
    from lso.data import SceneSource, degrade, fft_resize
    from lso.metrics import psnr, sam

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.checkpoint:
        ckpt = args.checkpoint
    else:
        from lso.weights import demo_checkpoint

        ckpt = str(demo_checkpoint())
    model = load_checkpoint(ckpt).eval()
    ratios = [int(r) for r in args.ratios.split(",")]
    f = args.fixed_ratio
    side = args.size // f

    def run(msi: np.ndarray, lr: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = model(torch.from_numpy(msi)[None], torch.from_numpy(np.asarray(lr, np.float32))[None])
            return out.clamp(0, 1)[0].numpy()

    t0 = time.time()
    per_scene = []
    held_out = SceneSource(size=args.size)  # the held-out synthetic scenes
    for seed in held_out.seeds[:held_out.count(args.n)]:  # count: an InputError beyond the split
        gt = held_out.scene_of_seed(seed).gt.astype(np.float32)
        for r in ratios:
            msi, lr = (np.asarray(a, np.float32) for a in degrade(gt, r))
            outs = {"gsa": np.clip(np.asarray(gsa_fusion(msi, lr, r)), 0, 1), "direct": run(msi, lr)}
            outs["fixed"] = outs["direct"] if r == f else run(msi, fft_resize(lr, (side, side)))
            per_scene.append({"seed": int(seed), "ratio": r,
                              **{f"{m}_{k}": fn(gt, y) for m, y in outs.items()
                                 for k, fn in (("psnr", psnr), ("sam", sam))}})
    seconds = time.time() - t0

    summary: dict[str, dict[str, Any]] = {}
    rows, met = [], True
    for r in ratios:
        items = [x for x in per_scene if x["ratio"] == r]
        mean = {k: float(np.mean([x[k] for x in items])) for k in items[0] if k not in ("seed", "ratio")}
        s: dict[str, Any] = dict(mean)
        summary[f"x{r}"] = s
        for form in ("direct", "fixed"):
            s[f"{form}_dpsnr"] = mean[f"{form}_psnr"] - mean["gsa_psnr"]
            s[f"{form}_dsam"] = mean[f"{form}_sam"] - mean["gsa_sam"]
            s[f"{form}_met"] = bool(s[f"{form}_dpsnr"] >= target_margin(r) and s[f"{form}_dsam"] < 0)
            met &= s[f"{form}_met"]
        rows.append([f"x{r}", f"{mean['gsa_psnr']:.2f} / {mean['gsa_sam']:.2f}",
                     *(f"{mean[f'{form}_psnr']:.2f} / {mean[f'{form}_sam']:.2f} ({s[f'{form}_dpsnr']:+.2f} dB, "
                       f"{s[f'{form}_dsam']:+.2f} deg) {'ok' if s[f'{form}_met'] else 'MISS'}"
                       for form in ("direct", "fixed")),
                     f"+{target_margin(r):.1f}"])
    md = (f"# Cross-scale check: `{ckpt}` vs GSA ({args.n} held-out scenes at {args.size}x{args.size}, mean)\n\n"
          "PSNR (dB) / SAM (deg); in brackets LSO - GSA; ok = the issue-21 target met (PSNR lead >= target, "
          "lower SAM). direct = model at the true ratio; fixed = LR-HSI FFT-resampled to "
          f"{side}x{side}, model at x{f} (the authors' form; at x{f} the same run).\n\n"
          + markdown_table(["ratio", "GSA", "LSO direct", f"LSO fixed f={f}", "target"], rows)
          + f"\n\nAll targets met: {'yes' if met else 'no'}. Check time {seconds:.0f} s.")
    out = RESULTS / "training"
    write_results(f"cross_scale_{args.name}", {"checkpoint": ckpt, "n": args.n, "size": args.size, "fixed_ratio": f,
                                               "seconds": seconds, "all_met": met, "summary": summary,
                                               "per_scene": per_scene}, md, out_dir=out)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
