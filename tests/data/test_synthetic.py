"""Synthetic CAVE-like scenes (lso.data.synthetic): determinism, layout, metamerism, the split."""
from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from lso.data.srf import load_srf
from lso.data.synthetic import (
    EVAL_PHOTOS,
    EVAL_SEEDS,
    TRAIN_PHOTOS,
    TRAIN_SEEDS,
    measured_spectra,
    spectral_library,
    split_seeds,
    synthetic_scene,
    synthetic_set,
)
from lso.deps import available
from lso.errors import InputError

needs_data = pytest.mark.skipif(
    not (available("colour") and available("skimage")),
    reason="synthetic scenes need colour-science and scikit-image (the 'data' extra)",
)


def _linear_fit_psnr(x: np.ndarray) -> float:
    """PSNR (mean over bands) of the best linear map RGB → HSI fitted on the scene itself."""
    srf = load_srf()
    hsi = x.reshape(31, -1).astype(np.float64)
    rgb = srf.T @ hsi
    coef, *_ = np.linalg.lstsq(rgb.T, hsi.T, rcond=None)
    mse = ((coef.T @ rgb - hsi) ** 2).mean(axis=1)
    return float(np.mean(10 * np.log10(1.0 / mse)))


@needs_data
def test_same_seed_same_scene_other_seed_other_scene():
    a = synthetic_scene(1000, 64)
    b = synthetic_scene(1000, 64)
    c = synthetic_scene(1001, 64)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).mean() > 1e-3


@needs_data
@pytest.mark.parametrize("seed,size", [(1000, 64), (EVAL_SEEDS[0], 72), (1013, 48)])
def test_layout_dtype_range(seed, size):
    x = synthetic_scene(seed, size)
    assert x.shape == (31, size, size) and x.dtype == np.float32 and x.flags.c_contiguous
    assert x.min() >= 0.0 and x.max() <= 1.0
    # normalised like CAVE: a bright top (the 99.5th percentile maps to 0.7..1) and real content
    assert np.percentile(x, 99.5) >= 0.6 and x.std() > 0.02


@needs_data
def test_flat_illuminant_and_no_metamerism_options():
    x = synthetic_scene(1000, 48, illuminant=False, metamerism=0.0)
    assert x.shape == (31, 48, 48) and 0.0 <= x.min() and x.max() <= 1.0


@needs_data
def test_spectra_are_not_a_function_of_rgb():
    x = synthetic_scene(EVAL_SEEDS[0], 96)
    # 1) the best linear RGB → HSI map leaves a substantial residual (CAVE-like, not ≫ 40 dB), and
    #    the metameric blacks are what makes it so.
    p = _linear_fit_psnr(x)
    p_flat = _linear_fit_psnr(synthetic_scene(EVAL_SEEDS[0], 96, metamerism=0.0))
    assert p < 36.0, p
    assert p_flat - p > 3.0, (p_flat, p)
    # 2) pixels with (nearly) the same RGB carry clearly different spectra
    rgb = np.einsum("chw,cm->hwm", x.astype(np.float64), load_srf()).reshape(-1, 3)
    spec = x.reshape(31, -1).T
    keys = np.round(rgb / 0.01).astype(np.int64)
    _, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    spread = 0.0
    for g in np.flatnonzero(np.bincount(inverse) >= 2):
        members = spec[inverse == g]
        spread = max(spread, float(np.abs(members - members[0]).max()))
    assert spread > 0.1, spread


@needs_data
def test_split_is_disjoint_and_never_mixed(caplog):
    assert not any(seed in TRAIN_SEEDS for seed in EVAL_SEEDS)
    assert not set(EVAL_PHOTOS) & set(TRAIN_PHOTOS)
    assert split_seeds("eval") == list(EVAL_SEEDS) and len(EVAL_SEEDS) == 8
    assert split_seeds("train", 3) == [1000, 1001, 1002]
    with caplog.at_level(logging.DEBUG, logger="lso.data.synthetic"):
        for seed in list(EVAL_SEEDS) + split_seeds("train", 24):
            caplog.clear()
            synthetic_scene(seed, 16)
            messages = [r.getMessage() for r in caplog.records if "photo " in r.getMessage()]
            (photo,) = [m.split("photo ")[1].split(",")[0] for m in messages]
            assert photo in (EVAL_PHOTOS if seed in EVAL_SEEDS else TRAIN_PHOTOS), (seed, photo)


@needs_data
def test_synthetic_set_yields_the_split_scenes():
    scenes = list(synthetic_set("train", 2, 32))
    assert len(scenes) == 2
    np.testing.assert_array_equal(scenes[1], synthetic_scene(1001, 32))
    first_eval = next(iter(synthetic_set("eval", 1, 32)))
    np.testing.assert_array_equal(first_eval, synthetic_scene(EVAL_SEEDS[0], 32))


@needs_data
def test_bad_arguments_raise_input_error():
    with pytest.raises(InputError, match="seed"):
        synthetic_scene(-1, 32)
    with pytest.raises(InputError, match="size"):
        synthetic_scene(1000, 8)
    with pytest.raises(InputError, match="metamerism"):
        synthetic_scene(1000, 32, metamerism=-1.0)
    with pytest.raises(InputError, match="srf"):
        synthetic_scene(1000, 32, srf=np.ones((31, 4)))
    with pytest.raises(InputError, match="split"):
        split_seeds("test")
    with pytest.raises(InputError, match="train split is open-ended"):
        split_seeds("train")
    with pytest.raises(InputError, match="eval split has 8"):
        split_seeds("eval", 9)


@needs_data
def test_spectral_library_is_measured_reflectance():
    spectra, sources = measured_spectra()
    assert spectra.shape[1] == 31 and spectra.shape[0] >= 250 and len(sources) == len(spectra)
    assert spectra.min() >= 0.0 and spectra.max() <= 1.0
    assert any("rawtoaces" in s for s in sources) and any("TCS" in s for s in sources)
    lib = spectral_library()
    np.testing.assert_array_equal(lib[: len(spectra)], spectra)
    assert lib.shape[0] == len(spectra) + 1500 and lib.min() >= 0.0 and lib.max() <= 1.0


def test_import_needs_only_torch_and_numpy_and_use_names_the_extra():
    code = textwrap.dedent(
        """
        import sys, importlib.abc
        class Blocker(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in ("colour", "skimage", "scipy"):
                    raise ModuleNotFoundError(f"No module named {name!r} (hidden by test)")
        sys.meta_path.insert(0, Blocker())
        import lso.data.synthetic, lso.baselines
        from lso.errors import MissingDependencyError
        try:
            lso.data.synthetic.synthetic_scene(1000, 32)
        except MissingDependencyError as e:
            print(e)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "lso-deploy[data]" in proc.stdout
