"""bench/bench_gpu.py, the prepared GPU benchmark, runs end to end on the CPU (tiny model, small scenes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
TINY = {"widths": [4, 8], "heads": 1, "window": 4, "stages": 1}


@pytest.fixture
def tiny_model_file(tmp_path: Path) -> Path:
    from mmcanet import modelfile, models

    torch.manual_seed(0)
    model = models.build_model("mmcanet", "single", **TINY)
    card = modelfile.ModelCard(name="tiny-bench", config=TINY, tile_size=32, overlap=8)
    return modelfile.save_model(tmp_path / "tiny.safetensors", model, card)


@pytest.mark.parametrize("mode", ["scene", "model"])
def test_bench_gpu_runs_on_the_cpu(tiny_model_file: Path, tmp_path: Path, mode: str) -> None:
    out = tmp_path / "rows.json"
    cmd = [sys.executable, str(REPO / "bench" / "bench_gpu.py"), "--mode", mode, "--size", "72", "--device", "cpu",
           "--precisions", "bf16,fp32", "--batch-sizes", "2,5", "--model", str(tiny_model_file),
           "--work", str(tmp_path / "work"), "--json", str(out)]
    env = dict(os.environ, PYTHONPATH=str(REPO / "core"), OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [(r["batch"], r["precision"]) for r in rows] == [(2, "fp32"), (2, "bf16"), (5, "fp32"), (5, "bf16")]
    assert all(r["tiles"] == 9 and r["wall_s"] > 0 and r["gpu_busy"] is None for r in rows)  # 72 px: 3 x 3 tiles
    if mode == "scene":
        bf16 = [r for r in rows if r["precision"] == "bf16"]
        assert all(0 <= r["mean_abs_diff_dn_vs_fp32"] <= r["max_abs_diff_dn_vs_fp32"] for r in bf16)
