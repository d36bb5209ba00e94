"""Classical baselines (lso.baselines): bicubic upsampling and GSA fusion."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lso.baselines import bicubic_upsample, gsa_fusion
from lso.data.degradation import degrade
from lso.data.srf import hsi_to_msi, load_srf
from lso.errors import InputError
from lso.metrics import psnr


def _rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape)


def test_bicubic_upsample_is_the_models_lms():
    lr = torch.from_numpy(_rand(2, 31, 6, 5)).float()
    up = bicubic_upsample(lr, 4)
    ref = F.interpolate(lr, size=(24, 20), mode="bicubic", align_corners=False)
    assert isinstance(up, torch.Tensor) and up.dtype == torch.float32
    torch.testing.assert_close(up, ref, rtol=0, atol=0)
    # numpy in → numpy out, unbatched, dtype kept (float64 stays float64)
    up_np = bicubic_upsample(_rand(31, 6, 5), 4)
    assert isinstance(up_np, np.ndarray) and up_np.shape == (31, 24, 20) and up_np.dtype == np.float64
    np.testing.assert_allclose(up_np[0], bicubic_upsample(_rand(31, 6, 5)[:1], 4)[0])
    assert bicubic_upsample(_rand(31, 6, 5).astype(np.float32), 2).dtype == np.float32
    with pytest.raises(InputError, match="ratio"):
        bicubic_upsample(lr, 0)
    with pytest.raises(InputError, match=r"\[C, h, w\]"):
        bicubic_upsample(_rand(6, 5), 4)


@pytest.mark.parametrize("batched", [False, True])
def test_gsa_shapes_and_kinds(batched):
    gt = _rand(2, 31, 24, 20) if batched else _rand(31, 24, 20)
    msi, lr = degrade(gt, 4)
    out = gsa_fusion(msi, lr, 4)
    assert out.shape == gt.shape and out.dtype == np.float64 and np.isfinite(out).all()
    out_t = gsa_fusion(torch.from_numpy(msi).float(), torch.from_numpy(lr).float(), 4)
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.float32 and out_t.shape == gt.shape
    np.testing.assert_allclose(out_t.numpy(), out, atol=1e-5)


def test_gsa_preserves_a_constant_image():
    gt = np.full((31, 32, 32), 0.37)
    msi, lr = degrade(gt, 4)
    for grouping in ("srf", "correlation"):
        np.testing.assert_allclose(gsa_fusion(msi, lr, 4, grouping=grouping), gt, atol=1e-10)


def test_gsa_recovers_a_rank_one_scene():
    # HSI = spectrum × spatial pattern: every MSI band and every HSI band is the pattern up to a scale,
    # so the regression is exact, g_k = s_k / c_m, and the fused band is s_k · pattern up to the mean
    # difference between the pattern and its bicubic estimate.
    rng = np.random.default_rng(1)
    pattern = rng.random((64, 64))
    spectrum = np.linspace(0.2, 0.9, 31)
    gt = spectrum[:, None, None] * pattern[None]
    msi, lr = degrade(gt, 4)
    fused = gsa_fusion(msi, lr, 4)
    assert psnr(gt, fused) > 45.0 and psnr(gt, fused) > psnr(gt, bicubic_upsample(lr, 4)) + 20.0


def test_gsa_beats_bicubic_on_a_synthetic_scene():
    pytest.importorskip("colour", reason="synthetic scenes need colour-science (the 'data' extra)")
    pytest.importorskip("skimage", reason="synthetic scenes need scikit-image (the 'data' extra)")
    from lso.data.synthetic import synthetic_scene

    gt = synthetic_scene(1000, 96)
    msi, lr = degrade(gt, 4)
    p_bic = psnr(gt, np.clip(bicubic_upsample(lr, 4), 0, 1))
    p_gsa = psnr(gt, np.clip(gsa_fusion(msi, lr, 4), 0, 1))
    p_cor = psnr(gt, np.clip(gsa_fusion(msi, lr, 4, grouping="correlation"), 0, 1))
    assert p_gsa > p_bic + 3.0, (p_gsa, p_bic)
    assert p_cor > p_bic + 3.0, (p_cor, p_bic)


def test_gsa_checks_its_inputs():
    msi, lr = degrade(_rand(31, 16, 16), 4)
    with pytest.raises(InputError, match="ratio"):
        gsa_fusion(msi, lr, 2)
    with pytest.raises(InputError, match="grouping"):
        gsa_fusion(msi, lr, 4, grouping="nearest")
    with pytest.raises(InputError, match="srf"):
        gsa_fusion(msi, lr, 4, srf=load_srf()[:, :2])
    with pytest.raises(InputError, match="both must be batched"):
        gsa_fusion(msi[None], lr, 4)
    with pytest.raises(InputError, match="NaN"):
        gsa_fusion(msi, np.full_like(lr, np.nan), 4)
    # an SRF given explicitly is used as given
    out = gsa_fusion(hsi_to_msi(_rand(31, 16, 16)), lr, 4, srf=load_srf())
    assert out.shape == (31, 16, 16)
