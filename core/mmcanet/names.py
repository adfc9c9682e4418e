"""Names users choose from, importable without torch (QGIS parameter lists, CLI choices)."""

STRATEGIES: tuple[str, ...] = ("single", "multistage", "iterative", "thin_to_thick", "outside_in")
"""Progressive restoration strategies (see docs/MODEL.md)."""

ARCHITECTURES: tuple[str, ...] = ("mmcanet", "mmcanet_optical", "dsen2cr")
"""Networks of the family: MMCANet, its optical-only ablation, the DSen2-CR-style comparator."""

CLOUD_DETECTORS: tuple[str, ...] = ("auto", "rules", "ukis", "s2cloudless")
"""Cloud / shadow detectors (see mmcanet.clouds.backends): auto = the best one installed."""
