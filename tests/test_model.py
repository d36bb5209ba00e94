"""The model reproduces the official implementation and handles any size, ratio and batch."""
from __future__ import annotations

import json

import pytest
import torch
from conftest import REFERENCE_KEYS, REFERENCE_TAGS

from lso import LSO, LSOConfig
from lso.model import coordinate_grid, set_solver_form


def test_state_dict_matches_official_keys_and_shapes():
    spec = json.loads(REFERENCE_KEYS.read_text())
    state = LSO().state_dict()
    assert set(state) == set(spec)
    assert {k: list(v.shape) for k, v in state.items()} == spec
    model = LSO()
    assert sum(p.numel() for p in model.parameters()) == 1_942_703
    assert len(spec) == 69


@pytest.mark.parametrize("form", ["reference", "folded"])
@pytest.mark.parametrize("tag", REFERENCE_TAGS)
def test_reproduces_official_reference(reference, reference_state_dict, form, tag):
    model = LSO(LSOConfig(solver=form)).eval()
    model.load_state_dict(reference_state_dict)
    with torch.no_grad():
        out = model(reference[f"{tag}.hr_msi"], reference[f"{tag}.lr_hsi"])
    err = (out - reference[f"{tag}.output"]).abs().max().item()
    assert err <= 2e-5, f"{tag} ({form}): max abs error {err:.3g} > 2e-5"


@pytest.mark.parametrize("ratio,h,w", [(3, 11, 7), (5, 5, 9), (6, 4, 5), (2, 9, 8), (4, 8, 8)])
def test_any_ratio_and_size(tiny_model, ratio, h, w):
    torch.manual_seed(1)
    lr = torch.rand(2, 31, h, w)
    msi = torch.rand(2, 3, ratio * h, ratio * w)
    with torch.no_grad():
        out = tiny_model(msi, lr)
    assert out.shape == (2, 31, ratio * h, ratio * w)
    assert torch.isfinite(out).all()


def test_batch_items_are_independent(tiny_model):
    torch.manual_seed(2)
    lr, msi = torch.rand(3, 31, 6, 5), torch.rand(3, 3, 18, 15)
    with torch.no_grad():
        both = tiny_model(msi, lr)
        one = tiny_model(msi[1:2], lr[1:2])
    assert torch.allclose(both[1:2], one, atol=1e-6)


def test_multiple_of_four_needs_no_padding(tiny_model):
    """For H, W multiples of 4 the pad-to-4 is a no-op: an explicit pad branch would change nothing."""
    torch.manual_seed(3)
    lr, msi = torch.rand(1, 31, 4, 6), torch.rand(1, 3, 16, 24)
    with torch.no_grad():
        out = tiny_model(msi, lr)
    assert out.shape == (1, 31, 16, 24)


def test_grid_default_equals_linspace():
    ref = torch.zeros(2, 5, 7, 9)
    grid = coordinate_grid(ref)
    assert torch.allclose(grid[0, 0, :, 0], torch.linspace(0, 1, 7), atol=1e-7)
    assert torch.allclose(grid[1, 1, 0, :], torch.linspace(0, 1, 9), atol=1e-7)
    # grid channel 0 varies along rows only
    assert torch.equal(grid[:, 0], grid[:, 0, :, :1].expand_as(grid[:, 0]))


def test_grid_extent_gives_global_coordinates():
    whole = coordinate_grid(torch.zeros(1, 1, 40, 24))
    tile = coordinate_grid(torch.zeros(1, 1, 16, 8), torch.tensor([12, 8, 40, 24]))
    assert torch.allclose(tile, whole[:, :, 12:28, 8:16], atol=1e-6)


def test_extent_of_whole_image_is_the_default(tiny_model):
    torch.manual_seed(4)
    lr, msi = torch.rand(1, 31, 5, 7), torch.rand(1, 3, 20, 28)
    with torch.no_grad():
        a = tiny_model(msi, lr)
        b = tiny_model(msi, lr, torch.tensor([0, 0, 20, 28]))
        c = tiny_model(msi, lr, torch.tensor([4, 0, 40, 28]))
    assert torch.allclose(a, b, atol=1e-6)
    assert not torch.allclose(a, c, atol=1e-4)


def test_solver_form_switch_keeps_outputs(reference, reference_state_dict):
    model = LSO(LSOConfig(solver="reference")).eval()
    model.load_state_dict(reference_state_dict)
    tag = "x4_40x56"
    with torch.no_grad():
        a = model(reference[f"{tag}.hr_msi"], reference[f"{tag}.lr_hsi"])
        set_solver_form(model, "folded")
        b = model(reference[f"{tag}.hr_msi"], reference[f"{tag}.lr_hsi"])
    assert model.config.solver == "folded"
    assert (a - b).abs().max().item() <= 1e-5
    with pytest.raises(ValueError):
        set_solver_form(model, "cheby")


def test_gradients_flow_to_every_trainable_parameter(tiny_model):
    tiny_model.train()
    lr, msi = torch.rand(1, 31, 4, 4), torch.rand(1, 3, 16, 16)
    tiny_model(msi, lr).abs().mean().backward()
    frozen = {"spatial_encoder.sub_mean", "spatial_encoder.add_mean"}
    for name, p in tiny_model.named_parameters():
        if any(name.startswith(f) for f in frozen):
            assert not p.requires_grad
        else:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_config_validation():
    with pytest.raises(ValueError, match="divisible"):
        LSOConfig(width=30, heads=8)
    with pytest.raises(ValueError, match="solver"):
        LSOConfig(solver="fast")
    cfg = LSOConfig.tiny()
    assert LSOConfig.from_dict(json.loads(cfg.to_json())) == cfg


@pytest.mark.parametrize("h, size", [(16, 64), (13, 39), (7, 35), (64, 32), (9, 9)])
def test_graph_bicubic_equals_interpolate(monkeypatch, h, size):
    """The exported bicubic (interpolation matrices, A_h @ pad(x) @ A_w^T) equals F.interpolate: up, down, odd
    ratios."""
    import torch.nn.functional as F

    import lso.model as model_module

    torch.manual_seed(0)
    x = torch.rand(2, 5, h, h + 3)
    like = torch.empty(1, 1, size, size + 2)
    expected = F.interpolate(x, size=(size, size + 2), mode="bicubic", align_corners=False)
    assert torch.equal(model_module.resize_bicubic(x, like), expected)  # eager: the official call
    monkeypatch.setattr(model_module, "_in_graph", lambda: True)
    graph_form = model_module.resize_bicubic(x, like)
    assert graph_form.shape == expected.shape
    torch.testing.assert_close(graph_form, expected, atol=1e-5, rtol=0)  # non-integer scales: ~5e-6


def test_graph_form_of_keys_values_queries_matches_eager(monkeypatch, tiny_model):
    """The exported spectral block (one fused 1x1 conv giving the CoordToLatent logits, values and
    queries; solver in attention layout) computes what the official modules do."""
    import lso.model as model_module

    torch.manual_seed(1)
    hr, lr = torch.rand(1, 3, 32, 32), torch.rand(1, 31, 8, 8)
    with torch.no_grad():
        eager = tiny_model(hr, lr)
        block = tiny_model.process1
        xp = torch.rand(1, block.width, 16, 16)
        feats_eager = block._features(xp, graph=False)  # scaled keys | values | scaled queries
        feats_graph = block._features(xp, graph=True)  # logits | values | scaled queries
        monkeypatch.setattr(model_module, "_in_graph", lambda: True)
        graph = tiny_model(hr, lr)
    c, heads, dim = block.width, block.heads, block.head_dim
    keys = feats_eager[:, :c].reshape(1, heads, dim, 16, 16)
    logits = torch.einsum("htd,bhdyx->bhtyx", block.latent, keys).reshape(1, -1, 16, 16)
    n_logits = heads * block.num_token
    torch.testing.assert_close(feats_graph[:, :n_logits], logits, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(feats_graph[:, n_logits:], feats_eager[:, c:], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(graph, eager, atol=2e-6, rtol=0)
