"""Scale transfer, measured (issue 21): the model trained at x4 only, evaluated at x4...x32, against the same
model class trained at each ratio with the same number of steps.

    python benchmarks/scale_transfer.py [--steps 300] [--ratios 4,8,16,32] [--config paper] [--n 2] [--size 256]

The paper claims that LSO trained at x4 keeps stable PSNR at x8, x16 and x32. This script answers it on our
synthetic data. Phase 1 trains one model per ratio r in ``--ratios`` with ``lso train --ratio r`` from scratch
(same seed, same data pool, same recipe, ``--steps`` optimizer steps each; runs/scale_transfer/x<r>, resumable:
a stopped run continues from its ``last.pt`` when the script is started again, a finished one is reused).
Phase 2 evaluates every model at every ratio on the held-out synthetic scenes (``split_seeds("eval", n)``,
degraded with the paper's protocol at each ratio, the model run directly at that ratio) next to GSA.

The transfer gap at ratio r is PSNR(trained at x4, evaluated at r) - PSNR(trained at r, evaluated at r):
0 means training at x4 loses nothing at r; negative numbers are what scale transfer costs.

Writes benchmarks/results/training/scale_transfer.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

STAGE1 = Path(__file__).resolve().parent / "results" / "training" / "lso_synth_x4_step3750.safetensors"
"""Stage 1 of the demo checkpoint: trained at x4 only, 3750 steps (its recipe is in its metadata)."""


def _log_records(run: Path) -> list[dict]:
    """The records of ``run``'s ``lso train`` log (``log.jsonl``; a torn last line of a killed run is skipped)."""
    records = []
    for line in (run / "log.jsonl").read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _val_psnr(run: Path) -> float | None:
    """The last validation PSNR in ``run``'s log (None when it has none)."""
    values = [float(r["val_psnr"]) for r in _log_records(run) if r.get("val_psnr") is not None]
    return values[-1] if values else None


def _crop_pixels_per_step(recipe: str | None) -> int:
    """Crop pixels one optimizer step sees under an ``lso train`` command: ``--batch`` x ``--crop``² (the defaults,
    16 and 64, where the command does not set them)."""
    words = (recipe or "").split()

    def flag(name: str, default: int) -> int:
        return int(words[words.index(name) + 1]) if name in words[:-1] else default

    return flag("--batch", 16) * flag("--crop", 64) ** 2


def _trained(run: Path, steps: int) -> bool:
    """True when ``run`` finished ``steps`` steps (its log's last step)."""
    log = run / "log.jsonl"
    if not (run / "best.safetensors").exists() or not log.exists():
        return False
    return max((int(r.get("step", 0)) for r in _log_records(run)), default=0) >= steps


def train_command(ratio: int, run: Path, args: argparse.Namespace) -> list[str]:
    """The ``lso train`` command of one ratio: from scratch, ``--steps`` steps, validated once at the end (so
    ``best.safetensors`` is the model after exactly ``--steps`` steps)."""
    cmd = [sys.executable, "-m", "lso", "train", "--out", str(run), "--ratio", str(ratio),
           "--max-steps", str(args.steps), "--val-every", str(args.steps), "--save-every", "25",
           "--seed", str(args.seed), "--threads", str(args.threads), "--no-progress"]
    if args.config:
        cmd += ["--config", args.config]
    if (run / "last.pt").exists():
        cmd.append("--resume")
    return cmd


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps per model (default: 300)")
    parser.add_argument("--ratios", default="4,8,16,32", help="training and evaluation ratios")
    parser.add_argument("--config", default="", help="model configuration (default: the paper's)")
    parser.add_argument("--runs", default="runs/scale_transfer", help="run folders: <runs>/x<r>")
    parser.add_argument("--n", type=int, default=2, help="held-out evaluation scenes (the first n)")
    parser.add_argument("--size", type=int, default=256, help="evaluation scene size (a multiple of every ratio)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (the same for every ratio)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (0 = default)")
    parser.add_argument("--eval-only", action="store_true", help="only phase 2 (every run must be finished)")
    parser.add_argument("--reference", default=str(STAGE1),
                        help="a longer-trained x4-only checkpoint evaluated beside them (default: stage 1 of the "
                             "demo checkpoint, x4 only; '' for none)")
    args = parser.parse_args(argv)
    ratios = [int(r) for r in args.ratios.split(",")]
    if 4 not in ratios:
        parser.error("--ratios must include 4 (the training ratio whose transfer is measured)")
    if any(args.size % r for r in ratios):
        parser.error(f"--size {args.size} must be a multiple of every ratio in {ratios}")
    runs = {r: Path(args.runs) / f"x{r}" for r in ratios}

    t0 = time.time()
    for r, run in runs.items():
        if _trained(run, args.steps):
            print(f"x{r}: {run} has {args.steps} steps; reused", flush=True)
            continue
        if args.eval_only:
            parser.error(f"{run} has not finished {args.steps} steps (run without --eval-only)")
        run.mkdir(parents=True, exist_ok=True)
        cmd = train_command(r, run, args)
        print(f"x{r}: {' '.join(cmd)}", flush=True)
        subprocess.run(cmd, check=True)
    train_seconds = time.time() - t0

    import torch

    from lso.baselines import gsa_fusion
    from lso.benchmarks._report import RESULTS, machine_info, markdown_table, write_results
    from lso.checkpoint import load_checkpoint
    from lso.data import SceneSource, degrade
    from lso.metrics import psnr, sam

    if args.threads:
        torch.set_num_threads(args.threads)
    models = {f"trained_x{r}": load_checkpoint(run / "best.safetensors").eval() for r, run in runs.items()}
    reference = None
    if args.reference:
        from safetensors import safe_open

        with safe_open(str(args.reference), "pt") as f:  # our checkpoints record step, ratio, val_psnr, recipe
            meta = f.metadata() or {}
        reference = {"path": args.reference, "step": int(meta.get("step", 0)) or None, "ratio": meta.get("ratio"),
                     "val_psnr": float(meta["val_psnr"]) if meta.get("val_psnr") else None,
                     "recipe": meta.get("recipe")}
        models["reference"] = load_checkpoint(args.reference).eval()
    t1 = time.time()
    scores: dict[str, dict[str, list[float]]] = {}
    for scene in SceneSource(size=args.size).scenes(args.n):  # the held-out synthetic scenes
        gt = scene.gt.astype(np.float32)
        for r in ratios:
            msi, lr = (np.asarray(a, np.float32) for a in degrade(gt, r))
            outs = {"gsa": np.clip(np.asarray(gsa_fusion(msi, lr, r)), 0, 1)}
            for name, model in models.items():
                with torch.no_grad():
                    y = model(torch.from_numpy(msi)[None], torch.from_numpy(lr)[None]).clamp(0, 1)[0].numpy()
                outs[name] = y
            for name, y in outs.items():
                cell = scores.setdefault(f"x{r}", {})
                cell.setdefault(f"{name}_psnr", []).append(float(psnr(gt, y)))
                cell.setdefault(f"{name}_sam", []).append(float(sam(gt, y)))
    eval_seconds = time.time() - t1
    mean = {r: {k: float(np.mean(v)) for k, v in cell.items()} for r, cell in scores.items()}

    rows = []
    for r in ratios:
        m = mean[f"x{r}"]
        gap = m["trained_x4_psnr"] - m[f"trained_x{r}_psnr"]
        m["transfer_gap_db"] = gap
        rows.append([f"x{r}", f"{m['gsa_psnr']:.2f}", f"{m['trained_x4_psnr']:.2f} / {m['trained_x4_sam']:.2f}",
                     f"{m[f'trained_x{r}_psnr']:.2f} / {m[f'trained_x{r}_sam']:.2f}", f"{gap:+.2f}",
                     f"{m['trained_x4_psnr'] - m['gsa_psnr']:+.2f}"])
    val = {r: _val_psnr(run) for r, run in runs.items()}
    matrix = [[f"trained x{tr} ({args.steps} steps)", *(f"{mean[f'x{r}'][f'trained_x{tr}_psnr']:.2f}" for r in ratios),
               f"{val[tr]:.2f}" if val[tr] is not None else "–"] for tr in ratios]
    matrix.append(["GSA", *(f"{mean[f'x{r}']['gsa_psnr']:.2f}" for r in ratios), "–"])
    ref_text = ""
    if reference is not None:
        matrix.append([f"x4 only, {reference['step']} steps (`{Path(reference['path']).name}`)",
                       *(f"{mean[f'x{r}']['reference_psnr']:.2f}" for r in ratios),
                       f"{reference['val_psnr']:.2f}" if reference.get("val_psnr") is not None else "–"])
        ref = {r: mean[f"x{r}"]["reference_psnr"] - mean[f"x{r}"]["gsa_psnr"] for r in ratios}
        seen = int(reference["step"] or 0) * _crop_pixels_per_step(reference.get("recipe"))
        ours = args.steps * _crop_pixels_per_step(None)
        reference["crop_pixels_seen"] = seen
        ref_text = (f"The last row is a longer-trained model of the same class trained at x4 only: stage 1 of the "
                    f"bundled demo checkpoint ({reference['step']} steps of its own recipe, smaller batches and "
                    f"crops, recorded in its metadata: {seen / 1e6:.1f} M crop pixels seen, {seen / ours:.1f}x the "
                    f"{ours / 1e6:.1f} M of each model above). Against GSA it scores "
                    + ", ".join(f"{v:+.2f} dB at x{r}" for r, v in ref.items())
                    + ". Per-ratio models that see as much would need about "
                    f"{seen / _crop_pixels_per_step(None):.0f} steps each of the recipe above (~6 s per step on this "
                    "2-core CPU); not run here.\n\n")
    converged = (f"**Read with care: {args.steps} steps from scratch is far from converged.** Every model here is "
                 f"still below GSA at every ratio, and its training loss was still falling over the last 50 steps "
                 f"(validation ran once, at the end). The gaps measure how the ratio seen in early training "
                 f"transfers, not the converged behaviour the paper describes, and they rest on {args.n} scenes: "
                 f"at this stage the model trained at a ratio is not always the best one there (see the matrix: "
                 f"compare each column's diagonal entry with the others), so part of each gap is learning speed "
                 f"and noise.\n\n")
    info = machine_info()
    config = args.config or "paper"
    md = (f"# Scale transfer: trained at x4 only vs trained at each ratio ({args.steps} steps each)\n\n"
          f"LSO, `{config}` configuration, each model trained from scratch with `lso train --ratio r` for "
          f"{args.steps} optimizer steps (seed {args.seed}, batch 16, 64x64 crops, the paper's recipe otherwise; "
          f"`{args.runs}/x<r>`). Evaluated on {args.n} held-out synthetic scenes at {args.size}x{args.size}, "
          "degraded with the paper's protocol at each ratio (sigma 0.5 r), every model run directly at that ratio; "
          "outputs clamped to [0, 1]; mean over scenes. PSNR (dB) / SAM (deg).\n\n"
          "Transfer gap = PSNR(trained at x4) - PSNR(trained at the evaluated ratio): 0 = training at x4 loses "
          "nothing there.\n\n"
          + markdown_table(["evaluated at", "GSA", "trained x4 only", "trained at that ratio", "transfer gap (dB)",
                            "x4-only - GSA (dB)"], rows)
          + "\n\nEvery model at every ratio (PSNR, dB; validation PSNR at the model's last step, x4 validation "
          "scenes for the x4 models, each model's own ratio otherwise):\n\n"
          + markdown_table(["model", *(f"x{r}" for r in ratios), "val PSNR"], matrix)
          + "\n\n" + converged + ref_text
          + f"Training {train_seconds / 60:.0f} min in this invocation (runs already finished are reused), "
          f"evaluation {eval_seconds:.0f} s; torch threads {args.threads}.\n")
    write_results("scale_transfer", {"steps": args.steps, "config": config, "seed": args.seed, "n": args.n,
                                     "size": args.size, "ratios": ratios, "summary": mean,
                                     "per_scene": scores, "machine": info, "reference": reference,
                                     "val_psnr": {f"x{r}": v for r, v in val.items()},
                                     "runs": {f"x{r}": str(run) for r, run in runs.items()}},
                  md, out_dir=RESULTS / "training")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
