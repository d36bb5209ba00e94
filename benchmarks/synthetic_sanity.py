"""Sanity report of the synthetic benchmark's held-out scenes (lso.data.synthetic).

For each evaluation scene (the eight ``EVAL_SEEDS``, 512×512 by default) it reports:

- ``pca_999``: principal components needed for 99.9 % of the spectral variance (criterion ≥ 6);
- ``linear_rgb_psnr``: PSNR of the best linear map RGB → HSI (least squares, no intercept) fitted on
  the scene itself, RGB = HSI × SRF (criterion ≤ 35 dB: spectra are not a function of RGB);
- ``bicubic_psnr`` / ``gsa_psnr``: ×4 fusion baselines on the paper's degradation
  (:func:`lso.data.degrade`), outputs clamped to [0, 1] (criterion: GSA well above bicubic, ≥ 3 dB);
- generation and GSA time (one process, ``--threads`` torch threads).

PSNR is the mean over bands of 10·log10(1/MSE) (:func:`lso.metrics.psnr`).

    python benchmarks/synthetic_sanity.py [--size 512] [--ratio 4] [--threads 1] [--no-write]
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from typing import Any

import numpy as np

PCA_MIN = 6
LINEAR_PSNR_MAX = 35.0
GSA_MARGIN_DB = 3.0


def _pca_components(x: np.ndarray, fraction: float = 0.999) -> int:
    bands = x.reshape(x.shape[0], -1).astype(np.float64)
    eig = np.sort(np.linalg.eigvalsh(np.cov(bands)))[::-1]
    return int(np.searchsorted(np.cumsum(eig) / eig.sum(), fraction) + 1)


def _linear_rgb_fit(x: np.ndarray, srf: np.ndarray) -> np.ndarray:
    bands = x.reshape(x.shape[0], -1).astype(np.float64)
    rgb = srf.T @ bands
    coef, *_ = np.linalg.lstsq(rgb.T, bands.T, rcond=None)
    return (coef.T @ rgb).reshape(x.shape)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=512, help="scene height and width")
    parser.add_argument("--ratio", type=int, default=4, help="scale of the fusion baselines")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--no-write", action="store_true", help="print only, do not write benchmarks/results")
    args = parser.parse_args(argv)

    import torch

    from lso.baselines import bicubic_upsample, gsa_fusion
    from lso.benchmarks._report import markdown_table, write_results
    from lso.data import degrade
    from lso.data.srf import load_srf
    from lso.data.synthetic import EVAL_PHOTOS, EVAL_SEEDS, measured_spectra, synthetic_scene
    from lso.metrics import psnr

    torch.set_num_threads(args.threads)
    srf = load_srf()
    synthetic_scene(EVAL_SEEDS[0], 32)  # load the photos and the spectral library before timing

    rows = []
    for seed in EVAL_SEEDS:
        t0 = time.perf_counter()
        gt = synthetic_scene(seed, args.size)
        t_gen = time.perf_counter() - t0
        hr_msi, lr_hsi = degrade(gt, args.ratio)
        t0 = time.perf_counter()
        fused = gsa_fusion(hr_msi, lr_hsi, args.ratio)
        t_gsa = time.perf_counter() - t0
        row = {
            "seed": seed,
            "mean": float(gt.mean()),
            "p99_5": float(np.percentile(gt, 99.5)),
            "pca_999": _pca_components(gt),
            "linear_rgb_psnr": psnr(gt, np.clip(_linear_rgb_fit(gt, srf), 0.0, 1.0)),
            "bicubic_psnr": psnr(gt, np.clip(bicubic_upsample(lr_hsi, args.ratio), 0.0, 1.0)),
            "gsa_psnr": psnr(gt, np.clip(fused, 0.0, 1.0)),
            "generate_s": t_gen,
            "gsa_s": t_gsa,
        }
        rows.append(row)
        line = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
        print(line, flush=True)

    checks = {
        f"pca_999 >= {PCA_MIN} on every scene": all(r["pca_999"] >= PCA_MIN for r in rows),
        f"linear_rgb_psnr <= {LINEAR_PSNR_MAX} dB on every scene": all(
            r["linear_rgb_psnr"] <= LINEAR_PSNR_MAX for r in rows
        ),
        f"gsa_psnr >= bicubic_psnr + {GSA_MARGIN_DB} dB on every scene": all(
            r["gsa_psnr"] >= r["bicubic_psnr"] + GSA_MARGIN_DB for r in rows
        ),
    }
    keys = ("pca_999", "linear_rgb_psnr", "bicubic_psnr", "gsa_psnr", "generate_s", "gsa_s")
    summary = {k: {"mean": float(np.mean([r[k] for r in rows])), "min": float(np.min([r[k] for r in rows])),
                   "max": float(np.max([r[k] for r in rows]))} for k in keys}
    versions = {}
    for mod in ("scipy", "skimage", "colour"):
        try:
            versions[mod] = importlib.import_module(mod).__version__
        except ImportError:
            versions[mod] = None
    data = {
        "benchmark": "synthetic_sanity",
        "size": args.size,
        "ratio": args.ratio,
        "threads": args.threads,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "eval_seeds": list(EVAL_SEEDS),
        "eval_photos": list(EVAL_PHOTOS),
        "measured_spectra": int(measured_spectra()[0].shape[0]),
        "versions": versions,
        "scenes": rows,
        "summary": summary,
        "checks": checks,
        "all_pass": all(checks.values()),
    }
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}: {name}")

    if not args.no_write:
        header = ["seed", "mean value", "PCs (99.9 %)", "linear RGB→HSI PSNR",
                  f"bicubic ×{args.ratio} PSNR", f"GSA ×{args.ratio} PSNR", "generate s", "GSA s"]
        cols = ("mean", "pca_999", "linear_rgb_psnr", "bicubic_psnr", "gsa_psnr", "generate_s", "gsa_s")
        body: list[list[Any]] = [[r["seed"], *(r[c] for c in cols)] for r in rows]
        body.append(["mean", *(float(np.mean([r[c] for r in rows])) for c in cols)])
        table = markdown_table(header, body)
        md = (
            f"# Synthetic benchmark sanity (held-out scenes, {args.size}×{args.size}, ×{args.ratio})\n\n"
            f"Scenes: `lso.data.synthetic.synthetic_scene(seed, {args.size})` for the evaluation seeds "
            f"{list(EVAL_SEEDS)} (photographs {', '.join(EVAL_PHOTOS)}); "
            f"{data['measured_spectra']} measured spectra. Degradation: `lso.data.degrade` (paper protocol). "
            f"PSNR: mean over bands of "
            f"10·log10(1/MSE), outputs clamped to [0, 1]. `linear RGB→HSI` is the best linear map fitted on "
            f"the scene itself. Times: {args.threads} torch thread(s), "
            f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, one process.\n\n"
            + table
            + "\n\nChecks: "
            + "; ".join(f"{'PASS' if ok else 'FAIL'} {name}" for name, ok in checks.items())
            + f".\n\nData versions: scikit-image {versions['skimage']}, colour-science {versions['colour']}, "
            f"scipy {versions['scipy']}."
        )
        j, m = write_results("synthetic_sanity", data, md)
        print(f"wrote {j} and {m}")
    return 0 if data["all_pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
