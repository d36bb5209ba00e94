"""Exact tiled fusion: scenes of any size, memory bounded by the tile, equal to whole-image fusion.

The scene is cut into *cores* (the pixels each tile keeps) of ``tile`` x ``tile``; each tile's input
window is its core plus ``overlap`` pixels on every side (clamped at the scene border). Three things
make the stitched result equal to fusing the whole image at once:

1. **Alignment.** Window offsets are multiples of ``lcm(4 * patch_size, r)`` (16 for the paper's
   model at x4): the U-Net's two 2x poolings and the spectral blocks' patches (4 px at 1/4 scale =
   16 HR px) start on the same grid as in the whole image, and each HR window is exactly ``r`` times
   an LR window, so the LR crop ``lr_hsi[r0/r : r1/r]`` matches the HR crop. Interior windows are
   multiples of 16, so the model pads nothing inside the scene; at the bottom/right border the tile
   pads exactly as the whole image does.
2. **Global coordinates.** Each tile gets ``extent = (row0, col0, H, W)``, so its coordinate grid is
   the whole image's grid.
3. **Overlap >= receptive margin.** What differs between a tile and the whole image starts at the
   window border (zero-padded 3x3 convolutions, clamped bicubic/bilinear taps — including the
   bicubic up-sampling of the LR crop, which the model does itself) and spreads inward by the
   network's receptive field; :func:`receptive_margin` follows it layer by layer (about 45 px for
   the paper model at x4, so the default overlap is 48). The kept core lies deeper than that.

Measured on CPU: paper configuration (random weights), 256x256 x4 scene, 128-px cores (4 tiles of
176x176): max |tiled - whole| = 0.0 (the test, ``tests/runtime/test_tiling.py``, bounds it at 1e-5);
with overlap 32 instead of 48 it was 2.4e-7, with 16 it was 4.5e-5. Memory:
``benchmarks/tiling_memory.py`` (2048x2048 x4 under 3 GB peak RSS).

Memory budget: before anything is allocated, the output (when this function allocates it) and one
tile's working memory (:func:`tile_bytes`, from :func:`lso.memory.fusion_bytes`) are checked against
``memory_budget`` (default :func:`lso.memory.default_memory_budget`). A tile that does not fit is
shrunk (:func:`choose_tile`: the largest aligned core whose window fits, with a warning) rather than
failing; only when even the smallest tile, or the output itself, does not fit is an
:class:`~lso.errors.InputError` raised, naming the estimate, the budget and the fix (``out=`` a
``np.memmap``/h5py dataset for an output larger than memory).
"""
from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from lso.config import LSOConfig
from lso.deps import available, is_tensor, require
from lso.errors import InputError
from lso.io_spec import EXTENT, HR_MSI, LR_HSI
from lso.memory import array_bytes, check_bytes, format_bytes, fusion_bytes, resolve_budget
from lso.runtime.base import Runner, is_lso_module, load
from lso.runtime.validation import (
    check_device_values,
    check_dtype,
    check_shapes,
    check_values,
)

if TYPE_CHECKING:
    from lso.model import LSO

__all__ = ["fuse_tiled", "plan_tiles", "Tile", "tile_alignment", "receptive_margin", "exact_overlap", "tile_bytes",
           "choose_tile", "decide_tiling", "TilingDecision", "AUTO_TILE_PIXELS", "AUTO_TILE", "MAX_TILE"]

log = logging.getLogger(__name__)

AUTO_TILE_PIXELS = 1024 * 1024
"""A scene with more HR pixels than this is *large*: ``lso batch`` tiles it at :data:`AUTO_TILE` (tileable artifacts),
``lso infer`` without ``--tile`` warns that ``--tile`` would bound its memory (:func:`decide_tiling`)."""

AUTO_TILE = 256
"""The core size large scenes are tiled at when nobody asked for one."""

MAX_TILE = 1024
"""The largest core :func:`fuse_tiled` picks by itself (``tile=None``: the largest that fits, at most this)."""


@dataclass(frozen=True)
class TilingDecision:
    """Whether and how to tile one scene (:func:`decide_tiling`).

    Attributes:
        tiled: fuse with :func:`fuse_tiled` (else :meth:`Runner.fuse` in one piece).
        tile: the core to ask :func:`fuse_tiled` for; None when tiled: the largest that fits the budget.
        large: the scene has more HR pixels than the auto-tile threshold (:data:`AUTO_TILE_PIXELS`).
        reason: ``"asked"``, ``"large"``, ``"budget"`` or ``"whole"``.
    """

    tiled: bool
    tile: int | None
    large: bool
    reason: str


def decide_tiling(runner: Any, hr_shape: tuple[int, ...], *, tile: int | None = None, auto_tile: int | None = None,
                  auto_tile_pixels: int = AUTO_TILE_PIXELS, memory_budget: int | None = None, strict: bool = True,
                  label: str = "") -> TilingDecision:
    """The one tiling policy of ``lso infer``, ``lso batch``, ``lso serve`` and ``lso eval``: when to tile a scene.

    In this order: a ``tile`` asked for is used (with ``strict=False`` only if the runner is tileable: a server
    setting, else the scene is fused whole); a large scene (more than ``auto_tile_pixels`` HR pixels) is tiled at
    ``auto_tile`` when one is given and the runner is tileable; a scene whose whole-scene fusion (working memory
    plus the output, :func:`lso.memory.fusion_bytes`) does not fit ``memory_budget`` is tiled with the largest tile
    that fits, or refused when the runner cannot tile; anything else is fused whole. Which tile size fits a budget
    is :func:`fuse_tiled`'s part (:func:`choose_tile`).

    Args:
        runner: a :class:`~lso.runtime.Runner` (active: its configuration and bands are read), or an ``LSO``
            module (always tileable).
        hr_shape: ``hr_msi``'s shape (``[B, C, H, W]`` or ``[C, H, W]``).
        tile: the core size asked for (``--tile``); None or 0: none.
        auto_tile: the core for large scenes; None: large scenes are not tiled for being large.
        auto_tile_pixels: the threshold of a large scene.
        memory_budget: bytes whole-scene fusion must fit; None: not checked here.
        strict: a ``tile`` asked of a runner without the ``extent`` input is still tiled (and refused by
            :func:`fuse_tiled` when it needs more than one tile); False: such a runner fuses whole scenes.
        label: prefix of the memory error's message (``"scene 3: "``).

    Raises:
        InputError: the scene does not fit ``memory_budget`` in one piece and the runner cannot tile.
    """
    height, width = int(hr_shape[-2]), int(hr_shape[-1])
    large = height * width > auto_tile_pixels
    tileable = bool(getattr(runner, "tileable", True))
    if tile and (strict or tileable):
        return TilingDecision(True, int(tile), large, "asked")
    if auto_tile and large and tileable:
        return TilingDecision(True, int(auto_tile), large, "large")
    if memory_budget is not None:
        batch = int(hr_shape[0]) if len(hr_shape) == 4 else 1
        config = runner.config or LSOConfig(n_bands=runner.n_bands, n_msi_bands=runner.n_msi_bands)
        n_bands = getattr(runner, "n_bands", config.n_bands)
        whole = fusion_bytes(config, batch, height, width) + array_bytes((batch, n_bands, height, width), 4)
        if whole > memory_budget:
            if not tileable:
                check_bytes(whole, f"{label}fusing hr_msi {'x'.join(map(str, hr_shape))} in one piece",
                            memory_budget=memory_budget,
                            fix=f"the artifact takes no '{EXTENT}' input, so it cannot be tiled: re-export it tileable "
                                f"(lso export --tileable) or use the checkpoint")
            return TilingDecision(True, None, large, "budget")
    return TilingDecision(False, None, large, "whole")


def _ceil_to(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def tile_alignment(config: LSOConfig, ratio: int) -> int:
    """Window offsets and interior sizes are multiples of this: ``lcm(4 * patch_size, ratio)``."""
    return math.lcm(4 * config.patch_size, int(ratio))


def receptive_margin(config: LSOConfig, ratio: int) -> int:
    """How far (HR pixels) a difference at a window border can reach into the output.

    Follows the forward pass (see ``lso.model.LSO.forward``), in HR pixels from the border:
    bicubic up-sampling of the LR crop (taps clamped at the crop's edge reach ~1.5·r px), the spatial
    encoder's 3x3 convolutions, ``inc``, pooling to 1/2 and 1/4 (rounding up to the coarser pixel)
    with two 3x3 convolutions each, the spectral blocks (a patch is one unit: round up to whole
    patches of ``patch_size`` pixels at each level), the decoder's bilinear x2 (one coarse pixel),
    its convolutions and skips, the bicubic x0.5 guide, and ``outc``.
    """
    p, r = config.patch_size, int(ratio)
    lms = math.ceil(1.5 * r) + 1                          # bicubic taps clamped at the crop's edge
    d = lms + 1 + 2 * config.n_resblocks + 1              # encoder: head, 2 per residual block, body conv
    x1 = d + 2                                            # inc: two 3x3 convs
    x2 = _ceil_to(x1, 2) + 2 * 2                          # pool to 1/2, two 3x3 convs (2 HR px each)
    x3 = _ceil_to(x2, 4) + 2 * 4                          # pool to 1/4, two 3x3 convs (4 HR px each)
    b1, b2, b3 = _ceil_to(x1, p), _ceil_to(x2, 2 * p), _ceil_to(x3, 4 * p)  # whole patches per level
    guide_half = 2                                        # bicubic x0.5 of hr_msi, taps clamped at the edge
    y2 = max(max(b3 + 4, b2, guide_half) + 2 * 2, x2)     # up1: bilinear x2 (+1 px at 1/4), 2 convs, + x2
    y1 = max(max(y2 + 2, b1) + 2, x1)                     # up2: bilinear x2 (+1 px at 1/2), 2 convs, + x1
    return max(y1 + 1, lms)                               # outc 3x3 (then 1x1), + lms


def exact_overlap(config: LSOConfig, ratio: int) -> int:
    """The smallest overlap that keeps tiled fusion exact: the receptive margin rounded up to the alignment."""
    return _ceil_to(receptive_margin(config, ratio), tile_alignment(config, ratio))


@dataclass(frozen=True)
class Tile:
    """One tile: the input window ``[row0:row1, col0:col1]`` and the core it keeps (global HR pixels)."""

    row0: int
    row1: int
    col0: int
    col1: int
    core_row0: int
    core_row1: int
    core_col0: int
    core_col1: int

    def lr_window(self, ratio: int) -> tuple[int, int, int, int]:
        """The matching LR window ``(row0, row1, col0, col1)`` (exact: windows are multiples of ``ratio``)."""
        return self.row0 // ratio, -(-self.row1 // ratio), self.col0 // ratio, -(-self.col1 // ratio)

    @property
    def core_in_window(self) -> tuple[slice, slice]:
        """Where the core sits inside the window's output."""
        return (slice(self.core_row0 - self.row0, self.core_row1 - self.row0),
                slice(self.core_col0 - self.col0, self.core_col1 - self.col0))


def _spans(n: int, core: int, halo: int, align: int = 1) -> list[tuple[int, int, int, int]]:
    """``(window0, window1, core0, core1)`` along one axis of ``n`` pixels.

    Every window has one common length ``min(core + 2*halo, n)``: a window cut short by a border is
    extended inward (more context than the core needs, so the result stays exact). The last window must end
    at ``n`` and start on the ``align`` grid, so it is longer by ``(n - length) % align`` pixels when ``n`` is
    off the grid: at most two lengths per axis, one when ``n`` is a multiple of ``align``. Few distinct
    window shapes matter to engines that cache per shape (TensorRT contexts and CUDA graphs).
    """
    length = min(core + 2 * halo, n)
    spans = []
    for c0 in range(0, n, core):
        c1 = min(c0 + core, n)
        w0, w1 = max(c0 - halo, 0), min(c1 + halo, n)
        if w1 - w0 < length:
            if w0 == 0:
                w1 = length
            else:  # ends at the border: start earlier, on the grid
                w0 = max((n - length) // align * align, 0)
        spans.append((w0, w1, c0, c1))
    return spans


def tile_bytes(config: LSOConfig, batch: int, height: int, width: int, *, core: int, overlap: int) -> int:
    """Estimated working memory of one tile: the model on the largest window, plus its input crops and result."""
    win_h, win_w = min(core + 2 * overlap, height), min(core + 2 * overlap, width)
    io = array_bytes((batch, config.n_msi_bands + 2 * config.n_bands, win_h, win_w), 4)
    return fusion_bytes(config, batch, win_h, win_w) + io


def choose_tile(config: LSOConfig, batch: int, height: int, width: int, *, tile: int, overlap: int, align: int,
                budget: int) -> int:
    """The largest core (a multiple of ``align``, at most ``tile``) whose tile fits ``budget`` bytes.

    Raises:
        InputError: not even a core of ``align`` pixels fits, naming the estimate and the budget.
    """
    def fits(core: int) -> bool:
        return tile_bytes(config, batch, height, width, core=core, overlap=overlap) <= budget

    if fits(tile):
        return tile
    lo, hi = 1, max(tile // align, 1)  # cores of k * align for k in [lo, hi]
    if not fits(align):
        need = tile_bytes(config, batch, height, width, core=align, overlap=overlap)
        raise InputError(f"even the smallest tile (core {align} px + overlap {overlap} px, batch {batch}) needs an "
                         f"estimated {format_bytes(need)}, over the memory budget left for tiles, "
                         f"{format_bytes(budget)}; raise memory_budget (--memory-budget), fuse fewer images per "
                         f"batch, or pass out= a np.memmap / h5py dataset so the output does not count")
    while lo < hi:  # largest k with fits(k * align)
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid * align) else (lo, mid - 1)
    return lo * align


def plan_tiles(height: int, width: int, *, tile: int, overlap: int, align: int = 1) -> list[Tile]:
    """Tiles covering ``height x width``: cores of ``tile`` px, windows ``overlap`` px larger on each side.

    ``tile`` and ``overlap`` must be multiples of ``align`` (so every window starts on the grid). Windows
    cut by a border are extended inward to the common window size: one window shape when ``height`` and
    ``width`` are multiples of ``align``, at most two lengths per axis otherwise (see :func:`_spans`).
    """
    if tile <= 0 or overlap < 0:
        raise InputError(f"tile must be > 0 and overlap >= 0, got tile={tile}, overlap={overlap}")
    if tile % align or overlap % align:
        raise InputError(f"tile ({tile}) and overlap ({overlap}) must be multiples of {align}")
    return [Tile(r0, r1, c0, c1, cr0, cr1, cc0, cc1)
            for r0, r1, cr0, cr1 in _spans(height, tile, overlap, align)
            for c0, c1, cc0, cc1 in _spans(width, tile, overlap, align)]


def _crop(x: Any, r0: int, r1: int, c0: int, c1: int) -> Any:
    tile = x[..., r0:r1, c0:c1]
    return tile if is_tensor(tile) else np.ascontiguousarray(tile)


def _store(out: Any, tile: Tile, result: Any) -> None:
    rows, cols = tile.core_in_window
    core = result[..., rows, cols]
    if is_tensor(out):
        import torch

        core = torch.as_tensor(core)
        out[..., tile.core_row0:tile.core_row1, tile.core_col0:tile.core_col1] = core.to(out.device)
    else:
        if is_tensor(core):
            core = core.detach().cpu().numpy()
        out[..., tile.core_row0:tile.core_row1, tile.core_col0:tile.core_col1] = core


def _progress(tiles: list[tuple[int, Tile]], enabled: bool) -> Iterator[tuple[int, Tile]]:
    if enabled and available("tqdm"):
        yield from require("tqdm").tqdm(tiles, desc="fusing tiles", unit="tile", leave=False)
        return
    for n, (i, t) in enumerate(tiles):
        if enabled:
            log.info("tile %d/%d: rows %d-%d, cols %d-%d", n + 1, len(tiles), t.core_row0, t.core_row1,
                     t.core_col0, t.core_col1)
        yield i, t


def _as_runner(model: Any) -> tuple[Runner, bool]:
    """``(runner, owned)``; owned runners are activated and released here."""
    if isinstance(model, Runner):
        return model, not model.is_active
    if is_lso_module(model) or isinstance(model, (str, os.PathLike)):
        return load(model), True  # an LSO module: a TorchRunner on its own device
    raise InputError(f"fuse_tiled takes a Runner, an LSO model or an artifact path, got {type(model).__qualname__}")


def fuse_tiled(model: Runner | LSO | str | os.PathLike, hr_msi: Any, lr_hsi: Any, *, tile: int | None = 256,
               overlap: int | None = None, out: Any = None, progress: bool = False,
               check_finite: bool = True, memory_budget: Any = None, done: Collection[int] | None = None,
               on_tile: Callable[[int, Tile], None] | None = None) -> Any:
    """Fuse a scene of any size tile by tile; equal to whole-image fusion when ``overlap`` is exact.

    Args:
        model: a :class:`~lso.runtime.Runner` (active or not; it must take ``extent`` unless one tile
            covers the scene), an :class:`~lso.model.LSO`, or an artifact path for :func:`load`.
        hr_msi: ``[B, C_msi, H, W]`` or ``[C_msi, H, W]``: numpy array, memmap, h5py dataset (read one
            window at a time), or torch tensor.
        lr_hsi: ``[B, C_hsi, h, w]`` or ``[C_hsi, h, w]``, ``H = r*h``, ``W = r*w``, same kind.
        tile: core size in HR pixels (rounded up to the alignment, ``lcm(4*patch_size, r)``); shrunk when
            one tile would not fit ``memory_budget``. None: the largest core that fits (at most :data:`MAX_TILE`).
        overlap: window margin around each core; default :func:`exact_overlap` (48 for the paper model
            at x4). Smaller values are faster but no longer exact (a warning says so).
        out: where to write ``[B, C_hsi, H, W]`` float32 (numpy array, ``np.memmap``, h5py dataset,
            torch tensor). Default: a new numpy array (a torch tensor on the input's device for torch
            input).
        progress: show a progress bar (tqdm if installed, else one log line per tile).
        check_finite: scan the inputs once for NaN/Inf and out-of-range values (chunked). CUDA tensors are
            checked on the device without a host synchronisation; ``runner.last_value_check.result()``
            reports them (see :mod:`lso.runtime.validation`).
        memory_budget: bytes (or ``"4G"``) this call may use: the output it allocates (none with ``out=``)
            plus one tile; default :func:`lso.memory.default_memory_budget`. See the module docstring.
        done: indices (in :func:`plan_tiles` order) of tiles already in ``out``, skipped (resuming).
        on_tile: called as ``on_tile(index, tile)`` after each tile's core is stored in ``out``.

    Raises:
        InputError: wrong inputs, or not even the smallest tile fits the memory budget.

    Returns:
        ``hr_hsi`` (``out`` if given), without a batch axis if the inputs had none.
    """
    runner, owned = _as_runner(model)
    if owned:
        runner.activate()
    try:
        return _fuse_tiled(runner, hr_msi, lr_hsi, tile=tile, overlap=overlap, out=out, progress=progress,
                           check_finite=check_finite, memory_budget=memory_budget, done=done, on_tile=on_tile)
    finally:
        if owned:
            runner.deactivate()


def _array_like(x: Any, name: str) -> Any:
    """Arrays, tensors, memmaps and h5py datasets as they are (read window by window); anything else via numpy."""
    if hasattr(x, "shape") and hasattr(x, "dtype") and hasattr(x, "__getitem__"):
        return x
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name}: cannot be read as an array ({type(x).__qualname__}: {exc})") from exc


def _as_size(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _fuse_tiled(runner: Runner, hr_msi: Any, lr_hsi: Any, *, tile: int | None, overlap: int | None, out: Any,
                progress: bool, check_finite: bool, memory_budget: Any = None, done: Collection[int] | None = None,
                on_tile: Callable[[int, Tile], None] | None = None) -> Any:
    hr_msi, lr_hsi = _array_like(hr_msi, HR_MSI), _array_like(lr_hsi, LR_HSI)
    check_dtype(hr_msi, HR_MSI)
    check_dtype(lr_hsi, LR_HSI)
    hr4, _, ratio, batched = check_shapes(tuple(hr_msi.shape), tuple(lr_hsi.shape), n_msi_bands=runner.n_msi_bands,
                                          n_bands=runner.n_bands)
    if len(hr_msi.shape) != len(lr_hsi.shape):
        raise InputError(f"hr_msi has {len(hr_msi.shape)} dimensions and lr_hsi {len(lr_hsi.shape)}: give both with "
                         f"or both without the batch axis")
    config = runner.config or LSOConfig(n_bands=runner.n_bands, n_msi_bands=runner.n_msi_bands)
    align = tile_alignment(config, ratio)
    needed = exact_overlap(config, ratio)
    overlap = needed if overlap is None else _ceil_to(_as_size(overlap, "overlap", 0), align)
    if overlap < needed:
        log.warning("overlap %d < %d (the receptive margin for this model at x%d): tiled fusion is not exact near tile "
                    "borders", overlap, needed, ratio)
    batch, height, width = hr4[0], hr4[2], hr4[3]
    requested = _ceil_to(MAX_TILE if tile is None else _as_size(tile, "tile", 1), align)
    # memory: the output this call allocates, then one tile in what is left; all before allocating anything
    budget = resolve_budget(memory_budget)
    out_shape = (batch, runner.n_bands, height, width) if batched else (runner.n_bands, height, width)
    out_bytes = array_bytes(out_shape, 4) if out is None else 0
    check_bytes(out_bytes, f"the {'x'.join(map(str, out_shape))} float32 output", memory_budget=budget,
                fix="pass out= a np.memmap or an h5py dataset (written tile by tile, never held in memory)")
    core = choose_tile(config, batch, height, width, tile=min(requested, _ceil_to(max(height, width), align)),
                       overlap=overlap, align=align, budget=budget - out_bytes)
    if tile is not None and core < min(requested, _ceil_to(max(height, width), align)):
        log.warning("tile %d needs about %s per tile, over the memory budget (%s, %s of it for the output): using "
                    "tile %d (about %s)", requested, format_bytes(tile_bytes(config, batch, height, width,
                                                                              core=requested, overlap=overlap)),
                    format_bytes(budget), format_bytes(out_bytes), core,
                    format_bytes(tile_bytes(config, batch, height, width, core=core, overlap=overlap)))
    if check_finite:
        on_device = [(name, x) for name, x in ((HR_MSI, hr_msi), (LR_HSI, lr_hsi))
                     if is_tensor(x) and x.is_cuda]
        for name, x in ((HR_MSI, hr_msi), (LR_HSI, lr_hsi)):
            if not any(x is d for _, d in on_device):
                check_values(x, name)  # a tensor, or a host array in row chunks
        if on_device:  # checked on the device, no host synchronisation: runner.last_value_check.result() reports
            check = check_device_values(tuple(on_device))
    tiles = plan_tiles(height, width, tile=core, overlap=overlap, align=align)
    if len(tiles) > 1 and not runner.tileable:
        raise InputError(f"{runner!r} takes no '{EXTENT}' input, so its tiles cannot get global coordinates; "
                         f"re-export with tileable=True (export_onnx(..., tileable=True)), or use tile >= the scene")
    if out is None:
        if is_tensor(hr_msi):
            import torch

            out = torch.empty(out_shape, dtype=torch.float32, device=hr_msi.device)
        else:
            out = np.empty(out_shape, dtype=np.float32)
    elif tuple(out.shape) != out_shape:
        raise InputError(f"out has shape {tuple(out.shape)}; expected {out_shape}")
    skip = frozenset(int(i) for i in (done or ()))
    log.info("tiled fusion: %dx%d scene, x%d, %d tile(s) of core %d, overlap %d%s", height, width, ratio, len(tiles),
             core, overlap, f", {len(skip)} already done" if skip else "")
    todo = [(i, t) for i, t in enumerate(tiles) if i not in skip]
    for i, t in _progress(todo, progress):
        lr0, lr1, lc0, lc1 = t.lr_window(ratio)
        hr_t = _crop(hr_msi, t.row0, t.row1, t.col0, t.col1)
        lr_t = _crop(lr_hsi, lr0, lr1, lc0, lc1)
        extent = (t.row0, t.col0, height, width) if len(tiles) > 1 else None
        result = runner.fuse(hr_t, lr_t, extent=extent, check_finite=False)
        _store(out, t, result)
        if on_tile is not None:
            on_tile(i, t)
    if check_finite and on_device:
        runner.last_value_check = check
    return out
