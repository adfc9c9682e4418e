"""MMCANet: SAR-optical (Sentinel-1 + Sentinel-2) cloud removal, core library (no QGIS, no Qt)."""

__version__ = "0.3.3"
