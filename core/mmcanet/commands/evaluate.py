"""`mmcanet evaluate --model M --data DIR --out DIR`: metrics (model vs identity), report.md, quick-looks."""

from __future__ import annotations

import argparse
import math
from typing import Any


def register(sub: Any) -> None:
    """Add the `evaluate` subcommand."""
    p = sub.add_parser(
        "evaluate",
        help="score a model on real image pairs (PSNR, SSIM, MAE, SAM) against the identity baseline",
        description=(
            "Evaluate a model file on a triplet folder ({id}_s1.tif, {id}_s2_cloudy.tif, {id}_s2_cloudfree.tif, "
            "optional {id}_cloudmask.tif), a cloudy/cloud-free pair folder (no SAR), or a SEN12MS-CR root "
            "(standard test split). Writes metrics.csv, report.md and quick-look PNGs into --out."
        ),
    )
    p.add_argument("--model", default=None, help="model file (.safetensors); default: the bundled model")
    p.add_argument("--data", required=True, help="evaluation data folder")
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--device", default="cpu", help="torch device: cpu (default), cuda, cuda:1, ...")
    p.add_argument("--limit", type=int, default=None, help="score only the first N images")
    p.add_argument("--no-mask", action="store_true", help="do not pass the cloud mask to the model")
    p.add_argument("--quicklooks", type=int, default=8, help="number of quick-look PNGs (default 8)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate and print the mean table."""
    from ..evaluation import evaluate
    from ..metrics import METRIC_NAMES

    res = evaluate(
        args.model, args.data, args.out, device=args.device, limit=args.limit,
        use_mask=not args.no_mask, quicklooks=args.quicklooks,
    )
    print(f"{res.n_images} images ({res.data_kind}); mean over images:")
    print(f"{'metric':8s} {'model':>10s} {'identity':>10s}")
    for m in METRIC_NAMES:
        a, b = res.mean[f"model_{m}"], res.mean[f"identity_{m}"]
        fa = f"{a:10.4f}" if math.isfinite(a) else f"{a!s:>10s}"
        fb = f"{b:10.4f}" if math.isfinite(b) else f"{b!s:>10s}"
        print(f"{m:8s} {fa} {fb}")
    if res.reliability:
        from ..trust import reliability_holds

        print(f"trust layer: median within-image Spearman {res.mean['error_spearman_median']:.3f}; reliability "
              f"within +-30 % in every bin: {'yes' if reliability_holds(res.reliability) else 'no'}")
    print(f"report: {res.report_md}")
    return 0
