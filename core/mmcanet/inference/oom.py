"""Recognise allocation failures (GPU or host) and give the memory of a failed batch back before a retry.

A failed forward's activations stay alive as long as its exception does: the traceback holds the
frames, the frames hold the tensors. A retry inside the ``except`` block therefore runs with the
failed batch's memory still allocated, and ``torch.cuda.empty_cache()`` has nothing to release. The
engine retries only after the exception is gone (see :meth:`~.batches.BatchRunner.run`); this module
says which exceptions are allocation failures and frees what is left once they are.
"""

from __future__ import annotations

import contextlib
import gc
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

OOM_MARKERS: tuple[str, ...] = (
    "out of memory",  # CUDA caching allocator, "CUDA error: out of memory", HIP, MPS
    "CUDNN_STATUS_ALLOC_FAILED",
    "CUDNN_STATUS_NOT_ENOUGH_WORKSPACE",
    "CUBLAS_STATUS_ALLOC_FAILED",
    "CUFFT_ALLOC_FAILED",
    "CUSOLVER_STATUS_ALLOC_FAILED",
    "cudaErrorMemoryAllocation",
    "DefaultCPUAllocator: can't allocate memory",
    "not enough memory",  # DefaultCPUAllocator on Windows
)
"""Substrings of the messages torch and its CUDA libraries give when an allocation fails."""


def is_out_of_memory(exc: BaseException) -> bool:
    """True when ``exc`` says an allocation failed (GPU or host), whichever library raised it.

    Covers ``torch.OutOfMemoryError`` (= ``torch.cuda.OutOfMemoryError``) and the ``RuntimeError``s
    that CUDA, cuDNN, cuBLAS, cuFFT and the CPU allocator raise, also from ``.to()`` / ``.cpu()`` copies.
    """
    import torch

    oom_type = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    if isinstance(exc, (oom_type, torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    if not isinstance(exc, RuntimeError):
        return False
    text = str(exc)
    return any(marker.lower() in text.lower() for marker in OOM_MARKERS)


def summary(exc: BaseException) -> str:
    """First line of an allocation failure's message (the rest is allocator statistics)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def on_gpu(message: str, device: torch.device) -> bool:
    """Whether a failure with this message (on ``device``) was a GPU allocation, not host RAM."""
    return device.type == "cuda" or any(k in message for k in ("CUDA", "CUDNN", "CUBLAS", "CUFFT", "CUSOLVER"))


def release(device: torch.device) -> None:
    """Collect unreachable tensors (a failed batch's frames can sit in reference cycles) and return
    the CUDA caching allocator's free blocks, so that the retry starts from the memory it had before."""
    import torch

    gc.collect()
    if device.type == "cuda" and torch.cuda.is_available():
        # a pending asynchronous failure is ignored here: the retry reports it if it persists
        with contextlib.suppress(RuntimeError):
            torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
