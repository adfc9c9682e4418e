"""The dock's remembered choices, stored in QgsSettings under "mmcanet/dock/..." with typed reads."""

from __future__ import annotations

from dataclasses import dataclass, fields

from qgis.core import QgsSettings

from .contract import AlgorithmSpec

PREFIX = "mmcanet/dock/"


@dataclass
class DockChoices:
    """What the user chose last time, apart from layers (those come from the project).

    Strategy and device are kept by name, not index, so they survive a change of the option lists.
    `model_path` "" means the bundled model; `output_folder` is the folder of the last output file the
    user chose ("" until then), where automatically named outputs go from then on.
    """

    model_path: str = ""
    strategy: str = ""
    device: str = ""
    keep_clear: bool = False
    add_mask: bool = False
    add_error: bool = False
    area: str = "whole"
    tile_size: int = 0
    overlap: int = 0
    batch_size: int = 0
    advanced_collapsed: bool = True
    output_folder: str = ""

    @classmethod
    def defaults(cls, spec: AlgorithmSpec) -> DockChoices:
        """The algorithm's defaults (the single source shared with Processing)."""
        return cls(
            strategy=spec.strategies[spec.strategy_default] if spec.strategies else "",
            device=spec.devices[spec.device_default] if spec.devices else "",
            keep_clear=spec.keep_clear_default,
            tile_size=spec.tile_size.default,
            overlap=spec.overlap.default,
            batch_size=spec.batch_size.default,
        )


def load(spec: AlgorithmSpec, settings: QgsSettings | None = None) -> DockChoices:
    """Read the remembered choices; anything never saved falls back to the algorithm's defaults."""
    settings = settings or QgsSettings()
    defaults = DockChoices.defaults(spec)
    values = {}
    for f in fields(DockChoices):
        default = getattr(defaults, f.name)
        values[f.name] = settings.value(PREFIX + f.name, default, type=_TYPES[str(f.type)])
    choices = DockChoices(**values)
    if choices.strategy not in spec.strategies:
        choices.strategy = defaults.strategy
    if choices.device not in spec.devices:
        choices.device = defaults.device
    return choices


def save(choices: DockChoices, settings: QgsSettings | None = None) -> None:
    """Remember the choices for the next session."""
    settings = settings or QgsSettings()
    for f in fields(DockChoices):
        settings.setValue(PREFIX + f.name, getattr(choices, f.name))


def clear(settings: QgsSettings | None = None) -> None:
    """Forget every remembered choice (tests, "reset to defaults")."""
    settings = settings or QgsSettings()
    settings.remove(PREFIX.rstrip("/"))


_TYPES: dict[str, type] = {"str": str, "bool": bool, "int": int}
"""Field annotation -> the type QgsSettings converts a stored value to (never guessed from the default)."""
