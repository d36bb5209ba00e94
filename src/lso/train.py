"""Training and fine-tuning (``lso train``): the paper's recipe by default, resumable.

Recipe (official): L1 loss; AdamW lr 3e-4, weight decay 1e-4; StepLR every 300 epochs x0.6; batch 16;
GT patches 64x64 (LR 16x16 at x4); no augmentation; best checkpoint by validation PSNR (output clamped
to [0, 1]). Here an "epoch" is ``steps_per_epoch`` optimizer steps, so the schedule is the same for a
finite HDF5 set and for synthetic scenes generated on the fly.

Data:
- HDF5 files in the community format (``GT``/``RGB``): random GT crops, degraded per crop with the
  paper's protocol (as the official training does with its 64x64 patches).
- Synthetic scenes (default): a pool of scenes from the *training* seeds, each degraded whole with
  the paper's protocol, random aligned crops from it; one scene of the pool is replaced by a fresh
  seed every ``refresh_every`` steps, so the model sees many scenes. Validation uses the separate
  validation seeds, never the held-out evaluation seeds.

Ratio mix (``--ratios 4,8,16,32 --fixed-ratio-form P``; default: the training ratio alone, the paper
recipe): each batch draws one ratio r from ``ratios`` (repeats weight the draw) and, with probability P
(r != f), the authors' fixed-ratio form: GT degraded at r (sigma = 0.5 r), the LR-HSI FFT-resampled
(``lso.data.fft_resize``) to H/f x W/f and the model run at x f (f = ``fixed_ratio``, 4). Synthetic scenes
are degraded and resampled whole, then cropped aligned at the model's ratio; the crop must be a multiple
of every ratio used. Validation covers every (ratio, form) of the mix; the logged ``val_psnr`` (and the
best-checkpoint choice) is the mean over these modes, with the per-mode PSNR in ``val_modes`` and the
per-mode training loss in ``loss_modes``.

Resumable: ``<out>/last.pt`` (model, optimizer, scheduler, step, RNG states, data state) is written
atomically every ``save_every`` steps and at the end; ``--resume`` continues from it. The best model
by validation PSNR is ``<out>/best.safetensors``; ``<out>/log.jsonl`` has one line per log/validation.
One run per folder at a time: ``<out>/.lso.lock`` (:func:`lso.artifacts.output_lock`) holds it while it runs, and a
second run into the same folder is refused with an ``ArtifactError`` naming the first (PID, host, start time,
command) before it reads or writes ``last.pt``.
"""
from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lso.artifacts import atomic_path, atomic_write_text, os_error_message, output_lock
from lso.config import LSOConfig
from lso.errors import ArtifactError, InputError
from lso.model import LSO

__all__ = ["TrainConfig", "train", "SyntheticCrops", "H5Crops", "validate", "validation_groups", "mode_label"]

log = logging.getLogger(__name__)

# The first VAL_RESERVED training seeds are the validation split (same distribution as training, never
# trained on); training draws from the rest. The held-out evaluation seeds are never touched here.
VAL_RESERVED = 64


@dataclass
class TrainConfig:
    """Everything a training run needs (stored in its checkpoint; ``resume`` restores it)."""

    out: str = "runs/lso"
    data: str = "synthetic"  # "synthetic" or a path to a community-format .h5 file
    val_data: str | None = None  # .h5 validation file (default for synthetic: validation seeds)
    ratio: int = 4
    # ratio mix: each batch draws one ratio from this list (a ratio listed twice is drawn twice as often);
    # None = [ratio] (the paper recipe). Training, validation and crops then cover every listed ratio.
    ratios: list[int] | None = None
    # the authors' fixed-ratio form: probability that a batch (with ratio r != fixed_ratio) is degraded at r,
    # its LR-HSI FFT-resampled (lso.data.fft_resize) to size/fixed_ratio and the model run at x fixed_ratio
    fixed_ratio_form: float = 0.0
    fixed_ratio: int = 4
    crop: int = 64  # GT crop size (multiple of every ratio used and of 4)
    batch: int = 16
    lr: float = 3e-4
    weight_decay: float = 1e-4
    epochs: int = 1001
    steps_per_epoch: int = 100
    lr_step_epochs: int = 300
    lr_gamma: float = 0.6
    warmup_steps: int = 0
    grad_clip: float = 0.0  # 0 = off (the paper uses none)
    seed: int = 0
    threads: int = 0  # torch threads (0 = torch default)
    init: str | None = None  # fine-tune from this checkpoint (official or ours)
    model: dict = field(default_factory=dict)  # LSOConfig overrides (e.g. for tests)
    # synthetic data
    scene_size: int = 256
    pool: int = 16
    refresh_every: int = 50
    val_scenes: int = 4
    val_size: int = 128
    # bookkeeping
    val_every: int = 200
    save_every: int = 100
    log_every: int = 20
    max_steps: int | None = None  # stop after this many steps in total (None: epochs * steps_per_epoch)
    max_minutes: float | None = None  # stop (and save) after this wall time in this session

    @property
    def total_steps(self) -> int:
        return self.max_steps if self.max_steps is not None else self.epochs * self.steps_per_epoch

    @property
    def mix_ratios(self) -> list[int]:
        """The ratios batches are drawn from (with repeats as weights): ``ratios`` or ``[ratio]``."""
        return [int(r) for r in self.ratios] if self.ratios else [self.ratio]

    @property
    def modes(self) -> list[tuple[int, bool]]:
        """The distinct ``(ratio, fixed_form)`` pairs of the mix, in order (validation covers each).

        The fixed-ratio form at ``r == fixed_ratio`` is the direct form (the FFT resample is the identity),
        so it is listed once, as direct.
        """
        ratios = list(dict.fromkeys(self.mix_ratios))
        modes = [(r, False) for r in ratios]
        if self.fixed_ratio_form > 0:
            modes += [(r, True) for r in ratios if r != self.fixed_ratio]
        return modes

    def check_mix(self) -> None:
        """Check that crops and scenes fit every ratio of the mix.

        Raises:
            InputError: a ratio below 2, a probability outside [0, 1], or a crop / scene size that is not
                a multiple of every ratio used (and of 4).
        """
        used = sorted(set(self.mix_ratios) | ({self.fixed_ratio} if self.fixed_ratio_form > 0 else set()))
        if any(r < 2 for r in used):
            raise InputError(f"ratios {used}: every ratio must be an integer >= 2 (e.g. --ratios 4,8,16,32)")
        if not 0.0 <= self.fixed_ratio_form <= 1.0:
            raise InputError(f"--fixed-ratio-form {self.fixed_ratio_form} is a probability: give a value in [0, 1]")
        lcm = math.lcm(4, *used)
        if self.crop % lcm:
            raise InputError(f"--crop {self.crop} must be a multiple of the ratio(s) {used} and of 4: "
                             f"use a multiple of {lcm} (e.g. --crop {max(lcm, self.crop // lcm * lcm)})")
        if self.data == "synthetic":
            for name in ("scene_size", "val_size"):
                size = getattr(self, name)
                if size % lcm or size < self.crop * (name == "scene_size"):
                    raise InputError(f"--{name.replace('_', '-')} {size} must be a multiple of {lcm} (every ratio "
                                     f"used: {used}){' and at least --crop' if name == 'scene_size' else ''}; "
                                     f"use e.g. {max(lcm, self.crop)}")


# -------------------------------------------------------------------------------------------- data
def _aligned_crop(rng: np.random.Generator, gt: np.ndarray, msi: np.ndarray, lr: np.ndarray, crop: int,
                  ratio: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A random crop of (gt, msi) with its matching LR crop (origin on the LR grid)."""
    lc = crop // ratio
    i = int(rng.integers(0, lr.shape[-2] - lc + 1)) if lr.shape[-2] > lc else 0
    j = int(rng.integers(0, lr.shape[-1] - lc + 1)) if lr.shape[-1] > lc else 0
    hi, hj = i * ratio, j * ratio
    return (gt[:, hi:hi + crop, hj:hj + crop], msi[:, hi:hi + crop, hj:hj + crop], lr[:, i:i + lc, j:j + lc])


def _draw_mode(rng: np.random.Generator, cfg: TrainConfig) -> tuple[int, bool]:
    """One batch's ``(ratio, fixed_form)``; draws nothing for the paper recipe (one ratio, direct form)."""
    ratios = cfg.mix_ratios
    r = ratios[int(rng.integers(0, len(ratios)))] if len(ratios) > 1 else ratios[0]
    fixed = bool(cfg.fixed_ratio_form > 0 and r != cfg.fixed_ratio and rng.random() < cfg.fixed_ratio_form)
    return r, fixed


def _mode_lr(lr: np.ndarray, size: tuple[int, int], cfg: TrainConfig, fixed: bool) -> np.ndarray:
    """The LR-HSI the model sees: as degraded (direct form) or FFT-resampled to size / fixed_ratio."""
    if not fixed:
        return np.asarray(lr, np.float32)
    from lso.data import fft_resize

    return fft_resize(lr, (size[0] // cfg.fixed_ratio, size[1] // cfg.fixed_ratio))


class SyntheticCrops:
    """Endless random crops from a refreshed pool of synthetic training scenes.

    Each pooled scene is degraded whole at every ratio of the mix (sigma = 0.5 r) and, for the fixed-ratio
    form, its LR-HSI FFT-resampled whole to scene / fixed_ratio. Each batch draws one ``(ratio, form)``
    (so all its tensors have one size); ``last_mode`` is the latest draw.
    """

    def __init__(self, cfg: TrainConfig, state: dict | None = None) -> None:
        from lso.data import degrade
        from lso.data.sources import SceneSource
        from lso.data.synthetic import TRAIN_SEEDS

        self._degrade = degrade
        self.cfg = cfg
        # the training seeds after the validation ones (validation_groups)
        self.source = SceneSource(seeds=TRAIN_SEEDS[VAL_RESERVED:], size=cfg.scene_size)
        self._train_seeds = self.source.seeds
        state = state or {}
        self.next_index = state.get("next_index", 0)
        self.steps = state.get("steps", 0)
        self.rng = np.random.default_rng(cfg.seed + 7919 * self.steps)
        seeds = state.get("pool_seeds") or [self._take_seed() for _ in range(cfg.pool)]
        self.pool_seeds = list(seeds)
        self.last_mode: tuple[int, bool] | None = None
        self.scenes = [self._make(s) for s in self.pool_seeds]

    def _take_seed(self) -> int:
        seed = self._train_seeds[self.next_index % len(self._train_seeds)]
        self.next_index += 1
        return int(seed)

    def _make(self, seed: int) -> tuple[np.ndarray, np.ndarray, dict[tuple[int, bool], np.ndarray]]:
        gt = self.source.scene_of_seed(seed).gt
        lrs: dict[tuple[int, bool], np.ndarray] = {}
        for r, fixed in self.cfg.modes:
            msi, lr = self._degrade(gt, r)  # the HR-MSI does not depend on the ratio
            lrs[(r, fixed)] = _mode_lr(lr, gt.shape[-2:], self.cfg, fixed)
        return gt.astype(np.float32), np.asarray(msi, np.float32), lrs

    def state(self) -> dict:
        return {"next_index": self.next_index, "steps": self.steps, "pool_seeds": self.pool_seeds}

    def batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        self.steps += 1
        if cfg.refresh_every and self.steps % cfg.refresh_every == 0:
            k = int(self.rng.integers(0, len(self.scenes)))
            self.pool_seeds[k] = self._take_seed()
            self.scenes[k] = self._make(self.pool_seeds[k])
        r, fixed = self.last_mode = _draw_mode(self.rng, cfg)
        at = cfg.fixed_ratio if fixed else r
        picks = (self.scenes[int(self.rng.integers(0, len(self.scenes)))] for _ in range(cfg.batch))
        items = [_aligned_crop(self.rng, gt, msi, lrs[(r, fixed)], cfg.crop, at) for gt, msi, lrs in picks]
        gt, msi, lr = (torch.from_numpy(np.stack(x)) for x in zip(*items, strict=True))
        return gt, msi, lr


class H5Crops:
    """Random GT crops from a community-format HDF5 file, degraded per crop (paper protocol).

    With a ratio mix each batch draws one ``(ratio, form)`` (``last_mode``), as :class:`SyntheticCrops`.
    """

    def __init__(self, cfg: TrainConfig, state: dict | None = None) -> None:
        from lso.data import degrade
        from lso.data.sources import SceneSource

        self._degrade = degrade
        self.cfg = cfg
        self.source = SceneSource(cfg.data)
        self.steps = (state or {}).get("steps", 0)
        self.rng = np.random.default_rng(cfg.seed + 7919 * self.steps)
        self.last_mode: tuple[int, bool] | None = None

    def state(self) -> dict:
        return {"steps": self.steps}

    def batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        self.steps += 1
        r, fixed = self.last_mode = _draw_mode(self.rng, cfg)
        gts = []
        for _ in range(cfg.batch):
            gt = self.source[int(self.rng.integers(0, len(self.source)))].gt
            H, W = gt.shape[-2:]
            if H < cfg.crop or W < cfg.crop:
                raise InputError(f"{cfg.data}: items are {H}x{W}, smaller than --crop {cfg.crop}")
            i = int(self.rng.integers(0, H - cfg.crop + 1))
            j = int(self.rng.integers(0, W - cfg.crop + 1))
            gts.append(gt[:, i:i + cfg.crop, j:j + cfg.crop])
        gt = np.stack(gts).astype(np.float32)
        msi, lr = self._degrade(gt, r)
        lr = _mode_lr(lr, gt.shape[-2:], cfg, fixed)
        return torch.from_numpy(gt), torch.from_numpy(np.asarray(msi, np.float32)), torch.from_numpy(lr)


def mode_label(ratio: int, fixed: bool, fixed_ratio: int = 4) -> str:
    """``"x8"`` (direct form) or ``"x8/f4"`` (degraded at x8, FFT-resampled, model run at x4)."""
    return f"x{ratio}/f{fixed_ratio}" if fixed else f"x{ratio}"


def validation_groups(cfg: TrainConfig) -> dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """Validation triples per mode of the mix (:attr:`TrainConfig.modes`, labels from :func:`mode_label`).

    The run's validation PSNR is the mean over these modes of the per-mode mean PSNR (every mode has the
    same scenes, so it is also the mean over all items). For the paper recipe there is one mode, the
    training ratio: the same figure as before ratio mixes existed.
    """
    from lso.data import degrade
    from lso.data.sources import SceneSource

    if cfg.val_data:
        source = SceneSource(cfg.val_data)
    else:  # the first training seeds, never drawn for training (SyntheticCrops)
        from lso.data.synthetic import TRAIN_SEEDS

        source = SceneSource(seeds=TRAIN_SEEDS[: min(cfg.val_scenes, VAL_RESERVED)], size=cfg.val_size)
    with source:
        gts = [scene.gt for scene in source.scenes()]
    groups: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
    for r, fixed in cfg.modes:
        items = groups.setdefault(mode_label(r, fixed, cfg.fixed_ratio), [])
        for gt in gts:
            msi, lr = degrade(gt, r)
            items.append((np.asarray(gt, np.float32), np.asarray(msi, np.float32),
                          _mode_lr(lr, gt.shape[-2:], cfg, fixed)))
    return groups


def validation_set(cfg: TrainConfig) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Validation triples (gt, msi, lr): the HDF5 ``val_data`` or the synthetic validation seeds.

    All modes of the mix, in :func:`validation_groups` order (for the paper recipe: the training ratio).
    """
    return [item for items in validation_groups(cfg).values() for item in items]


@torch.no_grad()
def validate(model: LSO, items: list) -> float:
    """Mean PSNR (dB) over ``items``, output clamped to [0, 1] (as the paper selects checkpoints)."""
    from lso.metrics import psnr

    was_training = model.training
    model.eval()
    scores = []
    for gt, msi, lr in items:
        out = model(torch.from_numpy(msi)[None], torch.from_numpy(lr)[None]).clamp(0, 1)[0]
        scores.append(psnr(gt, out.numpy()))
    model.train(was_training)
    return float(np.mean(scores))


# -------------------------------------------------------------------------------------------- loop
def _save_state(path: Path, **state: Any) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _lr_factor(cfg: TrainConfig, step: int) -> float:
    epoch = step // cfg.steps_per_epoch
    factor = cfg.lr_gamma ** (epoch // cfg.lr_step_epochs)
    if cfg.warmup_steps and step < cfg.warmup_steps:
        factor *= (step + 1) / cfg.warmup_steps
    return factor


def _model_config(cfg: TrainConfig) -> LSOConfig:
    """The architecture of a new model: ``cfg.model`` (LSOConfig fields or the authors' option names) over the
    paper's."""
    from lso.checkpoint import normalize_config_fields

    try:
        return LSOConfig(**normalize_config_fields(cfg.model or {}, where="the model configuration"))
    except ValueError as exc:  # InputError is one
        raise InputError(f"the model configuration {cfg.model} is not valid: {exc}") from exc


def _ratio_metadata(cfg: TrainConfig) -> dict[str, Any]:
    """What a saved checkpoint records of its training ratio (evaluation reads ``ratio``).

    ``ratio``: the one ratio trained at, the fixed ratio of the authors' fixed-ratio form when that is used,
    else the first ratio of the mix; ``ratios``: the distinct ratios of a mix.
    """
    distinct = sorted(set(cfg.mix_ratios))
    meta: dict[str, Any] = {"ratio": cfg.fixed_ratio if cfg.fixed_ratio_form > 0 else cfg.mix_ratios[0]}
    if len(distinct) > 1:
        meta["ratios"] = distinct
    return meta


def check_train_clash(cfg: TrainConfig) -> None:
    """InputError when a file ``lso train`` writes in ``cfg.out`` (``last.pt``, ``best.safetensors`` and its
    sidecar, ``log.jsonl``) is one of its inputs (``--init``, ``--data``, ``--val-data``, their sidecars)."""
    from lso.artifacts import check_no_clash, with_sidecars
    from lso.weights import is_demo_name

    inputs = []
    if cfg.init and not is_demo_name(cfg.init):
        inputs += with_sidecars([cfg.init], "--init checkpoint")
    for label, path in (("--data", cfg.data), ("--val-data", cfg.val_data)):
        if path and path != "synthetic":
            inputs += with_sidecars([path], f"{label} file")
    out = Path(cfg.out)
    check_no_clash(inputs, [("output", out / "last.pt"), ("output", out / "best.safetensors"),
                            ("output sidecar", out / "best.safetensors.json"), ("output", out / "log.jsonl")])


def train(cfg: TrainConfig, *, resume: bool = False, progress: bool = True) -> Path:
    """Train (or fine-tune, or resume) an LSO; returns the path of the best checkpoint.

    Raises:
        ArtifactError: ``resume`` without a readable ``last.pt`` in ``cfg.out``; another run is writing into
            ``cfg.out`` (``<out>/.lso.lock``, :func:`lso.artifacts.output_lock`: the message names that run).
    """
    out = Path(cfg.out)
    check_train_clash(cfg)  # before anything runs: last.pt, best.safetensors, log.jsonl never replace an input
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArtifactError(f"cannot create the run folder {out}: {os_error_message(exc, out)}") from exc
    with output_lock(out, folder=True):  # one run per folder: a second one is refused before touching last.pt
        return _train_locked(cfg, resume=resume, progress=progress)


def _train_locked(cfg: TrainConfig, *, resume: bool, progress: bool) -> Path:
    """:func:`train` once ``cfg.out`` exists and is locked."""
    from lso.checkpoint import _check_zip, load_checkpoint, save_checkpoint

    out = Path(cfg.out)
    last = out / "last.pt"
    state: dict[str, Any] = {}
    if resume:
        if not last.exists():
            raise ArtifactError(f"--resume: {last} does not exist; start without --resume")
        _check_zip(last)  # the CRC-32 of every member: a damaged file is refused, not half-loaded
        try:
            # weights_only even for our own file: a file in a run folder can be replaced by anyone who can write there
            state = torch.load(last, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ArtifactError(f"--resume: {last} is unreadable or holds more than tensors and plain containers "
                                f"({type(exc).__name__}: {exc}); delete it to start over") from exc
        saved = TrainConfig(**state["train_config"])
        # keep the run's identity (data, model, recipe); allow extending the length and bookkeeping
        for name in ("epochs", "max_steps", "max_minutes", "val_every", "save_every", "log_every", "threads"):
            setattr(saved, name, getattr(cfg, name))
        cfg = saved
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    cfg.check_mix()

    if cfg.init and not state:
        # the checkpoint's own configuration; cfg.model may only add what it does not record (else LSOError)
        model = load_checkpoint(cfg.init, cfg.model or None)
        cfg.model = model.config.to_dict()  # carried over: last.pt (resume) and every saved checkpoint keep it
        log.info("fine-tuning from %s (%s)", cfg.init, model.config.to_json())
    else:
        model = LSO(_model_config(cfg))
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step, best = 0, -math.inf
    if state:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, best = state["step"], state["best"]
        torch.set_rng_state(state["torch_rng"])
    data = (SyntheticCrops if cfg.data == "synthetic" else H5Crops)(cfg, state.get("data"))
    val_groups = validation_groups(cfg)
    total = cfg.total_steps
    log_path = out / "log.jsonl"

    bar = None
    if progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=total, initial=step, desc="train", unit="step", dynamic_ncols=True)
        except ImportError:
            bar = None

    def save_last() -> None:
        _save_state(last, model=model.state_dict(), optimizer=opt.state_dict(), step=step, best=best,
                    torch_rng=torch.get_rng_state(), data=data.state(), train_config=asdict(cfg))

    t_start = time.time()
    losses: list[float] = []
    mode_losses: dict[str, list[float]] = {}
    stop = {"signal": None}

    def _on_term(signum, _frame):  # SIGTERM (and SIGINT where ignored, e.g. background jobs): save, then stop
        stop["signal"] = signum

    import signal
    import threading

    in_main_thread = threading.current_thread() is threading.main_thread()
    old_handler = signal.signal(signal.SIGTERM, _on_term) if in_main_thread else None
    try:
        while step < total and stop["signal"] is None:
            for group in opt.param_groups:
                group["lr"] = cfg.lr * _lr_factor(cfg, step)
            gt, msi, lr = data.batch()
            loss = F.l1_loss(model(msi, lr), gt)
            if len(val_groups) > 1 and data.last_mode is not None:
                mode_losses.setdefault(mode_label(*data.last_mode, cfg.fixed_ratio), []).append(float(loss.detach()))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            step += 1
            losses.append(float(loss.detach()))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.4f}", best=f"{best:.2f}")
            record: dict[str, Any] = {}
            if step % cfg.log_every == 0:
                record.update(step=step, loss=float(np.mean(losses)), lr=opt.param_groups[0]["lr"],
                              minutes=(time.time() - t_start) / 60)
                losses.clear()
                if mode_losses:
                    record["loss_modes"] = {k: float(np.mean(v)) for k, v in mode_losses.items()}
                    mode_losses.clear()
            if step % cfg.val_every == 0 or step == total:
                by_mode = {label: validate(model, items) for label, items in val_groups.items()}
                score = float(np.mean(list(by_mode.values())))  # mean over the modes of the mix
                record.update(step=step, val_psnr=score)
                if len(by_mode) > 1:
                    record["val_modes"] = by_mode
                if score > best:
                    best = score
                    save_checkpoint(model, out / "best.safetensors", step=step, val_psnr=score, **_ratio_metadata(cfg))
                    record["best"] = True
            if record:
                record["time"] = time.time()
                # rewritten whole and renamed (a few kB): a kill never leaves a half line behind
                previous = log_path.read_text(encoding="utf-8") if log_path.exists() else ""
                atomic_write_text(log_path, previous + json.dumps(record) + "\n")
            if step % cfg.save_every == 0:
                save_last()
            if cfg.max_minutes and (time.time() - t_start) / 60 >= cfg.max_minutes:
                log.info("stopping after %.1f min (--max-minutes)", cfg.max_minutes)
                break
    finally:
        save_last()
        if bar is not None:
            bar.close()
        if old_handler is not None:
            signal.signal(signal.SIGTERM, old_handler)
    if stop["signal"] is not None:
        log.warning("stopped by signal %s at step %d; state saved in %s (continue with --resume)", stop["signal"], step,
                    last)
    if not (out / "best.safetensors").exists():
        save_checkpoint(model, out / "best.safetensors", step=step, **_ratio_metadata(cfg))
    return out / "best.safetensors"
