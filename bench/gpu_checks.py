"""CUDA checks that no CPU test can make: a real out-of-memory recovery, the rank's GPU, mixed precision.

Needs a CUDA GPU, torch and safetensors; no GDAL (the lent GPU machines have none). Prints one JSON
line per check and exits non-zero when a check fails. Run it first in a GPU session (about a minute),
then bench/bench_gpu.py --mode model (see docs/GPU.md):

  python bench/gpu_checks.py --json gpu_checks.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "core"))


def _runner(model: Any, card: Any, device: Any, tile: int, batch: int) -> Any:
    """The engine's batch runner (its warnings: ``.rep.warnings``)."""
    from mmcanet.inference.batches import BatchRunner
    from mmcanet.inference.tuning import EngineTuning
    from mmcanet.reporting import Reporter

    rep = Reporter(lambda m: None)
    return BatchRunner(model, card, device, list(range(len(card.s2_bands))), (tile, tile), batch, rep, EngineTuning())


def check_device() -> dict[str, Any]:
    import torch
    from mmcanet.devices import resolve_device

    dev = resolve_device("auto")
    ok = dev.type == "cuda" and torch.cuda.current_device() == (dev.index or 0)
    return {"check": "device", "ok": ok, "device": str(dev), "current": torch.cuda.current_device(),
            "name": torch.cuda.get_device_name(dev), "LOCAL_RANK": os.environ.get("LOCAL_RANK")}


def check_oom(model: Any, card: Any, device: Any, tile: int) -> dict[str, Any]:
    """Cap this process's GPU memory so a batch of 32 cannot fit; the engine must halve, free and finish."""
    import torch

    rng = np.random.default_rng(0)
    n = 32
    dn = rng.integers(1, 10000, (n, len(card.s2_bands), tile, tile), dtype=np.uint16)
    db = rng.uniform(-25, 0, (n, 2, tile, tile)).astype(np.float32)
    ref = _runner(model, card, device, tile, 1)
    ref.ensure_slots(n)
    for k in range(n):
        ref.fill_slot(k, dn[k], db[k])
    expected = ref.run(n, list(range(n)), [None] * n)
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    one = _runner(model, card, device, tile, 1)
    one.ensure_slots(1)
    one.fill_slot(0, dn[0], db[0])
    one.run(1, [0], [None])
    per_tile = torch.cuda.max_memory_allocated(device) - base
    total = torch.cuda.get_device_properties(device).total_memory
    cap = (base + 6 * per_tile) / total  # room for ~6 tiles: 32 and 16 fail, 4 fits
    torch.cuda.set_per_process_memory_fraction(min(cap, 0.95), device)
    try:
        run = _runner(model, card, device, tile, n)
        run.ensure_slots(n)
        for k in range(n):
            run.fill_slot(k, dn[k], db[k])
        got = run.run(n, list(range(n)), [None] * n)
        after = torch.cuda.memory_allocated(device)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)
    diff = float(np.abs(got - expected).max())  # cuDNN may pick other kernels per batch size (TF32): small
    warnings = run.rep.warnings
    ok = bool(warnings) and run.batch_size < n and diff < 5e-3 and after <= base + per_tile
    return {"check": "oom", "ok": ok, "warnings": warnings, "final_batch": run.batch_size, "max_abs_diff": diff,
            "per_tile_mb": per_tile / 2**20, "base_mb": base / 2**20, "after_mb": after / 2**20, "cap_fraction": cap}


def check_precision(model: Any, card: Any, device: Any, tile: int) -> dict[str, Any]:
    import torch
    from mmcanet.devices import resolve_precision

    rng = np.random.default_rng(1)
    n = 8
    dn = rng.integers(1, 10000, (n, len(card.s2_bands), tile, tile), dtype=np.uint16)
    db = rng.uniform(-25, 0, (n, 2, tile, tile)).astype(np.float32)
    out = {}
    for name in ("fp32", "bf16", "fp16"):
        r = _runner(model, card, device, tile, n)
        dtype = resolve_precision(name, device)
        r.autocast_dtype = None if dtype == torch.float32 else dtype
        r.ensure_slots(n)
        for k in range(n):
            r.fill_slot(k, dn[k], db[k])
        out[name] = r.run(n, list(range(n)), [None] * n) * card.normalization.s2_max_dn
    diffs = {k: float(np.abs(out[k] - out["fp32"]).mean()) for k in ("bf16", "fp16")}
    auto = str(resolve_precision("auto", device)).replace("torch.", "")
    return {"check": "precision", "ok": all(np.isfinite(v) for v in diffs.values()),
            "mean_abs_diff_dn_vs_fp32_random_tiles": diffs, "auto": auto}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="model file (default: the bundled model)")
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--json")
    args = p.parse_args()
    import torch
    from mmcanet.modelfile import load_model

    if not torch.cuda.is_available():
        print("gpu_checks: no CUDA device; nothing to check", file=sys.stderr)
        return 2
    rows = [check_device()]
    device = torch.device(rows[0]["device"])
    model, card = load_model(args.model, device)
    for check in (check_oom, check_precision):
        try:
            rows.append(check(model, card, device, args.tile))
        except Exception as exc:  # noqa: BLE001 - report and go on with the other checks
            rows.append({"check": check.__name__, "ok": False, "error": f"{type(exc).__name__}: {exc}"})
    for row in rows:
        print(json.dumps(row, default=str), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=str))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
