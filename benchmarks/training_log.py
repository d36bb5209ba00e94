"""Render an ``lso train`` log (``<run>/log.jsonl``) as Markdown learning curves.

    python benchmarks/training_log.py runs/issue21c/log.jsonl [--out benchmarks/results/training/NAME.md]

Two tables: the training loss (L1) per logged block, overall and per mode (ratio, ``/f4`` = the authors'
fixed-ratio form), with the learning rate, wall minutes and seconds per step of the block; and every validation
(``val_psnr`` = the mean over the modes that picks ``best.safetensors``, and each mode's PSNR in dB).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _modes(entries: list[dict], key: str) -> list[str]:
    order = {"x4": 0, "x8": 1, "x16": 2, "x32": 3}
    names = {m for e in entries for m in e.get(key, {})}
    return sorted(names, key=lambda m: ("/" in m, order.get(m.split("/")[0], 9), m))


def render(entries: list[dict]) -> str:
    train = [e for e in entries if "loss" in e]
    val = [e for e in entries if "val_psnr" in e]
    lines = []
    modes = _modes(train, "loss_modes")
    lines += ["| step | lr | loss | " + " | ".join(modes) + " | minutes | s/step |",
              "|---" * (len(modes) + 5) + "|"]
    prev = None
    for e in train:
        rate = ""
        if prev is not None and e["step"] > prev["step"]:
            rate = f"{60 * (e['minutes'] - prev['minutes']) / (e['step'] - prev['step']):.1f}"
        cells = [f"{e['loss_modes'][m]:.4f}" if m in e.get("loss_modes", {}) else "–" for m in modes]
        lines.append(f"| {e['step']} | {e['lr']:.2e} | {e['loss']:.4f} | " + " | ".join(cells)
                     + f" | {e['minutes']:.1f} | {rate} |")
        prev = e
    vmodes = _modes(val, "val_modes")
    lines += ["", "| step | val_psnr (mean) | " + " | ".join(vmodes) + " |", "|---" * (len(vmodes) + 2) + "|"]
    for e in val:
        lines.append(f"| {e['step']} | {e['val_psnr']:.3f} | "
                     + " | ".join(f"{e['val_modes'][m]:.2f}" if m in e.get("val_modes", {}) else "–"
                                  for m in vmodes) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("log", type=Path, help="an lso train log.jsonl")
    parser.add_argument("--out", type=Path, help="write the Markdown here (default: print it)")
    args = parser.parse_args(argv)
    entries = [json.loads(line) for line in args.log.read_text().splitlines() if line.strip()]
    md = render(entries)
    if args.out:
        args.out.write_text(md)
    else:
        sys.stdout.write(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
