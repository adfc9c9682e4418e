"""Tiny deterministic models and a model card for engine tests (no training, a second per scene).

Each model makes one rule visible in the output: ``Constant`` restores every pixel to a known DN,
``SarEcho`` writes the normalised VV it was given, ``SmallConv`` mixes bands and neighbours (so a band
or tile mix-up changes the output), ``Recorder`` keeps what it saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from mmcanet.bands import S1_BANDS, S2_BANDS_L1C
from mmcanet.normalization import Normalization
from torch import nn


@dataclass
class Card:
    """The model-card fields the engine reads."""

    name: str = "toy"
    version: str = "0.0"
    strategy: str = "single"
    tile_size: int = 32
    overlap: int = 8
    s2_bands: tuple[str, ...] = S2_BANDS_L1C
    s1_bands: tuple[str, ...] = S1_BANDS
    normalization: Normalization = field(default_factory=Normalization)


class Identity(nn.Module):
    """Returns its optical input."""

    def forward(self, s2: torch.Tensor, s1: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return s2.clone()


class Constant(nn.Module):
    """Every band = ``value`` (0-1), or per band when ``value`` is a sequence of 13."""

    def __init__(self, value: float | Sequence[float] = 0.5) -> None:
        super().__init__()
        self.value = torch.as_tensor(value, dtype=torch.float32)

    def forward(self, s2: torch.Tensor, s1: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        v = self.value.to(s2.device)
        return (torch.zeros_like(s2) + (v if v.ndim == 0 else v.view(1, -1, 1, 1))).contiguous()


class SarEcho(nn.Module):
    """Every output band = the normalised VV it was given (which SAR band/pixel reached the model)."""

    def forward(self, s2: torch.Tensor, s1: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return s1[:, :1].expand_as(s2).clone()


class SmallConv(nn.Module):
    """Two seeded 3x3 convolutions over S2 + S1, residual on S2: band order and neighbours matter."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.c1 = nn.Conv2d(15, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 13, 3, padding=1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)

    def forward(self, s2: torch.Tensor, s1: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return s2 + 0.1 * torch.tanh(self.c2(torch.relu(self.c1(torch.cat([s2, s1], 1)))))


class Recorder(nn.Module):
    """Identity that keeps copies of the inputs it saw: ``seen = [(s2, s1, mask), ...]``."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = []

    def forward(self, s2: torch.Tensor, s1: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        self.seen.append((s2.clone(), s1.clone(), None if mask is None else mask.clone()))
        return s2.clone()


class OutOfMemoryAbove(nn.Module):
    """Identity that raises CUDA's out-of-memory error for batches larger than ``limit`` tiles.

    The engine's batch splitting reacts to this exception type; raising it from a real model call is
    how a GPU running out of memory looks to the engine, without needing a GPU.
    """

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.batches: list[int] = []

    def forward(self, s2: torch.Tensor, s1: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        self.batches.append(int(s2.shape[0]))
        if s2.shape[0] > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return s2.clone()
