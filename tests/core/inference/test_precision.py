"""The model's arithmetic (``precision``): fp32 on the CPU unless asked, bf16 through torch.autocast when asked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasters
import torch
from mmcanet.devices import resolve_precision
from mmcanet.errors import InputError
from mmcanet.inference import RestoreOptions, restore_scene_with_model
from mmcanet.options import problems
from toy_models import Card, SmallConv

H, W = 40, 56


def test_auto_is_fp32_on_the_cpu_and_fp16_needs_cuda() -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == torch.float32
    assert resolve_precision("fp32", cpu) == torch.float32
    assert resolve_precision("bf16", cpu) == torch.bfloat16
    with pytest.raises(InputError, match="precision 'fp16' needs a CUDA device"):
        resolve_precision("fp16", cpu)
    assert problems(RestoreOptions(sar="", optical="", output="", precision="fp8")) == [
        "precision 'fp8': choose one of auto, fp32, bf16, fp16"]


def test_bf16_runs_the_forward_in_bf16_and_auto_on_cpu_is_exactly_fp32(tmp_path: Path) -> None:
    s2, s1 = rasters.write_s2(tmp_path / "s2.tif", H, W), rasters.write_s1(tmp_path / "s1.tif", H, W)
    out = {}
    for precision in ("fp32", "auto", "bf16"):
        opts = RestoreOptions(sar=s1, optical=s2, output=tmp_path / f"{precision}.tif", keep_clear=False,
                              precision=precision)
        lines: list[str] = []
        res = restore_scene_with_model(SmallConv(), Card(), opts, log=lines.append)
        out[precision] = rasters.read(res.output).astype(np.int32)
        assert any("mixed precision: bf16" in x for x in lines) == (precision == "bf16")
    np.testing.assert_array_equal(out["auto"], out["fp32"])
    diff = np.abs(out["bf16"] - out["fp32"])
    assert diff.max() > 0, "the bf16 forward really ran in bf16 (its rounding shows)"
    assert diff.mean() < 20, "and stays close to fp32 (SmallConv: a 0.1 x tanh residual on the input)"
