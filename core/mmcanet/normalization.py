"""Conversion between physical units (S2 DN, S1 dB) and the 0-1 range the models work in."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .bands import S2_DN_SCALE


@dataclass(frozen=True)
class Normalization:
    """How raw values map to model inputs; stored in every model card.

    Args:
        s2_max_dn: S2 digital numbers are clipped to [0, s2_max_dn] and divided by it (DN = reflectance x 10000).
        s1_db_ranges: per S1 band (VV, VH), the dB interval clipped and mapped linearly onto [0, 1].
    """

    s2_max_dn: float = S2_DN_SCALE
    s1_db_ranges: tuple[tuple[float, float], ...] = field(default=((-25.0, 0.0), (-32.5, 0.0)))

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["s2_units"] = "DN (TOA reflectance x 10000)"
        d["s1_units"] = "dB"
        return d

    @classmethod
    def from_dict(cls, d: object) -> Normalization:
        """Parse a model card's ``normalization`` block, checking types and ranges.

        Raises:
            ValueError: naming the key and what it must be (an unusable block would give NaN or
                infinite model inputs, e.g. a zero-width dB range).
        """
        if not isinstance(d, dict):
            raise ValueError(f"normalization must be an object, got {d!r}")
        max_dn = d.get("s2_max_dn", S2_DN_SCALE)
        if isinstance(max_dn, bool) or not isinstance(max_dn, (int, float)) or not np.isfinite(max_dn) or max_dn <= 0:
            raise ValueError(f"normalization.s2_max_dn must be a positive number, got {max_dn!r}")
        ranges = d.get("s1_db_ranges", ((-25.0, 0.0), (-32.5, 0.0)))
        if not isinstance(ranges, (list, tuple)) or not ranges:
            raise ValueError(f"normalization.s1_db_ranges must be a list of [low, high] dB pairs, got {ranges!r}")
        parsed = []
        for r in ranges:
            ok = isinstance(r, (list, tuple)) and len(r) == 2 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in r)
            if not ok or not r[0] < r[1]:
                raise ValueError(f"normalization.s1_db_ranges: each entry must be [low, high] dB with low < high, got {r!r}")
            parsed.append((float(r[0]), float(r[1])))
        return cls(s2_max_dn=float(max_dn), s1_db_ranges=tuple(parsed))

    def s2_to_unit(self, dn: np.ndarray) -> np.ndarray:
        """S2 DN array (bands, H, W), any dtype -> float32 in [0, 1]; NaN becomes 0."""
        x = np.nan_to_num(dn.astype(np.float32, copy=False), nan=0.0, posinf=self.s2_max_dn, neginf=0.0)
        return np.clip(x, 0.0, self.s2_max_dn) / np.float32(self.s2_max_dn)

    def unit_to_s2(self, x: np.ndarray) -> np.ndarray:
        """Model output in [0, 1] (bands, H, W) -> float32 DN (not rounded)."""
        return np.clip(x, 0.0, 1.0).astype(np.float32) * np.float32(self.s2_max_dn)

    def s1_to_unit(self, db: np.ndarray) -> np.ndarray:
        """S1 backscatter in dB (2, H, W) -> float32 in [0, 1]; NaN becomes 0 (the lower bound)."""
        out = np.empty(db.shape, dtype=np.float32)
        for i in range(db.shape[0]):
            lo, hi = self.s1_db_ranges[min(i, len(self.s1_db_ranges) - 1)]
            band = np.nan_to_num(db[i].astype(np.float32, copy=False), nan=lo, posinf=hi, neginf=lo)
            out[i] = (np.clip(band, lo, hi) - lo) / (hi - lo)
        return out
