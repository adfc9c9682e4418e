"""Keep a loaded model between restores of a long-lived process (QGIS), and give its memory back on demand.

Loading the bundled model takes seconds and, on a GPU, puts its weights in GPU memory; QGIS runs
one restore after another in the same process. :class:`ModelCache` keeps the last model and lends it
to the next restore when the file (path, modification time, size) and the device are the same.
Importing this module does not import torch.
"""

from __future__ import annotations

import gc
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

Key = tuple[str, int, int, str]
"""(resolved path, mtime in ns, size in bytes, device)."""


def model_key(path: str | os.PathLike[str] | None, device: torch.device) -> Key:
    """What identifies a loaded model: the file as it is on disk now, and the device it was loaded on."""
    from ..modelfile import default_model_path

    p = Path(os.fspath(path)) if path else default_model_path()
    try:
        st = p.stat()
        return str(p.resolve()), st.st_mtime_ns, st.st_size, str(device)
    except OSError:  # missing file: never cached; loading it reports the error
        return str(p), -1, -1, str(device)


class ModelCache:
    """One loaded model, lent to one restore at a time.

    A restore borrows the model with :meth:`borrow`; a second restore running at the same time gets
    a private copy (loaded, not cached), since a restore may switch the model's strategy. A changed
    file (new mtime or size) or another device loads again and replaces the cached model.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: Key | None = None
        self._entry: tuple[nn.Module, Any] | None = None
        self._busy = False
        self.loads = 0
        """How many times a model file was actually loaded (for tests and the log)."""

    @contextmanager
    def borrow(
        self,
        path: str | os.PathLike[str] | None,
        device: torch.device,
        load: Callable[[], tuple[nn.Module, Any]],
        log: Callable[[str], None] | None = None,
    ) -> Iterator[tuple[nn.Module, Any]]:
        """Lend the model of ``path`` on ``device``, loading it with ``load()`` when not cached.

        After the restore the CUDA allocator's free blocks (activations) are returned to the driver;
        the weights stay on the GPU until :meth:`release`.
        """
        key = model_key(path, device)
        cacheable = key[1] >= 0
        with self._lock:
            shared = cacheable and not self._busy
            entry = self._entry if shared and self._key == key else None
            if shared:
                self._busy = True
                if entry is None:  # another file or device: drop the old model before loading
                    self._key, self._entry = None, None
        try:
            if entry is not None:
                if log is not None:
                    log("model: reusing the model loaded by the previous run (same file and device)")
            else:
                entry = load()
                self.loads += 1
                if shared:
                    with self._lock:
                        self._key, self._entry = key, entry
            yield entry
        finally:
            entry = None
            if shared:
                with self._lock:
                    self._busy = False
            _empty_cuda_cache(device)

    def release(self) -> None:
        """Forget the cached model and give its GPU memory back (QGIS: when the plugin unloads)."""
        with self._lock:
            device = self._key[3] if self._key else None
            self._key, self._entry = None, None
        gc.collect()
        if device is not None and device.startswith("cuda"):
            import torch

            _empty_cuda_cache(torch.device(device))

    @property
    def cached(self) -> Key | None:
        """Key of the cached model, None when empty."""
        return self._key


def _empty_cuda_cache(device: torch.device) -> None:
    if device.type != "cuda":
        return
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
