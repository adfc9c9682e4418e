"""The tile loop of one scene: strip by strip, batch by batch, blend, composite finished rows, write.

For each tile row: take its strip (:mod:`.strips`), prepare every tile (model units into a batch
slot, cloud detection, restore weight), run the tiles that need it (:mod:`.batches`), blend all of
them (:mod:`.blending`), then composite and write the rows no later tile touches. Progress is
reported and cancellation polled once per batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from ..bands import S2_BANDS_L1C, S2_BANDS_L2A, S2_DN_SCALE
from ..cpus import rank_cpus
from ..options import RestoreOptions, is_level_2a, keeps_clear, resolve_tiling
from ..raster_write import RasterWriter
from ..reporting import Reporter
from ..trust import trust_settings
from . import blending
from .batches import BatchRunner
from .inputs import ModelCardLike, SceneInputs, model_band_map, output_band_map
from .memory import MemoryGuard
from .sar_structure import transfer_sar_structure
from .strips import Prefetch, Strip, StripReader
from .tiling import Tile, TilePlan, plan_tiles
from .tuning import EngineTuning

if TYPE_CHECKING:
    import torch
    from torch import nn

_I = TypeVar("_I")
_O = TypeVar("_O")
_CANCELLED = "restoration cancelled; no output was written"


def _detector() -> Callable[[np.ndarray], Any] | None:
    try:
        from ..clouds.detect import detect_clouds
    except ImportError:
        return None
    return detect_clouds


class SceneRunner:
    """Runs one scene through a model; holds the plan, the strip accumulator and the counters.

    Args:
        model: the model (see :class:`~.batches.BatchRunner`).
        card: its model card.
        device: where it runs.
        opts: the restore options (tile size / overlap None: the card's).
        ins: the open inputs.
        rep: messages, progress and cancellation.
        tuning: chunk sizes and scheduling.

    Raises:
        InputError: the model cannot restore these bands, or the tiling breaks a rule.
    """

    def __init__(
        self,
        model: nn.Module,
        card: ModelCardLike,
        device: torch.device,
        opts: RestoreOptions,
        ins: SceneInputs,
        rep: Reporter,
        tuning: EngineTuning,
    ) -> None:
        self.card, self.device, self.opts, self.ins, self.rep, self.tuning = card, device, opts, ins, rep, tuning
        names = ins.optical_names
        band_map = model_band_map(card, names, ins.optical_what)
        self.out_from_model = output_band_map(card, names, ins.optical_what)
        level_2a = is_level_2a(names)
        self.detect_order = [names.index(n) for n in (S2_BANDS_L2A if level_2a else S2_BANDS_L1C)]
        self.keep_clear = keeps_clear(opts.keep_clear, names)
        """Whether clear pixels are kept (the option, or automatic by processing level)."""
        self.shift_to_input = self.keep_clear and level_2a
        """Level-2A input with kept clear pixels: the harmonised fill also takes their band levels."""
        if opts.keep_clear is None and self.keep_clear:
            rep.info(f"{ins.optical_what} is Level-2A (no B10): its clear pixels are kept, the clouds restored "
                     "(--no-keep-clear / keep_clear=False restores every pixel)")
        self.detect = None
        self.mask_source = "none"
        if ins.mask is not None:
            self.mask_source = "given"
        else:  # detected even without keep_clear: the model may use the mask
            self.detect = _detector()
            if self.detect is None:
                rep.warn("no cloud detector in this build and no cloud mask given: every pixel is restored")
            else:
                self.mask_source = "detected"
        self.tile_size, self.overlap = resolve_tiling(opts, card.tile_size, card.overlap)
        info = ins.optical_info
        self.plan: TilePlan = plan_tiles(info.width, info.height, self.tile_size, self.overlap)
        self.n_in = len(names)
        # the trust layer: predicted absolute error (reflectance) = the head's raw error (model units) x
        # error_scale x s2_max_dn / 10000; pixels kept from the input get kept_error
        self.with_error = ins.uncertainty_output is not None
        self.error_scale, self.kept_error = trust_settings(card) if self.with_error else (1.0, 0.0)
        self.error_scale *= card.normalization.s2_max_dn / S2_DN_SCALE
        # strip channels: composited DN (n_in), cloud mask[, predicted error]
        self.acc = blending.StripAccumulator(self.plan, self.n_in + 1 + int(self.with_error), self.overlap)
        self.reader = StripReader(ins, self.plan.tile_height, tuning)
        self.batches = BatchRunner(model, card, device, band_map, (self.plan.tile_height, self.plan.tile_width),
                                   opts.batch_size, rep, tuning, with_error=self.with_error)
        self.batches.smooth_coarse_bands = opts.smooth_coarse_bands
        self.batches.tame_bright_cloud = opts.tame_bright_cloud
        self.batches.mask_as_given = level_2a
        import torch

        from ..devices import resolve_precision

        dtype = resolve_precision(opts.precision, device, rep.info)
        self.batches.autocast_dtype = None if dtype == torch.float32 else dtype
        self.timings = {"read": 0.0, "read_background": 0.0, "detect": 0.0, "model": 0.0, "blend": 0.0, "write": 0.0}
        self.tiles_run = 0
        self.masked_px = 0
        self.valid_px = 0
        self.nodata_px = 0
        self._pool: ThreadPoolExecutor | None = None
        self._memory = MemoryGuard()
        self._out_in_order = self.out_from_model == list(range(len(self.out_from_model)))
        self._detect_in_order = self.detect_order == list(range(len(self.detect_order)))

    # -- per tile --------------------------------------------------------------------------------

    def _prepare(self, tile: Tile, strip: Strip, slot: int) -> tuple[np.ndarray | None, np.ndarray, float, float]:
        """Model inputs of one tile into batch slot ``slot``; its cloud mask and restore weight.

        Thread-safe: reads the strip and writes only its own slot of the batch buffers.
        Returns ``(mask or None, alpha, seconds detecting, seconds in total)``.
        """
        t0 = time.perf_counter()
        w = tile.window
        rows = slice(w.row_off - strip.row_off, w.row_end - strip.row_off)
        cols = slice(w.col_off, w.col_end)
        unit = self.batches.fill_slot(slot, strip.s2_dn[:, rows, cols], strip.s1_db[:, rows, cols])
        invalid = strip.invalid[rows, cols]
        mask = strip.mask[rows, cols] if strip.mask is not None else None
        detect_s = 0.0
        if mask is None and self.detect is not None:
            t1 = time.perf_counter()
            cm = self.detect(unit if self._detect_in_order else unit[self.detect_order])
            mask = np.asarray(cm.cloud) | np.asarray(cm.shadow)
            detect_s = time.perf_counter() - t1
        alpha = blending.restore_weight(mask, invalid, self.keep_clear, self.opts.feather, self.opts.clear_weight)
        return mask, alpha, detect_s, time.perf_counter() - t0

    def _map(self, fn: Callable[[_I], _O], items: list[_I]) -> list[_O]:
        """``[fn(x) for x in items]``, on the CPU worker threads when there is more than one item.

        The model has the cores while it runs; between forwards this per-tile numpy work (most of it
        GIL-free) would otherwise leave all but one core idle.
        """
        if self._pool is None or len(items) < 2:
            return [fn(x) for x in items]
        return list(self._pool.map(fn, items))

    def _run_tiles(self, tiles: list[Tile], strip: Strip) -> None:
        """Prepare, run and accumulate one batch of tiles of the current strip."""
        t0 = time.perf_counter()
        self.batches.ensure_slots(len(tiles))
        prepared = self._map(lambda k: self._prepare(tiles[k], strip, k), list(range(len(tiles))))
        masks = [p[0] for p in prepared]
        alphas = [p[1] for p in prepared]
        elapsed = time.perf_counter() - t0
        # wall time split between detection and the rest of the preparation by their thread times
        busy = sum(p[3] for p in prepared)
        detect_s = elapsed * sum(p[2] for p in prepared) / busy if busy > 0 else 0.0
        self.timings["detect"] += detect_s
        self.timings["read"] += elapsed - detect_s  # reading + tile preparation

        outputs: dict[int, np.ndarray] = {}
        errors: dict[int, np.ndarray] = {}
        idx = [i for i, a in enumerate(alphas) if a.any()]
        if idx:
            y = self.batches.run(len(tiles), idx, [masks[i] for i in idx])
            for k, i in enumerate(idx):
                outputs[i] = y[k] if self._out_in_order else y[k][self.out_from_model]
                if self.with_error and self.batches.errors is not None:
                    errors[i] = self.batches.errors[k] * np.float32(self.error_scale)
            self.tiles_run += len(idx)

        t2 = time.perf_counter()
        scale = self.card.normalization.s2_max_dn

        def weighted(i: int) -> np.ndarray:
            w = tiles[i].window
            rows = slice(w.row_off - strip.row_off, w.row_end - strip.row_off)
            restored, mask = outputs.get(i), masks[i]
            cols = slice(w.col_off, w.col_end)
            if restored is not None and mask is not None:  # the fill steps under the mask
                invalid = strip.invalid[rows, cols]
                optical: np.ndarray | None = None  # the input in model units, made once when a step needs it
                if self.opts.harmonise > 0:
                    restored = blending.harmonise_fill(restored, mask, invalid, self.opts.harmonise)
                    if self.shift_to_input:  # Level-2A, clear pixels kept: the fill takes their band levels
                        optical = strip.s2_dn[:, rows, cols].astype(np.float32) * np.float32(1.0 / scale)
                        restored = blending.shift_fill_to_input(restored, optical, mask, invalid, self.opts.harmonise)
                if self.opts.sar_structure > 0:
                    if optical is None:
                        optical = strip.s2_dn[:, rows, cols].astype(np.float32) * np.float32(1.0 / scale)
                    restored = transfer_sar_structure(restored, optical, strip.s1_db[:, rows, cols], mask, invalid,
                                                      self.opts.sar_structure)
            values = blending.composite_tile(restored, alphas[i], strip.s2_dn[:, rows, cols],
                                             mask, scale, errors.get(i), self.kept_error if self.with_error else None)
            return self.acc.apply_weight(tiles[i], values)

        for i, values in enumerate(self._map(weighted, list(range(len(tiles))))):
            self.acc.add_weighted(tiles[i], values)
        self.timings["blend"] += time.perf_counter() - t2

    # -- finished rows ---------------------------------------------------------------------------

    def _composite(self, strip: Strip, upto_row: int, writers: dict[str, RasterWriter]) -> None:
        """Turn the finished blended rows into output values and write them.

        Rows are split at the outputs' block-row boundaries and finished straight into the writers'
        buffers, column chunk by column chunk, so no full-width float (or extra uint16) copy exists.
        """
        t0 = time.perf_counter()
        row0, sums = self.acc.finished(upto_row)
        width = sums.shape[2]
        out_writer = writers["output"]
        scale = self.card.normalization.s2_max_dn
        step = self.tuning.composite_columns
        row = row0
        while row < upto_row:
            n = min(upto_row - row, *(w.room() for w in writers.values()))
            out_rows = out_writer.region(row, n)
            mask_rows = writers["mask"].region(row, n) if "mask" in writers else None
            change_rows = writers["change"].region(row, n) if "change" in writers else None
            error_rows = writers["uncertainty"].region(row, n) if "uncertainty" in writers else None
            a = row - row0  # rows in the accumulator
            r = slice(row - strip.row_off, row - strip.row_off + n)  # rows in the strip

            def chunk(c0: int, row: int = row, n: int = n, a: int = a, r: slice = r,
                      out_rows: np.ndarray = out_rows, mask_rows: np.ndarray | None = mask_rows,
                      change_rows: np.ndarray | None = change_rows,
                      error_rows: np.ndarray | None = error_rows) -> tuple[int, int, int]:
                cs = slice(c0, min(width, c0 + step))
                mean = sums[:, a : a + n, cs] / self.acc.weight(slice(row, row + n), cs)
                invalid = strip.invalid[r, cs]
                if error_rows is not None:
                    error_rows[0, :, cs] = blending.error_values(mean[self.n_in + 1], invalid)
                out, cloud = blending.finish_pixels(mean[: self.n_in + 1], invalid, out_writer.dtype, self.ins.optical_nodata)
                out_rows[:, :, cs] = out
                if mask_rows is not None:
                    mask_rows[0, :, cs] = blending.mask_values(cloud, invalid)
                if change_rows is not None:
                    change_rows[0, :, cs] = blending.change_values(out, strip.s2_dn[:, r, cs], invalid, scale)
                valid = ~invalid
                n_valid = int(valid.sum())
                return n_valid, invalid.size - n_valid, int((cloud & valid).sum())

            # column chunks write disjoint columns of the output buffers: they run on the worker threads
            for n_valid, n_nodata, n_masked in self._map(chunk, list(range(0, width, step))):
                self.valid_px += n_valid
                self.nodata_px += n_nodata
                self.masked_px += n_masked
            for w in writers.values():
                w.wrote(row, n)
            row += n
        self.acc.advance(upto_row)
        self._memory.after_strip()
        self.timings["write"] += time.perf_counter() - t0

    # -- the loop --------------------------------------------------------------------------------

    def run(self, writers: dict[str, RasterWriter]) -> None:
        """Restore the whole scene into ``writers`` (``output``, optionally ``mask``, ``change``, ``uncertainty``)."""
        import torch

        self.batches.prepare_model()
        cpu = self.device.type == "cpu"
        # this rank's cores, not the machine's: under torchrun the ranks of a node share them
        workers = min(self.tuning.max_workers, torch.get_num_threads() if cpu else rank_cpus())
        if workers > 1:
            self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mmcanet-tiles")
        try:
            self._run(writers)
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
            self.timings["model"] = self.batches.seconds
            self.timings["read_background"] = self.reader.seconds_background

    def _run(self, writers: dict[str, RasterWriter]) -> None:
        plan, reader, rep = self.plan, self.reader, self.rep
        n_rows = len(plan.row_offsets)
        done = 0
        rep.progress(0.0)
        # a background reader pays off when the model runs on a GPU (the CPU is idle meanwhile); on the
        # CPU torch already uses every core, and measured wall times did not improve (docs/ENGINE.md)
        prefetch = n_rows > 1 and (self.device.type != "cpu" or self.tuning.prefetch_on_cpu)
        strips = (reader.new_strip(), reader.new_strip()) if prefetch else (reader.new_strip(),)
        t0 = time.perf_counter()
        strip = strips[0]
        reader.fill(strip, plan.row_offsets[0], None)
        self.timings["read"] += time.perf_counter() - t0
        for r in range(n_rows):
            rep.check_canceled(_CANCELLED)
            pending: Prefetch | None = None
            if r > 0 and not prefetch:  # one buffer: shift the shared rows up, read the rest now
                t0 = time.perf_counter()
                reader.fill(strip, plan.row_offsets[r], strip)
                self.timings["read"] += time.perf_counter() - t0
            if prefetch and r + 1 < n_rows:
                pending = reader.prefetch(strips[(r + 1) % 2], plan.row_offsets[r + 1], strip)
            try:
                row_tiles = plan.tile_row(r)
                start = 0
                while start < len(row_tiles):
                    rep.check_canceled(_CANCELLED)
                    batch = row_tiles[start : start + self.batches.batch_size]
                    self._run_tiles(batch, strip)
                    start += len(batch)
                    done += len(batch)
                    rep.progress(min(0.999, done / plan.n_tiles))
                self._composite(strip, plan.final_row(r), writers)
            finally:
                if pending is not None:
                    t0 = time.perf_counter()
                    pending.join()
                    self.timings["read"] += time.perf_counter() - t0  # waiting for the prefetch
            if pending is not None:
                strip = pending.result()
