"""Training loop: seeded data order, checkpoints every N steps, exact resume, DDP under torchrun."""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from .augment import augment_arrays
from .config import DataSource, TrainConfig
from .errors import CancelledError, ConfigError, InputError
from .losses import opacity_loss, restoration_loss
from .modelfile import ModelCard, save_model
from .models import build_model, model_config

LOG = logging.getLogger(__name__)
Sample = dict[str, Any]


# ---- data ------------------------------------------------------------------------------------------
def detect_kind(path: Path) -> str:
    """Guess a folder's layout: triplets, pairs or sen12mscr (official ROIs* layout)."""
    if not path.is_dir():
        raise InputError(f"data folder not found: {path}")
    names = [p.name for p in path.iterdir()]
    if any(n.endswith("_s2_cloudfree.tif") for n in names) and any(n.endswith("_s1.tif") for n in names):
        return "triplets"
    if any(n.endswith("_s2_cloudy.tif") for n in names):
        return "pairs"
    if any(n.startswith("ROIs") and (path / n).is_dir() for n in names):
        return "sen12mscr"
    if any(n.startswith("S2") and (path / n).is_dir() for n in names) or (path / "BigEarthNet-S2-Example").is_dir():
        return "bigearthnet"
    raise InputError(
        f"{path}: cannot tell the data layout (expected *_s1.tif/*_s2_cloudy.tif/*_s2_cloudfree.tif triplets, "
        "*_s2_cloudy.tif/*_s2_cloudfree.tif pairs, an official SEN12MS-CR ROIs* tree or BigEarthNet folders)"
    )


def _open_source(src: DataSource, split: str) -> tuple[Any, bool]:
    """Reader for one source (full images, no augmentation) and whether to simulate clouds on it."""
    from . import datasets as ds

    path = Path(src.path)
    kind = detect_kind(path) if src.kind in ("auto", "simulated") else src.kind
    simulate = src.kind in ("simulated", "bigearthnet") or kind == "bigearthnet"
    if kind == "triplets":
        ids = ds.list_triplet_ids(path)
        unknown = sorted((set(src.include) | set(src.exclude)) - set(ids))
        if unknown:
            raise InputError(f"{path}: no triplet with id {', '.join(unknown)} (ids look like {ids[0]!r})")
        if src.include:
            ids = [i for i in ids if i in set(src.include)]
        ids = [i for i in ids if i not in set(src.exclude)]
        if not ids:
            raise InputError(f"{path}: no triplets left after include/exclude")
        return ds.TripletFolder(path, ids=ids), simulate
    if kind == "pairs":
        reader = ds.CloudyClearPairs(path)
        return _Filtered(reader, src), simulate
    if kind == "sen12mscr":
        return ds.Sen12MSCR(path, split=split), simulate
    if kind == "bigearthnet":
        return ds.BigEarthNetPairs(path), True
    raise ConfigError(f"data kind {kind!r} not supported")


class _Filtered:
    """Apply include/exclude id lists to a reader that has an ``ids`` attribute."""

    def __init__(self, reader: Any, src: DataSource) -> None:
        self.reader = reader
        ids = list(getattr(reader, "ids", range(len(reader))))
        unknown = sorted(set(src.include) - {str(i) for i in ids}) + sorted(set(src.exclude) - {str(i) for i in ids})
        if unknown:
            raise InputError(f"{src.path}: no image with id {', '.join(unknown)} (ids look like {ids[0]!r})")
        keep = [
            i for i, name in enumerate(ids)
            if (not src.include or str(name) in src.include) and str(name) not in src.exclude
        ]
        if not keep:
            raise InputError(f"{src.path}: no images left after include/exclude")
        self.keep = keep

    def __len__(self) -> int:
        return len(self.keep)

    def __getitem__(self, i: int) -> Sample:
        return dict(self.reader[self.keep[i]])


class TrainingSamples:
    """All training sources as one indexable set; sample (epoch, index) is a pure function of the seed.

    Images are cached in memory after their first read when the sets are small (the shared data), then
    per (seed, epoch, index): simulated clouds (for simulated sources), SAR dropout, random crop, flips.
    """

    def __init__(self, sources: Sequence[DataSource], cfg: TrainConfig, split: str = "train") -> None:
        self.cfg = cfg
        self.items: list[tuple[Any, int, bool]] = []  # (reader, index, simulate)
        self.readers = []
        for src in sources:
            reader, simulate = _open_source(src, split)
            self.readers.append(reader)
            for _ in range(max(1, src.repeat)):
                self.items.extend((reader, i, simulate) for i in range(len(reader)))
        if not self.items:
            raise InputError("no training images found in the configured data sources")
        self._cache: dict[tuple[int, int], Sample] = {}

    def __len__(self) -> int:
        return len(self.items)

    def _raw(self, k: int) -> Sample:
        reader, i, _ = self.items[k]
        key = (id(reader), i)
        if key not in self._cache:
            s = reader[i]
            self._cache[key] = {kk: (np.asarray(v) if not isinstance(v, str) else v) for kk, v in s.items()}
        return self._cache[key]

    def get(self, epoch: int, k: int) -> Sample:
        """Training sample k of ``epoch``: dict of float32 arrays s2_cloudy, s2_clear, s1, mask, has_sar."""
        from .clouds.simulate import simulate_clouds

        cfg = self.cfg
        _, _, simulate = self.items[k]
        raw = self._raw(k)
        rng = np.random.default_rng([cfg.seed, epoch, k])
        arrays: dict[str, Any] = {
            "s2_cloudy": raw["s2_cloudy"], "s2_clear": raw["s2_clear"], "s1": raw["s1"],
            "mask": raw["mask"].reshape(1, *raw["s2_clear"].shape[-2:]).astype(np.float32),
        }
        arrays = dict(augment_arrays(arrays, rng, crop=min(cfg.crop, *raw["s2_clear"].shape[-2:])))
        if simulate:
            progress = epoch / max(1, cfg.epochs)
            thin_p = max(0.15, 1.0 - 2.0 * progress) if cfg.curriculum else 0.25
            thickness = "thin" if rng.random() < thin_p else str(rng.choice(["mixed", "thick"]))
            sim = simulate_clouds(arrays["s2_clear"], rng, thickness=thickness)
            arrays["s2_cloudy"] = sim.cloudy.astype(np.float32)
            arrays["mask"] = sim.opacity[None].astype(np.float32)
        has_sar = float(raw.get("has_sar", 1.0))
        if has_sar and rng.random() < cfg.sar_dropout:
            has_sar = 0.0
        if not has_sar:
            arrays["s1"] = np.zeros_like(arrays["s1"])
        arrays["has_sar"] = np.float32(has_sar)
        return arrays


def _collate(samples: list[Sample], device: torch.device) -> dict[str, torch.Tensor]:
    keys = ("s2_cloudy", "s2_clear", "s1", "mask")
    return {k: torch.from_numpy(np.stack([np.ascontiguousarray(s[k], dtype=np.float32) for s in samples])).to(device) for k in keys}


# ---- loop ------------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    """Outcome of a run: the model file, the run folder, steps done, last validation metrics."""

    model_path: Path
    run_dir: Path
    steps: int
    val_metrics: dict[str, float] = field(default_factory=dict)
    model: torch.nn.Module | None = None


def _lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return cfg.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def _dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def _device(cfg: TrainConfig, local_rank: int) -> torch.device:
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("device 'cuda' requested but CUDA is not available (use device = \"auto\" or \"cpu\")")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def evaluate_samples(model: torch.nn.Module, readers: Sequence[Any], device: torch.device) -> dict[str, float]:
    """Mean PSNR/SSIM/MAE/SAM (DOMAIN.md protocol) of model and identity over full validation images."""
    from .metrics import compute_metrics

    rows: list[dict[str, float]] = []
    model.eval()
    with torch.inference_mode():
        for reader in readers:
            for i in range(len(reader)):
                s = reader[i]
                s2 = torch.from_numpy(np.asarray(s["s2_cloudy"], dtype=np.float32))[None].to(device)
                s1 = torch.from_numpy(np.asarray(s["s1"], dtype=np.float32))[None].to(device)
                if not float(s.get("has_sar", 1.0)):
                    s1 = torch.zeros_like(s1)
                pred = model(s2, s1).clamp(0, 1)[0].float().cpu().numpy()
                target = np.asarray(s["s2_clear"], dtype=np.float32)
                m = compute_metrics(pred, target)
                ident = compute_metrics(np.asarray(s["s2_cloudy"], dtype=np.float32), target)
                rows.append({**{k: float(v) for k, v in m.items()}, **{f"identity_{k}": float(v) for k, v in ident.items()}})
    model.train()
    if not rows:
        return {}
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} | {"n_images": float(len(rows))}


def _save_ckpt(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Write the checkpoint to a temporary file, then rename; on any failure remove the temporary file."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "state": state}, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # torch reports a failed write as RuntimeError
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0][:200]
        raise InputError(f"cannot write the checkpoint {path} ({reason}); is the disk full? "
                         "The previous checkpoint is kept") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _load_ckpt(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, device: torch.device) -> dict[str, Any]:
    """Restore model and optimiser from a checkpoint; a damaged or foreign checkpoint is a clear error."""
    try:
        ck = torch.load(path, map_location=device, weights_only=True)
        state = ck["state"]
        pos = {k: int(state[k]) for k in ("step", "epoch", "batch")}
    except Exception as exc:  # truncated zip, not a checkpoint, missing keys: torch raises many kinds
        raise InputError(
            f"checkpoint {path} cannot be read ({type(exc).__name__}: {str(exc)[:200]}); it is damaged or not a "
            "checkpoint of this program. Start over with --overwrite (or overwrite = true), or restore a copy"
        ) from None
    try:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
    except (RuntimeError, KeyError, ValueError) as exc:
        raise ConfigError(
            f"checkpoint {path} was written for another network than this config builds ({str(exc).splitlines()[0][:200]}); "
            "resume with the config it was trained with, or start over with --overwrite"
        ) from None
    return pos


def _trim_csv(csv_path: Path, last_step: int) -> None:
    """Keep metrics.csv rows up to ``last_step`` (rows logged after the checkpoint are logged again on resume)."""
    if not csv_path.is_file():
        with open(csv_path, "w", newline="") as fh:
            csv.DictWriter(fh, CSV_FIELDS).writeheader()
        return
    with open(csv_path, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("step", "").isdigit() and int(r["step"]) <= last_step]
    tmp = csv_path.with_name(csv_path.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, csv_path)


@contextlib.contextmanager
def run_dir_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir/.lock`` exclusively for the duration, so two trainings cannot share a run_dir.

    The lock is an OS file lock (released by the OS when the process dies, even on ``kill -9``); where
    file locks are not available the lock file is created exclusively and removed at the end.

    Raises:
        InputError: another process holds the lock.
    """
    lock_path = run_dir / ".lock"
    try:
        import fcntl
    except ImportError:  # Windows
        fcntl = None  # type: ignore[assignment]
    if fcntl is None:
        try:
            fd = os.open(lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            raise InputError(f"run_dir {run_dir} is in use by another training (lock file {lock_path}; delete it if "
                             "no training runs there)") from None
        try:
            os.write(fd, str(os.getpid()).encode())
            yield
        finally:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(lock_path)
        return
    fd = os.open(lock_path, os.O_CREAT | os.O_RDWR)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise InputError(f"run_dir {run_dir} is in use by another training (process {holder}); wait for it to "
                             "finish or give this run its own run_dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


class _StopRequest:
    """SIGINT / SIGTERM during training: finish the current step, checkpoint, then stop (a second Ctrl-C stops at once)."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        self.signal = signum
        for sig, handler in self._previous.items():  # a second signal acts as usual
            signal.signal(sig, handler)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _plot(csv_path: Path, png_path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    steps = [int(r["step"]) for r in rows]
    ax[0].plot(steps, [float(r["loss"]) for r in rows], label="train loss")
    ax[0].set_xlabel("step")
    ax[0].set_yscale("log")
    ax[0].legend()
    val = [(int(r["step"]), float(r["val_psnr"]), float(r["val_identity_psnr"])) for r in rows if r.get("val_psnr")]
    if val:
        ax[1].plot([v[0] for v in val], [v[1] for v in val], "o-", label="model")
        ax[1].plot([v[0] for v in val], [v[2] for v in val], "--", label="identity (cloudy input)")
        ax[1].set_xlabel("step")
        ax[1].set_ylabel("validation PSNR (dB)")
        ax[1].legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=90)
    plt.close(fig)


CSV_FIELDS = ["step", "epoch", "lr", "loss", "l1", "carl", "ssim", "sam", "opacity", "seconds",
              "val_psnr", "val_ssim", "val_mae", "val_sam", "val_identity_psnr"]


def train(
    cfg: TrainConfig,
    progress: Callable[[float], None] | None = None,
    is_canceled: Callable[[], bool] | None = None,
    log: Callable[[str], None] | None = None,
    keep_process_group: bool = False,
) -> TrainResult:
    """Train per ``cfg``; resumable, cancellable between steps (a checkpoint is kept), DDP-aware.

    The run_dir is locked for the whole run (a second training there is refused), and a run_dir that
    holds another run's checkpoint or metrics is refused unless ``cfg.resume`` or ``cfg.overwrite``.
    Ctrl-C / SIGTERM (when training runs in the main thread) finish the current step, write a
    checkpoint and raise KeyboardInterrupt; ``--resume`` then continues exactly, without duplicate
    metrics rows.

    Raises:
        ConfigError / InputError before any long work on bad configuration or data;
        CancelledError when is_canceled() returned True (checkpoint saved, resume later).

    Under torchrun (WORLD_SIZE > 1) the process group is created here (NCCL on GPU, gloo on CPU) and
    destroyed at the end unless ``keep_process_group``.
    """
    say = log or LOG.info
    rank, world, local_rank = _dist_info()
    distributed = world > 1
    device = _device(cfg, local_rank)
    if distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)

    run_dir = Path(cfg.run_dir)
    out_path = Path(cfg.output)
    ckpt_path = run_dir / "checkpoint.pt"
    csv_path = run_dir / "metrics.csv"
    from .outputs import check_outputs

    check_outputs(
        {"output": out_path, "run_dir": run_dir, "checkpoint": ckpt_path, "metrics file": csv_path,
         "curves": run_dir / "curves.png"},
        {"training data": [s.path for s in cfg.data], "validation data": [s.path for s in cfg.val],
         "init model": cfg.init or None},
    )
    for folder in (run_dir, out_path.parent):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise InputError(f"cannot write to {folder}: {exc.strerror}") from None
    with contextlib.ExitStack() as stack:
        if rank == 0:
            stack.enter_context(run_dir_lock(run_dir))
            with contextlib.suppress(FileNotFoundError):
                (run_dir / "checkpoint.pt.tmp").unlink()  # left by a killed run; the lock says no one writes it
            if not cfg.resume and not cfg.overwrite:
                previous = [p.name for p in (ckpt_path, csv_path) if p.exists()]
                if previous:
                    raise ConfigError(
                        f"run_dir {run_dir} holds another run ({', '.join(previous)}); continue it with --resume "
                        "(resume = true; QGIS: 'Resume'), replace it with --overwrite (overwrite = true; QGIS: "
                        "'Start over'), or choose another run_dir"
                    )
        stop = stack.enter_context(_StopRequest())
        return _train(cfg, progress, is_canceled, say, log is None, rank, world, local_rank, device, distributed,
                      keep_process_group, run_dir, out_path, ckpt_path, csv_path, stop)


def _stop_requested(stop: _StopRequest, distributed: bool, device: torch.device) -> bool:
    """Whether a signal asked to stop; under torchrun every rank agrees, so all stop at the same step."""
    if not distributed:
        return stop.signal is not None
    flag = torch.tensor([0.0 if stop.signal is None else 1.0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def _train(
    cfg: TrainConfig,
    progress: Callable[[float], None] | None,
    is_canceled: Callable[[], bool] | None,
    say: Callable[[str], None],
    own_log: bool,
    rank: int,
    world: int,
    local_rank: int,
    device: torch.device,
    distributed: bool,
    keep_process_group: bool,
    run_dir: Path,
    out_path: Path,
    ckpt_path: Path,
    csv_path: Path,
    stop: _StopRequest,
) -> TrainResult:
    data = TrainingSamples(cfg.data, cfg, "train")
    val_readers = [_open_source(src, "val")[0] for src in cfg.val]
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    model = build_model(cfg.arch, cfg.strategy, **cfg.model).to(device)
    if cfg.init:
        _init_from(model, cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    per_rank = len(data) // world
    steps_per_epoch = max(1, per_rank // cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    if cfg.max_steps:
        total = min(total, cfg.max_steps)

    step, start_epoch, start_batch = 0, 0, 0
    val_metrics: dict[str, float] = {}
    if cfg.resume and ckpt_path.is_file():
        pos = _load_ckpt(ckpt_path, model, opt, device)
        step, start_epoch, start_batch = pos["step"], pos["epoch"], pos["batch"]
        if rank == 0:
            _trim_csv(csv_path, step)
        say(f"resumed from {ckpt_path} at step {step} (epoch {start_epoch}, batch {start_batch})")
    elif rank == 0:
        with open(csv_path, "w", newline="") as fh:
            csv.DictWriter(fh, CSV_FIELDS).writeheader()
    if distributed:
        dist.barrier()

    net: torch.nn.Module = model
    if distributed:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[local_rank] if device.type == "cuda" else None, find_unused_parameters=True
        )
    model.train()
    use_amp = cfg.amp and device.type == "cuda"
    say(f"training {cfg.arch}/{cfg.strategy} on {device} ({world} process(es)): {len(data)} samples, "
        f"{steps_per_epoch} steps/epoch, {total} steps, batch {cfg.batch_size}, crop {cfg.crop}")

    bar = None
    if rank == 0 and sys.stderr.isatty() and own_log:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=step, desc="train", unit="step")
    t0 = time.perf_counter()
    acc: dict[str, list[float]] = {}

    def checkpoint(epoch: int, batch: int) -> None:
        if rank == 0:
            _save_ckpt(ckpt_path, model, opt, {"step": step, "epoch": epoch, "batch": batch})

    end = min(total, cfg.stop_at) if cfg.stop_at else total
    epoch = start_epoch
    done = step >= end
    while not done and epoch < cfg.epochs:
        order = np.random.default_rng([cfg.seed, epoch, 7]).permutation(len(data))[: per_rank * world]
        mine = order[rank::world]
        for b in range(start_batch if epoch == start_epoch else 0, steps_per_epoch):
            if is_canceled is not None and is_canceled():
                checkpoint(epoch, b)
                raise CancelledError(f"training cancelled at step {step}; checkpoint kept in {ckpt_path} (resume to continue)")
            if _stop_requested(stop, distributed, device):
                checkpoint(epoch, b)
                say(f"interrupted at step {step}; checkpoint written to {ckpt_path} (continue with --resume)")
                raise KeyboardInterrupt(f"signal {stop.signal}")
            idx = mine[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            batch = _collate([data.get(epoch, int(k)) for k in idx], device)
            lr = _lr_at(step, total, cfg)
            for g in opt.param_groups:
                g["lr"] = lr
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                # every other step the (given / detected / simulated) mask is fed as guidance, so the model
                # works both with a user's mask and with its own opacity estimate
                outputs = _forward_train(net, batch, use_mask=step % 2 == 1)
            loss = torch.zeros((), device=device)
            terms: dict[str, float] = {}
            stages = outputs["stages"]
            for k, pred in enumerate(stages):
                w = cfg.stage_decay ** (len(stages) - 1 - k)
                l_k, t_k = restoration_loss(pred.float(), batch["s2_clear"], batch["s2_cloudy"], batch["mask"],
                                            cfg.loss_l1, cfg.loss_carl, cfg.loss_ssim, cfg.loss_sam)
                loss = loss + w * l_k
                if k == len(stages) - 1:
                    terms = t_k
            if cfg.loss_opacity:
                lo = opacity_loss(outputs["opacity_logits"].float(), batch["mask"])
                loss = loss + cfg.loss_opacity * lo
                terms["opacity"] = float(lo.detach())
            if not torch.isfinite(loss):
                raise InputError(f"training diverged at step {step} (loss {float(loss)}); lower lr (now {cfg.lr})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            terms["loss"] = float(loss.detach())
            for k2, v in terms.items():
                acc.setdefault(k2, []).append(v)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{float(loss):.4f}")
            if progress is not None:
                progress(step / end)
            last_of_epoch = b == steps_per_epoch - 1
            done = step >= end
            validate = done or (step % cfg.val_every == 0 if cfg.val_every else last_of_epoch)
            if step % cfg.log_every == 0 or validate:
                row: dict[str, Any] = {"step": step, "epoch": epoch, "lr": f"{lr:.3g}", "seconds": f"{time.perf_counter() - t0:.1f}"}
                row.update({k2: f"{np.mean(v):.5f}" for k2, v in acc.items()})
                acc = {}
                if validate and val_readers and rank == 0:
                    val_metrics = evaluate_samples(model, val_readers, device)
                    row.update({f"val_{k2}": f"{val_metrics[k2]:.4f}" for k2 in ("psnr", "ssim", "mae", "sam")})
                    row["val_identity_psnr"] = f"{val_metrics['identity_psnr']:.4f}"
                if rank == 0:
                    with open(csv_path, "a", newline="") as fh:
                        csv.DictWriter(fh, CSV_FIELDS, extrasaction="ignore").writerow(row)
                    if bar is None:
                        say(" ".join(f"{k2}={v}" for k2, v in row.items()))
            if step % cfg.checkpoint_every == 0 or done:
                nxt_epoch, nxt_batch = (epoch + 1, 0) if last_of_epoch else (epoch, b + 1)
                checkpoint(nxt_epoch, nxt_batch)
            if done:
                break
        epoch += 1
    if bar is not None:
        bar.close()
    if rank == 0:
        if not val_metrics and val_readers:
            val_metrics = evaluate_samples(model, val_readers, device)
        _plot(csv_path, run_dir / "curves.png")
        card = ModelCard(
            name=cfg.name, arch=cfg.arch, strategy=cfg.strategy, config=model_config(cfg.arch, **cfg.model),
            tile_size=cfg.tile_size, overlap=cfg.overlap,
            training={
                "data": [str(s.path) + (f" (kind {s.kind}, exclude {s.exclude})" if s.exclude or s.kind != "auto" else "") for s in cfg.data],
                "validation": [s.path + (f" include {s.include}" if s.include else "") for s in cfg.val],
                "steps": step, "batch_size": cfg.batch_size, "crop": cfg.crop, "seed": cfg.seed, "processes": world,
                "device": device.type,
            },
            metrics={"heldout": {k: round(v, 4) for k, v in val_metrics.items()}} if val_metrics else {},
        )
        save_model(out_path, model, card)
        say(f"model written to {out_path}")
    if distributed:
        dist.barrier()
        if not keep_process_group:
            dist.destroy_process_group()
    return TrainResult(out_path, run_dir, step, val_metrics, model)


def _init_from(model: torch.nn.Module, cfg: TrainConfig) -> None:
    """Start from the weights of a model file (fine-tuning); the networks must be the same."""
    from .modelfile import load_model

    src, card = load_model(cfg.init, "cpu")
    if (card.arch, card.strategy, card.config) != (cfg.arch, cfg.strategy, model_config(cfg.arch, **cfg.model)):
        raise ConfigError(
            f"init: {cfg.init} is {card.arch}/{card.strategy} {card.config}; this config builds "
            f"{cfg.arch}/{cfg.strategy} {model_config(cfg.arch, **cfg.model)}"
        )
    model.load_state_dict(src.state_dict())


def _forward_train(net: torch.nn.Module, batch: dict[str, torch.Tensor], use_mask: bool) -> dict[str, Any]:
    """Call forward_train through a DDP wrapper too (DDP only hooks __call__/forward)."""
    inner = net.module if isinstance(net, torch.nn.parallel.DistributedDataParallel) else net
    mask = batch["mask"] if use_mask else None
    if isinstance(net, torch.nn.parallel.DistributedDataParallel):
        # route through forward so DDP's gradient hooks run: temporarily swap the forward
        original = inner.forward
        inner.forward = inner.forward_train  # type: ignore[method-assign]
        try:
            return net(batch["s2_cloudy"], batch["s1"], mask)  # type: ignore[no-any-return]
        finally:
            inner.forward = original  # type: ignore[method-assign]
    return inner.forward_train(batch["s2_cloudy"], batch["s1"], mask)  # type: ignore[no-any-return,operator]
