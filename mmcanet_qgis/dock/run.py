"""Run mmcanet:remove_clouds in QGIS's task manager and report progress, log lines and the outcome."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from qgis.core import (
    QgsApplication,
    QgsProcessingAlgorithm,
    QgsProcessingAlgRunnerTask,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProject,
)
from qgis.PyQt.QtCore import QElapsedTimer, QObject, pyqtSignal

SUCCEEDED, FAILED, CANCELLED = "succeeded", "failed", "cancelled"

_ACTIVE: set[RestoreRun] = set()
"""Runs in progress. The task manager holds the task, which points at the run's context and feedback:
they must live until the task ends, even when the dock that started it is deleted (plugin unloaded)."""


def active_runs() -> int:
    """How many restorations are in progress (any dock)."""
    return len(_ACTIVE)


@dataclass
class RunOutcome:
    """How a run ended: `state` is SUCCEEDED, FAILED or CANCELLED; `error` is plain words for FAILED."""

    state: str
    results: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    elapsed_s: float = 0.0


class _Feedback(QgsProcessingFeedback):
    """Processing feedback that also emits each message as a signal (queued to the GUI thread)."""

    message = pyqtSignal(str, str)  # level ("info", "warning", "error", "cancelled"), text

    def __init__(self) -> None:
        super().__init__()
        self.errors: list[str] = []

    def setProgressText(self, text: str) -> None:  # noqa: N802 - Qt override
        super().setProgressText(text)
        self.message.emit("info", text)

    def pushInfo(self, info: str) -> None:  # noqa: N802
        super().pushInfo(info)
        self.message.emit("info", info)

    def pushWarning(self, warning: str) -> None:  # noqa: N802
        super().pushWarning(warning)
        self.message.emit("warning", warning)

    def reportError(self, error: str, fatalError: bool = False) -> None:  # noqa: N802, N803
        super().reportError(error, fatalError)
        if self.isCanceled():  # the algorithm stopping because it was asked to: not an error
            self.message.emit("cancelled", error)
            return
        self.errors.append(error)
        self.message.emit("error", error)


class RestoreRun(QObject):
    """One background execution of the algorithm with the dock's parameters.

    Files listed in `created_outputs` (outputs that did not exist before the run) are deleted when the
    run fails or is cancelled, so nothing is left behind.
    """

    progress = pyqtSignal(float)  # 0-100
    logged = pyqtSignal(str, str)  # level, text
    finished = pyqtSignal(object)  # RunOutcome

    def __init__(
        self,
        algorithm: QgsProcessingAlgorithm,
        parameters: dict[str, Any],
        project: QgsProject,
        created_outputs: list[str],
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self._algorithm = algorithm
        self._parameters = parameters
        self._created_outputs = created_outputs
        self._context = QgsProcessingContext()
        self._context.setProject(project)
        self._feedback = _Feedback()
        self._feedback.progressChanged.connect(self.progress)
        self._feedback.message.connect(self.logged)
        self._task: QgsProcessingAlgRunnerTask | None = None
        self._clock = QElapsedTimer()
        self._done = False
        self._cancel_requested = False

    @property
    def parameters(self) -> dict[str, Any]:
        """The algorithm parameters of this run."""
        return self._parameters

    @property
    def task(self) -> QgsProcessingAlgRunnerTask | None:
        """The task in QGIS's task manager (None before start)."""
        return self._task

    def start(self) -> None:
        """Hand the task to QgsApplication.taskManager(); returns at once."""
        self._clock.start()
        self._task = QgsProcessingAlgRunnerTask(
            self._algorithm, self._parameters, self._context, self._feedback
        )
        self._task.executed.connect(self._on_executed)
        self._task.taskTerminated.connect(lambda: self._finish(False, {}))
        _ACTIVE.add(self)
        QgsApplication.taskManager().addTask(self._task)

    def cancel(self) -> None:
        """Ask the running algorithm to stop (feedback.cancel(), checked between tiles) and the task too."""
        self._cancel_requested = True
        self._feedback.cancel()
        if self._task is not None:
            self._task.cancel()

    def elapsed_s(self) -> float:
        """Seconds since start."""
        return self._clock.elapsed() / 1000.0 if self._clock.isValid() else 0.0

    def is_running(self) -> bool:
        """True between start() and the `finished` signal."""
        return self._task is not None and not self._done

    def _on_executed(self, ok: bool, results: dict[str, Any]) -> None:
        self._finish(ok, dict(results or {}))

    def _finish(self, ok: bool, results: dict[str, Any]) -> None:
        if self._done:
            return
        self._done = True
        elapsed = self.elapsed_s()
        if ok and not self._feedback.isCanceled():
            outcome = RunOutcome(SUCCEEDED, results, elapsed_s=elapsed)
        else:
            self._remove_created_outputs()
            if self._cancel_requested or self._feedback.isCanceled():
                outcome = RunOutcome(CANCELLED, elapsed_s=elapsed)
            else:
                outcome = RunOutcome(FAILED, error=plain_error(self._feedback.errors), elapsed_s=elapsed)
        self._task = None
        _ACTIVE.discard(self)
        self.finished.emit(outcome)

    def _remove_created_outputs(self) -> None:
        """Delete the files this run created (and their .aux.xml), then its folders when left empty."""
        for path in self._created_outputs:
            try:
                if os.path.isdir(path):
                    if not os.listdir(path):
                        os.rmdir(path)
                    continue
                for candidate in (path, path + ".aux.xml"):
                    if os.path.exists(candidate):
                        os.remove(candidate)
            except OSError as exc:
                self.logged.emit("warning", f"Could not remove {path}: {exc}")


OUTPUT_SUFFIX = "_cloudfree"
"""Automatic output name: `<optical file stem>_cloudfree.tif` (then `_2`, `_3`, ... if taken)."""


def default_output(optical_source: str, optical_name: str, remembered_folder: str = "") -> str:
    """Where a run writes when the user chose no file; touches no disk.

    The folder: the one the user last saved an output in (`remembered_folder`) when it still exists
    and is writable, else the optical input's own folder when writable, else the home folder. Never a
    temporary folder: the result must survive QGIS. The name comes from the optical file (or the
    layer name) plus `_cloudfree`; an existing file is never overwritten (a number is added).
    """
    source_file = optical_source.split("|")[0]
    candidates = [remembered_folder]
    if os.path.isfile(source_file):
        candidates.append(os.path.dirname(os.path.abspath(source_file)))
    candidates.append(os.path.expanduser("~"))
    folder = next(f for f in candidates if f and os.path.isdir(f) and os.access(f, os.W_OK))
    stem = os.path.splitext(os.path.basename(source_file))[0] if os.path.isfile(source_file) else optical_name
    stem = _safe_name(stem) + OUTPUT_SUFFIX
    for n in range(1, 10_000):
        name = stem if n == 1 else f"{stem}_{n}"
        path = os.path.join(folder, name + ".tif")
        if not any(os.path.exists(p) for p in (path, _mask_path(path), _error_path(path))):
            return path
    raise RuntimeError(f"no free output name {stem}_N.tif in {folder}")


@dataclass(frozen=True)
class OutputPlan:
    """The files a run writes: the restored image, the optional cloud mask and predicted-error layer, and
    `created`, those of them that do not exist yet (what a failed or cancelled run removes)."""

    output: str
    mask_output: str | None
    error_output: str | None
    created: list[str]


def plan_outputs(output: str, add_mask: bool, add_error: bool = False) -> OutputPlan:
    """Where a run writes; touches no disk.

    The mask goes next to the output as `<stem>_cloudmask.tif`, the predicted error as
    `<stem>_prederror.tif`. A file that existed before is never listed in `created`, so never removed.
    """
    mask_output = _mask_path(output) if add_mask else None
    error_output = _error_path(output) if add_error else None
    created = [p for p in (output, mask_output, error_output) if p and not os.path.exists(p)]
    return OutputPlan(output, mask_output, error_output, created)


def _mask_path(output: str) -> str:
    return os.path.splitext(output)[0] + "_cloudmask.tif"


def _error_path(output: str) -> str:
    return os.path.splitext(output)[0] + "_prederror.tif"


def _safe_name(name: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("._")
    return keep or "restored"


def plain_error(errors: list[str]) -> str:
    """The message a person can act on: the last reported error without a Python traceback."""
    for text in reversed(errors):
        lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
        if "Traceback (most recent call last):" in lines:
            # keep the exception line, which comes last in a traceback
            lines = lines[-1:]
        if lines:
            return lines[0] if len(lines) == 1 else " ".join(lines[:3])
    return "The restoration failed without a message; see the log below."
