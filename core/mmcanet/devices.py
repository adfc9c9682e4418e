"""Choose the torch device (CUDA when usable, else CPU) and a sensible number of CPU threads."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable

import torch

from .cpus import rank_cpus
from .errors import InputError

Log = Callable[[str], None]

DEVICE_CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda")


def local_rank() -> int:
    """``LOCAL_RANK`` (set by torchrun), 0 outside torchrun or when it is not an integer."""
    try:
        return max(0, int(os.environ.get("LOCAL_RANK", "0") or 0))
    except ValueError:
        return 0


def cuda_index(rank: int, device_count: int) -> int:
    """The GPU of local rank ``rank`` among ``device_count`` visible GPUs: ``rank % device_count``.

    With one visible GPU per rank (SLURM, Kubernetes: ``CUDA_VISIBLE_DEVICES`` per process) every rank
    gets index 0; with more ranks than GPUs the ranks share them round-robin.
    """
    return rank % device_count if device_count > 0 else 0


CUDA_TORCH_INDEX = "https://download.pytorch.org/whl/cu128"
"""Where pip finds PyTorch's CUDA wheels (the plugin's installer uses the same index)."""


def cpu_only_torch_hint(has_nvidia_smi: bool | None = None, torch_cuda: str | None | bool = False) -> str:
    """What to do when an NVIDIA driver is installed but this PyTorch build has no CUDA ('' otherwise).

    Args:
        has_nvidia_smi: whether the driver's ``nvidia-smi`` is on the PATH (default: look).
        torch_cuda: the CUDA version torch was built with (default: ``torch.version.cuda``; None = CPU build).
    """
    if has_nvidia_smi is None:
        has_nvidia_smi = shutil.which("nvidia-smi") is not None
    if torch_cuda is False:
        torch_cuda = torch.version.cuda
    if not has_nvidia_smi or torch_cuda:
        return ""
    return (
        f"an NVIDIA GPU driver is installed (nvidia-smi found) but this PyTorch {torch.__version__} is a CPU-only "
        "build, so the restore runs on the CPU. To use the GPU install PyTorch's CUDA build: in QGIS, Raster > "
        "MMCANet > Install PyTorch for MMCANet… and choose NVIDIA GPU; elsewhere: pip install --force-reinstall "
        f"torch --index-url {CUDA_TORCH_INDEX}"
    )


def _try_cuda(index: int | None) -> tuple[torch.device | None, str]:
    """Initialise GPU ``index`` (None: this rank's, see :func:`cuda_index`) and make it current."""
    if not torch.cuda.is_available():
        return None, "CUDA is not available (no NVIDIA GPU/driver, or this torch build is CPU-only)"
    try:
        n = torch.cuda.device_count()
        if index is None:
            index = cuda_index(local_rank(), n)
        if index >= n:
            return None, f"GPU {index} requested but only {n} GPU(s) visible"
        dev = torch.device("cuda", index)
        # current device first: the context, cuBLAS handles and the caching allocator of this process
        # then live on its GPU, not on GPU 0 of every rank
        torch.cuda.set_device(dev)
        torch.zeros(1, device=dev).add_(1).cpu()  # real initialisation: fails here, not mid-scene
        return dev, ""
    except Exception as exc:  # noqa: BLE001 - any CUDA init failure means "use the CPU"
        return None, f"CUDA initialisation failed: {exc}"


def resolve_device(name: str = "auto", log: Log | None = None, warn: Log | None = None) -> torch.device:
    """Turn a device choice into a working ``torch.device`` and say which one is used.

    Args:
        name: ``"auto"`` (CUDA when it initialises, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
            Under ``torchrun`` the GPU index defaults to ``LOCAL_RANK % visible GPUs``, made the
            current device before anything else touches CUDA.
        log: receives one line naming the device actually used (and why CPU, when CUDA failed).
        warn: receives :func:`cpu_only_torch_hint` when it applies (default: ``log``).

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
        index = int(choice.split(":", 1)[1]) if ":" in choice else None
        dev, why = _try_cuda(index)
        if dev is not None:
            log(f"device: {dev} ({torch.cuda.get_device_name(dev)})")
            return dev
        hint = cpu_only_torch_hint() if not torch.cuda.is_available() else ""
        if choice != "auto":
            raise InputError(f"device '{name}': {hint or why}; use --device cpu or auto")
        log(f"device: cpu ({why})")
        if hint:
            (warn or log)(hint)
        return torch.device("cpu")
    raise InputError(f"device '{name}': unknown; choose one of {', '.join(DEVICE_CHOICES)} (or cuda:N)")


def configure_threads(device: torch.device, threads: int | None = None) -> int:
    """Set torch's intra-op thread count.

    With ``threads`` None, respects ``OMP_NUM_THREADS`` / an earlier explicit setting, otherwise uses
    this rank's CPUs (:func:`mmcanet.cpus.rank_cpus`: the affinity, shared among ``LOCAL_WORLD_SIZE``
    ranks unless the launcher pinned each rank). On CUDA a few threads are enough for the CPU-side work.

    Returns:
        The number of threads in effect.
    """
    if threads is None:
        if os.environ.get("OMP_NUM_THREADS"):
            return torch.get_num_threads()
        threads = rank_cpus()
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


def resolve_precision(name: str, device: torch.device, log: Log | None = None) -> torch.dtype:
    """The dtype the model's forward computes in: ``torch.float32`` (plain) or a mixed-precision one.

    Args:
        name: ``"auto"`` (bfloat16 on a CUDA GPU that supports it, i.e. Ampere and newer; float32 on
            older GPUs and on the CPU), ``"fp32"``, ``"bf16"`` or ``"fp16"`` (CUDA only).
        device: where the model runs.
        log: receives one line when the forward is not float32.

    Raises:
        InputError: an unknown name, fp16 off CUDA, or bf16 on a GPU without it.
    """
    choice = (name or "auto").strip().lower()
    cuda = device.type == "cuda"
    if choice == "auto":
        choice = "bf16" if cuda and torch.cuda.is_bf16_supported(including_emulation=False) else "fp32"
    if choice == "fp32":
        return torch.float32
    if choice == "fp16" and not cuda:
        raise InputError(f"precision 'fp16' needs a CUDA device (this run uses {device}); use fp32 or bf16")
    if choice == "bf16" and cuda and not torch.cuda.is_bf16_supported(including_emulation=False):
        raise InputError(f"precision 'bf16': GPU {torch.cuda.get_device_name(device)} has no bfloat16; use fp16 or fp32")
    if choice not in ("bf16", "fp16"):
        raise InputError(f"precision '{name}': unknown; choose one of auto, fp32, bf16, fp16")
    dtype = torch.bfloat16 if choice == "bf16" else torch.float16
    if log is not None:
        log(f"mixed precision: {choice} forward on {device} (outputs float32)")
    return dtype
