"""Calibration feeds: an iterable of ``{input_name: array}`` built from scenes at the I/O spec's shapes.

::

    from lso.calibration import calibration_feeds
    feeds = calibration_feeds(count=16)                 # synthetic training scenes, opt profile (512², x4)
    feeds = calibration_feeds("train.h5", count=32)     # the user's community HDF5 (GT key)
    for feed in feeds:                                   # {"hr_msi": [1,3,512,512], "lr_hsi": [1,31,128,128]}
        ...
    reader = feeds.ort_reader()                          # onnxruntime.quantization.CalibrationDataReader

Scenes (:class:`lso.data.SceneSource`):

- ``"synthetic"`` (default): synthetic *training* scenes (``split_seeds("train")``, seeds 1000, 1001 ...),
  never the held-out evaluation scenes that the precision reports measure on. ``offset`` skips the
  first seeds (e.g. to draw a validation set distinct from the calibration set).
- a ``.h5`` file in the community layout (``GT`` ``(N, 31, H, W)``): each GT image is centre-cropped
  to the feed size.

Each scene gives ``(hr_msi, lr_hsi)`` with the paper's degradation (:func:`lso.data.degrade`, the same
protocol as ``lso eval``); ``batch`` scenes are stacked into one feed. Shapes default to the ``opt``
shapes of :func:`lso.io_spec.default_profile` (``hr_msi`` 512², ``lr_hsi`` 128², so x4) and must lie
inside the profile: calibration sees what the engine is optimised for. Fewer feeds than
``min_count`` (or than the batch) is an :class:`~lso.errors.InputError`, never a silent under-calibration.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np

from lso import io_spec
from lso.data.sources import DegradedScene, SceneSource
from lso.errors import InputError

__all__ = ["CalibrationFeeds", "calibration_feeds", "held_out_scenes", "Scene", "MIN_FEEDS", "make_ort_reader"]

log = logging.getLogger(__name__)

MIN_FEEDS = 8
"""Default minimum number of calibration feeds (each a whole image: 262 144 pixels per tensor at 512²)."""


Scene: TypeAlias = DegradedScene
"""One scene: ``gt [31, H, W]``, ``hr_msi [3, H, W]``, ``lr_hsi [31, H/r, W/r]`` (float32) and its name
(:class:`lso.data.DegradedScene`)."""


def held_out_scenes(n: int | None = None, *, size: int = 256, ratio: int = 4) -> list[Scene]:
    """The held-out synthetic evaluation scenes (``split_seeds("eval")``, 8 at most) degraded at ``ratio``
    (:class:`lso.data.SceneSource`)."""
    return list(SceneSource(split="eval", size=size).degraded(ratio, 8 if n is None else n, exact=True))


def _scenes(source: str | os.PathLike, count: int, size: int, ratio: int, offset: int) -> Iterator[Scene]:
    """``count`` training scenes of ``source`` after ``offset`` (files: centre-cropped to ``size``), degraded."""
    if str(source) == "synthetic":
        yield from SceneSource(split="train", size=size).degraded(ratio, count, offset=offset, exact=True)
        return
    with SceneSource(source, size=size, centre_crop=True) as scenes:
        available = len(scenes) - offset
        if available < count:
            raise InputError(f"{Path(source)} has {len(scenes)} images; {count} calibration scenes were asked for "
                             f"after offset {offset} (use fewer, e.g. --count {max(available, 0)}, or a larger file)")
        yield from scenes.degraded(ratio, count, offset=offset)


class CalibrationFeeds:
    """A re-iterable, sized sequence of feeds ``{hr_msi: [B,3,H,W], lr_hsi: [B,31,h,w]}`` (float32).

    Build it with :func:`calibration_feeds`. Scenes are generated on first use and kept in memory
    (5.2 MB per scene at 512²), so every pass (range analysis, ORT calibration) sees the same data.
    """

    def __init__(self, source: str | os.PathLike, *, count: int, size: int, ratio: int, batch: int,
                 offset: int, profile: io_spec.ShapeProfile) -> None:
        self.source = str(source)
        self.count = count
        self.size = size
        self.ratio = ratio
        self.batch = batch
        self.offset = offset
        self.profile = profile
        self._feeds: list[dict[str, np.ndarray]] | None = None
        self.names: list[str] = []

    # ----------------------------------------------------------------------------------- sequence
    def _materialize(self) -> list[dict[str, np.ndarray]]:
        if self._feeds is None:
            scenes = list(_scenes(self.source, self.count, self.size, self.ratio, self.offset))
            feeds = []
            for i in range(self.count // self.batch):
                group = scenes[i * self.batch:(i + 1) * self.batch]
                feeds.append({io_spec.HR_MSI: np.stack([s.hr_msi for s in group]),
                              io_spec.LR_HSI: np.stack([s.lr_hsi for s in group])})
            self.names = [s.name for s in scenes]
            self._feeds = feeds
            log.info("calibration feeds: %d x %s from %s", len(feeds), self.shapes(), self.source)
        return self._feeds

    def __len__(self) -> int:
        return self.count // self.batch

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return iter(self._materialize())

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return self._materialize()[index]

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Shape of each input in every feed."""
        lr = self.size // self.ratio
        return {io_spec.HR_MSI: (self.batch, 3, self.size, self.size),
                io_spec.LR_HSI: (self.batch, 31, lr, lr)}

    def describe(self) -> dict[str, Any]:
        """JSON-friendly description for sidecars."""
        self._materialize()
        return {"source": self.source, "count": self.count, "batch": self.batch, "ratio": self.ratio,
                "offset": self.offset, "shapes": {k: list(v) for k, v in self.shapes().items()},
                "scenes": self.names}

    def ort_reader(self) -> Any:
        """This sequence as an ``onnxruntime.quantization.CalibrationDataReader``."""
        return make_ort_reader(self)

    def __repr__(self) -> str:
        return (f"CalibrationFeeds(source={self.source!r}, count={self.count}, size={self.size}, ratio={self.ratio}, "
                f"batch={self.batch})")


def make_ort_reader(feeds: Any) -> Any:
    """Adapt any sized iterable of feeds to ONNX Runtime's ``CalibrationDataReader`` (get_next/rewind/set_range).

    The subclass is defined inside this factory, so importing this module never imports onnxruntime.
    """
    from lso.deps import require

    quant = require("onnxruntime.quantization")
    items = list(feeds)
    base: Any = quant.CalibrationDataReader  # a class of the module imported here: mypy cannot know it

    class _Reader(base):
        def __init__(self) -> None:
            super().__init__()
            self._start, self._end = 0, len(items)
            self._iter = iter(items)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._iter, None)

        def rewind(self) -> None:
            self._iter = iter(items[self._start:self._end])

        def set_range(self, start_index: int, end_index: int) -> None:
            self._start, self._end = start_index, end_index
            self.rewind()

        def __len__(self) -> int:
            return len(items)

    return _Reader()


def calibration_feeds(
    source: str | os.PathLike = "synthetic",
    *,
    count: int = 16,
    size: int | None = None,
    ratio: int | None = None,
    batch: int | None = None,
    offset: int = 0,
    min_count: int = MIN_FEEDS,
    profile: io_spec.ShapeProfile | None = None,
) -> CalibrationFeeds:
    """Calibration feeds at the I/O spec's shapes, checked before any scene is generated.

    Args:
        source: ``"synthetic"`` (training scenes, never the evaluation ones) or a community ``.h5`` file.
        count: number of scenes (samples); feeds hold ``batch`` scenes each, so there are ``count // batch``.
        size: HR side length (default: the profile's ``opt`` ``hr_msi`` height, 512).
        ratio: scale ratio (default: the profile's ``opt`` ``hr_msi``/``lr_hsi`` ratio, 4).
        batch: scenes per feed (default: the profile's ``opt`` batch, 1).
        offset: skip this many scenes of the source first.
        min_count: fewest scenes accepted.
        profile: shape profile to follow (default :func:`lso.io_spec.default_profile`).

    Raises:
        InputError: fewer scenes than ``min_count`` or than the batch (or not a multiple of it), a size
            that is not a multiple of the ratio, or shapes outside the profile.
    """
    prof = profile or io_spec.default_profile()
    opt_hr, opt_lr = prof.opt[io_spec.HR_MSI], prof.opt[io_spec.LR_HSI]
    size = int(size if size is not None else opt_hr[2])
    ratio = int(ratio if ratio is not None else opt_hr[2] // opt_lr[2])
    batch = int(batch if batch is not None else opt_hr[0])
    count = int(count)
    if count < max(min_count, 1):
        raise InputError(f"{count} calibration scene(s) asked for; at least {max(min_count, 1)} are needed for "
                         f"stable ranges (raise --count, or lower min_count deliberately)")
    if count < batch or count % batch:
        raise InputError(f"{count} calibration scene(s) do not make whole batches of {batch}: give a multiple of the "
                         f"batch (at least one batch)")
    if ratio < io_spec.MIN_RATIO or size % ratio:
        raise InputError(f"feed size {size} must be a multiple of the ratio {ratio} (>= {io_spec.MIN_RATIO})")
    feeds = CalibrationFeeds(source, count=count, size=size, ratio=ratio, batch=batch, offset=offset, profile=prof)
    for name, shape in feeds.shapes().items():
        if not prof.contains(name, shape):
            raise InputError(f"calibration shape {name} {'x'.join(map(str, shape))} lies outside the profile "
                             f"({prof.describe(name)}): calibrate at shapes the engine will run")
    if str(source) != "synthetic" and not Path(source).is_file():
        from lso.errors import ArtifactError

        raise ArtifactError(f"calibration data {source} does not exist; give 'synthetic' or a community .h5 file")
    check_feeds_memory(count, size, ratio)
    return feeds


def check_feeds_memory(count: int, size: int, ratio: int, *, memory_budget: Any = None) -> int:
    """InputError before any scene is made when the feeds (kept in memory: every scene's GT, HR-MSI and LR-HSI,
    and the stacked batches) would not fit the memory budget; returns the estimate."""
    from lso.memory import array_bytes, check_bytes

    lr_side = size // ratio
    scene = array_bytes((31 + 3, size, size), 4) + array_bytes((31, lr_side, lr_side), 4)
    stacked = array_bytes((3, size, size), 4) + array_bytes((31, lr_side, lr_side), 4)
    need = count * (scene + stacked)
    check_bytes(need, f"{count} calibration scene(s) of {size}x{size} at x{ratio}, all held in memory",
                memory_budget=memory_budget, fix="calibrate on fewer (--count) or smaller (--size) scenes")
    return need
