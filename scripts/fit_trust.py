"""Fit a model file's trust layer (the predicted absolute error) and write it into the card; see docs/TRUST.md.

    .venv/bin/python scripts/fit_trust.py MODEL.safetensors CONFIG.toml [--output OUT] [--device cpu]

Runs the model on the real training images of the config (its ``[[data]]`` sources that are not
simulated) and on its ``[[val]]`` images, fits the log-linear error predictor on the training images,
calibrates it on the validation images (never trained on), and writes the model file again (``--output``,
default in place) with the predictor's numbers, the calibration, the kept-pixel error and the measured
figures in the card's ``trust`` table. The weights are unchanged. Prints the within-image Spearman
correlations (validation, and cross-validated on the training images) and the reliability tables.

A script, not an ``mmcanet`` subcommand: it is a once-per-model-file release step next to training.
About 1 minute of CPU per 40 images of 256 px (the restorer's forward dominates).
"""

from __future__ import annotations

import argparse
import sys


def _table(title: str, table: list) -> None:  # type: ignore[type-arg]
    print(title)
    print(f"{'predicted range':>20s} {'pixels':>8s} {'mean predicted':>15s} {'mean actual':>12s} {'actual/pred':>12s}")
    for b in table:
        print(f"{b.low:9.4f}-{b.high:<10.4f} {b.n:8d} {b.mean_predicted:15.4f} {b.mean_actual:12.4f} {b.ratio:12.2f}")


def main(argv: list[str] | None = None) -> int:
    """Fit, print the figures, write the model file; exit 1 with a message on bad input."""
    from mmcanet.errors import MMCANetError
    from mmcanet.trust import RELIABILITY_TOLERANCE, reliability_holds
    from mmcanet.trust_fit import fit_trust

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="model file (.safetensors)")
    ap.add_argument("config", help="training config: real [[data]] images are fitted on, [[val]] images calibrated on")
    ap.add_argument("--output", default=None, help="write the model file with the trust layer here (default: in place)")
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N")
    ap.add_argument("--bins", type=int, default=8, help="equal-count bins of predicted error (default 8)")
    ap.add_argument("--quiet", action="store_true", help="no line per image")
    args = ap.parse_args(argv)
    try:
        fit, path = fit_trust(args.model, args.config, args.output, args.device, bins=args.bins,
                              progress=None if args.quiet else lambda m: print(f"  {m}", flush=True))
    except MMCANetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"fitted on {len(fit.train_images)} training images, calibrated on {len(fit.val_images)} validation images")
    print(f"calibration: gamma {fit.gamma:.3f}, error_scale {fit.error_scale:.4f}; "
          f"kept_error {fit.kept_error:.4f} (reflectance, mean |clear-sky difference|)")
    print("coefficients (standardised features): " + ", ".join(
        f"{n} {c:+.3f}" for n, c in zip(fit.predictor["features"], fit.predictor["coef"], strict=True)))
    _table("reliability on the validation images (calibrated on all of them):", fit.table)
    print(f"reliability within +-{RELIABILITY_TOLERANCE:.0%} in every bin: {'yes' if reliability_holds(fit.table) else 'NO'}")
    if fit.lovo_table:
        _table("reliability, each validation image calibrated on the others only:", fit.lovo_table)
        print(f"within +-{RELIABILITY_TOLERANCE:.0%} in every bin: {'yes' if reliability_holds(fit.lovo_table) else 'NO'}")
    for k, v in fit.spearman.items():
        print(f"spearman {k}: {v:.3f}")
    print(f"median within-image spearman (validation): {fit.median_spearman:.3f}")
    print(f"median within-image spearman (training images, cross-validated): {fit.median_cv_spearman:.3f} "
          f"over {len(fit.cv_spearman)} images")
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
