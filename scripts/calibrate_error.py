"""Calibrate a model file's trust layer (error head) on held-out validation images; see docs/TRUST.md.

    .venv/bin/python scripts/calibrate_error.py MODEL.safetensors CONFIG.toml [--output OUT] [--device cpu]

Runs the model on every ``[[val]]`` image of the training config (never trained on), fits the one
scale factor that makes the predicted absolute error reliable (mean actual within +-30 % of mean
predicted in every bin of predicted error, as far as one factor can), measures the clear-sky
difference of clear pixels (the error given to pixels kept from the input), writes both into the
model card (``trust``) and prints the reliability table and the within-image Spearman correlations.

A script, not an ``mmcanet`` subcommand: calibration is a once-per-model-file release step next to
training (like scripts/finalize_model.py), not something an analyst runs on a scene.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Calibrate and print the figures; exit 1 with a message on bad input."""
    from mmcanet.errors import MMCANetError
    from mmcanet.trust import RELIABILITY_TOLERANCE, calibrate_model, reliability_holds

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="model file with an error head (.safetensors)")
    ap.add_argument("config", help="training config whose [[val]] sources are the calibration images")
    ap.add_argument("--output", default=None, help="write the calibrated model here (default: in place)")
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N")
    ap.add_argument("--bins", type=int, default=8, help="equal-count bins of predicted error (default 8)")
    args = ap.parse_args(argv)
    try:
        cal, path = calibrate_model(args.model, args.config, args.output, args.device, args.bins)
    except MMCANetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"error_scale {cal.error_scale:.4f}   kept_error {cal.kept_error:.4f} (reflectance, mean |clear-sky difference|)")
    print(f"{'predicted range':>20s} {'pixels':>8s} {'mean predicted':>15s} {'mean actual':>12s} {'actual/pred':>12s}")
    for b in cal.table:
        print(f"{b.low:9.4f}-{b.high:<10.4f} {b.n:8d} {b.mean_predicted:15.4f} {b.mean_actual:12.4f} {b.ratio:12.2f}")
    ok = reliability_holds(cal.table)
    print(f"reliability within +-{RELIABILITY_TOLERANCE:.0%} in every bin: {'yes' if ok else 'NO'}")
    for k, v in cal.spearman.items():
        print(f"spearman {k}: {v:.3f}")
    print(f"median within-image spearman: {cal.median_spearman:.3f}")
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
