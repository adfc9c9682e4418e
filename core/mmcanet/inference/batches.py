"""Run batches of tiles through the model: model-unit buffers, device and memory layout, out-of-memory splitting.

:class:`BatchRunner` owns reusable float32 batch buffers in model units (S2 DN / ``s2_max_dn`` in the
model's band order, S1 dB mapped to 0-1); :meth:`BatchRunner.fill_slot` normalises one tile into its
slot (thread-safe: one slot per tile) and :meth:`BatchRunner.run` moves the filled slots to the device
and runs the forward under ``torch.inference_mode``, halving the batch on CUDA out-of-memory.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from ..bands import B10_FILL_DN
from ..coarse_bands import smooth_coarse_under_mask
from ..errors import MMCANetError
from ..normalization import Normalization
from ..reporting import Reporter
from .inputs import ModelCardLike
from .tuning import EngineTuning

if TYPE_CHECKING:  # torch is imported when a scene runs, so importing this module stays light (QGIS)
    import torch
    from torch import nn


class BatchRunner:
    """The model, its device and the batch buffers of one scene.

    Args:
        model: ``model(s2 (B,C,H,W), s1 (B,2,H,W), mask=None|(B,1,H,W)) -> (B,C,H,W)``, all 0-1.
        card: its model card (bands, normalisation).
        device: where the model runs.
        band_map: for each model band, the optical band (file order) feeding it; -1 = fill B10.
        tile_shape: ``(height, width)`` of every tile (px).
        batch_size: tiles per forward (lowered on CUDA out-of-memory).
        rep: receives the out-of-memory warnings.
        tuning: memory layout choice on the CPU.
    """

    def __init__(
        self,
        model: nn.Module,
        card: ModelCardLike,
        device: torch.device,
        band_map: list[int],
        tile_shape: tuple[int, int],
        batch_size: int,
        rep: Reporter,
        tuning: EngineTuning,
    ) -> None:
        self.model, self.card, self.device, self.rep = model, card, device, rep
        self.norm: Normalization = card.normalization
        self.band_map = band_map
        self.smooth_coarse_bands = True
        """Smooth the coarse bands under cloud before the forward (:mod:`mmcanet.coarse_bands`)."""
        self.tile_shape = tile_shape
        self.batch_size = batch_size
        self.seconds = 0.0
        self.b10_fill = np.float32(B10_FILL_DN / self.norm.s2_max_dn)
        self._same_bands = band_map == list(range(len(band_map)))
        self._s2 = np.zeros((0, len(band_map), 1, 1), np.float32)
        self._s1 = np.zeros((0, 2, 1, 1), np.float32)
        self._channels_last = device.type == "cpu" and tuning.channels_last_on_cpu
        self._memory_format: torch.memory_format | None = None

    def prepare_model(self) -> None:
        """Put the model in the memory layout its inputs will have (channels-last on the CPU by default)."""
        import torch

        self._memory_format = torch.contiguous_format
        if self._channels_last:
            # oneDNN's convolutions are faster on NHWC: 0.372 -> 0.293 s per batch of 4 for the bundled
            # model on the 2-core CPU, outputs within 1e-5 (bench/bench_layout.py, docs/ENGINE.md)
            self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # (runtime API; stubs lack it)
            self._memory_format = torch.channels_last

    def s2_unit(self, dn: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """S2 DN -> model units (float32 0-1), into ``out`` when given; integer DN take a fast path
        (no NaN/inf to clean): ``min(dn / max_dn, 1)``, the same values as ``Normalization.s2_to_unit``."""
        if dn.dtype.kind not in "ui":
            unit = self.norm.s2_to_unit(dn)
            if out is None:
                return unit
            out[...] = unit
            return out
        unit = np.divide(dn, np.float32(self.norm.s2_max_dn), out=out, dtype=np.float32)
        np.minimum(unit, np.float32(1.0), out=unit)
        return unit

    def ensure_slots(self, n: int) -> None:
        """Model-input buffers for ``n`` tiles (grown once; reused for every batch)."""
        if self._s2.shape[0] < n:
            th, tw = self.tile_shape
            self._s2 = np.zeros((n, len(self.band_map), th, tw), np.float32)
            self._s1 = np.zeros((n, 2, th, tw), np.float32)

    def fill_slot(self, slot: int, s2_dn: np.ndarray, s1_db: np.ndarray) -> np.ndarray:
        """Normalise one tile into batch slot ``slot``; thread-safe (writes only that slot).

        Args:
            slot: index in the batch (< the ``n`` of :meth:`ensure_slots`).
            s2_dn: ``(n_in, h, w)`` optical DN, file band order.
            s1_db: float32 ``(2, h, w)`` VV, VH in dB.

        Returns:
            float32 ``(n_in, h, w)``: the optical tile in 0-1, file band order (for the cloud detector).
        """
        s2_slot = self._s2[slot]
        if self._same_bands:  # normalise straight into the batch buffer
            unit = self.s2_unit(s2_dn, out=s2_slot)
        else:
            unit = self.s2_unit(s2_dn)
            for k, j in enumerate(self.band_map):
                s2_slot[k] = unit[j] if j >= 0 else self.b10_fill
        self._s1[slot] = self.norm.s1_to_unit(s1_db)
        return unit

    def run(self, n: int, idx: list[int], masks: list[np.ndarray | None]) -> np.ndarray:
        """Run the slots ``idx`` (of the first ``n``) through the model.

        Args:
            n: slots filled for this batch.
            idx: the slots to run (non-empty).
            masks: cloud mask per slot in ``idx`` (passed to the model only when every one is known).

        Returns:
            float32 ``(len(idx), C, h, w)`` model output clamped to 0-1, model band order.
        """
        import torch

        if self._memory_format is None:
            self.prepare_model()
        # the batch buffers are used in place when every tile runs (the usual case)
        s2_np = self._s2[:n] if len(idx) == n else self._s2[idx]
        s1_np = self._s1[:n] if len(idx) == n else self._s1[idx]
        s2_t = torch.from_numpy(s2_np).to(self.device, memory_format=self._memory_format)
        s1_t = torch.from_numpy(s1_np).to(self.device, memory_format=self._memory_format)
        m_t = None
        given = [m for m in masks if m is not None]
        if len(given) == len(idx):
            m_t = torch.from_numpy(np.stack(given).astype(np.float32)[:, None]).to(self.device)
            if self.smooth_coarse_bands:  # no block grid under cloud
                s2_t = smooth_coarse_under_mask(s2_t, m_t, self.card.s2_bands)
        t1 = time.perf_counter()
        with torch.inference_mode():
            y = self.forward(s2_t, s1_t, m_t).float().clamp_(0.0, 1.0).cpu().contiguous().numpy()
        self.seconds += time.perf_counter() - t1
        return y

    def forward(self, s2: torch.Tensor, s1: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Model forward with automatic batch splitting on CUDA out-of-memory; checks the output shape."""
        import torch

        try:
            y = self.model(s2, s1, mask=mask)
        except torch.cuda.OutOfMemoryError:
            if s2.shape[0] == 1:
                raise MMCANetError(
                    f"out of GPU memory even for one {s2.shape[-2]}x{s2.shape[-1]} tile; use a smaller tile size or --device cpu"
                ) from None
            torch.cuda.empty_cache()
            half = s2.shape[0] // 2
            self.batch_size = max(1, min(self.batch_size, half))
            self.rep.warn(f"out of GPU memory: batch size reduced to {self.batch_size}")
            parts = [
                self.forward(s2[a:b], s1[a:b], None if mask is None else mask[a:b])
                for a, b in ((0, half), (half, s2.shape[0]))
            ]
            return torch.cat(parts)
        expected = (s2.shape[0], len(self.card.s2_bands), *s2.shape[-2:])
        if not isinstance(y, torch.Tensor) or y.shape != expected:
            shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise MMCANetError(f"model '{self.card.name}' returned {shape}; expected {expected}")
        return y
