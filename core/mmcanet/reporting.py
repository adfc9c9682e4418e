"""The callables a long core call takes (progress, cancel, log) and the reporter that routes its messages.

Every scene-level function (restore, detect, simulate) takes the same three plain callables, so the
CLI (tqdm or log lines), QGIS Processing (feedback) and the dock drive them alike.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .errors import CancelledError

WARNING_PREFIX = "warning: "
"""How a warning starts on a ``log`` callable (front ends that have a warning channel, such as QGIS
Processing feedback, route such lines to it)."""

Progress = Callable[[float], None]
"""Called with the fraction done, 0-1."""
IsCanceled = Callable[[], bool]
"""Polled between units of work; True stops the call with :class:`~mmcanet.errors.CancelledError`."""
Log = Callable[[str], None]
"""Receives one human-readable line (information or ``"warning: ..."``)."""


class Reporter:
    """Routes a call's messages to the caller's ``log`` (else a logger) and keeps its warnings.

    Args:
        log: the caller's log callable; None sends messages to ``logger``.
        logger: where messages go without ``log``.
        progress: the caller's progress callable (None: progress is dropped).
        is_canceled: the caller's cancel poll (None: never cancelled).
    """

    def __init__(
        self,
        log: Log | None,
        logger: logging.Logger | None = None,
        progress: Progress | None = None,
        is_canceled: IsCanceled | None = None,
    ) -> None:
        self._log = log
        self._logger = logger or logging.getLogger("mmcanet")
        self._progress = progress
        self._is_canceled = is_canceled
        self.warnings: list[str] = []

    def info(self, msg: str) -> None:
        """An information line."""
        self._logger.info(msg) if self._log is None else self._log(msg)

    def warn(self, msg: str) -> None:
        """A warning: logged, and kept in :attr:`warnings` for the call's result."""
        self.warnings.append(msg)
        self._logger.warning(msg) if self._log is None else self._log(f"{WARNING_PREFIX}{msg}")

    def progress(self, fraction: float) -> None:
        """Report the fraction done (0-1)."""
        if self._progress is not None:
            self._progress(fraction)

    def canceled(self) -> bool:
        """Whether the caller asked to stop (False without a cancel poll)."""
        return self._is_canceled is not None and bool(self._is_canceled())

    def check_canceled(self, message: str) -> None:
        """Raise :class:`CancelledError` with ``message`` when the caller asked to stop."""
        if self._is_canceled is not None and self._is_canceled():
            raise CancelledError(message)
