"""The trigonometric solver of LSO's spectral blocks, in two equal forms.

With ``theta = pi * sigmoid(z)`` (in ``(0, pi)``) and ``phi = pi * theta`` the solver returns::

    out = theta + sum_{q=1..Q} alpha[c, q] * sin(q * phi) + beta[c, q] * cos(q * phi)

``weights`` is ``[C, 2Q]`` with alpha in columns ``0..Q-1`` and beta in ``Q..2Q-1``.

- :func:`solve_reference` is the released code's form: it materialises the ``[..., 2Q]`` basis
  (Q sines and Q cosines of ``q * pi * theta``) and contracts it with one einsum. Kept for parity.
- :func:`solve_folded` evaluates the same series with one ``sin``, one ``cos`` and a Clenshaw
  recurrence over the harmonics (``F_{q+1} = 2 cos(phi) F_q - F_{q-1}`` holds for both sin and cos),
  never materialising the basis. Its arguments stay in ``(0, pi^2)`` instead of reaching
  ``Q * pi^2`` (about 237 rad for Q = 24), which matters in reduced precision.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["solve_reference", "solve_folded", "solve"]


def solve_reference(z: Tensor, weights: Tensor, modes: Tensor) -> Tensor:
    """Reference (basis) form, as the official implementation computes it.

    Args:
        z: latent codes ``[N, C, T]``.
        weights: ``[C, 2Q]`` harmonic weights (alpha then beta).
        modes: ``[Q]`` harmonic orders (the ``modes_list`` buffer, 1..Q).

    Returns:
        ``[N, C, T]`` solved codes.
    """
    theta = math.pi * torch.sigmoid(z)
    arg = theta.unsqueeze(-1) * modes * math.pi  # [N, C, T, Q]
    basis = torch.cat([torch.sin(arg), torch.cos(arg)], dim=-1)  # [N, C, T, 2Q]
    return theta + torch.einsum("nctk,ck->nct", basis, weights)


def solve_folded(z: Tensor, weights: Tensor) -> Tensor:
    """Folded form: one sin, one cos and a Clenshaw recurrence; equal to :func:`solve_reference`.

    Clenshaw's backward recurrence ``b_q = a_q + 2 cos(phi) b_{q+1} - b_{q+2}`` (``b_{Q+1} =
    b_{Q+2} = 0``) gives ``sum_q a_q sin(q phi) = sin(phi) b_1`` and
    ``sum_q a_q cos(q phi) = cos(phi) b_1 - b_2``. The sine (alpha) and cosine (beta) series share
    the recurrence, so they run stacked on a leading axis of size 2.

    Args:
        z: latent codes ``[N, C, T]``.
        weights: ``[C, 2Q]`` harmonic weights (alpha then beta).

    Returns:
        ``[N, C, T]`` solved codes.
    """
    n_basis = weights.shape[-1] // 2
    theta = math.pi * torch.sigmoid(z)
    phi = math.pi * theta
    s = torch.sin(phi)
    c = torch.cos(phi)
    two_c = c + c
    # coefficients [Q, 2, 1, C, 1]: [:, 0] = alpha (sine series), [:, 1] = beta (cosine series)
    coef = weights.reshape(weights.shape[0], 2, n_basis).permute(2, 1, 0).unsqueeze(2).unsqueeze(-1)
    b1 = coef[n_basis - 1] + torch.zeros_like(z)  # b_Q (broadcast to [2, N, C, T])
    b2 = torch.zeros_like(b1)  # b_{Q+1}
    for q in range(n_basis - 2, -1, -1):
        b1, b2 = coef[q] + two_c * b1 - b2, b1
    return theta + s * b1[0] + c * b1[1] - b2[1]


def solve(z: Tensor, weights: Tensor, modes: Tensor, form: str = "folded") -> Tensor:
    """Dispatch to the reference or folded form (``form`` = ``"reference"`` or ``"folded"``)."""
    if form == "reference":
        return solve_reference(z, weights, modes)
    if form == "folded":
        return solve_folded(z, weights)
    raise ValueError(f"unknown solver form {form!r}: expected 'reference' or 'folded'")
