"""Peak memory of `mmcanet train` on official-layout SEN12MS-CR trees of N linked patches (issue #13).

Builds ``ROIs1158_spring_s1/s1_1/ROIs1158_spring_s1_1_p<k>.tif`` (+ the ``_s2`` and ``_s2_cloudy``
siblings) for k < N as symbolic links to the real triplets of ../shared/data/sen12mscr-triplets
(cycled), trains on it for the same number of steps for every N, and samples the resident memory
of the training process and its loader workers (sum over the process tree, from /proc) every 0.1 s.
A flat pipeline gives the same peak for 200 and 2000 patches; one that keeps every image read grows.

  .venv/bin/python bench/bench_training_memory.py                      # issue's setting: 120 steps, batch 8
  .venv/bin/python bench/bench_training_memory.py --steps 40 --tiny    # quicker, same effect
  .venv/bin/python bench/bench_training_memory.py --core /work/main/core   # another checkout's core (before)

Linux only (/proc). The config keys ``workers`` / ``cache_mb`` are only passed when given, so an
older core without them can be measured too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "sen12mscr-triplets"
TINY = {"widths": [8, 8, 16, 16], "heads": 2, "window": 4}


def build_official_tree(root: Path, triplets: Path, n: int, season: str = "ROIs1158_spring", scene: int = 1) -> Path:
    """Official SEN12MS-CR layout of ``n`` patches linking to the triplets in ``triplets`` (cycled).

    Scene 1 of spring is a training scene. Returns ``root``.
    """
    ids = sorted(p.name[: -len("_s2_cloudy.tif")] for p in triplets.glob("*_s2_cloudy.tif"))
    if not ids:
        raise SystemExit(f"no triplets in {triplets}")
    for kind, suffix in (("s1", "s1"), ("s2", "s2_cloudfree"), ("s2_cloudy", "s2_cloudy")):
        folder = root / f"{season}_{kind}" / f"{kind}_{scene}"
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(n):
            link = folder / f"{season}_{kind}_{scene}_p{k}.tif"
            if not link.exists():
                link.symlink_to((triplets / f"{ids[k % len(ids)]}_{suffix}.tif").resolve())
    return root


def _tree_rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` and all its descendants, KiB."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total


_CHILD = """
import json, sys
from mmcanet.config import config_from_dict
from mmcanet.training import train
res = train(config_from_dict(json.loads(sys.argv[1])))
print("STEPS", res.steps)
"""


def run(n: int, work: Path, args: argparse.Namespace) -> dict[str, float]:
    """Train on an N-patch tree; peak RSS (GiB) of the process tree and wall seconds."""
    tree = build_official_tree(work / f"tree{n}", SHARED, n)
    cfg: dict[str, object] = {
        "data": [str(tree)], "epochs": 1000, "max_steps": args.steps, "batch_size": args.batch, "crop": args.crop,
        "warmup_steps": 1, "checkpoint_every": 10**6, "log_every": 10**6, "device": "cpu", "seed": 1,
        "run_dir": str(work / f"run{n}"), "output": str(work / f"run{n}" / "m.safetensors"), "overwrite": True,
    }
    if args.tiny:
        cfg["model"] = TINY
    if args.threads:
        cfg["threads"] = args.threads
    if args.workers is not None:
        cfg["workers"] = args.workers
    if args.cache_mb is not None:
        cfg["cache_mb"] = args.cache_mb
    env = {**os.environ, "PYTHONPATH": str(Path(args.core).resolve())}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, json.dumps(cfg)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss_kib(proc.pid))
        time.sleep(0.1)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"training on {n} patches failed:\n{err[-3000:]}")
    return {"patches": n, "peak_rss_gib": round(peak / 2**20, 2), "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[200, 2000])
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--tiny", action="store_true", help="a tiny network (the data pipeline dominates memory)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--cache-mb", type=int, default=None)
    ap.add_argument("--core", default=str(ROOT / "core"), help="the core library to measure (PYTHONPATH)")
    args = ap.parse_args()
    if not SHARED.is_dir():
        raise SystemExit(f"needs the real triplets in {SHARED}")
    with tempfile.TemporaryDirectory(prefix="bench-train-mem-") as tmp:
        rows = [run(n, Path(tmp), args) for n in args.sizes]
    for r in rows:
        print(json.dumps(r))
    if len(rows) > 1:
        print(f"ratio largest/smallest peak: {rows[-1]['peak_rss_gib'] / rows[0]['peak_rss_gib']:.2f}")


if __name__ == "__main__":
    main()
