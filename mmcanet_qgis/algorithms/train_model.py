"""mmcanet:train_model: train (or fine-tune, or resume) a cloud-removal model on a dataset folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
)

from .base import (
    ARCHITECTURES,
    DEVICES,
    DOUBLE,
    FOLDER,
    INTEGER,
    MODEL_FILTER,
    STRATEGIES,
    MMCANetAlgorithm,
    advanced,
    core_callbacks,
    core_errors,
    device_parameter,
    tr,
)


def _train_defaults() -> tuple[Any, tuple[str, ...]]:
    """TrainConfig() and DATA_KINDS from the core (a torch-free module), the single source of defaults.

    Without an importable core the provider still loads (with only the 'auto' layout); running then
    explains how to reinstall.
    """
    try:
        from mmcanet.config import DATA_KINDS, TrainConfig
    except ImportError:
        return None, ("auto",)
    return TrainConfig(), tuple(DATA_KINDS)


class TrainModelAlgorithm(MMCANetAlgorithm):
    """Parameters -> mmcanet.config.config_from_dict -> mmcanet.training.train."""

    DATA = "DATA"
    DATA_KIND = "DATA_KIND"
    VALIDATION = "VALIDATION"
    ARCH = "ARCH"
    STRATEGY = "STRATEGY"
    EPOCHS = "EPOCHS"
    BATCH_SIZE = "BATCH_SIZE"
    LEARNING_RATE = "LEARNING_RATE"
    DEVICE = "DEVICE"
    RESUME = "RESUME"
    OVERWRITE = "OVERWRITE"
    MAX_STEPS = "MAX_STEPS"
    CROP = "CROP"
    SEED = "SEED"
    RUN_DIR = "RUN_DIR"
    OUTPUT = "OUTPUT"

    NAME = "train_model"
    DISPLAY_NAME = "Train cloud-removal model"
    GROUP = "Training and evaluation"
    GROUP_ID = "training"
    HELP = (
        "Trains a cloud-removal network and writes it as a model file (.safetensors) that "
        "'Remove clouds' accepts.\n\n"
        "Training data: a folder in one of these layouts: SEN12MS-CR triplets "
        "({id}_s1.tif, {id}_s2_cloudy.tif, {id}_s2_cloudfree.tif, optional {id}_cloudmask.tif), "
        "cloudy/clear pairs without SAR ({id}_s2_cloudy.tif, {id}_s2_cloudfree.tif), the official "
        "SEN12MS-CR tree (ROIs*/...), or BigEarthNet-MM folders (clear images: clouds are simulated). "
        "'simulated' uses only the clear images of a folder and adds simulated clouds.\n"
        "Validation data (optional): a folder never trained on; its metrics go into the model card.\n"
        "Architecture / strategy: mmcanet (SAR + optical), mmcanet_optical (no SAR), dsen2cr "
        "(comparator); the progressive restoration strategy.\n"
        "Resume: continue from the checkpoint in the run folder (cancelling keeps one). A run folder that "
        "holds another run is refused unless you resume it or tick 'Start over' (which replaces its "
        "checkpoint and metrics); two trainings cannot share a run folder.\n\n"
        "Progress is reported per optimiser step; Cancel stops between steps and keeps a checkpoint. "
        "The run folder holds checkpoints, metrics.csv and training curves; by default it is the "
        "output file's name with '_run' appended. Training on a CPU is slow: use a GPU (Device: cuda) "
        "for more than a few hundred steps."
    )

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802, D102
        defaults, kinds = _train_defaults()

        def default(field: str, fallback: Any) -> Any:
            return getattr(defaults, field) if defaults is not None else fallback

        self.addParameter(QgsProcessingParameterFile(self.DATA, tr("Training data folder"), behavior=FOLDER))
        self.addParameter(QgsProcessingParameterEnum(
            self.DATA_KIND, tr("Data layout"), options=list(kinds), defaultValue=0))
        self.addParameter(QgsProcessingParameterFile(
            self.VALIDATION, tr("Validation data folder"), behavior=FOLDER, optional=True))
        self.addParameter(QgsProcessingParameterEnum(
            self.ARCH, tr("Architecture"), options=list(ARCHITECTURES),
            defaultValue=ARCHITECTURES.index(default("arch", ARCHITECTURES[0]))))
        self.addParameter(QgsProcessingParameterEnum(
            self.STRATEGY, tr("Restoration strategy"), options=list(STRATEGIES),
            defaultValue=STRATEGIES.index(default("strategy", STRATEGIES[0]))))
        self.addParameter(QgsProcessingParameterNumber(
            self.EPOCHS, tr("Epochs"), type=INTEGER, defaultValue=default("epochs", 10), minValue=1))
        self.addParameter(QgsProcessingParameterNumber(
            self.BATCH_SIZE, tr("Batch size"), type=INTEGER, defaultValue=default("batch_size", 4), minValue=1))
        self.addParameter(QgsProcessingParameterNumber(
            self.LEARNING_RATE, tr("Learning rate"), type=DOUBLE, defaultValue=default("lr", 1e-3),
            minValue=0.0))
        self.addParameter(device_parameter(self.DEVICE, tr("Device"), default("device", "auto")))
        self.addParameter(QgsProcessingParameterBoolean(
            self.RESUME, tr("Resume from the run folder's checkpoint"), defaultValue=False))
        self.addParameter(QgsProcessingParameterBoolean(
            self.OVERWRITE, tr("Start over: replace a previous run in the run folder"), defaultValue=False))
        self.addParameter(advanced(QgsProcessingParameterNumber(
            self.MAX_STEPS, tr("Stop after this many steps (0: no limit)"), type=INTEGER,
            defaultValue=default("max_steps", 0), minValue=0)))
        self.addParameter(advanced(QgsProcessingParameterNumber(
            self.CROP, tr("Training crop size in pixels (multiple of 8)"), type=INTEGER,
            defaultValue=default("crop", 128), minValue=16, maxValue=1024)))
        self.addParameter(advanced(QgsProcessingParameterNumber(
            self.SEED, tr("Random seed"), type=INTEGER, defaultValue=default("seed", 0), minValue=0)))
        self.addParameter(advanced(QgsProcessingParameterFolderDestination(
            self.RUN_DIR, tr("Run folder (checkpoints, metrics.csv)"), optional=True, createByDefault=False)))
        self.addParameter(QgsProcessingParameterFileDestination(self.OUTPUT, tr("Model file"), MODEL_FILTER))

    def train_settings(self, parameters: dict[str, Any], context: QgsProcessingContext) -> dict[str, Any]:
        """The training configuration (mmcanet.config.config_from_dict input) for these parameters."""
        _, kinds = _train_defaults()
        kind = kinds[self.parameterAsEnum(parameters, self.DATA_KIND, context)]
        output = self.output_path(parameters, self.OUTPUT, context) or ""
        run_dir = self.parameterAsString(parameters, self.RUN_DIR, context) or \
            str(Path(output).with_suffix("")) + "_run"
        validation = self.parameterAsFile(parameters, self.VALIDATION, context)
        return {
            "data": [{"path": self.parameterAsFile(parameters, self.DATA, context), "kind": kind}],
            "val": [{"path": validation, "kind": "auto"}] if validation else [],
            "arch": ARCHITECTURES[self.parameterAsEnum(parameters, self.ARCH, context)],
            "strategy": STRATEGIES[self.parameterAsEnum(parameters, self.STRATEGY, context)],
            "epochs": self.parameterAsInt(parameters, self.EPOCHS, context),
            "batch_size": self.parameterAsInt(parameters, self.BATCH_SIZE, context),
            "lr": self.parameterAsDouble(parameters, self.LEARNING_RATE, context),
            "device": DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)],
            "resume": self.parameterAsBool(parameters, self.RESUME, context),
            "overwrite": self.parameterAsBool(parameters, self.OVERWRITE, context),
            "max_steps": self.parameterAsInt(parameters, self.MAX_STEPS, context),
            "crop": self.parameterAsInt(parameters, self.CROP, context),
            "seed": self.parameterAsInt(parameters, self.SEED, context),
            "run_dir": run_dir,
            "output": output,
            "name": Path(output).stem or "mmcanet",
            # QGIS runs Qt and GDAL threads: a worker forked from it could inherit a lock held by one of
            # them and hang, so samples load in the training thread (the samples are the same)
            "workers": 0,
        }

    def processAlgorithm(  # noqa: N802, D102
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict[str, Any]:
        settings = self.train_settings(parameters, context)
        with core_errors():
            from mmcanet.config import config_from_dict
            from mmcanet.training import train

            config = config_from_dict(settings, source=tr("train_model parameters"))
            result = train(config, **core_callbacks(feedback))
        return {self.OUTPUT: str(result.model_path), self.RUN_DIR: str(result.run_dir)}
