"""Params, GMACs, CPU milliseconds per 256x256 tile and achieved GFLOP/s for every architecture/strategy.

Run: .venv/bin/python bench/bench_models.py [--threads 2] [--repeats 5] [--markdown docs/MODEL_BENCH.md]
All rows are measured in the same process, one after another (compare them as ratios: the machine is shared).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from mmcanet.complexity import count_macs, count_params
from mmcanet.models import STRATEGIES, build_model

ROWS: list[tuple[str, str, dict[str, object]]] = [
    *(("mmcanet", s, {}) for s in STRATEGIES),
    ("mmcanet_optical", "single", {}),
    ("dsen2cr", "single", {"width": 64, "depth": 8}),
    ("dsen2cr", "single", {}),
]


def time_forward(model: torch.nn.Module, tile: int, repeats: int) -> float:
    """Median seconds of one forward pass on a (1, 13, tile, tile) tile after one warm-up."""
    s2, s1 = torch.rand(1, 13, tile, tile), torch.rand(1, 2, tile, tile)
    times = []
    with torch.inference_mode():
        model(s2, s1)
        for _ in range(repeats):
            t = time.perf_counter()
            model(s2, s1)
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--markdown", default=None, help="also write the table to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lines = [
        f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads, "
        f"batch 1, {args.tile}x{args.tile} tile, median of {args.repeats}.",
        "",
        "| architecture | strategy | config | params | GMACs/tile | ms/tile | GFLOP/s |",
        "|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    for arch, strategy, cfg in ROWS:
        torch.manual_seed(0)
        model = build_model(arch, strategy, **cfg).eval()  # type: ignore[arg-type]
        macs = count_macs(model, args.tile, args.tile)
        reps = 1 if macs > 200e9 else args.repeats
        sec = time_forward(model, args.tile, reps)
        row = (f"| {arch} | {strategy} | {cfg or 'default'} | {count_params(model) / 1e6:.2f}M | {macs / 1e9:.1f} | "
               f"{sec * 1000:.0f} | {2 * macs / sec / 1e9:.0f} |")
        lines.append(row)
        print(row, flush=True)
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
