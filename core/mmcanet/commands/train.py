"""`mmcanet train --config FILE [--resume]`: train a model of the family (see docs/TRAINING.md)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    """Add the `train` subcommand."""
    p = sub.add_parser("train", help="train a model from a TOML/YAML config (works under torchrun)")
    p.add_argument("--config", required=True, help="TOML or YAML file; every key is optional (docs/TRAINING.md)")
    p.add_argument("--resume", action="store_true", help="continue from run_dir/checkpoint.pt")
    p.add_argument("--overwrite", action="store_true",
                   help="start over in a run_dir that holds another run (its checkpoint and metrics are replaced)")
    p.add_argument("--max-steps", type=int, default=None, help="override max_steps")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None, help="override device")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the config (all errors before training starts), then train."""
    from ..config import load_config
    from ..training import train

    overrides: dict[str, Any] = {}
    if args.resume:
        overrides["resume"] = True
    if args.overwrite:
        overrides["overwrite"] = True
    if args.max_steps is not None:
        overrides["max_steps"] = args.max_steps
    if args.device:
        overrides["device"] = args.device
    cfg = load_config(args.config, overrides)
    result = train(cfg)
    print(f"model: {result.model_path}")
    if result.val_metrics:
        m = result.val_metrics
        print(f"validation: PSNR {m['psnr']:.2f} dB (identity {m['identity_psnr']:.2f}), SSIM {m['ssim']:.3f}, "
              f"MAE {m['mae']:.4f}, SAM {m['sam']:.2f} deg over {int(m['n_images'])} images")
    return 0
