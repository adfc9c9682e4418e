"""CPU cost of the trust layer: seconds per 256x256 tile with and without the error head or the fitted predictor.

Run: .venv/bin/python bench/bench_trust.py [--model resources/mmcanet_default.safetensors] [--threads 2]
         [--repeats 7] [--batch 4]
The restorer's weights come from the model file; the head is added untrained and the feature predictor
(models/error_features.py, every feature) with placeholder coefficients (neither cost depends on the numbers). Forwards alternate (plain, with error, plain, ...) so a shared machine's load hits both
alike; medians are reported, plus the channels-last layout the engine uses on the CPU.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from mmcanet.modelfile import load_model
from mmcanet.models import build_model
from mmcanet.models.error_features import FEATURE_NAMES, FeatureErrorModel
from torch.utils.flop_counter import FlopCounterMode


def main() -> None:
    """Print per-tile seconds of ``forward`` and ``forward_with_error`` and the head's GMACs."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default=None, help="model file (default: the bundled model)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--batch", type=int, default=4, help="tiles per forward (the engine's default batch size)")
    ap.add_argument("--tile", type=int, default=256)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    plain, card = load_model(args.model)
    judged = build_model(card.arch, card.strategy, bands=len(card.s2_bands), **{**card.config, "error_head": True}).eval()
    judged.load_state_dict(plain.state_dict(), strict=False)
    fitted = build_model(card.arch, card.strategy, bands=len(card.s2_bands), **{**card.config, "error_head": False}).eval()
    fitted.load_state_dict(plain.state_dict())
    n = len(FEATURE_NAMES)
    fitted.error_predictor = FeatureErrorModel(FEATURE_NAMES, [0.1] * n, -4.0, [0.0] * n, [1.0] * n)
    for m in (plain, judged, fitted):
        m.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    b, t = args.batch, args.tile
    s2 = torch.rand(b, 13, t, t).to(memory_format=torch.channels_last)
    s1 = torch.rand(b, 2, t, t).to(memory_format=torch.channels_last)
    mask = (torch.rand(b, 1, t, t) > 0.5).float()
    times: dict[str, list[float]] = {"restore": [], "restore + error": [], "restore + fitted": []}
    with torch.inference_mode():
        plain(s2, s1, mask)
        judged.forward_with_error(s2, s1, mask)
        fitted.forward_with_error(s2, s1, mask)
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            plain(s2, s1, mask)
            times["restore"].append((time.perf_counter() - t0) / b)
            t0 = time.perf_counter()
            judged.forward_with_error(s2, s1, mask)
            times["restore + error"].append((time.perf_counter() - t0) / b)
            t0 = time.perf_counter()
            fitted.forward_with_error(s2, s1, mask)
            times["restore + fitted"].append((time.perf_counter() - t0) / b)
    assert judged.error_head is not None
    head_gmac = sum(p.numel() for p in judged.error_head.parameters())  # parameters, then MACs below
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        judged.error_head(s2[:1].contiguous(), s2[:1].contiguous(), mask[:1], s1[:1].contiguous())
    print(f"error head: {head_gmac} parameters")
    head_gmac = counter.get_total_flops() / 2 / 1e9
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads, "
          f"batch {b}, {t}x{t} tiles, model {card.name} v{card.version}")
    print(f"error head: {head_gmac:.2f} GMAC per tile")
    for k, v in times.items():
        print(f"{k:16s} {statistics.median(v):.3f} s per tile (median of {len(v)}; min {min(v):.3f})")
    for k in ("restore + error", "restore + fitted"):
        print(f"{k}: x{statistics.median(times[k]) / statistics.median(times['restore']):.2f} of the plain restore")


if __name__ == "__main__":
    main()
