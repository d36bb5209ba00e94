"""The trigonometric solver of LSO's spectral blocks, in two equal forms.

With ``theta = pi * sigmoid(z)`` (in ``(0, pi)``) and ``phi = pi * theta`` the solver returns::

    out = theta + sum_{q=1..Q} alpha[c, q] * sin(q * phi) + beta[c, q] * cos(q * phi)

``weights`` is ``[C, 2Q]`` with alpha in columns ``0..Q-1`` and beta in ``Q..2Q-1``.

- :func:`solve_reference` is the released code's form: it materialises the ``[..., 2Q]`` basis
  (Q sines and Q cosines of ``q * pi * theta``) and contracts it with one einsum. Kept for parity.
- :func:`solve_folded` evaluates the same series with one ``sin``, one ``cos`` and a Clenshaw
  recurrence over the harmonics (``F_{q+1} = 2 cos(phi) F_q - F_{q-1}`` holds for both sin and cos),
  never materialising the basis. Its arguments stay in ``(0, pi^2)`` instead of reaching
  ``Q * pi^2`` (about 237 rad for Q = 24), which matters in reduced precision. It has two
  executions of the same arithmetic: :func:`solve_folded_graph` (plain tensor ops: autograd, ONNX
  export, ``torch.compile``) and :func:`solve_folded_blocked` (eager inference: the recurrence runs
  in place on cache-sized blocks of patches, so the element-wise chain is not memory-bound).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["solve_reference", "solve_folded", "solve_folded_graph", "solve_folded_blocked", "solve", "in_graph"]


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


def solve_folded_graph(z: Tensor, weights: Tensor, channel_view: tuple | None = None) -> Tensor:
    """Folded form as plain tensor ops: one sin, one cos and a Clenshaw recurrence; equal to :func:`solve_reference`.

    Clenshaw's backward recurrence ``b_q = a_q + 2 cos(phi) b_{q+1} - b_{q+2}`` (``b_{Q+1} =
    b_{Q+2} = 0``) gives ``sum_q a_q sin(q phi) = sin(phi) b_1`` and
    ``sum_q a_q cos(q phi) = cos(phi) b_1 - b_2``. The sine (alpha) and cosine (beta) series share
    the recurrence, so they run stacked on a leading axis of size 2.

    Args:
        z: latent codes ``[N, C, T]``, or any layout whose channel axes ``channel_view`` describes.
        weights: ``[C, 2Q]`` harmonic weights (alpha then beta).
        channel_view: how a per-channel ``[C]`` vector broadcasts against ``z`` without its leading
            axis: ``(C, 1)`` (the default) for ``[N, C, T]``; ``(heads, 1, head_dim)`` for codes kept
            in attention layout ``[N, heads, T, head_dim]`` (channel ``h * head_dim + c``), which
            saves the exported graph a transpose there and back.

    Returns:
        solved codes, shaped like ``z``.
    """
    n_basis = weights.shape[-1] // 2
    view = tuple(channel_view) if channel_view is not None else (weights.shape[0], 1)
    theta = math.pi * torch.sigmoid(z)
    phi = math.pi * theta
    s = torch.sin(phi)
    c = torch.cos(phi)
    two_c = c + c
    # coefficients [Q, 2, 1, *view]: [:, 0] = alpha (sine series), [:, 1] = beta (cosine series)
    coef = weights.reshape(weights.shape[0], 2, n_basis).permute(2, 1, 0).reshape(n_basis, 2, 1, *view)
    b1 = coef[n_basis - 1] + torch.zeros_like(z)  # b_Q (broadcast to [2, N, C, T])
    b2 = torch.zeros_like(b1)  # b_{Q+1}
    for q in range(n_basis - 2, -1, -1):
        b1, b2 = coef[q] + two_c * b1 - b2, b1
    return theta + s * b1[0] + c * b1[1] - b2[1]


def solve_folded_blocked(z: Tensor, weights: Tensor, block: int = 256) -> Tensor:
    """Folded form for eager inference: same arithmetic as :func:`solve_folded_graph`, in place, per block.

    The patches axis is cut into blocks of ``block`` patches so that the recurrence's few buffers
    stay in cache; each step is two fused multiply/subtract/add passes into rotating buffers (no
    allocation). Not differentiable (in-place ops): used only when no gradient is needed.

    Args:
        z: latent codes ``[N, C, T]``.
        weights: ``[C, 2Q]`` harmonic weights (alpha then beta).
        block: patches per block (256 x 64 x 8 float32 = 512 KiB per buffer).
    """
    n_basis = weights.shape[-1] // 2
    n_ch = weights.shape[0]
    alpha = weights[:, :n_basis].t().reshape(n_basis, 1, n_ch, 1).to(z.dtype).contiguous()
    beta = weights[:, n_basis:].t().reshape(n_basis, 1, n_ch, 1).to(z.dtype).contiguous()
    out = torch.empty_like(z)
    for start in range(0, z.shape[0], block):
        zc = z[start:start + block]
        theta = torch.sigmoid(zc).mul_(math.pi)
        phi = theta * math.pi
        s, c = torch.sin(phi), torch.cos(phi)
        two_c = c * 2.0
        a1, a2, a0 = alpha[n_basis - 1].expand_as(zc).clone(), torch.zeros_like(zc), phi  # phi reused as buffer
        b1, b2, b0 = beta[n_basis - 1].expand_as(zc).clone(), torch.zeros_like(zc), torch.empty_like(zc)
        for q in range(n_basis - 2, -1, -1):
            torch.mul(two_c, a1, out=a0).sub_(a2).add_(alpha[q])
            torch.mul(two_c, b1, out=b0).sub_(b2).add_(beta[q])
            a0, a1, a2 = a2, a0, a1
            b0, b1, b2 = b2, b0, b1
        out[start:start + block] = theta.addcmul_(s, a1).addcmul_(c, b1).sub_(b2)
    return out


def in_graph() -> bool:
    """True while tracing, exporting or compiling (not plain eager execution)."""
    if torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export():
        return True
    is_exporting = getattr(torch.compiler, "is_exporting", None)
    return bool(is_exporting and is_exporting())


def _plain_eager(z: Tensor, weights: Tensor) -> bool:
    """True when running eagerly on real tensors without autograd (not tracing, compiling or exporting)."""
    if type(z) is not torch.Tensor or type(weights) is not torch.Tensor:  # Fake/Functional tensors: tracing
        return False
    if torch.is_grad_enabled() and (z.requires_grad or weights.requires_grad):
        return False
    return not in_graph()


def solve_folded(z: Tensor, weights: Tensor) -> Tensor:
    """Folded form: one sin, one cos and a Clenshaw recurrence; equal to :func:`solve_reference`.

    Runs :func:`solve_folded_blocked` in eager inference and :func:`solve_folded_graph` otherwise
    (training, ONNX export, ``torch.compile``, tracing).

    Args:
        z: latent codes ``[N, C, T]``.
        weights: ``[C, 2Q]`` harmonic weights (alpha then beta).

    Returns:
        ``[N, C, T]`` solved codes.
    """
    if _plain_eager(z, weights):
        return solve_folded_blocked(z, weights)
    return solve_folded_graph(z, weights)


def solve(z: Tensor, weights: Tensor, modes: Tensor, form: str = "folded") -> Tensor:
    """Dispatch to the reference or folded form (``form`` = ``"reference"`` or ``"folded"``)."""
    if form == "reference":
        return solve_reference(z, weights, modes)
    if form == "folded":
        return solve_folded(z, weights)
    raise ValueError(f"unknown solver form {form!r}: expected 'reference' or 'folded'")
