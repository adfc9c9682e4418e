"""What every MMCANet Processing algorithm shares: tr(), input paths, feedback callables, core errors.

Algorithms stay thin: read parameters, call one core function with plain values and the callables from
``core_callbacks``, inside ``core_errors()`` which turns the core's errors (and a missing torch) into
``QgsProcessingException`` with a message a person can act on. Nothing here imports torch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# The choices known when the provider loads come from the core's torch-free names module
# (the package __init__ has already put the vendored core on sys.path).
from mmcanet.names import ARCHITECTURES, STRATEGIES  # noqa: F401 - re-exported
from mmcanet.options import DEVICE_CHOICES as DEVICES
from mmcanet.reporting import WARNING_PREFIX
from qgis.core import (
    Qgis,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
)
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QIcon

from .. import dependencies

MODEL_FILTER = "MMCANet model (*.safetensors)"


def _enum(scope: str, name: str, old_class: Any, old_name: str) -> Any:
    """``Qgis.<scope>.<name>`` (QGIS >= 3.36, the only spelling in QGIS 4), else ``old_class.<old_name>``."""
    new_scope = getattr(Qgis, scope, None)
    if new_scope is not None and hasattr(new_scope, name):
        return getattr(new_scope, name)
    return getattr(old_class, old_name)


ADVANCED = _enum("ProcessingParameterFlag", "Advanced", QgsProcessingParameterDefinition, "FlagAdvanced")
OPTIONAL = _enum("ProcessingParameterFlag", "Optional", QgsProcessingParameterDefinition, "FlagOptional")
INTEGER = _enum("ProcessingNumberParameterType", "Integer", QgsProcessingParameterNumber, "Integer")
DOUBLE = _enum("ProcessingNumberParameterType", "Double", QgsProcessingParameterNumber, "Double")
FOLDER = _enum("ProcessingFileParameterBehavior", "Folder", QgsProcessingParameterFile, "Folder")
FILE = _enum("ProcessingFileParameterBehavior", "File", QgsProcessingParameterFile, "File")

_DEPENDENCIES = frozenset({"torch", "safetensors", "tqdm"})
ICON_PATH = Path(__file__).resolve().parent.parent / "icons" / "mmcanet.svg"


def tr(text: str) -> str:
    """Translate a user-visible string in the plugin's context."""
    return QCoreApplication.translate("MMCANet", text)


def advanced(param: QgsProcessingParameterDefinition) -> QgsProcessingParameterDefinition:
    """Flag ``param`` as an expert option (shown under 'Advanced Parameters')."""
    param.setFlags(param.flags() | ADVANCED)
    return param


def missing_dependency_message(module: str) -> str:
    """What to do when ``module`` (torch, safetensors, tqdm) cannot be imported in QGIS's Python."""
    return tr(
        "{module} is not installed for QGIS's Python, and MMCANet needs it. Install PyTorch, safetensors "
        "and tqdm into the plugin's private folder with this command (CPU wheels; add --torch cuda for an "
        "NVIDIA GPU), then restart QGIS:\n{command}\nDetails: the plugin's documentation (docs/QGIS.md, 'Installing PyTorch')."
    ).format(module=module, command=dependencies.install_hint())


@contextmanager
def core_errors() -> Iterator[None]:
    """Turn errors of a core call into QgsProcessingException with a message a user can act on.

    MMCANetError (bad input, model file, cancelled) keeps the core's message, which names the input; a
    missing torch / safetensors / tqdm explains how to install it; a missing core library says to
    reinstall the plugin. Anything else is a bug and propagates with its traceback.
    """
    try:
        from mmcanet.errors import MMCANetError
    except ModuleNotFoundError as exc:
        raise QgsProcessingException(
            tr("The MMCANet core library (Python package 'mmcanet') cannot be imported ({exc}). Reinstall the "
               "plugin from its ZIP file, or install the package into QGIS's Python.").format(exc=exc)
        ) from exc
    try:
        yield
    except MMCANetError as exc:
        raise QgsProcessingException(str(exc)) from exc
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        if top in _DEPENDENCIES:
            raise QgsProcessingException(missing_dependency_message(top)) from exc
        raise


def core_callbacks(feedback: QgsProcessingFeedback | None) -> dict[str, Callable[..., Any]]:
    """``progress``, ``is_canceled`` and ``log`` keyword arguments of a core call, bound to ``feedback``."""
    fb = feedback or QgsProcessingFeedback()

    def log(message: str) -> None:
        # the core's warnings go to the warning channel: the Processing log and the dock mark them
        if message.startswith(WARNING_PREFIX):
            fb.pushWarning(message[len(WARNING_PREFIX):])
        else:
            fb.pushInfo(message)

    return {
        "progress": lambda fraction: fb.setProgress(100.0 * float(fraction)),
        "is_canceled": fb.isCanceled,
        "log": log,
    }


class MMCANetAlgorithm(QgsProcessingAlgorithm):
    """Base of the provider's algorithms: name/group plumbing, translation and raster inputs.

    A subclass declares what the Toolbox shows as class attributes (``NAME``: the id in
    ``mmcanet:NAME``; ``DISPLAY_NAME``, ``GROUP``, ``HELP``: English text, translated when shown;
    ``GROUP_ID``) and implements ``initAlgorithm`` and ``processAlgorithm``.
    """

    NAME = ""
    DISPLAY_NAME = ""
    GROUP = ""
    GROUP_ID = ""
    HELP = ""

    def tr(self, text: str) -> str:  # noqa: D102 - Processing API
        return tr(text)

    def name(self) -> str:  # noqa: D102
        return self.NAME

    def displayName(self) -> str:  # noqa: N802, D102
        return tr(self.DISPLAY_NAME)

    def group(self) -> str:  # noqa: D102
        return tr(self.GROUP)

    def groupId(self) -> str:  # noqa: N802, D102
        return self.GROUP_ID

    def shortHelpString(self) -> str:  # noqa: N802, D102
        return tr(self.HELP)

    def createInstance(self) -> QgsProcessingAlgorithm:  # noqa: N802, D102
        return type(self)()

    def icon(self) -> QIcon:  # noqa: D102
        return QIcon(str(ICON_PATH))

    def raster_path(
        self,
        parameters: dict[str, Any],
        name: str,
        context: QgsProcessingContext,
        optional: bool = False,
    ) -> str | None:
        """File (GDAL dataset name) behind the raster layer parameter ``name``.

        A value that names an existing file (and no layer of the project) goes to the core as it is: the
        core opens it with GDAL and says what is wrong with it. No QgsRasterLayer is created for it, so
        a run in a background task (the dock, the Toolbox) builds no layer outside the main thread,
        which crashed QGIS now and then. Layer ids, layer names and layer objects are looked up as
        Processing does.

        Raises QgsProcessingException when the layer cannot be loaded or is not read by GDAL (a WMS,
        a virtual raster of the raster calculator, ...): the core reads files with GDAL only.
        """
        value = parameters.get(name)
        if isinstance(value, str) and os.path.isfile(value) and not _names_a_layer(value, context):
            return value
        layer = self.parameterAsRasterLayer(parameters, name, context)
        if layer is None:
            if optional and not parameters.get(name):
                return None
            raise QgsProcessingException(self.invalidRasterError(parameters, name))
        if layer.providerType() != "gdal":
            raise QgsProcessingException(
                self.tr("{param}: layer '{layer}' comes from the '{provider}' data provider; MMCANet reads "
                        "raster files through GDAL only. Save it as a GeoTIFF first (right-click the layer, "
                        "Export > Save As...).").format(
                    param=self.parameterDefinition(name).description(), layer=layer.name(),
                    provider=layer.providerType())
            )
        return layer.source()

    def area_of_interest(self, parameters: dict[str, Any], name: str, context: QgsProcessingContext) -> dict[str, Any]:
        """``{"extent": (xmin, ymin, xmax, ymax), "extent_crs": CRS or None}`` of the extent parameter
        ``name``; empty when it is not set (the whole image).

        The extent goes to the core in the CRS it was given in (None: the image's own), and the core
        transforms it onto the image grid, the same way for QGIS, qgis_process and the CLI.
        """
        value = parameters.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            return {}
        rect = self.parameterAsExtent(parameters, name, context)
        if rect.isNull() or rect.isEmpty():
            raise QgsProcessingException(tr("Area of interest '{value}': empty or not an extent "
                                            "(expected xmin,xmax,ymin,ymax [CRS])").format(value=value))
        crs = self.parameterAsExtentCrs(parameters, name, context)
        extent_crs = (crs.authid() or crs.toWkt()) if crs.isValid() else None
        return {"extent": (rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum()),
                "extent_crs": extent_crs}

    def output_path(self, parameters: dict[str, Any], name: str, context: QgsProcessingContext) -> str | None:
        """Destination file of the output parameter ``name``; None when an optional output is skipped."""
        if isinstance(self.parameterDefinition(name), QgsProcessingParameterRasterDestination):
            path = self.parameterAsOutputLayer(parameters, name, context)
        else:
            path = self.parameterAsFileOutput(parameters, name, context)
        return path or None


def device_parameter(name: str, description: str, default: str = DEVICES[0]) -> QgsProcessingParameterEnum:
    """DEVICE: auto (CUDA when available, else CPU), cpu or cuda."""
    return QgsProcessingParameterEnum(name, description, options=list(DEVICES),
                                      defaultValue=DEVICES.index(default) if default in DEVICES else 0)


def _names_a_layer(value: str, context: QgsProcessingContext) -> bool:
    """Whether ``value`` is the id or the name of a layer of the context's project (which wins over a file)."""
    project = context.project()
    return project is not None and (project.mapLayer(value) is not None or bool(project.mapLayersByName(value)))
