"""Forward time of the bundled model on the CPU, contiguous (NCHW) vs channels-last (NHWC) tensors.

The engine runs the model channels-last on the CPU (``EngineTuning.channels_last_on_cpu`` in ``mmcanet.inference.tuning``); this measures
why, and checks the outputs agree. Variants alternate ``--rounds`` times; the best time per variant is
reported (shared machines are noisy: compare within one run).

  .venv/bin/python bench/bench_layout.py [--batch-size 4] [--tile 256] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from mmcanet.modelfile import default_model_path, load_model


def _seconds(model: torch.nn.Module, s2: torch.Tensor, s1: torch.Tensor, reps: int) -> float:
    with torch.inference_mode():
        model(s2, s1)  # warm-up (oneDNN primitives for this shape and layout)
        t0 = time.perf_counter()
        for _ in range(reps):
            model(s2, s1)
    return (time.perf_counter() - t0) / reps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--reps", type=int, default=4, help="forwards timed per round")
    args = p.parse_args()
    torch.manual_seed(0)
    model, card = load_model(default_model_path(), "cpu")
    s2 = torch.rand(args.batch_size, len(card.s2_bands), args.tile, args.tile)
    s1 = torch.rand(args.batch_size, 2, args.tile, args.tile)
    with torch.inference_mode():
        y_nchw = model(s2, s1)
    best = {"NCHW (contiguous)": float("inf"), "NHWC (channels_last)": float("inf")}
    for _ in range(args.rounds):
        model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
        best["NCHW (contiguous)"] = min(best["NCHW (contiguous)"], _seconds(model, s2, s1, args.reps))
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        cl = [x.contiguous(memory_format=torch.channels_last) for x in (s2, s1)]
        best["NHWC (channels_last)"] = min(best["NHWC (channels_last)"], _seconds(model, cl[0], cl[1], args.reps))
    with torch.inference_mode():
        y_nhwc = model(*[x.contiguous(memory_format=torch.channels_last) for x in (s2, s1)])
    diff = float((y_nchw - y_nhwc).abs().max())
    print(f"machine: {os.uname().nodename}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads; {card.name}; batch {args.batch_size} x "
          f"{args.tile}^2; best of {args.rounds}\n")
    print("| layout | s per batch | s per tile |\n|---|---|---|")
    for k, v in best.items():
        print(f"| {k} | {v:.3f} | {v / args.batch_size:.3f} |")
    print(f"\nmax |NCHW - NHWC| output difference: {diff:.2e} (reflectance 0-1)")


if __name__ == "__main__":
    main()
