"""How fast QGIS draws a zoomed-out whole output, with and without the overviews the writer builds.

Writes one synthetic 13-band uint16 Sentinel-2-like scene (UTM 31N, 10 m pixels; smooth fields plus
noise so it compresses like land cover, not like a constant) three times through
:class:`mmcanet.raster_write.RasterWriter`: without overviews, with internal overviews (the default), and
as a Cloud-Optimised GeoTIFF. For each it reports the write time and the file size, then renders the
whole extent in real QGIS (offscreen ``QgsMapRendererSequentialJob``, true colour B4/B3/B2 with a fixed
stretch, a ``--canvas`` px wide map like a zoomed-out canvas). Every render opens the layer afresh, so
GDAL's block cache holds none of its blocks (the file itself is in the OS page cache: it was just
written), the way a redraw at a new zoom or a newly opened project reads; the median of ``--renders``
is reported, plus the first. Compare figures within one run: the machines are shared.

  QT_QPA_PLATFORM=offscreen PYTHONPATH=core .venv/bin/python bench/bench_render.py --size 10980
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from osgeo import gdal, osr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "core"))

from mmcanet.raster_write import RasterWriter, overview_levels  # noqa: E402

BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")
ORIGIN = (600000.0, 5000000.0)
ROWS = 512


def _strip(row0: int, rows: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """``(13, rows, width)`` uint16 DN: fields ~2 km across, finer texture, sensor-like noise."""
    y = (row0 + np.arange(rows, dtype=np.float32))[:, None]
    x = np.arange(width, dtype=np.float32)[None, :]
    field = np.sin(x / 190.0 + 0.7 * np.sin(y / 310.0)) + np.cos(y / 230.0 - 0.5 * np.sin(x / 410.0))
    texture = np.sin(x / 13.0) * np.cos(y / 17.0)
    out = np.empty((len(BANDS), rows, width), np.uint16)
    for b in range(len(BANDS)):
        base = 1200 + 350 * b % 2000
        noise = rng.normal(0, 40, (rows, width)).astype(np.float32)
        out[b] = np.clip(base + 600 * field + 150 * texture + noise, 1, 10000).astype(np.uint16)
    return out


def write_scene(path: Path, size: int, **kw: bool) -> float:
    """Write the scene through the project's writer; returns the seconds spent (generation excluded)."""
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32631)
    rng = np.random.default_rng(0)
    spent = 0.0
    t0 = time.perf_counter()
    w = RasterWriter(path, width=size, height=size, count=len(BANDS), dtype=np.uint16,
                     geotransform=(ORIGIN[0], 10.0, 0.0, ORIGIN[1], 0.0, -10.0), crs_wkt=srs.ExportToWkt(),
                     nodata=0, descriptions=BANDS, tags={"MMCANET_BENCH": "bench_render"}, **kw)
    spent += time.perf_counter() - t0
    with w:
        for row in range(0, size, ROWS):
            data = _strip(row, min(ROWS, size - row), size, rng)
            t0 = time.perf_counter()
            w.write_rows(row, data)
            spent += time.perf_counter() - t0
        t0 = time.perf_counter()
        w.commit()
        spent += time.perf_counter() - t0
    return spent


def render_seconds(path: Path, canvas: int, renders: int) -> tuple[float, float]:
    """(first, median) seconds to render the whole extent of ``path`` at ``canvas`` px wide."""
    from qgis.core import (
        QgsContrastEnhancement,
        QgsMapRendererSequentialJob,
        QgsMapSettings,
        QgsMultiBandColorRenderer,
        QgsRasterLayer,
    )
    from qgis.PyQt.QtCore import QSize

    times = []
    for _ in range(renders):
        layer = QgsRasterLayer(str(path), "bench")
        if not layer.isValid():
            raise SystemExit(f"QGIS cannot open {path}")
        renderer = QgsMultiBandColorRenderer(layer.dataProvider(), 4, 3, 2)
        for band, setter in ((4, renderer.setRedContrastEnhancement), (3, renderer.setGreenContrastEnhancement),
                             (2, renderer.setBlueContrastEnhancement)):
            ce = QgsContrastEnhancement(layer.dataProvider().dataType(band))
            ce.setContrastEnhancementAlgorithm(QgsContrastEnhancement.StretchToMinimumMaximum)
            ce.setMinimumValue(0)
            ce.setMaximumValue(3000)
            setter(ce)
        layer.setRenderer(renderer)
        settings = QgsMapSettings()
        settings.setLayers([layer])
        settings.setDestinationCrs(layer.crs())
        settings.setOutputSize(QSize(canvas, canvas * 5 // 8))
        settings.setExtent(layer.extent())
        job = QgsMapRendererSequentialJob(settings)
        t0 = time.perf_counter()
        job.start()
        job.waitForFinished()
        times.append(time.perf_counter() - t0)
        image = job.renderedImage()
        if image.isNull() or image.pixelColor(canvas // 2, canvas * 5 // 16).value() == 0:
            raise SystemExit(f"the render of {path} came out empty")
        del job, layer
    return times[0], statistics.median(times)


def main() -> None:
    """Write the three variants, render each, print a Markdown table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=10980, help="scene edge in px (default: a whole Sentinel-2 tile)")
    ap.add_argument("--canvas", type=int, default=1600, help="map width in px (height 5/8 of it)")
    ap.add_argument("--renders", type=int, default=5, help="renders per variant (median reported)")
    ap.add_argument("--folder", type=Path, help="where to write (default: a temporary folder, deleted after)")
    args = ap.parse_args()

    from qgis.core import QgsApplication

    app = QgsApplication([], False)
    app.initQgis()
    folder_ctx = tempfile.TemporaryDirectory() if args.folder is None else None
    folder = Path(folder_ctx.name) if folder_ctx else args.folder
    folder.mkdir(parents=True, exist_ok=True)
    variants = {"no overviews": {"overviews": False}, "overviews (default)": {"overviews": True},
                "COG (--cog)": {"overviews": True, "cog": True}}
    rows = []
    for name, kw in variants.items():
        path = folder / f"render_{name.split()[0].lower()}.tif"
        written = write_scene(path, args.size, **kw)
        first, median = render_seconds(path, args.canvas, args.renders)
        rows.append((name, written, path.stat().st_size / 2**20, first, median))
        print(f"{name}: write {written:.1f} s, {rows[-1][2]:.0f} MiB, render first {first:.2f} s, "
              f"median {median:.2f} s", file=sys.stderr, flush=True)
    print(f"\n{args.size}x{args.size} px, 13 bands uint16, overview levels "
          f"{overview_levels(args.size, args.size) or 'none'}; render {args.canvas}x{args.canvas * 5 // 8} px "
          f"true colour, {args.renders} renders each; GDAL {gdal.__version__}, {os.cpu_count()} CPUs\n")
    print("| output | write (s) | size (MiB) | first render (s) | median render (s) |")
    print("|---|---|---|---|---|")
    for name, written, mib, first, median in rows:
        print(f"| {name} | {written:.1f} | {mib:.0f} | {first:.2f} | {median:.2f} |")
    app.exitQgis()
    if folder_ctx:
        folder_ctx.cleanup()


if __name__ == "__main__":
    main()
