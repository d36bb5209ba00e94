"""Parameters and multiply-accumulates of LSO: the paper's convention and the full count.

Paper convention (thop, as the authors' script): batch 32 of 64x64 HR-MSI at x4; convolution MACs
without biases, plus thop's 11 operations per output element of the four bilinear ``nn.Upsample``
modules (down1, down2, up1, up2) and its count for the six ``nn.Softmax`` modules
(rows x (3 * features - 1)); LeakyReLU, bicubic ``F.interpolate``, the einsum attention and the
solver are not counted. Expected: 1,942,703 parameters and 222.85 G "FLOPs" (really MACs, summed
over the batch of 32).

Full count (what the hardware does), per image, for both solver forms: convolutions (+ bias adds),
attention contractions, resizes (bicubic 16 and bilinear 4 MACs per output element, 2x2 average 4),
softmax (one exp-equivalent per element counted as 1 MAC), and the solver (reference: 2Q MACs of the
basis contraction + 2Q sin/cos + Q multiplies for the angles; folded: 2 recurrences x Q steps x 2 MACs
+ 1 sin + 1 cos), each transcendental counted as 1 MAC-equivalent. Reported per megapixel and at 512x512.

Cross-check: the convolution MACs of our counter equal thop's count of the same model (thop counts
only ``nn.Conv2d`` here, because our model has no ``nn.Upsample``/``nn.Softmax`` modules).

    python benchmarks/flops.py [--no-thop]
"""
from __future__ import annotations

import argparse
from collections import defaultdict
from typing import Any

import torch
from torch import nn

from lso import LSO, LSOConfig
from lso.model import SpectralBlock

THOP_UPSAMPLE_OPS = 11  # thop's count per output element of a bilinear nn.Upsample


def count_macs(model: LSO, hr: tuple[int, int], ratio: int = 4, batch: int = 1) -> dict[str, Any]:
    """Run one forward pass with hooks and return MAC counts by category (per batch)."""
    cfg = model.config
    H, W = hr
    counts: dict[str, float] = defaultdict(float)
    handles = []

    def conv_hook(m: nn.Conv2d, inputs, out):
        per_out = (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        counts["conv"] += out.numel() * per_out
        if m.bias is not None:
            counts["conv_bias"] += out.numel()

    def block_hook(m: SpectralBlock, inputs, out):
        x = inputs[0]
        b, _, h, w = x.shape
        p = m.patch
        n = b * (-(-h // p)) * (-(-w // p))
        p2, t, d, heads = p * p, m.num_token, m.head_dim, m.heads
        att = n * heads * t * p2 * d  # one contraction
        counts["attention"] += 4 * att
        elements = n * heads * t * p2
        counts["softmax_elements"] += 2 * elements
        counts["softmax_thop"] += (3 * elements - elements // p2) + (3 * elements - elements // t)
        latent = n * m.width * t
        q = m.weights.shape[1] // 2
        counts["solver_reference"] += latent * (2 * q + 2 * q + q + 3)
        counts["solver_folded"] += latent * (2 * q * 2 + 2 + 5)

    for mod in model.modules():
        if isinstance(mod, nn.Conv2d):
            handles.append(mod.register_forward_hook(conv_hook))
        elif isinstance(mod, SpectralBlock):
            handles.append(mod.register_forward_hook(block_hook))
    hr_msi = torch.zeros(batch, cfg.n_msi_bands, H, W)
    lr_hsi = torch.zeros(batch, cfg.n_bands, H // ratio, W // ratio)
    try:
        with torch.no_grad():
            model(hr_msi, lr_hsi)
    finally:
        for h in handles:
            h.remove()
    # resizes (functional in the model), on the padded size
    Hp, Wp = -(-H // 4) * 4, -(-W // 4) * 4
    w_ = cfg.width
    bilinear_out = batch * w_ * (Hp // 2 * Wp // 2 + Hp // 4 * Wp // 4 + Hp // 2 * Wp // 2 + Hp * Wp)
    counts["bilinear_out_elements"] = bilinear_out
    up_out = batch * w_ * (Hp // 2 * Wp // 2 + Hp * Wp)
    down_out = batch * w_ * (Hp // 2 * Wp // 2 + Hp // 4 * Wp // 4)
    counts["resize"] = 16 * batch * cfg.n_bands * H * W + 16 * batch * cfg.n_msi_bands * Hp // 2 * Wp // 2 \
        + 4 * up_out + 4 * down_out
    counts["paper_thop"] = counts["conv"] + THOP_UPSAMPLE_OPS * bilinear_out + counts["softmax_thop"]
    common = counts["conv"] + counts["conv_bias"] + counts["attention"] + counts["resize"] + counts["softmax_elements"]
    counts["full_reference"] = common + counts["solver_reference"]
    counts["full_folded"] = common + counts["solver_folded"]
    return dict(counts)


def thop_conv_macs(model: LSO, hr: tuple[int, int], ratio: int = 4, batch: int = 1) -> float:
    """thop's count of the same forward pass (only nn.Conv2d contributes; see module doc)."""
    from lso.deps import require

    thop = require("thop")
    cfg = model.config
    hr_msi = torch.zeros(batch, cfg.n_msi_bands, *hr)
    lr_hsi = torch.zeros(batch, cfg.n_bands, hr[0] // ratio, hr[1] // ratio)
    macs, _ = thop.profile(model, inputs=(hr_msi, lr_hsi), verbose=False)
    for mod in model.modules():  # thop leaves buffers behind
        for name in ("total_ops", "total_params"):
            if name in getattr(mod, "_buffers", {}):
                del mod._buffers[name]
    return float(macs)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-thop", action="store_true", help="skip the thop cross-check")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)

    model = LSO(LSOConfig()).eval()
    params = sum(p.numel() for p in model.parameters())
    sample = count_macs(model, (64, 64), 4, batch=1)
    paper_batch = count_macs(model, (64, 64), 4, batch=32)["paper_thop"]
    big = count_macs(model, (512, 512), 4)
    mp = (512 * 512) / 1e6
    rows = {
        "params": params,
        "paper_convention_G_batch32_64x64": paper_batch / 1e9,
        "per_sample_64x64": {k: v / 1e9 for k, v in sample.items()},
        "per_image_512x512_G": {k: v / 1e9 for k, v in big.items()},
        "per_megapixel_G": {k: big[k] / mp / 1e9 for k in ("conv", "full_reference", "full_folded", "attention",
                                                           "resize", "solver_reference", "solver_folded")},
    }
    if not args.no_thop:
        t = thop_conv_macs(LSO(LSOConfig()).eval(), (64, 64))
        rows["thop_conv_macs_64x64_G"] = t / 1e9
        rows["thop_matches_ours"] = abs(t - sample["conv"]) < 1
    ok = params == 1_942_703 and round(paper_batch / 1e9, 2) == 222.85
    rows["reproduces_paper"] = ok

    from lso.benchmarks._report import markdown_table, write_results

    s, b = rows["per_sample_64x64"], rows["per_image_512x512_G"]
    md = "# Parameters and MACs\n\n"
    md += markdown_table(["quantity", "value", "paper"], [
        ["parameters", f"{params:,}", "1.94 M (1,942,703)"],
        ["paper convention, batch 32 of 64x64 at x4 (G)", f"{paper_batch / 1e9:.3f}", "222.85"],
        ["  conv MACs w/o bias per 64x64 sample (G)", f"{s['conv']:.4f}", "6.9576"],
        ["  thop bilinear Upsample ops per sample (M)",
         f"{THOP_UPSAMPLE_OPS * s['bilinear_out_elements'] * 1e3:.3f}", "4.51"],
        ["  thop Softmax ops per sample (M)", f"{s['softmax_thop'] * 1e3:.3f}", "2.00"],
        ["thop conv count, same model (G, cross-check)",
         f"{rows.get('thop_conv_macs_64x64_G', float('nan')):.4f}", "= ours"],
    ])
    md += "\n\nFull count per 512x512 image at x4 (GMAC; transcendental = 1):\n\n"
    md += markdown_table(["part", "512x512 (G)", "per megapixel (G)"], [
        [k, b[k], b[k] / mp] for k in ("conv", "conv_bias", "attention", "resize", "softmax_elements",
                                       "solver_reference", "solver_folded", "full_reference", "full_folded")])
    print(md)
    if not args.no_write:
        write_results("flops", rows, md)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
