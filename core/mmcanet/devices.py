"""Choose the torch device (CUDA when usable, else CPU) and a sensible number of CPU threads."""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

from .errors import InputError

Log = Callable[[str], None]

DEVICE_CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda")


def _cuda_index() -> int:
    """The GPU of this process: LOCAL_RANK under torchrun, else 0."""
    try:
        return int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        return 0


def _try_cuda(index: int) -> tuple[torch.device | None, str]:
    if not torch.cuda.is_available():
        return None, "CUDA is not available (no NVIDIA GPU/driver, or this torch build is CPU-only)"
    try:
        n = torch.cuda.device_count()
        if index >= n:
            return None, f"GPU {index} requested but only {n} GPU(s) visible"
        dev = torch.device("cuda", index)
        torch.zeros(1, device=dev).add_(1).cpu()  # real initialisation: fails here, not mid-scene
        return dev, ""
    except Exception as exc:  # noqa: BLE001 - any CUDA init failure means "use the CPU"
        return None, f"CUDA initialisation failed: {exc}"


def resolve_device(name: str = "auto", log: Log | None = None) -> torch.device:
    """Turn a device choice into a working ``torch.device`` and say which one is used.

    Args:
        name: ``"auto"`` (CUDA when it initialises, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
            Under ``torchrun`` the GPU index defaults to ``LOCAL_RANK``.
        log: receives one line naming the device actually used (and why CPU, when CUDA failed).

    Returns:
        The device.

    Raises:
        InputError: for an unknown name, or ``"cuda"`` explicitly requested but unusable.
    """
    log = log or (lambda _msg: None)
    choice = (name or "auto").strip().lower()
    if choice == "cpu":
        log("device: cpu")
        return torch.device("cpu")
    if choice == "auto" or choice == "cuda" or choice.startswith("cuda:"):
        index = int(choice.split(":", 1)[1]) if ":" in choice else _cuda_index()
        dev, why = _try_cuda(index)
        if dev is not None:
            log(f"device: {dev} ({torch.cuda.get_device_name(dev)})")
            return dev
        if choice != "auto":
            raise InputError(f"device '{name}': {why}; use --device cpu or auto")
        log(f"device: cpu ({why})")
        return torch.device("cpu")
    raise InputError(f"device '{name}': unknown; choose one of {', '.join(DEVICE_CHOICES)} (or cuda:N)")


def configure_threads(device: torch.device, threads: int | None = None) -> int:
    """Set torch's intra-op thread count for CPU inference.

    With ``threads`` None, respects ``OMP_NUM_THREADS`` / an earlier explicit setting, otherwise uses
    the CPUs this process may run on, divided among ``LOCAL_WORLD_SIZE`` ranks on the same machine.
    On CUDA a couple of threads are enough for the CPU-side work.

    Returns:
        The number of threads in effect.
    """
    if threads is None:
        if os.environ.get("OMP_NUM_THREADS"):
            return torch.get_num_threads()
        try:
            cpus = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            cpus = os.cpu_count() or 1
        local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
        threads = max(1, cpus // local)
        if device.type == "cuda":
            threads = min(threads, 4)
    torch.set_num_threads(max(1, int(threads)))
    return torch.get_num_threads()


def training_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """The device of one training process, made current BEFORE anything else touches CUDA.

    Under ``torchrun`` each rank takes GPU ``LOCAL_RANK % device_count`` (so more ranks than GPUs
    share them round-robin instead of failing), and ``torch.cuda.set_device`` is called here, before
    the process group or the model creates a CUDA context on GPU 0.

    Args:
        name: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        local_rank: the rank on this machine (``LOCAL_RANK``).

    Raises:
        ConfigError: ``"cuda"`` requested but CUDA is not available.
    """
    from .errors import ConfigError

    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("device 'cuda' requested but CUDA is not available (use device = \"auto\" or \"cpu\")")
        dev = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(dev)
        return dev
    return torch.device("cpu")
