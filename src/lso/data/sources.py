"""The scene source, "synthetic or file": ground-truth scenes for training, evaluation, calibration and benchmarks.

A :class:`SceneSource` is either

- ``"synthetic"``: synthetic scenes (:func:`lso.data.synthetic_scene`) by seed, at ``size`` x ``size`` — the seeds
  of a split (``split="eval"``: the eight held-out scenes; ``"train"``: 1000, 1001, ...; see
  :func:`lso.data.synthetic.split_seeds`) or any ``seeds`` given (training keeps its first seeds for
  validation); scene ``synth_<seed>``;
- a community ``.h5`` file (``GT``/``RGB``, :class:`lso.data.readers.H5Dataset`): its items, whole or (``centre_crop``)
  cut to their central ``size`` x ``size``; scene ``<file stem>_<i>``.

Everyone who needs "the held-out scenes", "the validation scenes" or "the scenes of this file" asks it, so the
same seeds, order and values come out wherever they are used. :meth:`SceneSource.degraded` adds the HR-MSI and
LR-HSI with the paper's degradation (:func:`lso.data.degrade`).

Example::

    from lso.data import SceneSource
    for scene in SceneSource("synthetic", size=256).scenes(4):          # the first 4 held-out scenes
        scene.name, scene.gt                                             # "synth_101", [31, 256, 256]
    with SceneSource("test_cave.h5") as source:
        for scene in source.degraded(ratio=8):                           # DegradedScene: gt, hr_msi, lr_hsi
            ...
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lso.errors import InputError

__all__ = ["SceneSource", "SourceScene", "DegradedScene", "SYNTHETIC"]

SYNTHETIC = "synthetic"
"""The ``data`` value that names synthetic scenes (anything else is a file)."""


@dataclass(frozen=True)
class SourceScene:
    """One ground-truth scene: ``gt [31, H, W]`` float32 and, for a file, its ``rgb [3, H, W]`` (None: synthetic)."""

    name: str
    gt: np.ndarray
    rgb: np.ndarray | None = None


@dataclass(frozen=True)
class DegradedScene:
    """One scene with its inputs: ``gt [31, H, W]``, ``hr_msi [3, H, W]``, ``lr_hsi [31, H/r, W/r]`` (float32)."""

    name: str
    gt: np.ndarray
    hr_msi: np.ndarray
    lr_hsi: np.ndarray


def _crop_centre(arr: np.ndarray, size: int) -> np.ndarray:
    h, w = arr.shape[-2:]
    if h < size or w < size:
        raise InputError(f"scene of {h}x{w} is smaller than the feed size {size}x{size}: choose a smaller --size")
    top, left = (h - size) // 2, (w - size) // 2
    return arr[..., top:top + size, left:left + size]


class SceneSource:
    """Synthetic scenes by seed, or the items of a community ``.h5`` file (see the module docstring).

    Args:
        data: ``"synthetic"`` or the path of a community ``.h5`` file.
        split: synthetic scenes: ``"eval"`` (the held-out seeds) or ``"train"``; ignored with ``seeds``.
        seeds: synthetic scenes: exactly these seeds, in this order.
        size: synthetic scenes: their side; files with ``centre_crop``: the side of the central crop.
        centre_crop: files: cut each item to its central ``size`` x ``size`` (an ``InputError`` when smaller).
        input_scale: files: scale of the stored values (:class:`~lso.data.value_range.InputScale`).

    A file source checks the file's metadata when it is made (:class:`~lso.data.readers.H5Dataset`: an
    ``ArtifactError`` for an unreadable file, an ``InputError`` for the wrong keys or shapes) and reads items
    lazily; use it in a ``with`` block (or :meth:`close` it) to close the file.
    """

    def __init__(self, data: str | os.PathLike = SYNTHETIC, *, split: str = "eval", seeds: Sequence[int] | None = None,
                 size: int = 512, centre_crop: bool = False, input_scale: Any = None) -> None:
        self.data = str(data)
        self.split = split
        self.size = int(size)
        self.centre_crop = centre_crop
        self._explicit_seeds = seeds
        self._dataset: Any = None
        if not self.synthetic:
            from lso.data.readers import H5Dataset

            self._dataset = H5Dataset(Path(data), input_scale=input_scale)

    # ------------------------------------------------------------------------------------------ what it holds
    @property
    def synthetic(self) -> bool:
        """True for synthetic scenes, False for a file."""
        return self.data == SYNTHETIC

    @property
    def seeds(self) -> Sequence[int]:
        """Synthetic scenes: the seeds, in order (the split's, or those given)."""
        if not self.synthetic:
            raise InputError(f"{self.data}: a file source has no seeds")
        if self._explicit_seeds is not None:
            return self._explicit_seeds
        from lso.data.synthetic import EVAL_SEEDS, TRAIN_SEEDS, split_seeds

        split_seeds(self.split, 0)  # InputError for an unknown split
        return EVAL_SEEDS if self.split == "eval" else TRAIN_SEEDS

    def __len__(self) -> int:
        return len(self.seeds) if self.synthetic else len(self._dataset)

    def _synthetic_seeds(self, count: int | None, offset: int) -> Sequence[int]:
        if self._explicit_seeds is not None:
            seeds = self._explicit_seeds[offset:]
            return seeds if count is None else seeds[:count]
        from lso.data.synthetic import split_seeds

        # the split's first offset + count seeds (InputError beyond the eval split, or without a count for train)
        return split_seeds(self.split, None if count is None else offset + count)[offset:]

    def count(self, count: int | None = None, *, offset: int = 0) -> int:
        """How many scenes :meth:`scenes` yields for these arguments (nothing is generated or read)."""
        if self.synthetic:
            return len(self._synthetic_seeds(count, offset))
        available = max(len(self._dataset) - offset, 0)
        return available if count is None else min(count, available)

    # ------------------------------------------------------------------------------------------ scenes
    def scene_of_seed(self, seed: int) -> SourceScene:
        """The synthetic scene of ``seed`` at this source's size."""
        from lso.data.synthetic import synthetic_scene

        return SourceScene(f"synth_{seed}", synthetic_scene(int(seed), self.size))

    def __getitem__(self, index: int) -> SourceScene:
        """Scene ``index``: the ``index``-th seed's, or the file's item ``index``."""
        if self.synthetic:
            return self.scene_of_seed(self.seeds[index])
        item = self._dataset[index]
        gt, rgb = item["gt"], item["rgb"]
        if self.centre_crop:
            gt, rgb = _crop_centre(gt, self.size), _crop_centre(rgb, self.size)
        return SourceScene(f"{Path(self.data).stem}_{index}", gt, rgb)

    def _check_exact(self, count: int | None, offset: int) -> None:
        if count is None:
            return
        available = len(self) - offset
        if available >= count:
            return
        if self.synthetic:
            raise InputError(f"the synthetic {self.split!r} split has {max(available, 0)} scenes after offset "
                             f"{offset}; asked for {count}")
        raise InputError(f"{self.data} has {len(self)} images; {count} scenes were asked for after offset {offset} "
                         f"(use fewer, e.g. {max(available, 0)}, or a larger file)")

    def scenes(self, count: int | None = None, *, offset: int = 0, exact: bool = False) -> Iterator[SourceScene]:
        """The scenes from ``offset`` on, ``count`` of them (default: all), in order, made or read one at a time.

        Synthetic scenes: more than the split holds is an ``InputError`` (:func:`lso.data.synthetic.split_seeds`);
        the ``"train"`` split needs a ``count``. A file: at most the items it holds, unless ``exact``: then fewer
        than ``count`` (of either kind) is an ``InputError`` saying how many there are, before any is made.
        """
        if exact:
            self._check_exact(count, offset)
        if self.synthetic:
            for seed in self._synthetic_seeds(count, offset):
                yield self.scene_of_seed(seed)
            return
        for i in range(offset, offset + self.count(count, offset=offset)):
            yield self[i]

    def degraded(self, ratio: int, count: int | None = None, *, offset: int = 0,
                 exact: bool = False) -> Iterator[DegradedScene]:
        """:meth:`scenes` with their HR-MSI and LR-HSI made by the paper's degradation at ``ratio``
        (:func:`lso.data.degrade`), all float32."""
        from lso.data.degradation import degrade

        for scene in self.scenes(count, offset=offset, exact=exact):
            gt = np.ascontiguousarray(scene.gt, dtype=np.float32)
            hr_msi, lr_hsi = degrade(gt, ratio)
            yield DegradedScene(scene.name, gt, np.asarray(hr_msi, np.float32), np.asarray(lr_hsi, np.float32))

    # ------------------------------------------------------------------------------------------ the file
    def close(self) -> None:
        """Close the file (a file source; nothing for synthetic scenes). Items can still be read: it reopens."""
        if self._dataset is not None:
            self._dataset.close()

    def __enter__(self) -> SceneSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        what = f"split={self.split!r}" if self._explicit_seeds is None else f"{len(self._explicit_seeds)} seeds"
        return f"SceneSource({self.data!r}, {what}, size={self.size})" if self.synthetic else \
            f"SceneSource({self.data!r}, centre_crop={self.centre_crop})"
