"""Speed of the cloud simulator on one 13 x 256 x 256 patch (training draws one per sample).

A timing, not a test: a wall-clock limit in the test suite fails under load on a shared 2-core machine.
Reports the best of ``--repeat`` runs per thickness.

  .venv/bin/python bench/bench_simulate.py --repeat 5
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from mmcanet.clouds import simulate_clouds

# typical clear vegetation TOA reflectance per L1C band (B1..B12 incl. B8A, B10)
VEG = np.array([0.12, 0.09, 0.075, 0.05, 0.09, 0.2, 0.25, 0.28, 0.29, 0.08, 0.002, 0.15, 0.07], np.float32)


def main() -> None:
    """Print the best wall time of ``simulate_clouds`` per thickness."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256, help="patch edge (px)")
    ap.add_argument("--repeat", type=int, default=5, help="runs per thickness (the best is reported)")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    clear = (VEG[:, None, None] * (0.8 + 0.4 * rng.random((1, args.size, args.size), dtype=np.float32))).astype(np.float32)
    for thickness in ("thin", "thick", "mixed"):
        best = float("inf")
        for seed in range(args.repeat):
            t0 = time.perf_counter()
            simulate_clouds(clear, seed, thickness=thickness)
            best = min(best, time.perf_counter() - t0)
        print(f"simulate_clouds 13x{args.size}x{args.size} {thickness:5s}: best {best * 1000:.1f} ms of {args.repeat}")


if __name__ == "__main__":
    main()
