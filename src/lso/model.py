"""The Latent Spectral Operator network (paper-exact, loads the official checkpoints unchanged).

Inputs are ``hr_msi: [B, 3, H, W]`` and ``lr_hsi: [B, 31, h, w]`` with ``H = r*h``, ``W = r*w`` for
any integer ratio ``r >= 2`` read from the shapes. The output is ``hr_hsi: [B, 31, H, W]``.
Module names follow the official implementation so that its ``state_dict`` loads as it is.

Everything in ``forward`` is shape-generic (no Python ints taken from tensor sizes), so the model
exports to ONNX with dynamic batch, height and width.
"""
from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lso.config import LSOConfig, SolverForm
from lso.solver import in_graph as _in_graph  # module-level name: tests switch it
from lso.solver import solve, solve_folded_graph

__all__ = ["LSO", "SpectralBlock", "DoubleConv", "coordinate_grid", "set_solver_form"]

_SPATIAL_MULTIPLE = 4  # two 2x down-samplings in the U-Net


# ---------------------------------------------------------------------------------------------
# building blocks
# ---------------------------------------------------------------------------------------------
class DoubleConv(nn.Sequential):
    """3x3 conv, LeakyReLU(0.2), 3x3 conv, LeakyReLU(0.2) (biases, no normalisation)."""

    def __init__(self, in_ch: int, out_ch: int, mid_ch: int | None = None) -> None:
        super().__init__()
        mid_ch = mid_ch or out_ch
        self.double_conv = nn.Sequential(
            nn.Conv2d(in_ch, mid_ch, 3, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(mid_ch, out_ch, 3, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.double_conv(x)


class HalfResize(nn.Module):
    """Bilinear x0.5 resize (align_corners=False, no antialias).

    For even sizes (always the case here: the U-Net input is padded to a multiple of 4) this is
    exactly a 2x2 average pool, which is what is computed: same values, a cheaper kernel and a
    plain ``AveragePool`` node in ONNX.
    """

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(x, 2)


class Down(nn.Module):
    """Bilinear x0.5 then DoubleConv (``down.0`` has no parameters, ``down.1`` is the DoubleConv)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.down = nn.Sequential(HalfResize(), DoubleConv(in_ch, out_ch))

    def forward(self, x: Tensor) -> Tensor:
        return self.down(x)


class Up(nn.Module):
    """Bilinear x2 of the deeper level, concat with the skip and the guide, DoubleConv."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = DoubleConv(in_ch, out_ch, in_ch // 2)

    def forward(self, deep: Tensor, skip: Tensor, guide: Tensor) -> Tensor:
        deep = F.interpolate(deep, scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.conv(torch.cat([deep, skip, guide], dim=1))


class OutConv(nn.Module):
    """3x3 conv, LeakyReLU(0.2), 1x1 conv to the HSI bands."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_ch, in_ch, 3, padding=1), nn.LeakyReLU(0.2, inplace=True), nn.Conv2d(in_ch, out_ch, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class ResBlock(nn.Module):
    """EDSR residual block: 3x3 conv, ReLU, 3x3 conv, residual scale 1."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(ch, ch, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(ch, ch, 3, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x) + x


class SpatialEncoder(nn.Module):
    """EDSR baseline without up-sampling: head conv, residual blocks, conv, global skip.

    ``sub_mean``/``add_mean`` are the EDSR mean-shift 1x1 convolutions; the official model carries
    them (24 parameters) but never calls them. They are kept so checkpoints load unchanged.
    """

    _RGB_MEAN = (0.4488, 0.4371, 0.4040)

    def __init__(self, in_ch: int, dim: int, n_resblocks: int) -> None:
        super().__init__()
        self.sub_mean = self._mean_shift(-1.0)
        self.add_mean = self._mean_shift(1.0)
        self.head = nn.Sequential(nn.Conv2d(in_ch, dim, 3, padding=1))
        self.body = nn.Sequential(*[ResBlock(dim) for _ in range(n_resblocks)], nn.Conv2d(dim, dim, 3, padding=1))

    @classmethod
    def _mean_shift(cls, sign: float) -> nn.Conv2d:
        conv = nn.Conv2d(3, 3, 1)
        assert conv.bias is not None  # Conv2d has a bias unless bias=False
        with torch.no_grad():
            conv.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            conv.bias.copy_(sign * torch.tensor(cls._RGB_MEAN))
        conv.requires_grad_(False)
        return conv

    def forward(self, x: Tensor) -> Tensor:
        x = self.head(x)
        return self.body(x) + x


def _round_up(size, multiple: int):
    """``size`` rounded up to a multiple of ``multiple``, written as ``ceil(size / multiple) * multiple``.

    This form (not ``size + (-size) % multiple``) lets ``torch.export`` see that the result divides
    by ``multiple``, so reshaping it into patches and halving it twice need no guard on the size.
    """
    return (size + multiple - 1) // multiple * multiple


def _pad_to_multiple(x: Tensor, multiple: int, mode: str) -> Tensor:
    """Pad bottom/right to a multiple of ``multiple`` (always emits the pad, possibly of 0)."""
    pad_h = _round_up(x.shape[-2], multiple) - x.shape[-2]
    pad_w = _round_up(x.shape[-1], multiple) - x.shape[-1]
    if mode == "constant":
        return F.pad(x, (0, pad_w, 0, pad_h))
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


def _crop(x: Tensor, height, width) -> Tensor:
    """Crop bottom/right to ``height`` x ``width`` (undoes :func:`_pad_to_multiple`).

    Written as a pad by the negative amounts ``height - H``, ``width - W`` rather than a slice
    ``[..., :height, :width]``: both compute the same, but the pad's output size is exactly
    ``(height, width)`` for ``torch.export``, whereas a slice's is ``min(height, H)``, which it cannot
    simplify and then guards (specialising the exported graph to multiples of 4).
    """
    return F.pad(x, (0, width - x.shape[-1], 0, height - x.shape[-2]))


_CUBIC_A = -0.75  # PyTorch's (and ONNX Resize's default here) cubic convolution coefficient


def _index_vector(ref: Tensor, dim: int, dtype: torch.dtype | None = None) -> Tensor:
    """``[0, 1, ..., n-1]`` as float (``dtype``, default ``ref``'s), ``n = ref.shape[dim]``, built by a cumulative
    sum (no size guard in export)."""
    line = ref[0, 0, :, 0] if dim == 2 else ref[0, 0, 0, :]
    return torch.cumsum(torch.ones_like(line, dtype=dtype), dim=0) - 1.0


def _cubic_matrix(out_index: Tensor, in_padded_index: Tensor, scale: Tensor) -> Tensor:
    """Interpolation matrix ``[n_out, n_in + 4]`` of bicubic resampling (``align_corners=False``, no antialias).

    Row ``i`` holds the cubic-convolution weights (a = -0.75) of output pixel ``i`` whose source
    position is ``(i + 0.5) * scale - 0.5``, over the input's columns ``-2 .. n_in + 1``; the input is
    padded by 2 with edge replication, which is exactly PyTorch's index clamping at the borders.
    """
    src = (out_index + 0.5) * scale - 0.5
    d = (src.unsqueeze(1) - in_padded_index.unsqueeze(0)).abs()
    a = _CUBIC_A
    near = ((a + 2.0) * d - (a + 3.0)) * d * d + 1.0
    far = ((a * d - 5.0 * a) * d + 8.0 * a) * d - 4.0 * a
    return torch.where(d <= 1.0, near, torch.where(d < 2.0, far, torch.zeros_like(d)))


def resize_bicubic(x: Tensor, like: Tensor) -> Tensor:
    """Bicubic resize of ``x`` to ``like``'s height and width (``align_corners=False``, no antialias).

    Eager execution calls ``F.interpolate`` (the official computation). In an exported graph the
    same weights are applied as two matrix products, ``A_h @ pad(x) @ A_w^T``, with the matrices
    built from the shapes: ONNX Runtime's CPU cubic Resize spends ~0.45 s on the 31-band x4
    up-sampling at 512², the two MatMuls a few milliseconds. Results agree to float rounding.
    """
    if not _in_graph():
        return F.interpolate(x, size=(like.shape[-2], like.shape[-1]), mode="bicubic", align_corners=False)
    xp = F.pad(x, (2, 2, 2, 2), mode="replicate")
    rows_out, cols_out = _index_vector(like, 2, x.dtype), _index_vector(like, 3, x.dtype)
    rows_in, cols_in = _index_vector(xp, 2) - 2.0, _index_vector(xp, 3) - 2.0
    in_h = (rows_in[-1:] - 1.0)  # n_in: the last padded index is n_in + 1
    in_w = (cols_in[-1:] - 1.0)
    a_h = _cubic_matrix(rows_out, rows_in, in_h / (rows_out[-1:] + 1.0))
    a_w = _cubic_matrix(cols_out, cols_in, in_w / (cols_out[-1:] + 1.0))
    return torch.matmul(torch.matmul(a_h, xp), a_w.transpose(0, 1))


def _copy(x: Tensor) -> Tensor:
    """A contiguous copy of ``x``, always.

    ``reshape`` of a permuted tensor (and ``contiguous()``) choose between a view and a copy from the
    sizes (e.g. "one patch per row or more"), a choice ``torch.export`` turns into a guard on the image
    size. Copying unconditionally removes the choice; where the sizes would allow a view this costs one
    small copy in eager mode, and the ONNX graph has no strides, so it is unchanged.
    """
    return x.clone(memory_format=torch.contiguous_format)


class SpectralBlock(nn.Module):
    """CoordToLatent -> trigonometric solver -> LatentToCoord, per ``patch_size`` x ``patch_size`` patch.

    Parameters (official names): ``latent [heads, tokens, head_dim]`` (queries shared by all
    patches), ``weights [width, 2Q]`` (alpha | beta), buffer ``modes_list [Q]`` = 1..Q,
    ``encoder_attn`` 1x1 conv width -> 2*width (keys even channels, values odd channels),
    ``decoder_attn`` 1x1 conv width -> width (per-pixel queries).
    """

    modes_list: Tensor  # a buffer (register_buffer in __init__)

    def __init__(self, cfg: LSOConfig) -> None:
        super().__init__()
        self.width = cfg.width
        self.heads = cfg.heads
        self.head_dim = cfg.head_dim
        self.num_token = cfg.num_token
        self.patch = cfg.patch_size
        self.solver_form = cfg.solver
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.weights = nn.Parameter(torch.randn(cfg.width, 2 * cfg.num_basis) / (2 * cfg.num_basis))
        self.latent = nn.Parameter(torch.randn(cfg.heads, cfg.num_token, cfg.head_dim) * 0.02)
        self.register_buffer("modes_list", torch.arange(1, cfg.num_basis + 1, dtype=torch.float32))
        self.encoder_attn = nn.Conv2d(cfg.width, 2 * cfg.width, 1)
        self.decoder_attn = nn.Conv2d(cfg.width, cfg.width, 1)

    def _features(self, xp: Tensor, graph: bool) -> Tensor:
        """Per-pixel features ``[B, F, Hp, Wp]`` of the block: ``first | values | queries``, queries scaled.

        Eager execution runs the official modules: ``encoder_attn`` (keys on even, values on odd
        channels) and ``decoder_attn``, then reorders and scales; ``first`` is the scaled keys
        (``C`` channels). In an exported or compiled graph (``graph``) the same products run as one
        1x1 convolution whose weights are folded to constants at export, and the learned queries
        are folded into it too: ``first`` is then the CoordToLatent logits ``latent . keys``
        directly (``heads * tokens`` channels, head-major), so the graph has no concatenation,
        strided split, logit scaling or broadcast contraction with ``latent``.
        """
        enc, dec = self.encoder_attn, self.decoder_attn
        if not graph:
            kv, q = enc(xp), dec(xp)
            return torch.cat([kv[:, 0::2] * self.scale, kv[:, 1::2], q * self.scale], dim=1)
        heads, dim = self.heads, self.head_dim
        enc_b, dec_b = enc.bias, dec.bias
        assert enc_b is not None and dec_b is not None  # both 1x1 convolutions have biases
        key_w = (enc.weight[0::2] * self.scale).reshape(heads, dim, -1)  # [h, d, C_in] (1x1 kernels)
        key_b = (enc_b[0::2] * self.scale).reshape(heads, dim)
        logit_w = torch.einsum("htd,hdi->hti", self.latent, key_w).reshape(heads * self.num_token, -1, 1, 1)
        logit_b = torch.einsum("htd,hd->ht", self.latent, key_b).reshape(-1)
        weight = torch.cat([logit_w, enc.weight[1::2], dec.weight * self.scale])
        bias = torch.cat([logit_b, enc_b[1::2], dec_b * self.scale])
        return F.conv2d(xp, weight, bias)

    def forward(self, x: Tensor) -> Tensor:
        """x: ``[B, C, H, W]`` -> ``[B, C, H, W]``."""
        height, width = x.shape[-2], x.shape[-1]
        xp = _pad_to_multiple(x, self.patch, "constant")
        p = self.patch
        n_ch, heads, dim, tokens = self.width, self.heads, self.head_dim, self.num_token
        hp, wp = xp.shape[-2], xp.shape[-1]
        nh, nw = hp // p, wp // p
        graph = _in_graph()
        n_first = heads * tokens if graph else n_ch  # CoordToLatent logits (graph) or scaled keys (eager)
        feats = self._features(xp, graph)  # [B, F, Hp, Wp]
        # The residual (xp) is added back after the patches are folded back into the image: the
        # same sums as adding it per patch, without moving its C channels through both transposes.
        n_feat = n_first + 2 * n_ch
        feats = _copy(feats.reshape(-1, n_feat, nh, p, nw, p).permute(0, 2, 4, 1, 3, 5))
        first, v, qd = feats.reshape(-1, n_feat, p * p).split([n_first, n_ch, n_ch], dim=1)
        v = v.reshape(-1, heads, dim, p * p)  # [N, h, d, P2], N = B * nh * nw
        qd = qd.reshape(-1, heads, dim, p * p)

        # CoordToLatent: learned queries attend over the patch's pixels
        if graph:
            attn = first.reshape(-1, heads, tokens, p * p)
        else:
            attn = torch.einsum("htd,nhdp->nhtp", self.latent, first.reshape(-1, heads, dim, p * p))
        attn = attn.softmax(dim=-1)
        if graph:  # batched MatMuls on transposed operands: ORT folds the transposes into FusedMatMul
            z = torch.matmul(attn, v.transpose(-1, -2)) + self.latent  # (half the time of its Einsum at 512²)
        else:
            z = torch.einsum("nhtp,nhdp->nhtd", attn, v) + self.latent  # [N, h, T, d]

        # Solver (per channel, shared by tokens and patches)
        attention_layout = graph and self.solver_form == "folded"
        if attention_layout:
            # in the [N, h, T, d] layout, with the coefficients viewed per (head, channel): no transpose
            z = solve_folded_graph(z, self.weights, channel_view=(heads, 1, dim))
        else:
            z = z.transpose(-1, -2).reshape(-1, n_ch, tokens)  # [N, C, T], channel = h*d + c
            z = solve(z, self.weights, self.modes_list, self.solver_form)
            z = z.reshape(-1, heads, dim, tokens)  # [N, h, d, T]

        # LatentToCoord: per-pixel queries attend over the solved tokens
        if attention_layout:  # z [N, h, T, d]
            attn = torch.matmul(qd.transpose(-1, -2), z.transpose(-1, -2)).softmax(dim=-1)  # [N, h, P2, T]
            out = torch.matmul(z.transpose(-1, -2), attn.transpose(-1, -2))  # [N, h, d, P2]
        else:  # z [N, h, d, T]
            attn = torch.einsum("nhdp,nhdt->nhpt", qd, z).softmax(dim=-1)
            out = torch.einsum("nhpt,nhdt->nhdp", attn, z)

        # back to the image, plus the residual
        out = _copy(out.reshape(-1, nh, nw, n_ch, p, p).permute(0, 3, 1, 4, 2, 5)).reshape(-1, n_ch, hp, wp)
        return _crop(out + xp, height, width)


def coordinate_grid(ref: Tensor, extent: Tensor | None = None, full_size: tuple | None = None,
                    dtype: torch.dtype | None = None) -> Tensor:
    """Two-channel coordinate grid ``[B, 2, H, W]`` shaped like ``ref`` (``[B, *, H, W]``).

    Channel 0 at row ``i`` is ``(row0 + i) / (H_full - 1)``, channel 1 at column ``j`` is
    ``(col0 + j) / (W_full - 1)``. ``extent`` is an int64 ``[4]`` tensor ``(row0, col0, H_full, W_full)``
    shared by the batch; without it the grid spans ``full_size`` (default: ``ref``'s own size), i.e.
    the official ``linspace(0, 1, H)`` grid. Indices come from a cumulative sum over the tensor so
    the grid follows the input's size in an exported graph. ``dtype``: the grid's dtype (default: ``ref``'s).
    """
    ones_h = torch.ones_like(ref[:1, :1, :, :1], dtype=dtype)  # [1, 1, H, 1]
    ones_w = torch.ones_like(ref[:1, :1, :1, :], dtype=dtype)  # [1, 1, 1, W]
    rows = torch.cumsum(ones_h, dim=2) - 1.0
    cols = torch.cumsum(ones_w, dim=3) - 1.0
    if extent is not None:
        ext = extent.to(ones_h.dtype)
        rows = (rows + ext[0]) / (ext[2] - 1.0)
        cols = (cols + ext[1]) / (ext[3] - 1.0)
    else:
        h_full, w_full = full_size if full_size is not None else (ref.shape[-2], ref.shape[-1])
        rows = rows / (h_full - 1)
        cols = cols / (w_full - 1)
    rows = rows.expand(ref.shape[0], 1, ref.shape[-2], ref.shape[-1])
    cols = cols.expand(ref.shape[0], 1, ref.shape[-2], ref.shape[-1])
    return torch.cat([rows, cols], dim=1)


def _fp32_region(active: bool, fn, x: Tensor, *args, **kwargs) -> Tensor:
    """``fn(x, ...)``; when ``active``, with autocast off and ``x`` in FP32 (an FP32 island under autocast)."""
    if not active:
        return fn(x, *args, **kwargs)
    with torch.autocast(device_type=x.device.type, enabled=False):
        return fn(x.float(), *args, **kwargs)


# ---------------------------------------------------------------------------------------------
# the network
# ---------------------------------------------------------------------------------------------
class LSO(nn.Module):
    """Latent Spectral Operator: fuses ``lr_hsi [B, 31, h, w]`` with ``hr_msi [B, 3, H, W]``.

    Args:
        config: architecture (paper defaults if omitted). The scale ratio is read from the inputs.
    """

    def __init__(self, config: LSOConfig | None = None) -> None:
        super().__init__()
        cfg = config or LSOConfig()
        self.config = cfg
        width = cfg.width
        self.spatial_encoder = SpatialEncoder(cfg.n_bands + cfg.n_msi_bands, cfg.guide_dim, cfg.n_resblocks)
        self.inc = DoubleConv(cfg.guide_dim + 2, width)
        self.down1 = Down(width, width)
        self.down2 = Down(width, width)
        self.process1 = SpectralBlock(cfg)
        self.process2 = SpectralBlock(cfg)
        self.process3 = SpectralBlock(cfg)
        self.up1 = Up(2 * width + cfg.n_msi_bands, width)
        self.up2 = Up(2 * width + cfg.n_msi_bands, width)
        self.outc = OutConv(width, cfg.n_bands)
        #: Names from :data:`lso.islands.ISLAND_NAMES` computed in FP32 with autocast off (``"bicubic"``,
        #: ``"coordinate_grid"``; the spectral blocks are wrapped as a whole by the runner). Empty by default:
        #: nothing changes outside autocast, and an export sees no autocast region.
        self.fp32_islands: frozenset[str] = frozenset()

    def forward(self, hr_msi: Tensor, lr_hsi: Tensor, extent: Tensor | None = None) -> Tensor:
        """Fuse.

        Args:
            hr_msi: ``[B, n_msi_bands, H, W]`` high-resolution multispectral image, values in [0, 1].
            lr_hsi: ``[B, n_bands, h, w]`` low-resolution hyperspectral image, ``H = r*h, W = r*w``.
            extent: optional int64 ``[4]`` = ``(row0, col0, H_full, W_full)``: where this input sits
                in a larger image (tiled fusion). Default: the input is the whole image.

        Returns:
            ``hr_hsi``: ``[B, n_bands, H, W]``.
        """
        height, width = hr_msi.shape[-2], hr_msi.shape[-1]
        bicubic, in_grid = "bicubic" in self.fp32_islands, "coordinate_grid" in self.fp32_islands
        lms = _fp32_region(bicubic, resize_bicubic, lr_hsi, hr_msi)
        msi = _pad_to_multiple(hr_msi, _SPATIAL_MULTIPLE, "replicate")
        lms_p = _pad_to_multiple(lms, _SPATIAL_MULTIPLE, "replicate")

        feat = self.spatial_encoder(torch.cat([msi, lms_p], dim=1))
        grid = _fp32_region(in_grid, coordinate_grid, feat, extent, full_size=(height, width),
                            dtype=torch.float32 if in_grid else None)
        x1 = self.inc(torch.cat([feat, grid], dim=1))
        x2 = self.down1(x1)
        x3 = self.down2(x2)

        # bicubic x0.5 (the padded size is even), sized from x2 so that export sees equal sizes
        msi_half = _fp32_region(bicubic, resize_bicubic, msi, x2)
        y = self.up1(self.process3(x3), self.process2(x2), msi_half) + x2
        y = self.up2(y, self.process1(x1), msi) + x1
        out = _crop(self.outc(y), height, width)
        return lms + out

    @property
    def solver_form(self) -> str:
        return self.config.solver


def set_solver_form(model: LSO, form: str) -> LSO:
    """Switch every spectral block to the ``"reference"`` or ``"folded"`` solver, in place.

    Both forms use the same parameters, so this is a pure deploy-time rewrite. Returns ``model``.
    """
    if form not in ("reference", "folded"):
        raise ValueError(f"unknown solver form {form!r}: expected 'reference' or 'folded'")
    solver = cast(SolverForm, form)  # checked just above
    for module in model.modules():
        if isinstance(module, SpectralBlock):
            module.solver_form = solver
    model.config = model.config.replace(solver=solver)
    return model
