"""Band names and orders of Sentinel-1 and Sentinel-2 products as the models expect them."""

S1_BANDS: tuple[str, ...] = ("VV", "VH")
"""Sentinel-1 GRD polarisations, in model order; values in dB (or linear power, converted on read)."""

S2_BANDS_L1C: tuple[str, ...] = (
    "B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12",
)
"""Sentinel-2 Level-1C bands in SEN12MS-CR order (13 bands, DN = TOA reflectance x 10000)."""

S2_BANDS_L2A: tuple[str, ...] = tuple(b for b in S2_BANDS_L1C if b != "B10")
"""Sentinel-2 Level-2A bands (12; the cirrus band B10 is not delivered at Level-2A)."""

B10_INDEX = S2_BANDS_L1C.index("B10")
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
