"""The folded (Clenshaw) solver equals the reference (basis) form."""
from __future__ import annotations

import pytest
import torch
from conftest import REFERENCE_TAGS

from lso import LSO, LSOConfig
from lso.solver import solve, solve_folded, solve_folded_blocked, solve_folded_graph, solve_reference


@pytest.mark.parametrize("q", [1, 2, 6, 24])
def test_folded_equals_reference_random(q):
    g = torch.Generator().manual_seed(q)
    z = torch.randn(50, 16, 8, generator=g, dtype=torch.float64) * 3
    w = torch.randn(16, 2 * q, generator=g, dtype=torch.float64) * 0.3
    modes = torch.arange(1, q + 1, dtype=torch.float64)
    ref = solve_reference(z, w, modes)
    fold = solve_folded(z, w)
    assert torch.allclose(ref, fold, atol=1e-10, rtol=0)


def test_folded_equals_reference_float32_extremes():
    """Near theta = 0 and pi (cos(phi) -> +-1) Clenshaw is least stable; check float32 there."""
    z = torch.tensor([-30.0, -8.0, -1.0, 0.0, 1.0, 8.0, 30.0]).view(1, 1, 7).repeat(1, 4, 1)
    w = torch.randn(4, 48, generator=torch.Generator().manual_seed(0)) * 0.3 / torch.arange(1, 25).repeat(2)
    modes = torch.arange(1, 25, dtype=torch.float32)
    assert (solve_reference(z, w, modes) - solve_folded(z, w)).abs().max() <= 1e-5


def test_solver_on_reference_latents(reference, reference_state_dict):
    """Capture the real latents of every spectral block on the reference inputs; compare both forms."""
    model = LSO(LSOConfig(solver="reference")).eval()
    model.load_state_dict(reference_state_dict)
    seen = []
    import lso.model as model_mod

    original = model_mod.solve

    def spy(z, weights, modes, form):
        seen.append((z.clone(), weights, modes))
        return original(z, weights, modes, form)

    model_mod.solve = spy
    try:
        with torch.no_grad():
            for tag in REFERENCE_TAGS:
                model(reference[f"{tag}.hr_msi"], reference[f"{tag}.lr_hsi"])
    finally:
        model_mod.solve = original
    assert len(seen) == 3 * len(REFERENCE_TAGS)
    worst = max((solve_reference(z, w, m) - solve_folded(z, w)).abs().max().item() for z, w, m in seen)
    assert worst <= 1e-5


def test_dispatch_rejects_unknown_form():
    z = torch.zeros(1, 2, 3)
    with pytest.raises(ValueError):
        solve(z, torch.zeros(2, 4), torch.arange(1, 3.0), "chebyshev")


def test_blocked_and_graph_executions_agree_with_float64_truth():
    """Both executions of the folded form are at least as accurate as the reference form in float32."""
    g = torch.Generator().manual_seed(5)
    z = torch.randn(300, 16, 8, generator=g) * 2
    w = torch.randn(16, 48, generator=g) * 0.1
    modes = torch.arange(1, 25, dtype=torch.float32)
    truth = solve_reference(z.double(), w.double(), modes.double())
    err_ref = (solve_reference(z, w, modes).double() - truth).abs().max()
    for fn in (lambda: solve_folded_blocked(z, w, block=7), lambda: solve_folded_graph(z, w)):
        err = (fn().double() - truth).abs().max()
        assert err <= max(2 * err_ref, 1e-5)


def test_folded_dispatch_keeps_autograd():
    z = torch.randn(4, 16, 8, requires_grad=True)
    w = torch.randn(16, 12) * 0.1
    out = solve_folded(z, w)
    assert out.grad_fn is not None
    out.sum().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()
    with torch.no_grad():
        assert torch.allclose(solve_folded(z, w), out, atol=1e-5)


def test_graph_form_in_attention_layout_equals_channel_layout():
    """``channel_view=(heads, 1, head_dim)`` on ``[N, h, T, d]`` codes = the ``[N, C, T]`` form, transposed."""
    torch.manual_seed(3)
    heads, tokens, dim, q = 2, 3, 5, 6
    z = torch.randn(7, heads, tokens, dim, dtype=torch.float64) * 3
    weights = torch.randn(heads * dim, 2 * q, dtype=torch.float64) / q
    modes = torch.arange(1, q + 1, dtype=torch.float64)
    channel_major = z.transpose(-1, -2).reshape(7, heads * dim, tokens)
    expected = solve_reference(channel_major, weights, modes).reshape(7, heads, dim, tokens).transpose(-1, -2)
    got = solve_folded_graph(z, weights, channel_view=(heads, 1, dim))
    assert got.shape == z.shape
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=0)
