"""Parameter and multiply-accumulate counts of a model for a given tile size."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, height: int = 256, width: int = 256, bands: int = 13) -> int:
    """Multiply-accumulates of one forward pass on a (1, bands, height, width) tile (+ 2-band SAR).

    Counted by torch's FlopCounterMode (convolutions, matmuls, attention); MACs = FLOPs / 2.
    Element-wise ops are not counted (as in the published GMAC figures we compare with).
    """
    s2 = torch.zeros(1, bands, height, width)
    s1 = torch.zeros(1, 2, height, width)
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(s2, s1)
    model.train(was_training)
    return int(counter.get_total_flops() // 2)
