"""Evaluation (``lso eval``): LSO vs bicubic vs GSA on a set of scenes, per image and mean ± std.

Scenes are the held-out synthetic evaluation scenes (default) or a community-format HDF5 file (``GT``,
``RGB``, optionally ``LRHSI``; N×C×H×W floats in [0, 1]). The model can be any checkpoint (official or
ours) or any runtime artifact (``.onnx``, ``.plan``).

Inputs, as the authors' test code makes them (the default):

- HR-MSI: the file's ``RGB`` (``msi_from="file"``); ``"gt"`` projects ``GT`` through the Nikon D700 SRF
  instead (the only source for synthetic scenes).
- LR-HSI: regenerated from ``GT`` with the paper's degradation, :func:`lso.data.degrade`
  (``lr_from="gt"``); ``"file"`` uses the file's ``LRHSI`` (made by the dataset's authors, whose ratio
  then follows from its size).

``lso infer`` reads a community file the same way, so both give the same LSO output for the same file
and options. Every estimate is clamped to [0, 1] before its metrics (as the paper does), and the report
says so. Both ERGAS figures are reported under names that say which is which: ``ergas_true_ratio`` (the
standard one, with the true ratio) and ``ergas_paper_r4`` (the paper's tables: r fixed at 4).

No silent crop: a size that is not a multiple of the ratio is an error naming the crop that would fit,
unless ``crop=True`` (``--crop``), which crops top-left to the largest multiple and records it.

Two protocols:

- :func:`evaluate_set` (single ratio r): writes ``<out>/eval_x<r>.json``/``.md``, the band-wise plot
  ``<out>/eval_x<r>_bandwise.png`` and, unless disabled, one PNG per scene (RGB, bicubic, LSO,
  |error| map, spectra at three pixels).
- :func:`cross_scale` (``lso eval --cross-scale``, the authors' cross-scale protocol; see
  ``docs/model.md``): for each ratio r, the LR-HSI is regenerated from GT at r (σ = 0.5·r) and given
  (a) as it is to the model ("LSO (direct)", run at the true ratio r) and (b) FFT-resampled
  (:func:`lso.data.fft_resize`) to H/f × W/f and run at the checkpoint's own training ratio f, as the
  authors' script does ("LSO (fixed-ratio f)"). Bicubic and GSA always get the true-ratio LR-HSI.
  Writes ``<out>/cross_scale.json``/``.md`` (one table) and ``<out>/cross_scale_bandwise.png``.

Every report carries band-wise PSNR and RMSE per wavelength (``bandwise``: per method, mean over
scenes).
"""
from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lso.errors import InputError

__all__ = ["EvalConfig", "Scene", "evaluate_set", "cross_scale", "iter_scenes", "iter_items", "prepare_inputs",
           "training_ratio", "fuse_with", "scene_figure", "bandwise_figure", "markdown_summary",
           "cross_scale_markdown", "METHODS", "CROSS_SCALE_METHODS", "DEFAULT_FIXED_RATIO"]

log = logging.getLogger(__name__)
METHODS = ("bicubic", "gsa", "lso")
#: Methods of the cross-scale table, in order, and their row labels.
CROSS_SCALE_METHODS = ("lso_direct", "lso_fixed_ratio", "bicubic", "gsa")
#: The fixed ratio f of the cross-scale protocol when the checkpoint does not record its training ratio.
DEFAULT_FIXED_RATIO = 4
DEFAULT_RATIOS = (4, 8, 16, 32)
CLAMP_NOTE = "every estimate is clamped to [0, 1] before its metrics (as the paper does)"
_LR_KEYS = ("lrhsi", "lr_hsi")


@dataclass
class EvalConfig:
    """What ``lso eval`` does (one field per flag).

    Attributes:
        checkpoint: checkpoint (``.pth.tar``/``.safetensors``) or artifact (``.onnx``/``.plan``); None =
            the bundled demo checkpoint.
        data: ``"synthetic"`` (the held-out evaluation scenes) or a community ``.h5`` file.
        ratio: scale ratio r (single-ratio protocol); None = 4, or the file's own with ``lr_from="file"``.
        size: synthetic scene size.
        n: number of scenes (default: all).
        out: output folder.
        png: write the PNGs (one per scene, and the band-wise plot).
        tile: fuse in tiles of this core size (large scenes).
        threads: torch threads (0 = torch's default); also the runner's intra-op threads for an ONNX graph.
        msi_from: HR-MSI source: ``"file"`` (the file's ``RGB``) or ``"gt"`` (GT × SRF); None = ``"file"``
            for an ``.h5``, ``"gt"`` for synthetic scenes.
        lr_from: LR-HSI source: ``"gt"`` (regenerated with the paper's degradation) or ``"file"``
            (the file's ``LRHSI``).
        crop: crop a size that is not a multiple of the ratio to the largest one that is (top-left) and
            record it; False = refuse such a size with an error naming that crop.
        cross_scale: run the authors' cross-scale protocol (:func:`cross_scale`) instead.
        ratios: the cross-scale ratios r.
        fixed_ratio: f of the cross-scale fixed-ratio form; None = the checkpoint's training ratio.
        save_fused: single-ratio protocol: also write each scene's LSO output as
            ``<out>/<scene>_x<r>_lso.npz`` (array ``hr_hsi``, before clamping).
        config: configuration fields for a checkpoint (``--config``, e.g. ``{"patch_size": 2}``): they must
            agree with what it records and fill in what it does not (:func:`lso.checkpoint.load_checkpoint`).
        backend: the runner's backend for an artifact (``"onnxruntime"``, ``"openvino"``, ...: a name of
            :data:`lso.runtime.base.BACKENDS`); None: the one its suffix picks (checkpoints run on PyTorch).
        runner_options: the runner's other options (``--runner-option KEY=VALUE``, e.g. ``{"precision": "bf16"}``
            for OpenVINO, ``{"fp16": True}`` for PyTorch), passed to :func:`lso.runtime.load`: with them a
            checkpoint runs in a :class:`~lso.runtime.TorchRunner` instead of as a plain module. The backend
            refuses an option it does not take; ``threads``, ``backend`` and ``config`` (fields of their own) are
            refused.
    """

    checkpoint: str | None = None  # None: the bundled demo checkpoint
    data: str = "synthetic"  # "synthetic" (held-out eval scenes) or a .h5 file
    ratio: int | None = None  # None: 4 (or the file's LRHSI ratio with lr_from="file")
    size: int = 512  # synthetic scene size
    n: int | None = None  # number of scenes (default: all)
    out: str = "eval"
    png: bool = True
    tile: int | None = None  # fuse in tiles of this core size (large scenes)
    threads: int = 0
    msi_from: str | None = None
    lr_from: str = "gt"
    crop: bool = False
    cross_scale: bool = False
    ratios: tuple[int, ...] = DEFAULT_RATIOS
    fixed_ratio: int | None = None
    input_scale: Any = None  # scale of the file's values (lso.data.value_range): unit, 8bit, 16bit or a number
    save_fused: bool = False
    config: dict[str, Any] | None = None
    backend: str | None = None
    runner_options: dict[str, Any] | None = None


#: the runner options ``lso eval`` sets with flags of its own (``--runner-option`` refuses them)
RUNNER_OWN_FLAGS = ("threads", "backend", "config")


@dataclass
class Scene:
    """One evaluation scene: ``gt [31, H, W]``, the file's ``rgb [3, H, W]`` and ``lr [31, h, w]`` if any."""

    name: str
    gt: np.ndarray
    rgb: np.ndarray | None = None
    lr: np.ndarray | None = None


# ------------------------------------------------------------------------------------------ scenes
def iter_scenes(data: str, n: int | None = None, size: int = 512) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(name, gt [31, H, W] float32)`` from the synthetic eval split or an HDF5 file."""
    for scene in iter_items(data, n, size):
        yield scene.name, scene.gt


def _lr_key(f: Any) -> str | None:
    lower = {str(k).lower(): k for k in f.keys()}
    return next((lower[k] for k in _LR_KEYS if k in lower), None)


def iter_items(data: str, n: int | None = None, size: int = 512, *, with_lr: bool = False,
               input_scale: Any = None) -> Iterator[Scene]:
    """Yield :class:`Scene` items: synthetic ones (GT only) or a community ``.h5``'s (GT, RGB, LRHSI).

    Args:
        data: ``"synthetic"`` or a community ``.h5`` file.
        n: number of scenes (default: all).
        size: synthetic scene size.
        with_lr: also read the file's ``LRHSI`` (``[N, 31, h, w]``).
        input_scale: scale of the file's values (``--input-scale``): every array passes the one value policy of
            :mod:`lso.data.value_range` (GT and RGB through :class:`~lso.data.readers.H5Dataset`).

    Raises:
        InputError: ``with_lr`` and the file has no ``LRHSI``, or it has the wrong shape; values the policy
            refuses.
    """
    from lso.data.sources import SceneSource

    if data == "synthetic":  # the held-out split
        for scene in SceneSource(size=size).scenes(n):
            yield Scene(scene.name, scene.gt)
        return
    with ExitStack() as stack:
        ds = stack.enter_context(SceneSource(data, input_scale=input_scale))
        lr_ds = None
        if with_lr:
            from lso.deps import require

            f = stack.enter_context(require("h5py").File(data, "r"))
            key = _lr_key(f)
            if key is None:
                raise InputError(f"{data}: --lr-from file needs an LRHSI dataset, found keys {sorted(f.keys())}; "
                                 f"use --lr-from gt (the default: LR-HSI regenerated from GT)")
            lr_ds = f[key]
            one = lr_ds.ndim == 3 and len(ds) == 1  # one scene without its N axis, like H5Dataset reads GT
            if not (one or (lr_ds.ndim == 4 and lr_ds.shape[0] == len(ds))) or lr_ds.dtype.kind != "f":
                raise InputError(f"{data}: '{key}' has shape {lr_ds.shape} and dtype {lr_ds.dtype}; expected floats "
                                 f"({len(ds)}, C, h, w) like GT")
        for i, item in enumerate(ds.scenes(n)):
            lr = None
            if lr_ds is not None:
                from lso.data.value_range import apply_input_scale

                lr = np.asarray(lr_ds[()] if lr_ds.ndim == 3 else lr_ds[i], dtype=np.float32)
                lr = apply_input_scale(lr, f"{data}: '{lr_ds.name.lstrip('/')}'[{i}]", input_scale)
            yield Scene(item.name, item.gt, item.rgb, lr)


def prepare_inputs(scene: Scene, ratio: int, *, msi_from: str = "file", lr_from: str = "gt",
                   crop: bool = False, multiple: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(gt, hr_msi, lr_hsi)`` of one scene at ``ratio``, from the sources asked for.

    Args:
        scene: the scene.
        ratio: true scale ratio r.
        msi_from: ``"file"`` (the scene's ``rgb``) or ``"gt"`` (GT × SRF).
        lr_from: ``"gt"`` (the paper's degradation at ``ratio``) or ``"file"`` (the scene's ``lr``).
        crop: crop a size that is not a multiple of ``multiple`` (top-left) instead of refusing it.
        multiple: the size must be a multiple of this (default: ``ratio``).

    Returns:
        ``gt [C, H', W']`` (cropped if asked), ``hr_msi [3, H', W']``, ``lr_hsi [C, H'/r, W'/r]``, float32.

    Raises:
        InputError: a source the scene lacks, a size that does not fit (see ``crop``), or an LR-HSI
            whose size is not the GT's divided by ``ratio``.
    """
    from lso.data import degrade
    from lso.data.readers import fit_to_ratio
    from lso.data.srf import hsi_to_msi

    gt = np.asarray(scene.gt, dtype=np.float32)
    if msi_from not in ("file", "gt"):
        raise InputError(f"--msi-from must be 'file' or 'gt', got {msi_from!r}")
    if lr_from not in ("file", "gt"):
        raise InputError(f"--lr-from must be 'gt' or 'file', got {lr_from!r}")
    if msi_from == "file" and scene.rgb is None:
        raise InputError(f"{scene.name}: no RGB in this data set; use --msi-from gt (GT x SRF)")
    # the one rule of lso.data.readers: a size that does not fit is refused, naming the top-left crop that would
    # fit, unless cropping was asked for
    if lr_from == "file":
        if scene.lr is None:
            raise InputError(f"{scene.name}: no LRHSI in this data set; use --lr-from gt")
        (H, W), (h, w) = gt.shape[-2:], scene.lr.shape[-2:]
        try:
            fit = fit_to_ratio((H, W), ratio=ratio, lr_size=(h, w), hr_name="GT", lr_name="LRHSI")
        except InputError as exc:
            own = f" (--ratio {round(H / h)}?)" if h and round(H / h) >= 2 else ""
            raise InputError(f"{scene.name}: {exc}; give the LRHSI's own ratio{own} or use --lr-from gt") from exc
    else:
        fit = fit_to_ratio(gt.shape[-2:], ratio=multiple or ratio, hr_name="GT")
    cut = fit.check(scene.name, allowed=crop, option="--crop (crop=True)")
    if cut is not None:
        gt = cut.apply_hr(gt)
    gt = np.ascontiguousarray(gt)
    H, W = gt.shape[-2:]
    if lr_from == "file":
        lr = np.asarray(scene.lr, dtype=np.float32)
        lr = np.ascontiguousarray(cut.apply_lr(lr) if cut is not None else lr)
        msi_gt = hsi_to_msi(gt) if msi_from == "gt" else None
    else:
        msi_gt, lr = degrade(gt, ratio)
    msi = msi_gt if msi_from == "gt" else np.asarray(scene.rgb)[:, :H, :W]
    return gt, np.ascontiguousarray(msi, dtype=np.float32), np.asarray(lr, dtype=np.float32)


def fuse_with(model: Any, hr_msi: np.ndarray, lr_hsi: np.ndarray, tile: int | None = None) -> np.ndarray:
    """Fuse one image (``[3,H,W]``, ``[31,h,w]``) with an LSO model or a runner; returns ``[31,H,W]``."""
    import torch

    from lso.runtime.tiling import decide_tiling, fuse_tiled

    if decide_tiling(model, hr_msi.shape, tile=tile).tiled:  # the one policy: tiled when a tile is asked for
        return np.asarray(fuse_tiled(model, hr_msi[None], lr_hsi[None], tile=tile))[0]
    if isinstance(model, torch.nn.Module):
        with torch.no_grad():
            return model(torch.from_numpy(hr_msi)[None], torch.from_numpy(lr_hsi)[None])[0].numpy()
    return np.asarray(model.fuse(hr_msi[None], lr_hsi[None]))[0]


def _sources(data: str, msi_from: str, lr_from: str) -> dict[str, str]:
    msi = "the file's RGB" if msi_from == "file" else "GT x SRF (Nikon D700)"
    lr = ("the file's LRHSI" if lr_from == "file" else
          "regenerated from GT with the paper's degradation (Gaussian PSF sigma = 0.5*r, circular, pixels [0::r])")
    return {"msi_from": msi_from, "lr_from": lr_from, "hr_msi": msi, "lr_hsi": lr}


def _resolve_sources(cfg: EvalConfig) -> tuple[str, str]:
    synthetic = cfg.data == "synthetic"
    msi_from = cfg.msi_from or ("gt" if synthetic else "file")
    if msi_from not in ("file", "gt"):
        raise InputError(f"--msi-from must be 'file' or 'gt', got {msi_from!r}")
    if cfg.lr_from not in ("gt", "file"):
        raise InputError(f"--lr-from must be 'gt' or 'file', got {cfg.lr_from!r}")
    if synthetic and (msi_from == "file" or cfg.lr_from == "file"):
        raise InputError("synthetic scenes have no file inputs: --msi-from file and --lr-from file need a "
                         "community .h5 (--data FILE.h5); use --msi-from gt --lr-from gt")
    return msi_from, cfg.lr_from


def _check_ratio(value: Any, flag: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 2:
        raise InputError(f"{flag} must be an integer >= 2, got {value!r}")
    return int(value)


def _file_ratio(data: str) -> int:
    """The ratio of a community file's LRHSI (GT size / LRHSI size, rounded), or an error saying why there is none."""
    from lso.data.readers import fit_to_ratio
    from lso.deps import require

    with require("h5py").File(data, "r") as f:
        key = _lr_key(f)
        if key is None or "GT" not in f:
            raise InputError(f"{data}: --lr-from file needs GT and LRHSI datasets, found {sorted(f.keys())}")
        hr_size, lr_size = f["GT"].shape[-2:], f[key].shape[-2:]
    return fit_to_ratio(hr_size, lr_size=lr_size, hr_name=f"{data} GT", lr_name="LRHSI").ratio


# ---------------------------------------------------------------------------------------- band-wise
class _BandErrors:
    """Per-method running lists of per-band PSNR and RMSE (mean over scenes at the end)."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, list[np.ndarray]]] = {}

    def add(self, method: str, gt: np.ndarray, est: np.ndarray) -> None:
        from lso.metrics import band_errors

        errs = band_errors(gt, est, clamp=True)
        entry = self.rows.setdefault(method, {"psnr": [], "rmse": []})
        for key in ("psnr", "rmse"):
            entry[key].append(errs[key])

    def summary(self, n_bands: int) -> dict[str, Any]:
        from lso.data.srf import WAVELENGTHS_NM

        wavelengths = [int(v) for v in WAVELENGTHS_NM] if n_bands == len(WAVELENGTHS_NM) else None
        methods = {m: {k: [float(v) for v in np.mean(np.stack(vals), axis=0)] for k, vals in e.items()}
                   for m, e in self.rows.items()}
        return {"wavelengths_nm": wavelengths, "clamped": True, "mean_over": "scenes", "methods": methods}


def bandwise_figure(path: Path, panels: dict[str, dict[str, Any]], labels: dict[str, str] | None = None,
                    title: str = "") -> Path:
    """PNG: per-band PSNR (top) and RMSE (bottom) per method, one column per panel (e.g. per ratio).

    Args:
        path: output PNG (written atomically).
        panels: ``{panel title: bandwise}`` with ``bandwise`` as in a report's ``"bandwise"`` entry.
        labels: legend label of each method key (default: the key).
        title: figure title.
    """
    from lso.deps import require

    require("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lso.artifacts import atomic_path

    labels = labels or {}
    fig, axes = plt.subplots(2, len(panels), figsize=(4.5 * len(panels) + 1, 6.5), squeeze=False, sharex=True)
    for col, (name, bandwise) in enumerate(panels.items()):
        for method, errs in bandwise["methods"].items():
            x = bandwise["wavelengths_nm"] or list(range(len(errs["psnr"])))
            psnr = np.where(np.isfinite(errs["psnr"]), errs["psnr"], np.nan)  # an exact band is not plottable
            axes[0, col].plot(x, psnr, marker=".", label=labels.get(method, method))
            axes[1, col].plot(x, errs["rmse"], marker=".", label=labels.get(method, method))
        axes[0, col].set_title(name)
        axes[0, col].set_ylabel("PSNR (dB)")
        axes[1, col].set_ylabel("RMSE")
        axes[1, col].set_xlabel("wavelength (nm)" if bandwise["wavelengths_nm"] else "band")
        for ax in axes[:, col]:
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(title or "band-wise error (mean over scenes; estimates clamped to [0, 1])")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------ single ratio
def _close_on_exit(stack: ExitStack, model: Any) -> None:
    """Register an entered runner's ``__exit__`` so it is released when the evaluation ends."""
    import torch

    if not isinstance(model, torch.nn.Module) and hasattr(model, "__exit__"):
        stack.push(model)


#: what ``lso eval`` writes in ``--out``: reports, figures, fused scenes (+ sidecars), temporaries
_OUTPUT_NAMES = (r"eval_x[0-9]+(?:\.json|\.md|_bandwise\.png)|cross_scale(?:\.json|\.md|_bandwise\.png)"
                 r"|[^/]*_x[0-9]+(?:\.png|_lso\.npz(?:\.json)?)|\.[^/]*\.tmp")


def _scale_record(cfg: EvalConfig) -> str:
    """What the report says about ``cfg.input_scale`` (:meth:`lso.data.value_range.InputScale.record`)."""
    from lso.data.value_range import InputScale

    return InputScale.parse(cfg.input_scale).record()


def check_eval_clash(cfg: EvalConfig) -> None:
    """InputError when the checkpoint or the data file (or their sidecars) lies in ``cfg.out`` under a name
    ``lso eval`` writes there (see :mod:`lso.artifacts`)."""
    from lso.artifacts import OutputFolder, check_no_clash, with_sidecars
    from lso.weights import is_demo_name

    inputs = []
    if cfg.checkpoint is not None and not is_demo_name(cfg.checkpoint):
        inputs += with_sidecars([cfg.checkpoint], "checkpoint")
    if cfg.data != "synthetic":
        inputs += with_sidecars([cfg.data], "data")
    check_no_clash(inputs, folders=[OutputFolder(cfg.out, _OUTPUT_NAMES, recursive=False)])


def evaluate_set(cfg: EvalConfig, *, progress: bool = True) -> dict[str, Any]:
    """Run the evaluation and write its report; returns the report dict.

    With ``cfg.cross_scale`` this is :func:`cross_scale`. Otherwise, at one ratio r: per scene, LSO,
    bicubic and GSA get the same inputs (see :func:`prepare_inputs`), every estimate is clamped to
    [0, 1] and scored (:func:`lso.metrics.evaluate`, keys :data:`lso.metrics.REPORT_NAMES`).

    Raises:
        InputError: bad options, missing sources, a size that does not fit the ratio without ``crop``.
        ArtifactError: unreadable checkpoint or data.
    """
    check_eval_clash(cfg)  # before anything runs
    _scale_record(cfg)  # InputError for a bad --input-scale, before anything runs
    _runner_options(cfg)  # InputError for a --runner-option key with a flag of its own, before anything runs
    if cfg.cross_scale:
        return cross_scale(cfg, progress=progress)
    import torch

    from lso.artifacts import atomic_write_text
    from lso.baselines import bicubic_upsample, gsa_fusion
    from lso.metrics import REPORT_NAMES, evaluate, labelled, summarize

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    msi_from, lr_from = _resolve_sources(cfg)
    if cfg.ratio is None:
        ratio = _file_ratio(cfg.data) if lr_from == "file" else 4
    else:
        ratio = _check_ratio(cfg.ratio, "--ratio")
    out = Path(cfg.out)
    bands = _BandErrors()
    per_image: list[dict[str, Any]] = []
    with ExitStack() as stack:
        model, label = _load_model(cfg.checkpoint, cfg.config, cfg.backend, cfg.threads, _runner_options(cfg))
        _close_on_exit(stack, model)
        out.mkdir(parents=True, exist_ok=True)
        scenes = iter_items(cfg.data, cfg.n, cfg.size, with_lr=lr_from == "file", input_scale=cfg.input_scale)
        total = _count(cfg.data, cfg.n)
        for scene in _progress(scenes, progress, total=total):
            gt, msi, lr = prepare_inputs(scene, ratio, msi_from=msi_from, lr_from=lr_from, crop=cfg.crop)
            t0 = time.perf_counter()
            fused = fuse_with(model, msi, lr, cfg.tile)
            t_lso = time.perf_counter() - t0
            outputs = {"bicubic": np.asarray(bicubic_upsample(lr, ratio)),
                       "gsa": np.asarray(gsa_fusion(msi, lr, ratio)), "lso": fused}
            n_bands = int(fused.shape[-3])
            row: dict[str, Any] = {"scene": scene.name, "size": list(gt.shape[-2:]), "lso_seconds": t_lso}
            if tuple(gt.shape[-2:]) != tuple(scene.gt.shape[-2:]):
                row["cropped_from"] = list(scene.gt.shape[-2:])
            for method, est in outputs.items():
                row[method] = labelled(evaluate(gt, est, ratio))
                bands.add(method, gt, est)
            per_image.append(row)
            if cfg.save_fused:
                _save_fused(out / f"{scene.name}_x{ratio}_lso.npz", fused)
            if cfg.png:
                scene_figure(out / f"{scene.name}_x{ratio}.png", gt, msi, outputs, title=f"{scene.name} x{ratio}")
    if not per_image:
        raise InputError(f"{cfg.data}: no scenes to evaluate (n={cfg.n})")
    summary = {m: summarize([r[m] for r in per_image]) for m in METHODS}
    report: dict[str, Any] = {"protocol": "single-ratio", "checkpoint": label, "data": cfg.data, "ratio": ratio,
              "input_scale": _scale_record(cfg),
              "sources": _sources(cfg.data, msi_from, lr_from), "clamped": True, "clamp_note": CLAMP_NOTE,
              "crop": _crop_note(cfg.crop, per_image), "metrics": list(REPORT_NAMES), "scenes": len(per_image),
              "summary": summary, "bandwise": bands.summary(n_bands), "per_image": per_image}
    atomic_write_text(out / f"eval_x{ratio}.json", json.dumps(report, indent=2, default=float) + "\n")
    atomic_write_text(out / f"eval_x{ratio}.md", markdown_summary(report))
    if cfg.png:
        bandwise_figure(out / f"eval_x{ratio}_bandwise.png", {f"x{ratio}": report["bandwise"]},
                        title=f"band-wise error x{ratio} ({len(per_image)} scene(s); estimates clamped to [0, 1])")
    return report


def _count(data: str, n: int | None) -> int:
    """How many scenes :func:`iter_items` yields (for the progress bar)."""
    from lso.data.sources import SceneSource

    with SceneSource(data) as source:
        return source.count(n)


def _save_fused(path: Path, fused: np.ndarray) -> None:
    from lso.artifacts import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:  # a file object: np.savez would append .npz to a path
            np.savez(fh, hr_hsi=np.asarray(fused, dtype=np.float32))


def _crop_note(crop: bool, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    cropped = [r["scene"] for r in rows if "cropped_from" in r]
    return {"allowed": crop, "cropped_scenes": cropped,
            "note": (f"{len(cropped)} scene(s) cropped top-left to a multiple of the ratio (see per_image)"
                     if cropped else "no scene cropped")}


def _fmt(stat: dict[str, float], key: str, n: int = 2) -> str:
    """``mean ± std``; the value alone for one scene (its spread says nothing)."""
    digits = 4 if key == "ssim" else 3
    if n < 2:
        return f"{stat['mean']:.{digits}f}"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def _header_lines(report: dict[str, Any]) -> list[str]:
    src = report["sources"]
    return [f"- HR-MSI: {src['hr_msi']} (`--msi-from {src['msi_from']}`)",
            f"- LR-HSI: {src['lr_hsi']} (`--lr-from {src['lr_from']}`)",
            f"- {CLAMP_NOTE[0].upper() + CLAMP_NOTE[1:]}; ERGAS (true r) divides by the true ratio, "
            "ERGAS (paper, r=4) by 4 at every ratio, as the paper's tables do"]


def markdown_summary(report: dict[str, Any]) -> str:
    """Markdown: the sources, the clamp, and method × (PSNR, SAM, both ERGAS, SSIM) as mean ± std."""
    from lso.metrics import REPORT_HEADERS, REPORT_NAMES

    lines = [f"Evaluation x{report['ratio']} on {report['scenes']} scene(s) of `{report['data']}`, "
             f"model `{report['checkpoint']}`", "", *_header_lines(report)]
    if report["crop"]["cropped_scenes"]:
        lines.append(f"- Crop: {report['crop']['note']}")
    lines += ["", "| method | " + " | ".join(REPORT_HEADERS[k] for k in REPORT_NAMES) + " |",
              "|---" * (len(REPORT_NAMES) + 1) + "|"]
    for m in METHODS:
        s = report["summary"][m]
        lines.append(f"| {m} | " + " | ".join(_fmt(s[k], k, report["scenes"]) for k in REPORT_NAMES) + " |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------- cross-scale
def training_ratio(checkpoint: str | None) -> tuple[int | None, str]:
    """The ratio a model was trained at, as its file records it, and where that came from.

    Official checkpoints: the saved option ``sf`` (metadata ``official_config``); ours: metadata
    ``ratio``; ONNX graphs and plans: a ``ratio`` in their sidecar. ``(None, reason)`` when none is
    recorded.

    Args:
        checkpoint: checkpoint or artifact path; None (or the demo spelling) = the bundled demo checkpoint.
    """
    from lso.artifacts import read_sidecar
    from lso.checkpoint import CHECKPOINT_SUFFIXES, read_state_dict
    from lso.weights import demo_checkpoint, resolve_checkpoint

    path = demo_checkpoint() if checkpoint is None else resolve_checkpoint(checkpoint)
    if str(path).endswith(CHECKPOINT_SUFFIXES):
        _, meta = read_state_dict(path)
        candidates: list[tuple[Any, str]] = []
        if "official_config" in meta:
            try:
                candidates.append((json.loads(meta["official_config"]).get("sf"), "the checkpoint's saved option sf"))
            except (ValueError, AttributeError) as exc:
                log.warning("%s: official_config is not readable JSON (%s)", path, exc)
        if "ratio" in meta:
            try:
                candidates.append((json.loads(meta["ratio"]), "the checkpoint's metadata 'ratio'"))
            except ValueError:
                candidates.append((meta["ratio"], "the checkpoint's metadata 'ratio'"))
    else:
        sidecar = read_sidecar(path) or {}
        candidates = [(sidecar.get("ratio"), f"{path.name}'s sidecar 'ratio'")]
    for value, source in candidates:
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value, source
        if value is not None:
            log.warning("%s: %s is %r, not a positive integer; ignored", path.name, source, value)
    return None, f"{path.name} records no training ratio (no saved 'sf' or 'ratio')"


def _lcm(a: int, b: int) -> int:
    return a * b // math.gcd(a, b)


def cross_scale(cfg: EvalConfig, *, progress: bool = True) -> dict[str, Any]:
    """The authors' cross-scale protocol and the direct form, as one table.

    For each ratio r in ``cfg.ratios`` and each scene: LR-HSI = :func:`lso.data.degrade` of GT at r
    (σ = 0.5·r); HR-MSI from ``cfg.msi_from`` (default: the file's RGB). Then

    - ``lso_direct``: the model at the true ratio r (HR-MSI ``[3, H, W]``, LR-HSI ``[31, H/r, W/r]``);
    - ``lso_fixed_ratio``: the LR-HSI FFT-resampled (:func:`lso.data.fft_resize`) to ``H/f × W/f`` and
      the model run at ratio f, the checkpoint's training ratio (:func:`training_ratio`; default
      :data:`DEFAULT_FIXED_RATIO` with a note; ``cfg.fixed_ratio`` overrides), as the authors' script does;
    - ``bicubic``, ``gsa``: the true-ratio LR-HSI, the same for both forms.

    A size that is not a multiple of r and f is cropped top-left to the largest one that is, for every
    method alike, and the table says so. Every estimate is clamped to [0, 1] before its metrics; ERGAS
    is reported with the true ratio r and as the paper's (r fixed at 4). Writes
    ``<out>/cross_scale.json``, ``<out>/cross_scale.md`` and (with ``cfg.png``)
    ``<out>/cross_scale_bandwise.png``.

    Returns:
        The report dict (``results[str(r)]``: size, crop, summary and band-wise errors per method).

    Raises:
        InputError: bad ratios, ``lr_from="file"`` (the protocol regenerates the LR-HSI at each ratio),
            ``save_fused``, or a missing source.
    """
    import torch

    from lso.artifacts import atomic_write_text
    from lso.baselines import bicubic_upsample, gsa_fusion
    from lso.data import fft_resize
    from lso.metrics import REPORT_NAMES, evaluate, labelled, summarize

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    msi_from, lr_from = _resolve_sources(cfg)
    if lr_from != "gt":
        raise InputError("--cross-scale regenerates the LR-HSI from GT at every ratio: --lr-from file does not apply")
    if cfg.save_fused:
        raise InputError("--save-fused is for the single-ratio protocol; drop it or --cross-scale")
    if cfg.ratio is not None:
        raise InputError("--cross-scale takes its ratios from --ratios, not --ratio")
    ratios = [_check_ratio(r, "--ratios") for r in (cfg.ratios or ())]
    if not ratios or len(set(ratios)) != len(ratios):
        raise InputError(f"--ratios must list distinct integers >= 2 (e.g. 4,8,16,32), got {list(cfg.ratios)}")
    notes: list[str] = []
    per_image: list[dict[str, Any]] = []
    bands = {r: _BandErrors() for r in ratios}
    sizes: dict[int, dict[str, Any]] = {}
    with ExitStack() as stack:
        model, label = _load_model(cfg.checkpoint, cfg.config, cfg.backend, cfg.threads, _runner_options(cfg))
        _close_on_exit(stack, model)
        fixed: int | None
        if cfg.fixed_ratio is not None:
            fixed, fixed_source = _check_ratio(cfg.fixed_ratio, "--fixed-ratio"), "--fixed-ratio"
        else:
            fixed, reason = training_ratio(cfg.checkpoint)
            fixed_source = reason
            if fixed is None:
                fixed, fixed_source = DEFAULT_FIXED_RATIO, f"default ({reason})"
                notes.append(f"{reason}: the fixed-ratio form uses f = {DEFAULT_FIXED_RATIO}; "
                             "pass --fixed-ratio to set it")
                log.warning(notes[-1])
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
        scenes = iter_items(cfg.data, cfg.n, cfg.size, input_scale=cfg.input_scale)
        total = _count(cfg.data, cfg.n)
        bar = _progress(scenes, progress, total=total, desc="cross-scale")
        for scene in bar:
            for r in ratios:
                gt, msi, lr = prepare_inputs(scene, r, msi_from=msi_from, crop=True, multiple=_lcm(r, fixed))
                H, W = gt.shape[-2:]
                lr_fixed = fft_resize(lr, (H // fixed, W // fixed))
                outputs = {"lso_direct": fuse_with(model, msi, lr, cfg.tile),
                           "lso_fixed_ratio": fuse_with(model, msi, lr_fixed, cfg.tile),
                           "bicubic": np.asarray(bicubic_upsample(lr, r)),
                           "gsa": np.asarray(gsa_fusion(msi, lr, r))}
                row: dict[str, Any] = {"scene": scene.name, "ratio": r, "size": [H, W]}
                if (H, W) != tuple(scene.gt.shape[-2:]):
                    row["cropped_from"] = list(scene.gt.shape[-2:])
                for method, est in outputs.items():
                    row[method] = labelled(evaluate(gt, est, r))
                    bands[r].add(method, gt, est)
                per_image.append(row)
                n_bands = int(outputs["lso_direct"].shape[-3])
                entry = sizes.setdefault(r, {"sizes": set(), "cropped_from": set()})
                entry["sizes"].add((H, W))
                if "cropped_from" in row:
                    entry["cropped_from"].add(tuple(row["cropped_from"]))
    if not per_image:
        raise InputError(f"{cfg.data}: no scenes to evaluate (n={cfg.n})")
    labels = _cross_labels(fixed)
    results: dict[str, Any] = {}
    for r in ratios:
        rows = [p for p in per_image if p["ratio"] == r]
        crops = sorted(sizes[r]["cropped_from"])
        results[str(r)] = {
            "sizes": [list(s) for s in sorted(sizes[r]["sizes"])],
            "cropped_from": [list(s) for s in crops],
            "crop_note": (f"cropped top-left to a multiple of {_lcm(r, fixed)} (r={r}, f={fixed})" if crops
                          else "not cropped"),
            "summary": {m: summarize([p[m] for p in rows]) for m in CROSS_SCALE_METHODS},
            "bandwise": bands[r].summary(n_bands),
        }
    report = {"protocol": "cross-scale", "checkpoint": label, "data": cfg.data, "ratios": ratios,
              "input_scale": _scale_record(cfg),
              "fixed_ratio": fixed, "fixed_ratio_source": fixed_source, "methods": list(CROSS_SCALE_METHODS),
              "method_labels": labels, "sources": _sources(cfg.data, msi_from, lr_from),
              "fixed_ratio_form": (f"LR-HSI degraded at r, FFT-resampled (lso.data.fft_resize) to H/{fixed} x "
                                   f"W/{fixed}, model run at x{fixed} (the authors' protocol)"),
              "direct_form": "LR-HSI degraded at r, model run at the true ratio r",
              "baselines": "bicubic and GSA get the true-ratio LR-HSI in both forms",
              "clamped": True, "clamp_note": CLAMP_NOTE, "metrics": list(REPORT_NAMES), "notes": notes,
              "scenes": len(per_image) // len(ratios), "results": results, "per_image": per_image}
    out = Path(cfg.out)
    atomic_write_text(out / "cross_scale.json", json.dumps(report, indent=2, default=float) + "\n")
    atomic_write_text(out / "cross_scale.md", cross_scale_markdown(report))
    if cfg.png:
        bandwise_figure(out / "cross_scale_bandwise.png", {f"x{r}": results[str(r)]["bandwise"] for r in ratios},
                        labels=labels, title=f"band-wise error across scales (fixed ratio f = {fixed}; estimates "
                                             "clamped to [0, 1])")
    return report


def _cross_labels(fixed: int) -> dict[str, str]:
    return {"lso_direct": "LSO (direct)", "lso_fixed_ratio": f"LSO (fixed-ratio f={fixed})", "bicubic": "bicubic",
            "gsa": "GSA"}


def cross_scale_markdown(report: dict[str, Any]) -> str:
    """Markdown: the protocol, sources and notes, then one table ratio × method × metrics."""
    from lso.metrics import REPORT_HEADERS, REPORT_NAMES

    f = report["fixed_ratio"]
    lines = [f"Cross-scale evaluation on {report['scenes']} scene(s) of `{report['data']}`, model "
             f"`{report['checkpoint']}`, ratios {', '.join(f'x{r}' for r in report['ratios'])}", "",
             f"- LSO (direct): {report['direct_form']}",
             f"- LSO (fixed-ratio f={f}): {report['fixed_ratio_form']}; f from {report['fixed_ratio_source']}",
             f"- Bicubic, GSA: {report['baselines']}", *_header_lines(report)]
    lines += [f"- Note: {n}" for n in report["notes"]]
    lines += ["", "| ratio | size | method | " + " | ".join(REPORT_HEADERS[k] for k in REPORT_NAMES) + " |",
              "|---" * (len(REPORT_NAMES) + 3) + "|"]
    for r in report["ratios"]:
        res = report["results"][str(r)]
        size = ", ".join(f"{h}x{w}" for h, w in res["sizes"])
        if res["cropped_from"]:
            size += " (cropped from " + ", ".join(f"{h}x{w}" for h, w in res["cropped_from"]) + ")"
        for m in report["methods"]:
            s = res["summary"][m]
            lines.append(f"| x{r} | {size} | {report['method_labels'][m]} | "
                         + " | ".join(_fmt(s[k], k, report["scenes"]) for k in REPORT_NAMES) + " |")
    return "\n".join(lines) + "\n"


def _runner_options(cfg: EvalConfig) -> dict[str, Any]:
    """``cfg.runner_options`` checked (InputError for a key that is not a string or has a flag of its own)."""
    from lso.runtime.base import OPTION_FLAGS, check_runner_options

    return check_runner_options(cfg.runner_options, own_flags={k: OPTION_FLAGS[k] for k in RUNNER_OWN_FLAGS})


def _load_model(checkpoint: str | None, config: dict[str, Any] | None = None, backend: str | None = None,
                threads: int = 0, runner_options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """``(model or active runner, label)``; ``checkpoint`` None or ``@demo``: the bundled demo checkpoint.

    ``backend`` (other than ``"torch"``) runs the artifact with that runner (:func:`lso.runtime.load`), with
    ``threads`` intra-op threads when given. ``runner_options`` go to :func:`lso.runtime.load` (the backend refuses
    one it does not take); with any, a checkpoint runs in a :class:`~lso.runtime.TorchRunner` (the options it takes:
    ``fp16``, ``tf32``, ``compile``), without, as a plain module.
    """
    from lso import runtime
    from lso.checkpoint import CHECKPOINT_SUFFIXES, load_checkpoint
    from lso.weights import DEMO_NAME, is_demo_name, resolve_checkpoint

    options = dict(runner_options or {})
    name = checkpoint or DEMO_NAME
    demo = is_demo_name(name)
    source: str | Path
    if backend not in (None, "torch"):
        source, label = resolve_checkpoint(name), f"{name} ({backend})"
    elif demo or name.endswith(CHECKPOINT_SUFFIXES):
        source = resolve_checkpoint(DEMO_NAME) if demo else Path(name)
        label = f"bundled:{source.name}" if demo else name
        if not options:  # a plain module; with options it goes to lso.runtime.load, in a TorchRunner
            return load_checkpoint(source, config), label
        backend = "torch"
    else:  # a graph or a plan: its suffix picks the runner (backend "torch" refuses it: lso.runtime.load says so)
        source, label = name, name
    # threads: a hint, ignored by backends without intra-op threads
    runner = runtime.load(source, config=config, backend=backend, threads=threads or None, **options)
    runner.__enter__()
    return runner, label


def _progress(items, enabled: bool, total: int | None = None, desc: str = "eval"):
    if not enabled:
        return items
    try:
        from tqdm import tqdm
    except ImportError:
        return items
    return tqdm(items, total=total, desc=desc, unit="scene")


def scene_figure(path: Path, gt: np.ndarray, msi: np.ndarray, outputs: dict[str, np.ndarray], title: str = "",
                 pixels: list[tuple[int, int]] | None = None) -> Path:
    """PNG: RGB input, bicubic, LSO (false colour), |LSO - GT| map, spectra at three pixels."""
    from lso.deps import require

    require("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lso.artifacts import atomic_path
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
    for ax, (name, img) in zip(axes[:3], panels, strict=True):
        ax.imshow(img)
        ax.set_title(name)
        ax.axis("off")
    im = axes[3].imshow(err, cmap="inferno", vmin=0, vmax=max(float(np.percentile(err, 99)), 1e-6))
    axes[3].set_title("|LSO - GT| (mean over bands)")
    axes[3].axis("off")
    fig.colorbar(im, ax=axes[3], fraction=0.046)
    colors = ["tab:red", "tab:green", "tab:blue"]
    for (i, j), c in zip(pixels, colors, strict=False):  # the first three pixels, one colour each
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
