"""Evaluation (``lso eval``): LSO vs bicubic vs GSA on a set of scenes, per image and mean ± std.

Scenes are the held-out synthetic evaluation scenes (default) or a community-format HDF5 file
(``GT``; LR-HSI and HR-MSI regenerated with the paper's protocol, as LSO's test code does). The
model can be any checkpoint (official or ours) or any runtime artifact (``.onnx``, ``.plan``).
Writes ``<out>/eval_x<r>.json``, ``<out>/eval_x<r>.md`` and, unless disabled, one PNG per scene
(RGB, bicubic, LSO, |error| map, spectra at three pixels).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from lso.errors import InputError

__all__ = ["EvalConfig", "evaluate_set", "iter_scenes", "fuse_with", "scene_figure"]

log = logging.getLogger(__name__)
METHODS = ("bicubic", "gsa", "lso")


@dataclass
class EvalConfig:
    checkpoint: Optional[str] = None  # None: the bundled demo checkpoint
    data: str = "synthetic"  # "synthetic" (held-out eval scenes) or a .h5 file
    ratio: int = 4
    size: int = 512  # synthetic scene size
    n: Optional[int] = None  # number of scenes (default: all)
    out: str = "eval"
    png: bool = True
    tile: Optional[int] = None  # fuse in tiles of this core size (large scenes)
    threads: int = 0


def iter_scenes(data: str, n: Optional[int] = None, size: int = 512) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(name, gt [31, H, W] float32)`` from the synthetic eval split or an HDF5 file."""
    if data == "synthetic":
        from lso.data.synthetic import split_seeds, synthetic_scene

        for seed in split_seeds("eval", n):
            yield f"synth_{seed}", synthetic_scene(int(seed), size)
        return
    from lso.data.readers import H5Dataset

    with H5Dataset(data) as ds:
        count = len(ds) if n is None else min(n, len(ds))
        for i in range(count):
            yield f"{Path(data).stem}_{i}", ds[i]["gt"]


def fuse_with(model: Any, hr_msi: np.ndarray, lr_hsi: np.ndarray, tile: Optional[int] = None) -> np.ndarray:
    """Fuse one image (``[3,H,W]``, ``[31,h,w]``) with an LSO model or a runner; returns ``[31,H,W]``."""
    import torch

    if tile:
        from lso.runtime import fuse_tiled

        return np.asarray(fuse_tiled(model, hr_msi[None], lr_hsi[None], tile=tile))[0]
    if isinstance(model, torch.nn.Module):
        with torch.no_grad():
            return model(torch.from_numpy(hr_msi)[None], torch.from_numpy(lr_hsi)[None])[0].numpy()
    return np.asarray(model.fuse(hr_msi[None], lr_hsi[None]))[0]


def _crop_to_ratio(gt: np.ndarray, ratio: int) -> np.ndarray:
    H, W = gt.shape[-2:]
    return gt[:, : H - H % ratio, : W - W % ratio]


def evaluate_set(cfg: EvalConfig, *, progress: bool = True) -> dict[str, Any]:
    """Run the evaluation and write its report; returns the report dict."""
    import torch

    from lso._io import atomic_write_text
    from lso.baselines import bicubic_upsample, gsa_fusion
    from lso.data import degrade
    from lso.metrics import evaluate, summarize

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.ratio < 2:
        raise InputError(f"--ratio must be an integer >= 2, got {cfg.ratio}")
    model, label = _load_model(cfg.checkpoint)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    per_image: list[dict[str, Any]] = []
    scenes = list(iter_scenes(cfg.data, cfg.n, cfg.size)) if cfg.data == "synthetic" else iter_scenes(cfg.data, cfg.n)
    bar = _progress(scenes, progress, total=cfg.n or (len(scenes) if isinstance(scenes, list) else None))
    for name, gt in bar:
        gt = _crop_to_ratio(np.asarray(gt, np.float32), cfg.ratio)
        msi, lr = degrade(gt, cfg.ratio)
        t0 = time.perf_counter()
        fused = fuse_with(model, msi, lr, cfg.tile)
        t_lso = time.perf_counter() - t0
        outputs = {"bicubic": np.asarray(bicubic_upsample(lr, cfg.ratio)), "gsa": np.asarray(gsa_fusion(msi, lr, cfg.ratio)),
                   "lso": fused}
        row: dict[str, Any] = {"scene": name, "size": list(gt.shape[-2:]), "lso_seconds": t_lso}
        for method, est in outputs.items():
            row[method] = evaluate(gt, est, cfg.ratio)
        per_image.append(row)
        if cfg.png:
            scene_figure(out / f"{name}_x{cfg.ratio}.png", gt, msi, outputs, title=f"{name} x{cfg.ratio}")
    summary = {m: summarize([r[m] for r in per_image]) for m in METHODS}
    report = {"checkpoint": label, "data": cfg.data, "ratio": cfg.ratio, "scenes": len(per_image),
              "summary": summary, "per_image": per_image}
    import json

    atomic_write_text(out / f"eval_x{cfg.ratio}.json", json.dumps(report, indent=2, default=float) + "\n")
    atomic_write_text(out / f"eval_x{cfg.ratio}.md", markdown_summary(report))
    return report


def markdown_summary(report: dict[str, Any]) -> str:
    """Markdown table: method x (PSNR, SAM, ERGAS, ERGAS-paper, SSIM) as mean ± std."""
    keys = ("psnr", "sam", "ergas", "ergas_paper", "ssim")
    lines = [f"Evaluation x{report['ratio']} on {report['scenes']} scene(s) of `{report['data']}`, model `{report['checkpoint']}`",
             "", "| method | PSNR (dB) | SAM (deg) | ERGAS | ERGAS (paper, r=4) | SSIM |", "|---|---|---|---|---|---|"]
    for m in METHODS:
        s = report["summary"][m]
        lines.append(f"| {m} | " + " | ".join(f"{s[k]['mean']:.3f} ± {s[k]['std']:.3f}" for k in keys) + " |")
    return "\n".join(lines) + "\n"


def _load_model(checkpoint: Optional[str]) -> tuple[Any, str]:
    from lso.checkpoint import CHECKPOINT_SUFFIXES, load_checkpoint

    if checkpoint is None:
        from lso.weights import demo_checkpoint

        path = demo_checkpoint()
        return load_checkpoint(path), f"bundled:{path.name}"
    if checkpoint.endswith(CHECKPOINT_SUFFIXES):
        return load_checkpoint(checkpoint), checkpoint
    from lso import runtime

    runner = runtime.load(checkpoint)
    runner.__enter__()
    return runner, checkpoint


def _progress(items, enabled: bool, total: Optional[int] = None):
    if not enabled:
        return items
    try:
        from tqdm import tqdm
    except ImportError:
        return items
    return tqdm(items, total=total, desc="eval", unit="scene")


def scene_figure(path: Path, gt: np.ndarray, msi: np.ndarray, outputs: dict[str, np.ndarray], title: str = "",
                 pixels: Optional[list[tuple[int, int]]] = None) -> Path:
    """PNG: RGB input, bicubic, LSO (false colour), |LSO - GT| map, spectra at three pixels."""
    from lso._deps import require

    require("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lso._io import atomic_path
    from lso.data.srf import WAVELENGTHS_NM, hsi_to_msi

    def rgb(x: np.ndarray) -> np.ndarray:
        img = np.asarray(hsi_to_msi(np.clip(x, 0, 1)) if x.shape[0] != 3 else x)
        img = img / max(float(np.percentile(img, 99.5)), 1e-6)
        return np.clip(img.transpose(1, 2, 0), 0, 1) ** (1 / 2.2)

    H, W = gt.shape[-2:]
    pixels = pixels or [(H // 4, W // 4), (H // 2, W // 2), (3 * H // 4, 2 * W // 3)]
    err = np.abs(outputs["lso"] - gt).mean(0)
    fig, axes = plt.subplots(1, 5, figsize=(20, 4.2))
    panels = [("HR-MSI (input)", rgb(msi)), ("bicubic", rgb(outputs["bicubic"])), ("LSO", rgb(outputs["lso"]))]
    for ax, (name, img) in zip(axes, panels):
        ax.imshow(img)
        ax.set_title(name)
        ax.axis("off")
    im = axes[3].imshow(err, cmap="inferno", vmin=0, vmax=max(float(np.percentile(err, 99)), 1e-6))
    axes[3].set_title("|LSO - GT| (mean over bands)")
    axes[3].axis("off")
    fig.colorbar(im, ax=axes[3], fraction=0.046)
    colors = ["tab:red", "tab:green", "tab:blue"]
    for (i, j), c in zip(pixels, colors):
        for ax in axes[:3]:
            ax.plot(j, i, "o", mfc="none", mec=c, ms=10)
        axes[4].plot(WAVELENGTHS_NM, gt[:, i, j], "-", color=c, label=f"GT ({i},{j})")
        axes[4].plot(WAVELENGTHS_NM, outputs["lso"][:, i, j], "--", color=c, label="LSO")
        axes[4].plot(WAVELENGTHS_NM, outputs["bicubic"][:, i, j], ":", color=c, label="bicubic")
    axes[4].set_xlabel("wavelength (nm)")
    axes[4].set_title("spectra")
    axes[4].legend(fontsize=6, ncol=3)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
    return path
