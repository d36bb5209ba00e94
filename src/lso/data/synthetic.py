"""CAVE-like synthetic hyperspectral scenes that need no download.

A scene is ``[31, size, size]`` float32 in ``[0, 1]``, bands 400 → 700 nm at 10 nm, built from
*measured* reflectance spectra laid out on the structure of real photographs:

1. **Spectral library** (:func:`measured_spectra`): the reflectance spectra that colour-science
   ships offline, linearly resampled to 400..700 nm at 10 nm, clipped to ``[0, 1]`` and
   de-duplicated (RMS difference ≤ 0.005 counts as a duplicate): the 190 training patches of
   AMPAS rawtoaces, the ColorChecker (BabelColor average, N Ohta, ISO 17321-1), the preferred
   memory colour (PMC) chart, the CIE test colour samples TCS01–15 and the NIST CQS samples VS1–15
   (7.4 and 9.0): 299 spectra with colour-science 0.4.7. 1,500 fixed subtractive mixtures of random
   pairs (``R1^t · R2^(1-t)``, t in [0.2, 0.8], seed 0) fill the colour gamut; scenes draw from
   measured ∪ mixed (:func:`spectral_library`).
2. **Structure**: a view of a photograph bundled with scikit-image (no download; see
   :data:`TRAIN_PHOTOS`, :data:`EVAL_PHOTOS`): a square crop, a rotation by a multiple of 90° and a
   random flip, resized to ``size`` (bilinear, antialiased when shrinking). Training views: a random
   crop of 45–100 % of the shorter side anywhere. Evaluation views: a crop of 60 % of the shorter
   side at the centre or a corner (fixed per evaluation seed).
3. **Materials**: SLIC superpixels of the view (150–700 segments at 512 px, scaled with the area,
   at least 24 requested). A colour photo's segment gets one of the 8 library spectra whose SRF
   colour is nearest to the segment's mean linear photo colour (chromaticity and cube-root
   lightness), chosen at random, then a correction in the SRF's range space (``S (SᵀS)⁻¹ Δrgb``) so
   that its SRF chromaticity equals the segment's. A greyscale photo's segment gets a random
   library spectrum.
4. **Metamerism**: each segment's spectrum gets a *metameric black*: the difference to another
   library spectrum projected onto the null space of the SRF (``P = I - S (SᵀS)⁻¹ Sᵀ``); the
   strongest of 3 random candidates, scaled to 50–100 % of the largest amplitude (at most 3) that
   keeps the reflectance in ``[0.002, 1]``. It changes the spectrum but not its SRF colour, so the
   spectra of a scene are not a function of its RGB.
5. **Within-segment variation**: a second metameric black per segment weighted by a smooth random
   field (each segment mixes two fields with its own phase), and a small visible variation (15 %)
   towards another of the segment's nearest library spectra, weighted by a third field. The
   reflectance is clipped to ``[0, 1]``.
6. **Shading**: the photo's linear luminance over the spectrum's SRF luminance (greyscale photos: over
   the segment's mean luminance), clipped to ``[0, 3]``: the scene's RGB rendering follows the
   photo's shading and texture.
7. **Illumination**: two light sources whose mixture varies smoothly across the image: a blackbody
   at 3,500–5,500 K and a CIE daylight at 5,500–9,000 K, each normalised to mean 1 over the 31 bands,
   weighted by a sigmoid of a ramp along a random direction plus a low-frequency random field
   (``illuminant=False``: spectrally flat light).
8. **Normalisation** (like CAVE's 16-bit range): the cube is scaled so that its 99.5th percentile
   (over all bands and pixels, estimated on every 7th value) maps to a random peak in
   ``[0.7, 1.0]``, then clipped to ``[0, 1]``, so about 0.5 % of the values saturate, as in CAVE's
   highlights. No noise is added.

Everything is drawn from ``numpy.random.default_rng(seed)``: the same seed (and size) gives the same
array on the same software stack (SLIC and the bundled photos come from scikit-image, so a
different scikit-image version may give different scenes).

**Split.** Evaluation scenes are the seeds :data:`EVAL_SEEDS` (eight fixed seeds); only they use the
photographs in :data:`EVAL_PHOTOS` (``coffee``, ``rocket``), which no other seed ever uses. Training
scenes are :data:`TRAIN_SEEDS` (1000, 1001, ...); they, and any other seed, use
:data:`TRAIN_PHOTOS`. The spectral library is shared (as CAVE's scenes share materials).

**Provenance.** Nothing is downloaded: the spectra ship inside colour-science (BSD-3-Clause; data from
AMPAS rawtoaces, BabelColor, N. Ohta, ISO 17321-1, M. R. Luo's PMC chart, CIE and NIST) and the
photographs inside scikit-image. Per scikit-image's docstrings the photographs are public domain
(astronaut, rocket, hubble_deep_field), CC0 (chelsea, coffee, retina, camera, brick, grass, gravel) or
"no known copyright restrictions" (immunohistochemistry, coins); ``stereo_motorcycle`` (Middlebury
2014 stereo benchmark) and ``moon`` state no licence: both are training-only.

Needs ``colour-science`` and ``scikit-image`` (the ``data`` extra); they are imported on first use.

Example::

    from lso.data.synthetic import synthetic_scene, synthetic_set
    gt = synthetic_scene(1000, size=256)          # [31, 256, 256] float32 in [0, 1]
    for gt in synthetic_set("eval", size=512):    # the 8 held-out scenes
        ...
"""
from __future__ import annotations

import functools
import logging
import numbers
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lso.deps import require
from lso.errors import InputError
from lso.memory import array_bytes, check_bytes

__all__ = [
    "EVAL_PHOTOS",
    "EVAL_SEEDS",
    "N_BANDS",
    "TRAIN_PHOTOS",
    "TRAIN_SEEDS",
    "measured_spectra",
    "spectral_library",
    "split_seeds",
    "synthetic_scene",
    "synthetic_set",
]

logger = logging.getLogger(__name__)

N_BANDS = 31
"""Bands of a scene: 400, 410, ..., 700 nm."""

_WAVELENGTHS = np.arange(400.0, 701.0, 10.0)

TRAIN_SEEDS: range = range(1000, 2**31 - 1)
"""Training scenes: seeds 1000, 1001, ... (``split_seeds("train", n)`` takes the first ``n``)."""

EVAL_SEEDS: tuple[int, ...] = (101, 202, 303, 404, 505, 606, 707, 808)
"""The held-out evaluation scenes (the only seeds that use :data:`EVAL_PHOTOS`)."""

TRAIN_PHOTOS: tuple[str, ...] = (
    # colour photographs
    "astronaut",
    "chelsea",
    "motorcycle_left",
    "motorcycle_right",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    # greyscale photographs (structure and texture only; spectra drawn at random)
    "camera",
    "brick",
    "grass",
    "gravel",
    "coins",
    "moon",
)
"""Photographs (``skimage.data``, bundled with scikit-image) behind training scenes."""

EVAL_PHOTOS: tuple[str, ...] = ("coffee", "rocket")
"""Photographs behind the evaluation scenes; never used by a training seed."""

_GREY_PHOTOS = frozenset({"camera", "brick", "grass", "gravel", "coins", "moon"})
_P_COLOUR = 0.75  # probability that a training scene uses a colour photograph
# relative frequency of the colour training photographs (everyday scenes more often; others 1)
_PHOTO_WEIGHT = {"astronaut": 3.0, "chelsea": 3.0, "motorcycle_left": 1.5, "motorcycle_right": 1.5}

# generator constants (see the module docstring)
_DEDUP_RMS = 0.005
_N_MIXTURES = 1500
_K_NEAREST = 8
_N_BLACK_CANDIDATES = 3
_R_MIN = 0.002  # reflectance floor kept by the metameric blacks
_SEGMENTS_512 = (150, 700)
_MIN_SEGMENTS = 24
_CROP_FRACTION = (0.45, 1.0)
_EVAL_CROP = 0.6
_SHADING_MAX = 3.0
_PEAK = (0.7, 1.0)
_PERCENTILE = 99.5
_LUMA = np.array([0.2126, 0.7152, 0.0722])


# --------------------------------------------------------------------------------------------------
# spectral library
# --------------------------------------------------------------------------------------------------
def _resample(wavelengths: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Linear interpolation of spectra ``[..., n]`` given at ``wavelengths`` onto 400..700/10 nm."""
    values = np.atleast_2d(values)
    return np.stack([np.interp(_WAVELENGTHS, wavelengths, v) for v in values])


@functools.lru_cache(maxsize=1)
def _measured() -> tuple[np.ndarray, tuple[str, ...]]:
    colour = require("colour")
    quality = require("colour.quality.datasets")
    characterisation = require("colour.characterisation")

    spectra: list[np.ndarray] = []
    sources: list[str] = []

    def add(source: str, wavelengths: np.ndarray, values: np.ndarray) -> None:
        block = _resample(np.asarray(wavelengths, float), np.asarray(values, float))
        spectra.extend(block)
        sources.extend([source] * len(block))

    patches = characterisation.read_training_data_rawtoaces_v1()
    add("rawtoaces 190 patches", patches.wavelengths, patches.values.T)
    for chart in ("BabelColor Average", "ColorChecker N Ohta", "ISO 17321-1", "PMC"):
        for sd in colour.SDS_COLOURCHECKERS[chart].values():
            add(f"colour checker: {chart}", sd.wavelengths, sd.values)
    for sd in quality.SDS_TCS["CIE 2024"].values():
        add("CIE TCS (2024)", sd.wavelengths, sd.values)
    for version in ("NIST CQS 9.0", "NIST CQS 7.4"):
        for sd in quality.SDS_VS[version].values():
            add(f"{version} VS", sd.wavelengths, sd.values)

    table = np.clip(np.stack(spectra), 0.0, 1.0)
    keep: list[int] = []
    for i, s in enumerate(table):
        if not keep or np.sqrt(np.mean((table[keep] - s) ** 2, axis=1)).min() > _DEDUP_RMS:
            keep.append(i)
    logger.debug("spectral library: %d measured spectra (%d before de-duplication)", len(keep), len(table))
    return table[keep], tuple(sources[i] for i in keep)


def measured_spectra() -> tuple[np.ndarray, tuple[str, ...]]:
    """The measured reflectance spectra the scenes are made of.

    Returns:
        ``(spectra, sources)``: ``[N, 31]`` float64 reflectances in ``[0, 1]`` (bands 400 → 700 nm)
        and the dataset each row comes from (``N`` = 299 with colour-science 0.4.7). Copies.

    Raises:
        MissingDependencyError: colour-science is not installed.
    """
    table, sources = _measured()
    return table.copy(), sources


@functools.lru_cache(maxsize=1)
def _library() -> np.ndarray:
    table, _ = _measured()
    rng = np.random.default_rng(0)
    i = rng.integers(0, len(table), size=_N_MIXTURES)
    j = rng.integers(0, len(table), size=_N_MIXTURES)
    t = rng.uniform(0.2, 0.8, size=(_N_MIXTURES, 1))
    mixed = np.maximum(table[i], _R_MIN) ** t * np.maximum(table[j], _R_MIN) ** (1.0 - t)
    lib = np.concatenate([table, mixed])
    lib.flags.writeable = False
    return lib


def spectral_library() -> np.ndarray:
    """Measured spectra followed by their 1,500 fixed subtractive mixtures: what scenes draw from.

    Returns:
        ``[N + 1500, 31]`` float64 in ``[0, 1]`` (the first ``N`` rows are :func:`measured_spectra`).
    """
    return _library().copy()


# --------------------------------------------------------------------------------------------------
# photographs
# --------------------------------------------------------------------------------------------------
@functools.cache
def _photo(name: str) -> np.ndarray:
    """A bundled photograph as float32 ``[H, W, 3]`` (colour) or ``[H, W]`` (greyscale) in [0, 1]."""
    data = require("skimage.data")
    if name in ("motorcycle_left", "motorcycle_right"):
        left, right, _ = data.stereo_motorcycle()
        img = left if name == "motorcycle_left" else right
    else:
        img = getattr(data, name)()
    img = np.asarray(img)
    if img.ndim == 3:
        img = img[..., :3]
    out = img.astype(np.float32) / np.float32(np.iinfo(img.dtype).max if img.dtype.kind in "ui" else 1.0)
    out.flags.writeable = False
    return out


def _srgb_to_linear(v: np.ndarray) -> np.ndarray:
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def _view(photo: np.ndarray, size: int, rng: np.random.Generator, corner: int | None = None) -> np.ndarray:
    """Square crop, rotation by k·90°, flip, resized to ``size``: ``[size, size, C]`` float32.

    ``corner=None``: random crop of 45–100 % of the shorter side anywhere, random rotation and flip.
    ``corner=v`` (evaluation views, v in 0..3): a crop of 60 % of the shorter side at the centre,
    top-left, bottom-right or top-right corner, rotated by v·90°, random flip.
    """
    h, w = photo.shape[:2]
    if corner is None:
        side = int(np.rint(rng.uniform(*_CROP_FRACTION) * min(h, w)))
        side = max(8, min(side, h, w))
        top = int(rng.integers(0, h - side + 1))
        left = int(rng.integers(0, w - side + 1))
        k = int(rng.integers(0, 4))
    else:
        side = int(np.rint(_EVAL_CROP * min(h, w)))
        places = {0: ((h - side) // 2, (w - side) // 2), 1: (0, 0), 2: (h - side, w - side), 3: (0, w - side)}
        top, left = places[corner]
        k = corner
    crop = photo[top : top + side, left : left + side]
    if crop.ndim == 2:
        crop = crop[..., None]
    crop = np.rot90(crop, k=k)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    t = torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1)))[None]
    if side != size:
        t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=side > size)
    return t[0].permute(1, 2, 0).clamp(0.0, 1.0).numpy()


def _smooth_field(size: int, rng: np.random.Generator, grid: int) -> np.ndarray:
    """A smooth random field ``[size, size]`` float32, roughly in [-1, 1] (bicubic of a coarse grid)."""
    coarse = torch.from_numpy(rng.standard_normal((1, 1, grid, grid)).astype(np.float32))
    field = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True)[0, 0].numpy()
    return field / max(float(np.abs(field).max()), 1e-6)


# --------------------------------------------------------------------------------------------------
# illumination
# --------------------------------------------------------------------------------------------------
def _blackbody(temperature: float) -> np.ndarray:
    lam = _WAVELENGTHS * 1e-9
    spd = 1.0 / (lam**5 * (np.exp(0.014388 / (lam * temperature)) - 1.0))
    return spd / spd.mean()


def _daylight(temperature: float) -> np.ndarray:
    colour = require("colour")
    xy = colour.temperature.CCT_to_xy_CIE_D(temperature)
    sd = colour.sd_CIE_illuminant_D_series(xy)
    spd = _resample(sd.wavelengths, sd.values)[0]
    return spd / spd.mean()


# --------------------------------------------------------------------------------------------------
# the generator
# --------------------------------------------------------------------------------------------------
def _null_projector(srf: np.ndarray) -> np.ndarray:
    return np.eye(srf.shape[0]) - srf @ np.linalg.solve(srf.T @ srf, srf.T)


def _max_amplitude(base: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Largest a ≥ 0 per row with ``_R_MIN <= base + a·direction <= 1`` (rows of [n, 31])."""
    with np.errstate(divide="ignore", invalid="ignore"):
        up = np.where(direction > 1e-12, (1.0 - base) / direction, np.inf)
        down = np.where(direction < -1e-12, (base - _R_MIN) / -direction, np.inf)
    a = np.minimum(up, down).min(axis=1)
    return np.clip(np.where(np.isfinite(a), a, 0.0), 0.0, None)


def _colour_features(rgb: np.ndarray) -> np.ndarray:
    """Matching features of linear RGB rows [n, 3]: chromaticity (r, g) and 0.5·cube-root lightness."""
    rgb = np.clip(rgb, 1e-4, None)
    chroma = rgb / rgb.sum(axis=1, keepdims=True)
    light = np.cbrt(rgb @ _LUMA)
    return np.concatenate([chroma[:, :2], 0.5 * light[:, None]], axis=1)


def _check_int(value: Any, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise InputError(f"{what}: expected an integer ≥ {minimum}, got {value!r}")
    return int(value)


def _srf_or_default(srf: Any) -> np.ndarray:
    if srf is None:
        from lso.data.srf import load_srf

        return load_srf()
    mat = np.asarray(srf.detach().cpu().numpy() if isinstance(srf, torch.Tensor) else srf, dtype=np.float64)
    if mat.shape != (N_BANDS, 3):
        raise InputError(
            f"srf: expected a [31, 3] matrix (bands 400 → 700 nm × R, G, B), got shape {mat.shape}"
        )
    return mat


def synthetic_scene(
    seed: int,
    size: int = 512,
    *,
    metamerism: float = 1.0,
    illuminant: bool = True,
    srf: Any = None,
) -> np.ndarray:
    """One CAVE-like synthetic hyperspectral scene (see the module docstring for the recipe).

    Args:
        seed: non-negative integer; the scene is a deterministic function of ``(seed, size)`` and the
            options. Seeds in :data:`EVAL_SEEDS` are the held-out evaluation scenes (photographs
            :data:`EVAL_PHOTOS`); every other seed uses :data:`TRAIN_PHOTOS`.
        size: height and width in pixels (≥ 16; 512 like CAVE).
        metamerism: scale of the metameric blacks (spectral variation invisible to the SRF), ≥ 0;
            ``1.0`` is the benchmark's setting, ``0.0`` makes spectra follow the library exactly.
        illuminant: ``True`` = smoothly varying mixture of a blackbody and a daylight source;
            ``False`` = spectrally flat light (the scene is shaded reflectance).
        srf: ``[31, 3]`` SRF used to match photo colours and build the metameric blacks; ``None`` =
            Nikon D700 (:func:`lso.data.srf.load_srf`), the SRF of :func:`lso.data.degrade`.

    Returns:
        ``[31, size, size]`` float32 in ``[0, 1]`` (bands 400 → 700 nm at 10 nm).

    Raises:
        InputError: negative or non-integer ``seed``, ``size`` < 16 or over the memory budget
            (:mod:`lso.memory`), negative ``metamerism``, bad ``srf``.
        MissingDependencyError: colour-science or scikit-image is not installed.
    """
    seed = _check_int(seed, "seed", 0)
    size = _check_int(size, "size", 16)
    # float64 work arrays of the scene (a few at once): refused before anything is drawn (lso.memory)
    check_bytes(4 * array_bytes((N_BANDS, size, size), 8), f"a {size}x{size} synthetic scene",
                fix="choose a smaller size (--size)")
    if isinstance(metamerism, bool) or not isinstance(metamerism, numbers.Real) or not 0 <= metamerism < 1e6:
        raise InputError(f"metamerism: expected a finite number ≥ 0 (default 1.0), got {metamerism!r}")
    srf_mat = _srf_or_default(srf)
    segmentation = require("skimage.segmentation")
    lib = _library()
    lib_rgb = lib @ srf_mat
    null = _null_projector(srf_mat)
    range_map = np.linalg.solve(srf_mat.T @ srf_mat, srf_mat.T)  # [3, 31]: Δrgb → Δspectrum
    rng = np.random.default_rng(seed)

    # --- photograph and view ------------------------------------------------------------------
    if seed in EVAL_SEEDS:
        index = EVAL_SEEDS.index(seed)
        name = EVAL_PHOTOS[index % len(EVAL_PHOTOS)]
        corner: int | None = (index // len(EVAL_PHOTOS)) % 4
    else:
        grey_pick = rng.random() >= _P_COLOUR
        pool = [p for p in TRAIN_PHOTOS if (p in _GREY_PHOTOS) == grey_pick]
        weights = np.array([_PHOTO_WEIGHT.get(p, 1.0) for p in pool])
        name = pool[int(rng.choice(len(pool), p=weights / weights.sum()))]
        corner = None
    view = _view(_photo(name), size, rng, corner)  # [S, S, C] sRGB-encoded
    grey = view.shape[-1] == 1
    linear = _srgb_to_linear(view.astype(np.float64))
    luminance = linear[..., 0] if grey else linear @ _LUMA

    # --- superpixels ----------------------------------------------------------------------------
    lo, hi = _SEGMENTS_512
    n_target = max(_MIN_SEGMENTS, int(np.rint(rng.integers(lo, hi + 1) * (size / 512.0) ** 2)))
    labels = segmentation.slic(
        view if not grey else view[..., 0],
        n_segments=n_target,
        compactness=float(rng.uniform(5.0, 20.0)) * (1.0 if not grey else 0.01),
        sigma=0.5,
        start_label=0,
        channel_axis=None if grey else -1,
        enforce_connectivity=True,
    )
    n_seg = int(labels.max()) + 1
    flat = labels.ravel()
    counts = np.maximum(np.bincount(flat, minlength=n_seg), 1)

    # --- one library spectrum per segment -------------------------------------------------------
    if grey:
        base_idx = rng.integers(0, len(lib), size=n_seg)
        alt_idx = rng.integers(0, len(lib), size=n_seg)
    else:
        mean_rgb = np.stack(
            [np.bincount(flat, weights=linear[..., c].ravel(), minlength=n_seg) for c in range(3)], axis=1
        ) / counts[:, None]
        f_seg, f_lib = _colour_features(mean_rgb), _colour_features(lib_rgb)
        dist = ((f_seg[:, None, :] - f_lib[None, :, :]) ** 2).sum(-1)
        nearest = np.argpartition(dist, _K_NEAREST, axis=1)[:, :_K_NEAREST]
        pick = rng.integers(0, _K_NEAREST, size=(n_seg, 2))
        base_idx = nearest[np.arange(n_seg), pick[:, 0]]
        alt_idx = nearest[np.arange(n_seg), pick[:, 1]]
    base = lib[base_idx].copy()
    alt = lib[alt_idx]
    if not grey:
        # give each segment the photo's mean chromaticity exactly (at the spectrum's own luminance) by a
        # correction in the SRF's range space: S (SᵀS)⁻¹ Δrgb; the spectrum's shape stays the library's.
        target = mean_rgb * ((base @ srf_mat) @ _LUMA / np.maximum(mean_rgb @ _LUMA, 1e-4))[:, None]
        base = np.clip(base + (target - base @ srf_mat) @ range_map, _R_MIN, 1.0)

    # --- metameric blacks -----------------------------------------------------------------------
    # the strongest of a few candidate blacks (largest feasible RMS change of the spectrum)
    candidates = (lib[rng.integers(0, len(lib), size=(_N_BLACK_CANDIDATES, n_seg))] - base) @ null.T
    feasible = np.stack([np.minimum(_max_amplitude(base, c), 3.0) for c in candidates])  # [K, n]
    strength = feasible * np.sqrt((candidates**2).mean(axis=2))
    best = strength.argmax(axis=0)
    black = candidates[best, np.arange(n_seg)]
    amp = feasible[best, np.arange(n_seg)] * rng.uniform(0.5, 1.0, size=n_seg) * metamerism
    base = np.clip(base + np.minimum(amp, _max_amplitude(base, black))[:, None] * black, _R_MIN, 1.0)

    other2 = lib[rng.integers(0, len(lib), size=n_seg)]
    black2 = (other2 - base) @ null.T
    amp2 = np.minimum(np.minimum(_max_amplitude(base, black2), _max_amplitude(base, -black2)), 1.0)
    amp2 = amp2 * rng.uniform(0.3, 1.0, size=n_seg) * metamerism
    visible = 0.15 * (alt - base)

    grid = int(rng.integers(3, 9))
    f1, f2 = _smooth_field(size, rng, grid), _smooth_field(size, rng, grid)
    f3 = 0.5 * (_smooth_field(size, rng, int(rng.integers(3, 9))) + 1.0)
    phase = rng.uniform(0.0, 2.0 * np.pi, size=n_seg)
    alpha = f1 * np.cos(phase)[labels] + f2 * np.sin(phase)[labels]  # [S, S] in ~[-1.4, 1.4]

    # --- shading --------------------------------------------------------------------------------
    spec_luma = np.maximum((base @ srf_mat) @ _LUMA, 1e-3)
    if grey:
        seg_luma = np.bincount(flat, weights=luminance.ravel(), minlength=n_seg) / counts
        shading = luminance / np.maximum(seg_luma, 1e-3)[labels]
    else:
        shading = luminance / spec_luma[labels]
    shading = np.clip(shading, 0.0, _SHADING_MAX).astype(np.float32)

    # --- illumination ---------------------------------------------------------------------------
    if illuminant:
        warm = _blackbody(float(rng.uniform(3500.0, 5500.0)))
        cool = _daylight(float(rng.uniform(5500.0, 9000.0)))
        theta = rng.uniform(0.0, 2.0 * np.pi)
        yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1) - 0.5
        ramp = (np.cos(theta) * xx + np.sin(theta) * yy) + 0.3 * _smooth_field(size, rng, 4)
        weight = 1.0 / (1.0 + np.exp(-(ramp - rng.uniform(-0.3, 0.3)) / rng.uniform(0.08, 0.3)))
        weight = weight.astype(np.float32)
    else:
        warm = cool = np.ones(N_BANDS)
        weight = np.zeros((size, size), np.float32)

    # --- compose [31, S, S] ---------------------------------------------------------------------
    base32 = base.T.astype(np.float32)
    black32 = (black2 * amp2[:, None]).T.astype(np.float32)
    visible32 = visible.T.astype(np.float32)
    refl = base32[:, labels]
    refl += black32[:, labels] * alpha.astype(np.float32)
    refl += visible32[:, labels] * f3.astype(np.float32)
    np.clip(refl, 0.0, 1.0, out=refl)
    light = warm.astype(np.float32)[:, None, None] + (cool - warm).astype(np.float32)[:, None, None] * weight
    cube = refl * light
    cube *= shading

    # --- normalise (high percentile → random peak, clip) ----------------------------------------
    sample = cube.ravel()[:: 7]
    ref = float(np.percentile(sample, _PERCENTILE))
    peak = float(rng.uniform(*_PEAK))
    cube *= np.float32(peak / max(ref, 1e-6))
    np.clip(cube, 0.0, 1.0, out=cube)
    logger.debug("synthetic_scene(seed=%d, size=%d): photo %s, %d segments", seed, size, name, n_seg)
    return np.ascontiguousarray(cube, dtype=np.float32)


def split_seeds(split: str, n: int | None = None) -> list[int]:
    """The seeds of a split.

    Args:
        split: ``"train"`` (:data:`TRAIN_SEEDS`: 1000, 1001, ...) or ``"eval"`` (:data:`EVAL_SEEDS`).
        n: how many (the first ``n``); ``None`` = all 8 for ``"eval"`` (required for ``"train"``).

    Returns:
        The seeds, in order.

    Raises:
        InputError: unknown split, ``n`` missing for ``"train"``, ``n`` larger than the eval split.
    """
    if split == "eval":
        if n is None:
            return list(EVAL_SEEDS)
        n = _check_int(n, "n", 0)
        if n > len(EVAL_SEEDS):
            raise InputError(f"n: the eval split has {len(EVAL_SEEDS)} scenes, asked for {n}")
        return list(EVAL_SEEDS[:n])
    if split == "train":
        if n is None:
            raise InputError("n: the train split is open-ended; say how many scenes, e.g. n=64")
        n = _check_int(n, "n", 0)
        return list(TRAIN_SEEDS[:n])
    raise InputError(f"split: expected 'train' or 'eval', got {split!r}")


def synthetic_set(split: str, n: int | None = None, size: int = 512, **options: Any) -> Iterator[np.ndarray]:
    """Yield the scenes of a split, one at a time (generated lazily, about a second each at 512 px).

    Args:
        split: ``"train"`` or ``"eval"`` (see :func:`split_seeds`).
        n: number of scenes; ``None`` = all 8 for ``"eval"``.
        size: height and width of each scene.
        **options: keyword options of :func:`synthetic_scene` (``metamerism``, ``illuminant``, ``srf``).

    Yields:
        ``[31, size, size]`` float32 scenes in ``[0, 1]``, in seed order.
    """
    for seed in split_seeds(split, n):
        yield synthetic_scene(seed, size, **options)
