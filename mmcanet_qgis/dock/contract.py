"""Everything the dock assumes about the `mmcanet:remove_clouds` algorithm, in one place.

The dock never duplicates defaults: value ranges, defaults, strategy and device names are read from the
algorithm's own parameter definitions (`AlgorithmSpec.from_algorithm`) and the parameter keys are the
algorithm's class constants. Only the accepted band counts and the "model default" convention of the
tiling parameters are stated here.
"""

from __future__ import annotations

from dataclasses import dataclass

from qgis.core import (
    QgsApplication,
    QgsProcessingAlgorithm,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterNumber,
)

from ..algorithms.base import OPTIONAL
from ..algorithms.remove_clouds import RemoveCloudsAlgorithm as _Algorithm
from ..algorithms.remove_clouds import bundled_model

ALGORITHM_ID = "mmcanet:remove_clouds"

# Parameter keys: the algorithm's own class constants.
SAR = _Algorithm.SAR
OPTICAL = _Algorithm.OPTICAL
CLOUD_MASK = _Algorithm.CLOUD_MASK
MODEL = _Algorithm.MODEL
STRATEGY = _Algorithm.STRATEGY
DEVICE = _Algorithm.DEVICE
KEEP_CLEAR = _Algorithm.KEEP_CLEAR
TILE_SIZE = _Algorithm.TILE_SIZE
OVERLAP = _Algorithm.OVERLAP
BATCH_SIZE = _Algorithm.BATCH_SIZE
OUTPUT = _Algorithm.OUTPUT
MASK_OUTPUT = _Algorithm.MASK_OUTPUT
UNCERTAINTY_OUTPUT = _Algorithm.UNCERTAINTY_OUTPUT
EXTENT = _Algorithm.EXTENT
CLOUD_FRACTION = _Algorithm.CLOUD_FRACTION  # a result (0-1 or None), not a parameter

SAR_BAND_COUNTS: tuple[int, ...] = (2,)
"""Sentinel-1 input: VV and VH."""
OPTICAL_BAND_COUNTS: tuple[int, ...] = (13, 12)
"""Sentinel-2 input: 13 bands at Level-1C, 12 at Level-2A (no B10)."""
MASK_BAND_COUNTS: tuple[int, ...] = (1,)

# The algorithm's convention: an optional TILE_SIZE / OVERLAP left unset (None) means "the model card's
# value". A spin box cannot be empty, so the dock shows that as one below the parameter's minimum with
# the text "Model default" (as QGIS's own dialog shows "Not set"), and sends None for it.


@dataclass(frozen=True)
class IntRange:
    """Default and bounds of an integer parameter as a spin box holds them.

    For an optional parameter without a default, `minimum` is one below the parameter's own minimum and
    stands for "not set" (the model card's value); `default` is then that value.
    """

    default: int
    minimum: int
    maximum: int
    optional: bool = False

    def means_model_default(self, value: int) -> bool:
        """True when `value` stands for "not set: take it from the model card"."""
        return self.optional and value == self.minimum

    def parameter_value(self, value: int) -> int | None:
        """What to pass to the algorithm for the spin box value (None: not set)."""
        return None if self.means_model_default(value) else value


@dataclass(frozen=True)
class AlgorithmSpec:
    """The choices the algorithm offers and its defaults, as the dock shows them.

    Args:
        strategies: STRATEGY option labels; option 0 is "model default".
        devices: DEVICE option labels (auto, cpu, cuda).
        default_model: path of the bundled model file (used when MODEL is empty), "" if none.
    """

    strategies: tuple[str, ...]
    strategy_default: int
    devices: tuple[str, ...]
    device_default: int
    keep_clear_default: bool
    default_model: str
    tile_size: IntRange
    overlap: IntRange
    batch_size: IntRange

    @classmethod
    def from_algorithm(cls, alg: QgsProcessingAlgorithm) -> AlgorithmSpec:
        """Read the spec from the algorithm's parameter definitions (the single source of defaults)."""

        def definition(name: str) -> QgsProcessingParameterDefinition:
            param = alg.parameterDefinition(name)
            if param is None:
                raise LookupError(f"{alg.id()} has no parameter {name}")
            return param

        def enum(name: str) -> tuple[tuple[str, ...], int]:
            param = definition(name)
            assert isinstance(param, QgsProcessingParameterEnum), name
            return tuple(param.options()), _as_int(param.defaultValue(), 0)

        def number(name: str) -> IntRange:
            param = definition(name)
            assert isinstance(param, QgsProcessingParameterNumber), name
            minimum = int(max(param.minimum(), -(1 << 30)))
            maximum = int(min(param.maximum(), 1 << 30))
            optional = bool(param.flags() & OPTIONAL) and param.defaultValue() is None
            if optional:
                return IntRange(minimum - 1, minimum - 1, maximum, optional=True)
            return IntRange(_as_int(param.defaultValue(), minimum), minimum, maximum)

        strategies, strategy_default = enum(STRATEGY)
        devices, device_default = enum(DEVICE)
        return cls(
            strategies=strategies,
            strategy_default=strategy_default,
            devices=devices,
            device_default=device_default,
            keep_clear_default=bool(definition(KEEP_CLEAR).defaultValue()),
            default_model=bundled_model() or "",
            tile_size=number(TILE_SIZE),
            overlap=number(OVERLAP),
            batch_size=number(BATCH_SIZE),
        )


def find_algorithm() -> QgsProcessingAlgorithm | None:
    """The registered mmcanet:remove_clouds algorithm, or None when its provider is not loaded."""
    return QgsApplication.processingRegistry().algorithmById(ALGORITHM_ID)


def _as_int(value: object, fallback: int) -> int:
    """Processing stores enum/number defaults as int, float or str; None means `fallback`."""
    if value is None or value == "":
        return fallback
    try:
        return int(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return fallback
