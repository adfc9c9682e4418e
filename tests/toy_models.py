"""Tiny deterministic models and a model card for engine tests (no training, a second per scene).

Each model makes one rule visible in the output: ``Constant`` restores every pixel to a known DN,
``SarEcho`` writes the normalised VV it was given, ``SmallConv`` mixes bands and neighbours (so a band
or tile mix-up changes the output), ``Recorder`` keeps what it saw.
"""

from __future__ import annotations

import weakref
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
    config: dict[str, object] = field(default_factory=dict)
    trust: dict[str, object] = field(default_factory=dict)


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


class _FailsOnCopy(torch.Tensor):
    """A tensor whose copy to the host fails the way a device-to-host copy does when memory runs out."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if func in (torch.Tensor.cpu, torch.Tensor.to):
            raise RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported")
        return super().__torch_function__(func, types, args, kwargs or {})


OOM_KINDS: dict[str, tuple[type[Exception], str]] = {
    "torch.OutOfMemoryError": (torch.OutOfMemoryError, "CUDA out of memory. Tried to allocate 2.00 GiB"),
    "cuda runtime": (RuntimeError, "CUDA error: out of memory"),
    "cudnn": (RuntimeError, "cuDNN error: CUDNN_STATUS_ALLOC_FAILED"),
    "cublas": (RuntimeError, "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
    "cpu allocator": (RuntimeError, "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"),
    "copy to host": (RuntimeError, "CUDA error: out of memory (raised by the engine's .cpu() of the output)"),
}
"""The allocation failures :class:`FailsAbove` simulates (``copy to host`` fails in the engine's ``.cpu()``)."""


class FailsAbove(nn.Module):
    """A per-pixel band-mixing model (elementwise, so its result does not depend on the batch size) that fails like an allocation failure for batches larger than ``limit`` tiles.

    A failing call first allocates activations (as a real forward does), then raises ``kind`` (a key of
    :data:`OOM_KINDS`). Weak references to the failed call's input and activation tensors are kept;
    the next call records whether each of them was already freed, i.e. whether the engine let go of the
    failed batch before retrying. ``freed_before_retry`` has one list of booleans per retry.
    """

    def __init__(self, limit: int, kind: str = "torch.OutOfMemoryError") -> None:
        super().__init__()
        self.limit, self.kind = limit, kind
        self.batches: list[int] = []
        self.freed_before_retry: list[list[bool]] = []
        self._failed: list[weakref.ref[torch.Tensor]] = []

    def forward(self, s2: torch.Tensor, s1: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if self._failed:
            self.freed_before_retry.append([r() is None for r in self._failed])
            self._failed = []
        self.batches.append(int(s2.shape[0]))
        y = (s2 + 0.1 * torch.tanh(s2.roll(1, dims=1) - s1.mean(1, keepdim=True))).clamp(0, 1)
        if s2.shape[0] <= self.limit:
            return y
        activations = torch.relu(y) * 2  # memory the failed forward holds until its frames are released
        self._failed = [weakref.ref(t) for t in (s2, s1, y, activations)]
        if self.kind == "copy to host":
            return activations.as_subclass(_FailsOnCopy)  # the engine's .cpu() raises
        kind, message = OOM_KINDS[self.kind]
        raise kind(message)  # a new exception per failure, as torch raises


class KnownError(nn.Module):
    """Restores every band to ``value`` and predicts the error ``error * (1 + VV)`` (model units, VV 0-1).

    Its card needs ``config={"error_head": True}``; the error pattern follows the SAR, so a tile or
    band mix-up in the trust layer shows.
    """

    def __init__(self, value: float = 0.5, error: float = 0.05) -> None:
        super().__init__()
        self.value, self.error = value, error

    def forward(self, s2: torch.Tensor, s1: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return torch.full_like(s2, self.value)

    def forward_with_error(
        self, s2: torch.Tensor, s1: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward(s2, s1, mask), self.error * (1.0 + s1[:, :1])
