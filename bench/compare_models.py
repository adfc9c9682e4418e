"""Train every variant of the family on the same data with the same budget, then score the held-out set.

Run: .venv/bin/python bench/compare_models.py [--config configs/compare.toml] [--out runs/compare]
     [--markdown docs/COMPARISON.md] [--only mmcanet:single,dsen2cr:single]
Each variant resumes from its own run folder, so an interrupted comparison continues where it stopped.
Validation = the images the config lists under [[val]] (never trained on); metrics per the SEN12MS-CR
protocol (docs/MODEL.md), identity = the cloudy input returned unchanged.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch
from mmcanet.complexity import count_macs
from mmcanet.config import load_config
from mmcanet.models import build_model
from mmcanet.training import train

VARIANTS: list[tuple[str, str, dict[str, object]]] = [
    ("mmcanet", "single", {}),
    ("mmcanet", "multistage", {}),
    ("mmcanet", "iterative", {}),
    ("mmcanet", "thin_to_thick", {}),
    ("mmcanet", "outside_in", {}),
    ("mmcanet_optical", "single", {}),
    ("dsen2cr", "single", {"width": 64, "depth": 8}),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/compare.toml")
    ap.add_argument("--out", default="runs/compare")
    ap.add_argument("--markdown", default="docs/COMPARISON.md")
    ap.add_argument("--only", default="", help="comma-separated arch:strategy list, run in this order")
    args = ap.parse_args()
    only = [tuple(x.split(":")) for x in args.only.split(",") if x]
    variants = [v for o in only for v in VARIANTS if (v[0], v[1]) == o] if only else VARIANTS
    rows = []
    for arch, strategy, model_cfg in variants:
        name = f"{arch}-{strategy}"
        run_dir = Path(args.out) / name
        cfg = load_config(args.config, {
            "arch": arch, "strategy": strategy, "model": model_cfg, "name": name, "resume": True,
            "run_dir": str(run_dir.resolve()), "output": str((run_dir / "model.safetensors").resolve()),
        })
        res = train(cfg)
        m = res.val_metrics
        gmacs = count_macs(build_model(arch, strategy, **model_cfg), 256, 256) / 1e9  # type: ignore[arg-type]
        rows.append((arch, strategy, model_cfg, res.steps, gmacs, m))
        print(f"{name}: PSNR {m['psnr']:.2f} (identity {m['identity_psnr']:.2f}) SSIM {m['ssim']:.3f} "
              f"MAE {m['mae']:.4f} SAM {m['sam']:.2f}", flush=True)
    if not rows:
        return
    ident = rows[0][5]
    lines = [
        "# Side-by-side comparison (same data, same budget)",
        "",
        f"Command: `.venv/bin/python bench/compare_models.py --config {args.config}` "
        f"({platform.machine()}, torch {torch.__version__}, CPU).",
        "Budget per variant: the config's max_steps / batch_size / crop; validation on held-out real images "
        f"({int(ident['n_images'])} images: 3 SEN12MS-CR triplets with SAR + 3 cloudy/clear pairs without SAR).",
        "GMACs = compute of one 256x256 tile at inference (training cost scales with it).",
        "",
        "| model | strategy | steps | GMACs/tile | PSNR dB | SSIM | MAE | SAM deg |",
        "|---|---|---|---|---|---|---|---|",
        f"| identity (cloudy input) | - | - | - | {ident['identity_psnr']:.2f} | {ident['identity_ssim']:.3f} | "
        f"{ident['identity_mae']:.4f} | {ident['identity_sam']:.2f} |",
    ]
    for arch, strategy, model_cfg, steps, gmacs, m in rows:
        label = arch + (f" {model_cfg}" if model_cfg else "")
        lines.append(f"| {label} | {strategy} | {steps} | {gmacs:.1f} | {m['psnr']:.2f} | {m['ssim']:.3f} | "
                     f"{m['mae']:.4f} | {m['sam']:.2f} |")
    Path(args.markdown).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
