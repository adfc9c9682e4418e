"""mmcanet:evaluate_model: measure a model on a dataset with reference images (PSNR, SSIM, SAM, ...)."""

from __future__ import annotations

import csv
import html
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingOutputFile,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
)

from .base import (
    DEVICES,
    FILE,
    FOLDER,
    INTEGER,
    MODEL_FILTER,
    MMCANetAlgorithm,
    advanced,
    core_callbacks,
    core_errors,
    device_parameter,
    tr,
)
from .remove_clouds import bundled_model


def metrics_html(csv_path: Path, title: str) -> str:
    """A self-contained HTML page with the metrics CSV as a table (for Processing's results viewer)."""
    with open(csv_path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    head, body = (rows[0], rows[1:]) if rows else ([], [])
    cells = "".join(f"<th>{html.escape(c)}</th>" for c in head)
    lines = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body)
    return (f"<html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>"
            f"<h2>{html.escape(title)}</h2><table border='1' cellspacing='0' cellpadding='3'>"
            f"<tr>{cells}</tr>{lines}</table><p>{html.escape(str(csv_path))}</p></body></html>")


class EvaluateModelAlgorithm(MMCANetAlgorithm):
    """Parameters -> mmcanet.evaluation.evaluate -> metrics.csv, report.md, and an HTML table."""

    MODEL = "MODEL"
    DATA = "DATA"
    DEVICE = "DEVICE"
    LIMIT = "LIMIT"
    OUTPUT_FOLDER = "OUTPUT_FOLDER"
    OUTPUT_HTML = "OUTPUT_HTML"
    METRICS = "METRICS"
    REPORT = "REPORT"

    NAME = "evaluate_model"
    DISPLAY_NAME = "Evaluate cloud-removal model"
    GROUP = "Training and evaluation"
    GROUP_ID = "training"
    HELP = (
        "Restores every cloudy image of a dataset folder with a model and compares the result with the "
        "cloud-free reference: PSNR, SSIM, SAM, MAE and RMSE per image and on average.\n\n"
        "Model file: a .safetensors model; empty = the bundled model.\n"
        "Dataset folder: SEN12MS-CR triplets ({id}_s1.tif, {id}_s2_cloudy.tif, "
        "{id}_s2_cloudfree.tif) or the other layouts 'Train cloud-removal model' accepts. Use images the "
        "model was not trained on.\n"
        "Limit (advanced): evaluate only the first N images (0 = all).\n\n"
        "Outputs: a folder with metrics.csv (one row per image) and report.md, and an HTML page with the "
        "table, shown in the Results Viewer."
    )

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802, D102
        self.addParameter(QgsProcessingParameterFile(
            self.MODEL, tr("Model file (empty: bundled model)"), behavior=FILE, fileFilter=MODEL_FILTER,
            defaultValue=bundled_model(), optional=True))
        self.addParameter(QgsProcessingParameterFile(self.DATA, tr("Dataset folder"), behavior=FOLDER))
        self.addParameter(device_parameter(self.DEVICE, tr("Device")))
        self.addParameter(advanced(QgsProcessingParameterNumber(
            self.LIMIT, tr("Evaluate at most this many images (0: all)"), type=INTEGER, defaultValue=0,
            minValue=0)))
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT_FOLDER, tr("Evaluation folder")))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_HTML, tr("Metrics table (HTML)"), tr("HTML files (*.html)"), optional=True))
        self.addOutput(QgsProcessingOutputFile(self.METRICS, tr("Metrics (CSV)")))
        self.addOutput(QgsProcessingOutputFile(self.REPORT, tr("Report (Markdown)")))

    def processAlgorithm(  # noqa: N802, D102
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict[str, Any]:
        model = self.parameterAsFile(parameters, self.MODEL, context) or None
        data = self.parameterAsFile(parameters, self.DATA, context)
        out_dir = self.parameterAsString(parameters, self.OUTPUT_FOLDER, context)
        limit = self.parameterAsInt(parameters, self.LIMIT, context) or None
        device = DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)]
        callbacks = core_callbacks(feedback)
        with core_errors():
            from mmcanet.devices import resolve_device
            from mmcanet.evaluation import evaluate

            result = evaluate(model, data, out_dir, device=str(resolve_device(device, callbacks["log"])),
                              limit=limit, progress=callbacks["progress"], is_canceled=callbacks["is_canceled"])
        metrics = Path(result.metrics_csv)
        results = {self.OUTPUT_FOLDER: out_dir, self.METRICS: str(metrics), self.REPORT: str(result.report_md)}
        html_path = self.output_path(parameters, self.OUTPUT_HTML, context)
        if html_path and metrics.is_file():
            Path(html_path).write_text(metrics_html(metrics, tr("MMCANet evaluation")), encoding="utf-8")
            results[self.OUTPUT_HTML] = html_path
        return results
