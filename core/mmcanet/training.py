"""Training loop: seeded data order, checkpoints every N steps, exact resume, DDP under torchrun.

The samples come from the one pipeline of :mod:`mmcanet.trainset` (worker processes, bounded cache,
sharding over ranks); validation and the model card's held-out figures use the scoring rule of
``mmcanet evaluate`` (:func:`mmcanet.evaluation.heldout_metrics`).
"""

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from .config import TrainConfig
from .errors import CancelledError, ConfigError, InputError
from .losses import laplace_nll, opacity_loss, restoration_loss
from .modelfile import ModelCard, save_model
from .models import build_model, model_config

LOG = logging.getLogger(__name__)
DIST_TIMEOUT = timedelta(minutes=30)
"""How long a rank waits in a collective (NCCL's default of 10 min is short for a slow validation)."""


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


def _read_ckpt(path: Path) -> dict[str, Any]:
    """Read a checkpoint to the CPU; a damaged or foreign file is a clear error."""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
        state = ck["state"]
        for k in ("step", "epoch", "batch"):
            int(state[k])
        missing = [k for k in ("model", "optimizer") if k not in ck]
        if missing:
            raise KeyError(f"no {' / '.join(missing)}")
    except Exception as exc:  # truncated zip, not a checkpoint, missing keys: torch raises many kinds
        raise InputError(
            f"checkpoint {path} cannot be read ({type(exc).__name__}: {str(exc)[:200]}); it is damaged or not a "
            "checkpoint of this program. Start over with --overwrite (or overwrite = true), or restore a copy"
        ) from None
    return ck  # type: ignore[no-any-return]


def _load_ckpt(path: Path, distributed: bool, rank: int) -> dict[str, Any] | None:
    """The checkpoint at ``path`` (None when there is none), read on rank 0 and broadcast to the other ranks.

    Only rank 0 touches the file (ranks on other machines need not see it); a read error on rank 0 is
    raised on every rank, so none waits in a collective.
    """
    payload: dict[str, Any] = {}
    if rank == 0 and path.is_file():
        try:
            payload = {"ck": _read_ckpt(path)}
        except InputError as exc:
            payload = {"error": str(exc)}
    if distributed:
        box = [payload]
        dist.broadcast_object_list(box, src=0)
        payload = box[0]
    if "error" in payload:
        raise InputError(payload["error"])
    return payload.get("ck")


def _apply_ckpt(ck: dict[str, Any], path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
    """Restore model and optimiser; a checkpoint of another network is a ConfigError saying what to do."""
    try:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
    except (RuntimeError, KeyError, ValueError) as exc:
        raise ConfigError(
            f"checkpoint {path} was written for another network than this config builds ({str(exc).splitlines()[0][:200]}); "
            "resume with the config it was trained with, or start over with --overwrite"
        ) from None


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


CSV_FIELDS = ["step", "epoch", "lr", "loss", "l1", "carl", "ssim", "sam", "opacity", "error_nll", "seconds",
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
    from .devices import training_device
    from .trainset import cpus_per_process

    rank, world, local_rank = _dist_info()
    say = (log or LOG.info) if rank == 0 else (lambda _msg: None)  # one voice under torchrun
    distributed = world > 1
    device = training_device(cfg.device, local_rank)  # set_device happens here, before any CUDA use
    if distributed and not dist.is_initialized():
        if device.type == "cuda":
            dist.init_process_group("nccl", timeout=DIST_TIMEOUT, device_id=device)
        else:
            dist.init_process_group("gloo", timeout=DIST_TIMEOUT)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    elif distributed and device.type == "cpu":
        torch.set_num_threads(cpus_per_process())  # ranks on one machine share its CPUs

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
    from .datasets import open_source
    from .evaluation import heldout_metrics
    from .trainset import RunPlan, TrainingDataset, default_workers, make_loader

    data = TrainingDataset(cfg.data, cfg, "train")
    val_readers = [open_source(s.path, s.kind, "val", s.include, s.exclude)[0] for s in cfg.val]
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    model = build_model(cfg.arch, cfg.strategy, **cfg.model).to(device)
    if cfg.init:
        _init_from(model, cfg)
    params = _trainable(model, cfg)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = RunPlan(len(data), cfg.batch_size, cfg.seed, cfg.epochs, rank, world).steps_per_epoch()
    total = steps_per_epoch * cfg.epochs
    if cfg.max_steps:
        total = min(total, cfg.max_steps)

    step, start_epoch, start_consumed = 0, 0, 0
    val_metrics: dict[str, float] = {}
    ck = _load_ckpt(ckpt_path, distributed, rank) if cfg.resume else None
    if ck is not None:
        _apply_ckpt(ck, ckpt_path, model, opt)
        state = ck["state"]
        step, start_epoch = int(state["step"]), int(state["epoch"])
        # checkpoints before the shard plan stored batches of this process only
        start_consumed = int(state.get("samples", int(state["batch"]) * cfg.batch_size * int(state.get("world", world))))
        del ck
        if rank == 0:
            _trim_csv(csv_path, step)
        was = int(state.get("world", world))
        say(f"resumed from {ckpt_path} at step {step} (epoch {start_epoch}, {start_consumed} samples of it done"
            + (f"; written by {was} process(es), continued by {world})" if was != world else ")"))
    elif rank == 0:
        with open(csv_path, "w", newline="") as fh:
            csv.DictWriter(fh, CSV_FIELDS).writeheader()
    if distributed:
        dist.barrier()

    net: torch.nn.Module = model
    if distributed:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
        )
    _set_train_mode(model, cfg)
    use_amp = cfg.amp and device.type == "cuda"
    workers = cfg.workers if cfg.workers >= 0 else default_workers()
    plan = RunPlan(len(data), cfg.batch_size, cfg.seed, cfg.epochs, rank, world, start_epoch, start_consumed)
    loader = make_loader(data, plan, workers, pin_memory=device.type == "cuda")
    say(f"training {cfg.arch}/{cfg.strategy} on {device} ({world} process(es), {workers} loader worker(s) each): "
        f"{len(data)} samples, {steps_per_epoch} steps/epoch, {total} steps, batch {cfg.batch_size}, crop {cfg.crop}")

    bar = None
    if rank == 0 and sys.stderr.isatty() and own_log:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=step, desc="train", unit="step")
    t0 = time.perf_counter()
    acc: dict[str, list[float]] = {}
    where = (start_epoch, start_consumed)  # the next sample to train on: (epoch, samples of it consumed)

    def checkpoint() -> None:
        if rank == 0:
            _save_ckpt(ckpt_path, model, opt, {"step": step, "epoch": where[0], "samples": where[1], "world": world,
                                               "batch": where[1] // (cfg.batch_size * world)})

    def validation() -> dict[str, float]:
        return heldout_metrics(model, val_readers, device, rank=rank, world=world) if val_readers else {}

    end = min(total, cfg.stop_at) if cfg.stop_at else total
    done = step >= end
    batches = iter(loader)
    try:
        for pos in ([] if done else plan):
            if is_canceled is not None and is_canceled():
                checkpoint()
                raise CancelledError(f"training cancelled at step {step}; checkpoint kept in {ckpt_path} (resume to continue)")
            if _stop_requested(stop, distributed, device):
                checkpoint()
                say(f"interrupted at step {step}; checkpoint written to {ckpt_path} (continue with --resume)")
                raise KeyboardInterrupt(f"signal {stop.signal}")
            batch = {k: v.to(device, non_blocking=True) for k, v in next(batches).items()}
            epoch = pos.epoch
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
                l_k, t_k = restoration_loss(pred.float(), batch["s2_clear"], batch["s2_cloudy"], batch["opacity"],
                                            cfg.loss_l1, cfg.loss_carl, cfg.loss_ssim, cfg.loss_sam)
                loss = loss + w * l_k
                if k == len(stages) - 1:
                    terms = t_k
            if "log_error" in outputs and cfg.loss_error:
                le = laplace_nll(outputs["log_error"].float(), outputs["restored"].float(), batch["s2_clear"])
                loss = loss + cfg.loss_error * le
                terms["error_nll"] = float(le.detach())
            if cfg.loss_opacity:
                lo = opacity_loss(outputs["opacity_logits"].float(), batch["opacity"])
                loss = loss + cfg.loss_opacity * lo
                terms["opacity"] = float(lo.detach())
            if not torch.isfinite(loss):
                raise InputError(f"training diverged at step {step} (loss {float(loss)}); lower lr (now {cfg.lr})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            step += 1
            where = (epoch + 1, 0) if pos.consumed >= len(data) else (epoch, pos.consumed)
            terms["loss"] = float(loss.detach())
            for k2, v in terms.items():
                acc.setdefault(k2, []).append(v)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{float(loss):.4f}")
            if progress is not None:
                progress(step / end)
            done = step >= end
            validate = done or (step % cfg.val_every == 0 if cfg.val_every else pos.last_of_epoch)
            if step % cfg.log_every == 0 or validate:
                row: dict[str, Any] = {"step": step, "epoch": epoch, "lr": f"{lr:.3g}", "seconds": f"{time.perf_counter() - t0:.1f}"}
                row.update({k2: f"{np.mean(v):.5f}" for k2, v in acc.items()})
                acc = {}
                if validate and val_readers:
                    val_metrics = validation()  # every rank scores its share
                    _set_train_mode(model, cfg)
                    row.update({f"val_{k2}": f"{val_metrics[k2]:.4f}" for k2 in ("psnr", "ssim", "mae", "sam")})
                    row["val_identity_psnr"] = f"{val_metrics['identity_psnr']:.4f}"
                if rank == 0:
                    with open(csv_path, "a", newline="") as fh:
                        csv.DictWriter(fh, CSV_FIELDS, extrasaction="ignore").writerow(row)
                    if bar is None:
                        say(" ".join(f"{k2}={v}" for k2, v in row.items()))
            if step % cfg.checkpoint_every == 0 or done:
                checkpoint()
            if done:
                break
    finally:
        _stop_workers(batches)
    if bar is not None:
        bar.close()
    if not val_metrics and val_readers:
        val_metrics = validation()
    if rank == 0:
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


def _stop_workers(batches: Any) -> None:
    """End the loader's worker processes now (not whenever the garbage collector gets to them)."""
    shutdown = getattr(batches, "_shutdown_workers", None)
    if callable(shutdown):
        shutdown()


def _init_from(model: torch.nn.Module, cfg: TrainConfig) -> None:
    """Start from the weights of a model file (fine-tuning); the networks must be the same.

    The one allowed difference: this config adds an error head (the trust layer) to a model file
    without one; the head starts untrained.
    """
    from .modelfile import load_model

    src, card = load_model(cfg.init, "cpu")
    have = model_config(card.arch, **card.config) if card.arch == cfg.arch else dict(card.config)
    want = model_config(cfg.arch, **cfg.model)
    same = {k: v for k, v in have.items() if k != "error_head"} == {k: v for k, v in want.items() if k != "error_head"}
    if (card.arch, card.strategy) != (cfg.arch, cfg.strategy) or not same or (have.get("error_head") and not want["error_head"]):
        raise ConfigError(
            f"init: {cfg.init} is {card.arch}/{card.strategy} {card.config}; this config builds "
            f"{cfg.arch}/{cfg.strategy} {want}"
        )
    missing, unexpected = model.load_state_dict(src.state_dict(), strict=False)
    if unexpected or any(not k.startswith("error_head.") for k in missing):
        raise ConfigError(f"init: {cfg.init} does not match this network (missing {missing[:3]}, unexpected {unexpected[:3]})")


def _trainable(model: torch.nn.Module, cfg: TrainConfig) -> list[torch.nn.Parameter]:
    """The parameters the optimiser updates: all, or those of the ``train_only`` sub-modules (the rest frozen).

    Raises:
        ConfigError: a ``train_only`` name that is not a sub-module of this network.
    """
    if not cfg.train_only:
        return list(model.parameters())
    names = {n for n, m in model.named_children() if m is not None}
    unknown = sorted(set(cfg.train_only) - names)
    if unknown:
        raise ConfigError(f"train_only: no sub-module {unknown} in this {cfg.arch} network; choose from {sorted(names)} "
                          "(error_head needs model.error_head = true)")
    for n, p in model.named_parameters():
        p.requires_grad_(n.split(".")[0] in cfg.train_only)
    return [p for p in model.parameters() if p.requires_grad]


def _set_train_mode(model: torch.nn.Module, cfg: TrainConfig) -> None:
    """Training mode; with ``train_only`` the frozen rest runs in eval mode, so the error head learns to
    judge exactly the restoration inference produces (spectral prior included)."""
    if not cfg.train_only:
        model.train()
        return
    model.eval()
    for n, m in model.named_children():
        if n in cfg.train_only:
            m.train()


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
