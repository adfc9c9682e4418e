"""Band names, orders and value conventions of Sentinel-1 and Sentinel-2 products as the models expect them.

The one place for: the S2 band order (Level-1C / Level-2A), the DN scale (reflectance x 10000), the
value filled into the cirrus band B10 that Level-2A products lack, and the SAR polarisation order.
Importable without numpy, torch or GDAL (QGIS reads it at start-up).
"""

from __future__ import annotations

from collections.abc import Sequence

S1_BANDS: tuple[str, ...] = ("VV", "VH")
"""Sentinel-1 GRD polarisations, in model order; values in dB (or linear power, converted on read)."""

S2_BANDS_L1C: tuple[str, ...] = (
    "B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12",
)
"""Sentinel-2 Level-1C bands in SEN12MS-CR order (13 bands, DN = TOA reflectance x 10000)."""

S2_BANDS_L2A: tuple[str, ...] = tuple(b for b in S2_BANDS_L1C if b != "B10")
"""Sentinel-2 Level-2A bands (12; the cirrus band B10 is not delivered at Level-2A)."""

B10_INDEX = S2_BANDS_L1C.index("B10")

S2_DN_SCALE: float = 10000.0
"""Sentinel-2 digital numbers per unit of reflectance: DN = reflectance x 10000 (ESA L1C / L2A products)."""

B10_FILL_DN: float = 13.0
"""Value (DN) put into the missing cirrus band B10 of Level-2A inputs, by the engine and the training
readers alike: the median B10 of the 61 cloud-free L1C patches in ../shared/data (clear-sky cirrus
reflectance ~ 0.0013)."""
S2_RESOLUTION_M: dict[str, int] = {
    "B1": 60, "B2": 10, "B3": 10, "B4": 10, "B5": 20, "B6": 20, "B7": 20, "B8": 10, "B8A": 20,
    "B9": 60, "B10": 60, "B11": 20, "B12": 20,
}
"""Native ground sampling distance (m) of each Sentinel-2 band; SEN12MS-CR and most stacks deliver all
bands on the 10 m grid, so a 20 m band arrives as 2 x 2 blocks and a 60 m band as 6 x 6 blocks."""

RGB_INDICES: tuple[int, int, int] = (3, 2, 1)
"""Indices of B4, B3, B2 (true colour) in the 13-band order."""


def normalise_band_name(name: str) -> str:
    """Map spellings such as 'B02', 'b8a', 'B8A (NIR narrow)' to the canonical 'B2' / 'B8A'."""
    token = name.strip().split()[0].upper() if name.strip() else ""
    if token.startswith("B") and len(token) > 1:
        rest = token[1:]
        if rest.endswith("A") and rest[:-1].isdigit():
            return f"B{int(rest[:-1])}A"
        if rest.isdigit():
            return f"B{int(rest)}"
    return token


def s2_file_bands(count: int, descriptions: Sequence[str], what: str) -> tuple[tuple[str, ...], bool]:
    """Canonical names of a Sentinel-2 raster's bands in file order, from its descriptions or band count.

    Args:
        count: number of bands in the file (13: Level-1C, 12: Level-2A without B10).
        descriptions: the file's band descriptions ("" when absent).
        what: how to name the raster in an error message, e.g. ``"optical image 'a.tif'"``.

    Returns:
        ``(names, named)``: the names in file order, and whether the descriptions named every band
        (False: the standard order for ``count`` is assumed).

    Raises:
        InputError: for any band count other than 12 or 13 (with a hint for RGB or SAR images).
    """
    from .errors import InputError

    if count not in (12, 13):
        hint = " (this looks like an RGB/RGBA image)" if count in (3, 4) else ""
        hint = " (this looks like a Sentinel-1 image: pass it as SAR)" if count == 2 else hint
        raise InputError(
            f"{what} has {count} band(s){hint}; expected a Sentinel-2 image with 13 bands "
            f"(Level-1C: {' '.join(S2_BANDS_L1C)}) or 12 bands (Level-2A, no B10)"
        )
    default = S2_BANDS_L1C if count == 13 else S2_BANDS_L2A
    names = tuple(normalise_band_name(d) for d in descriptions)
    if sorted(names) == sorted(default):
        return names, True
    return default, False
