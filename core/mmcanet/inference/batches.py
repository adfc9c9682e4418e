"""Run batches of tiles through the model: model-unit buffers, device and memory layout, out-of-memory splitting.

:class:`BatchRunner` owns reusable float32 batch buffers in model units (S2 DN / ``s2_max_dn`` in the
model's band order, S1 dB mapped to 0-1); :meth:`BatchRunner.fill_slot` normalises one tile into its
slot (thread-safe: one slot per tile) and :meth:`BatchRunner.run` moves the filled slots to the device
and runs the forward under ``torch.inference_mode``, halving the batch on an allocation failure
(:mod:`.oom`; the retry runs only once the failed batch's memory is freed).
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING

import numpy as np

from ..bands import B10_FILL_DN, S2_DN_SCALE
from ..bright_cloud import tame_bright_cloud
from ..coarse_bands import smooth_coarse_under_mask
from ..errors import MMCANetError
from ..normalization import Normalization
from ..options import MIN_TILE_SIZE
from ..reporting import Reporter
from . import oom
from .tuning import EngineTuning

MIRROR_PX = 8
"""Pixels of mirrored context framed around every tile before the forward and cut off after it: they
remove the dark / bright line the network's zero padding leaves along image edges (an area of interest
then matches the whole-scene run there within ~1 %; docs/QUALITY.md section 7). Costs (272/256)^2 - 1 =
13 % more network time for 256 px tiles. Tiles of images smaller than that get a narrower frame."""

if TYPE_CHECKING:  # torch is imported when a scene runs, so importing this module stays light (QGIS)
    import torch
    from torch import nn

    from .inputs import ModelCardLike  # (GDAL: not needed at run time)


class BatchRunner:
    """The model, its device and the batch buffers of one scene.

    Args:
        model: ``model(s2 (B,C,H,W), s1 (B,2,H,W), mask=None|(B,1,H,W)) -> (B,C,H,W)``, all 0-1.
        card: its model card (bands, normalisation).
        device: where the model runs.
        band_map: for each model band, the optical band (file order) feeding it; -1 = fill B10.
        tile_shape: ``(height, width)`` of every tile (px).
        batch_size: tiles per forward (halved on an allocation failure).
        rep: receives the out-of-memory warnings.
        tuning: memory layout choice on the CPU.
        with_error: also run the model's error head (``model.forward_with_error``): the trust layer.
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
        with_error: bool = False,
    ) -> None:
        self.model, self.card, self.device, self.rep = model, card, device, rep
        self.with_error = with_error
        self.errors: np.ndarray | None = None
        """After :meth:`run` with ``with_error``: float32 ``(len(idx), h, w)`` raw predicted error (model units)."""
        self.norm: Normalization = card.normalization
        self.band_map = band_map
        self.smooth_coarse_bands = True
        """Smooth the coarse bands under cloud before the forward (:mod:`mmcanet.coarse_bands`)."""
        self.tame_bright_cloud = True
        """Replace masked cloud brighter than the training clouds by the simulator's (:mod:`mmcanet.bright_cloud`)."""
        self.mask_as_given = False
        """Guide the network by the mask as given, not by its own opacity estimate near the mask (a model's
        ``guide_reach``): for Level-2A input, whose opacity the Level-1C-trained estimate misjudges."""
        self.tile_shape = tile_shape
        self.batch_size = batch_size
        self.seconds = 0.0
        self.b10_fill = np.float32(B10_FILL_DN / self.norm.s2_max_dn)
        self._same_bands = band_map == list(range(len(band_map)))
        self._s2 = np.zeros((0, len(band_map), 1, 1), np.float32)
        self._s1 = np.zeros((0, 2, 1, 1), np.float32)
        self._channels_last = device.type == "cpu" and tuning.channels_last_on_cpu
        self._memory_format: torch.memory_format | None = None
        self.autocast_dtype: torch.dtype | None = None
        """Mixed-precision dtype of the forward (``torch.autocast``); None = plain float32."""

    def prepare_model(self) -> None:
        """Put the model in the memory layout its inputs will have (channels-last on the CPU by default)."""
        import torch

        self._memory_format = torch.contiguous_format
        if self.device.type == "cuda":
            # every forward has the same tile shape: let cuDNN pick its fastest kernels once
            torch.backends.cudnn.benchmark = True
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
        """Run the slots ``idx`` (of the first ``n``) through the model, in chunks of :attr:`batch_size`.

        On an allocation failure (GPU or host; :func:`.oom.is_out_of_memory`) the chunk is retried with
        half the batch size, down to one tile. The retry happens only after the failure's exception,
        its traceback and the failed chunk's tensors are gone and the allocator's cache is emptied,
        so it gets the memory back; later batches start at the size that fitted.

        Args:
            n: slots filled for this batch.
            idx: the slots to run (non-empty).
            masks: cloud mask per slot in ``idx`` (passed to the model only when every one is known).

        Returns:
            float32 ``(len(idx), C, h, w)`` model output clamped to 0-1, model band order; with
            ``with_error`` the predicted error (model units, clamped to 0-1) is left in :attr:`errors`.

        Raises:
            MMCANetError: not even one tile fits (the message says which tile size and device).
        """
        if self._memory_format is None:
            self.prepare_model()
        # the batch buffers are used in place when every tile runs (the usual case)
        s2_np = self._s2[:n] if len(idx) == n else self._s2[idx]
        s1_np = self._s1[:n] if len(idx) == n else self._s1[idx]
        given = [m for m in masks if m is not None]
        m_np = np.stack(given).astype(np.float32)[:, None] if len(given) == len(idx) else None
        parts: list[np.ndarray] = []
        start = 0
        while start < len(idx):
            size = min(self.batch_size, len(idx) - start)
            rows = slice(start, start + size)
            y, failure = self._attempt(s2_np[rows], s1_np[rows], None if m_np is None else m_np[rows])
            if y is not None:
                parts.append(y)
                start += size
                continue
            # outside the except block: the failed chunk's exception, frames and tensors are unreachable now
            self._shrink(size, failure)
        y = parts[0] if len(parts) == 1 else np.concatenate(parts)
        if self.with_error:  # the last channel is the predicted error (forward concatenates it)
            self.errors = np.ascontiguousarray(y[:, -1])
            y = np.ascontiguousarray(y[:, :-1])
        return y

    def _attempt(self, s2: np.ndarray, s1: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray | None, str]:
        """One chunk through the model: ``(output, "")``, or ``(None, why)`` when an allocation failed.

        Every tensor of the attempt lives in :meth:`_forward_chunk`'s frame; returning from the
        ``except`` block drops the exception and with it that frame.
        """
        try:
            return self._forward_chunk(s2, s1, mask), ""
        except Exception as exc:  # noqa: BLE001 - re-raised unless it is an allocation failure
            if not oom.is_out_of_memory(exc):
                raise
            return None, oom.summary(exc)

    def _forward_chunk(self, s2_np: np.ndarray, s1_np: np.ndarray, m_np: np.ndarray | None) -> np.ndarray:
        """Upload, forward, clamp and download one chunk (all inside the caller's allocation-failure guard)."""
        import torch

        s2_t = self._upload(s2_np)
        s1_t = self._upload(s1_np)
        m_t = None if m_np is None else self._upload(m_np, layout=False)
        if m_t is not None and self.smooth_coarse_bands:  # no block grid under cloud
            s2_t = smooth_coarse_under_mask(s2_t, m_t, self.card.s2_bands)
        if m_t is not None and self.tame_bright_cloud:  # overcast brighter than any cloud it learned from
            s2_t = tame_bright_cloud(s2_t, m_t, self.card.s2_bands, self.norm.s2_max_dn / S2_DN_SCALE)
        amp = (torch.autocast(self.device.type, dtype=self.autocast_dtype) if self.autocast_dtype is not None
               else contextlib.nullcontext())
        t1 = time.perf_counter()
        with torch.inference_mode(), amp:
            y = self._forward_mirrored(s2_t, s1_t, m_t).float().clamp_(0.0, 1.0).cpu().contiguous().numpy()
        self.seconds += time.perf_counter() - t1
        return y

    def _forward_mirrored(self, s2: torch.Tensor, s1: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """:meth:`forward` on the tiles framed by :data:`MIRROR_PX` mirrored pixels, cut back to the tiles.

        The network pads its convolutions with zeros, so without a frame the outermost 2-3 px of an
        image come out up to ~8 % darker or brighter (a line along the scene's edges and around every
        area of interest); a mirrored frame gives it context of the same kind instead.
        """
        import torch.nn.functional as F

        h, w = s2.shape[-2:]
        p = min(MIRROR_PX, h - 1, w - 1)  # a mirror reaches at most one pixel short of the far edge
        if p <= 0:
            return self.forward(s2, s1, mask)

        def framed(t: torch.Tensor, layout: bool = True) -> torch.Tensor:
            t = F.pad(t, (p, p, p, p), mode="reflect")
            return t.contiguous(memory_format=self._memory_format) if layout and self._memory_format else t

        y = self.forward(framed(s2), framed(s1), None if mask is None else framed(mask, layout=False))
        return y[..., p:p + h, p:p + w]

    def _upload(self, a: np.ndarray, layout: bool = True) -> torch.Tensor:
        """A host array on the model's device (in the model's memory layout); on CUDA through pinned
        memory with an asynchronous copy (the download at the end of the chunk synchronises)."""
        import torch

        t = torch.from_numpy(a)
        fmt = self._memory_format if layout and a.ndim == 4 else torch.contiguous_format
        if self.device.type != "cuda":
            return t.to(self.device, memory_format=fmt)
        if not t.is_pinned():
            t = t.pin_memory()
        return t.to(self.device, non_blocking=True, memory_format=fmt)

    def _shrink(self, size: int, why: str) -> None:
        """After an allocation failure of a ``size``-tile chunk: free the memory, halve the batch size.

        Raises:
            MMCANetError: ``size`` was already one tile.
        """
        oom.release(self.device)
        where = "GPU memory" if oom.on_gpu(why, self.device) else "memory"
        if size <= 1:
            th, tw = self.tile_shape
            fix = (f"use a smaller tile size (--tile-size, e.g. {max(MIN_TILE_SIZE, th // 2)}), free the GPU "
                   "(other programs), or run on the CPU (--device cpu)") if where == "GPU memory" else \
                  f"use a smaller tile size (--tile-size, e.g. {max(MIN_TILE_SIZE, th // 2)}) or close other programs"
            raise MMCANetError(f"out of {where} even for one {th}x{tw} tile on {self.device} ({why}); {fix}")
        self.batch_size = max(1, min(self.batch_size, size // 2))
        self.rep.warn(f"out of {where}: batch size reduced to {self.batch_size} ({why})")

    def forward(self, s2: torch.Tensor, s1: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Model forward; checks the output shape."""
        import torch

        reach = getattr(self.model, "guide_reach", None)  # only networks with the option take the keyword
        extra: dict[str, int] = {"guide_reach": 0} if self.mask_as_given and isinstance(reach, int) and reach > 0 else {}
        if self.with_error:  # the restoration and its predicted error, as one tensor (C + 1 channels)
            restored, err = self.model.forward_with_error(s2, s1, mask, **extra)  # type: ignore[operator]
            y = torch.cat([restored, err], dim=1)
        else:
            y = self.model(s2, s1, mask=mask, **extra)
        expected = (s2.shape[0], len(self.card.s2_bands) + int(self.with_error), *s2.shape[-2:])
        if not isinstance(y, torch.Tensor) or y.shape != expected:
            shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise MMCANetError(f"model '{self.card.name}' returned {shape}; expected {expected}")
        return y
