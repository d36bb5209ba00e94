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
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Union

import numpy as np
import torch

from lso._deps import available, require
from lso.config import LSOConfig
from lso.errors import InputError
from lso.io_spec import EXTENT, HR_MSI, LR_HSI
from lso.model import LSO
from lso.runtime.base import Runner, load
from lso.runtime.validation import check_dtype, check_shapes, check_values, scan_values

__all__ = ["fuse_tiled", "plan_tiles", "Tile", "tile_alignment", "receptive_margin", "exact_overlap"]

log = logging.getLogger(__name__)


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


def _spans(n: int, core: int, halo: int) -> list[tuple[int, int, int, int]]:
    return [(max(c0 - halo, 0), min(c0 + core + halo, n), c0, min(c0 + core, n)) for c0 in range(0, n, core)]


def plan_tiles(height: int, width: int, *, tile: int, overlap: int, align: int = 1) -> list[Tile]:
    """Tiles covering ``height x width``: cores of ``tile`` px, windows ``overlap`` px larger on each side.

    ``tile`` and ``overlap`` must be multiples of ``align`` (so every window starts on the grid).
    """
    if tile <= 0 or overlap < 0:
        raise InputError(f"tile must be > 0 and overlap >= 0, got tile={tile}, overlap={overlap}")
    if tile % align or overlap % align:
        raise InputError(f"tile ({tile}) and overlap ({overlap}) must be multiples of {align}")
    return [Tile(r0, r1, c0, c1, cr0, cr1, cc0, cc1)
            for r0, r1, cr0, cr1 in _spans(height, tile, overlap)
            for c0, c1, cc0, cc1 in _spans(width, tile, overlap)]


def _crop(x: Any, r0: int, r1: int, c0: int, c1: int) -> Any:
    tile = x[..., r0:r1, c0:c1]
    return tile if isinstance(tile, torch.Tensor) else np.ascontiguousarray(tile)


def _store(out: Any, tile: Tile, result: Any) -> None:
    rows, cols = tile.core_in_window
    core = result[..., rows, cols]
    if isinstance(out, torch.Tensor):
        core = torch.as_tensor(core)
        out[..., tile.core_row0:tile.core_row1, tile.core_col0:tile.core_col1] = core.to(out.device)
    else:
        if isinstance(core, torch.Tensor):
            core = core.detach().cpu().numpy()
        out[..., tile.core_row0:tile.core_row1, tile.core_col0:tile.core_col1] = core


def _progress(tiles: list[Tile], enabled: bool) -> Iterator[Tile]:
    if enabled and available("tqdm"):
        yield from require("tqdm").tqdm(tiles, desc="fusing tiles", unit="tile", leave=False)
        return
    for i, t in enumerate(tiles):
        if enabled:
            log.info("tile %d/%d: rows %d-%d, cols %d-%d", i + 1, len(tiles), t.core_row0, t.core_row1,
                     t.core_col0, t.core_col1)
        yield t


def _as_runner(model: Any) -> tuple[Runner, bool]:
    """``(runner, owned)``; owned runners are activated and released here."""
    if isinstance(model, Runner):
        return model, not model.is_active
    if isinstance(model, LSO):
        from lso.runtime.torch_runner import TorchRunner

        return TorchRunner(model, device=next(model.parameters()).device), True
    if isinstance(model, (str, os.PathLike)):
        return load(model), True
    raise InputError(f"fuse_tiled takes a Runner, an LSO model or an artifact path, got {type(model).__qualname__}")


def fuse_tiled(model: Union[Runner, LSO, str, os.PathLike], hr_msi: Any, lr_hsi: Any, *, tile: int = 256,
               overlap: Optional[int] = None, out: Any = None, progress: bool = False,
               check_finite: bool = True) -> Any:
    """Fuse a scene of any size tile by tile; equal to whole-image fusion when ``overlap`` is exact.

    Args:
        model: a :class:`~lso.runtime.Runner` (active or not; it must take ``extent`` unless one tile
            covers the scene), an :class:`~lso.model.LSO`, or an artifact path for :func:`load`.
        hr_msi: ``[B, C_msi, H, W]`` or ``[C_msi, H, W]``: numpy array, memmap, h5py dataset (read one
            window at a time), or torch tensor.
        lr_hsi: ``[B, C_hsi, h, w]`` or ``[C_hsi, h, w]``, ``H = r*h``, ``W = r*w``, same kind.
        tile: core size in HR pixels (rounded up to the alignment, ``lcm(4*patch_size, r)``).
        overlap: window margin around each core; default :func:`exact_overlap` (48 for the paper model
            at x4). Smaller values are faster but no longer exact (a warning says so).
        out: where to write ``[B, C_hsi, H, W]`` float32 (numpy array, ``np.memmap``, h5py dataset,
            torch tensor). Default: a new numpy array (a torch tensor on the input's device for torch
            input).
        progress: show a progress bar (tqdm if installed, else one log line per tile).
        check_finite: scan the inputs once for NaN/Inf and out-of-range values (chunked).

    Returns:
        ``hr_hsi`` (``out`` if given), without a batch axis if the inputs had none.
    """
    runner, owned = _as_runner(model)
    if owned:
        runner.activate()
    try:
        return _fuse_tiled(runner, hr_msi, lr_hsi, tile=tile, overlap=overlap, out=out, progress=progress,
                           check_finite=check_finite)
    finally:
        if owned:
            runner.deactivate()


def _fuse_tiled(runner: Runner, hr_msi: Any, lr_hsi: Any, *, tile: int, overlap: Optional[int], out: Any,
                progress: bool, check_finite: bool) -> Any:
    check_dtype(hr_msi, HR_MSI)
    check_dtype(lr_hsi, LR_HSI)
    hr4, _, ratio, batched = check_shapes(tuple(hr_msi.shape), tuple(lr_hsi.shape), n_msi_bands=runner.n_msi_bands,
                                          n_bands=runner.n_bands)
    if len(hr_msi.shape) != len(lr_hsi.shape):
        raise InputError(f"hr_msi has {len(hr_msi.shape)} dimensions and lr_hsi {len(lr_hsi.shape)}: give both with "
                         f"or both without the batch axis")
    if check_finite:
        for name, x in ((HR_MSI, hr_msi), (LR_HSI, lr_hsi)):
            check_values(x, name) if isinstance(x, torch.Tensor) else scan_values(x, name)
    config = runner.config or LSOConfig()
    align = tile_alignment(config, ratio)
    needed = exact_overlap(config, ratio)
    overlap = needed if overlap is None else _ceil_to(int(overlap), align)
    if overlap < needed:
        log.warning("overlap %d < %d (the receptive margin for this model at x%d): tiled fusion is not exact near tile "
                    "borders", overlap, needed, ratio)
    core = _ceil_to(int(tile), align)
    height, width = hr4[2], hr4[3]
    out_shape = (hr4[0], runner.n_bands, height, width) if batched else (runner.n_bands, height, width)
    if out is None:
        if isinstance(hr_msi, torch.Tensor):
            out = torch.empty(out_shape, dtype=torch.float32, device=hr_msi.device)
        else:
            out = np.empty(out_shape, dtype=np.float32)
    elif tuple(out.shape) != out_shape:
        raise InputError(f"out has shape {tuple(out.shape)}; expected {out_shape}")
    tiles = plan_tiles(height, width, tile=core, overlap=overlap, align=align)
    if len(tiles) > 1 and not runner.tileable:
        raise InputError(f"{runner!r} takes no '{EXTENT}' input, so its tiles cannot get global coordinates; "
                         f"re-export with tileable=True (export_onnx(..., tileable=True)), or use tile >= the scene")
    log.info("tiled fusion: %dx%d scene, x%d, %d tile(s) of core %d, overlap %d", height, width, ratio, len(tiles),
             core, overlap)
    for t in _progress(tiles, progress):
        lr0, lr1, lc0, lc1 = t.lr_window(ratio)
        hr_t = _crop(hr_msi, t.row0, t.row1, t.col0, t.col1)
        lr_t = _crop(lr_hsi, lr0, lr1, lc0, lc1)
        extent = (t.row0, t.col0, height, width) if len(tiles) > 1 else None
        result = runner.fuse(hr_t, lr_t, extent=extent, check_finite=False)
        _store(out, t, result)
    return out
