"""Training configuration: one dataclass whose fields and defaults are the documented schema (TOML/YAML)."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError

DATA_KINDS: tuple[str, ...] = ("auto", "triplets", "pairs", "sen12mscr", "simulated", "bigearthnet", "s1s2")
"""Data source kinds: triplets = {id}_s1/_s2_cloudy/_s2_cloudfree[/_cloudmask].tif folders;
pairs = *_s2_cloudy.tif / *_s2_cloudfree.tif without SAR; sen12mscr = official layout (train split);
simulated = the clear images of a triplet/pairs/georef folder with our simulated clouds;
bigearthnet = BigEarthNet-MM S1/S2 band folders (clear, Level-2A) with simulated clouds;
s1s2 = clear co-registered {id}_s1.tif + {id}_s2.tif pairs with simulated clouds."""
SIM_MASKS: tuple[str, ...] = ("opacity", "detected")
"""What a simulated sample's guidance mask is (``TrainConfig.sim_mask``)."""


@dataclass
class DataSource:
    """One training/validation data source.

    Args:
        path: folder.
        kind: one of DATA_KINDS ("auto" detects triplets / pairs / sen12mscr from the file names).
        include: ids (file stems before the suffix) to use; empty = all.
        exclude: ids to leave out (e.g. held-out validation ids).
        repeat: how many times each image is drawn per epoch (weights small real sets up).
    """

    path: str
    kind: str = "auto"
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    repeat: int = 1


@dataclass
class TrainConfig:
    """Everything a training run needs; every field has a default (see docs/TRAINING.md).

    Args:
        data: training sources (folder paths or DataSource tables).
        val: validation sources (never trained on); metrics reported per epoch and in the model card.
        arch: architecture (mmcanet, mmcanet_optical, dsen2cr).
        strategy: progressive strategy (single, multistage, iterative, thin_to_thick, outside_in).
        model: architecture overrides (e.g. {"widths": [16, 32, 64, 96], "stages": 2}).
        epochs: passes over the training sources.
        max_steps: stop after this many optimiser steps (0 = no limit); a fixed budget for comparisons
            (the learning-rate schedule spans this budget).
        stop_at: end the run after this step WITHOUT changing the schedule (0 = off): an early stop
            that rerunning the config reproduces exactly.
        batch_size: samples per step (per process under torchrun).
        crop: random crop side in px for training (multiple of 8).
        lr: peak AdamW learning rate.
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up steps before the cosine decay.
        loss_l1, loss_carl, loss_ssim, loss_sam, loss_opacity: loss term weights.
        loss_error: weight of the error head's Laplace NLL (models with ``model.error_head``; the head
            judges the detached restoration, so this term never changes the restoration).
        train_only: names of top-level sub-modules to train (e.g. ["error_head"]); the rest is frozen
            and runs as at inference. Empty = train everything. Adds the trust layer to a finished model.
        stage_decay: weight of stage k is stage_decay ** (K - 1 - k) (deep supervision of progressive stages).
        curriculum: for simulated clouds, grow cloud thickness from thin to thick over the first half.
        sar_dropout: probability of zeroing SAR in a sample (teaches the model to work without SAR).
        sim_mask: the cloud mask simulated samples give the network as guidance. "opacity" (default): the
            simulated opacity itself, haze included. "detected": the rule-based detector's cloud + shadow
            mask of the simulated cloudy image, i.e. what the engine gives it at inference and what real
            triplets are trained with (the detector misses most haze, so the network learns to remove
            haze the mask does not show). Either way the opacity net and the CARL term learn from the
            simulated opacity.
        sim_bright_clouds: fraction (0-1) of simulated samples whose thick cloud is brighter than the
            fitted table, half of them ice cloud (:func:`mmcanet.clouds.simulate.bright_cloud_brightness`):
            real overcast reaches 0.7-0.85 reflectance, the table ~0.5. 0 (default) draws no extra random
            numbers, so older configs give the same samples.
        seed: global seed (data order, crops, augmentation, simulated clouds, init).
        device: auto, cpu or cuda.
        amp: bfloat16 autocast on CUDA.
        threads: torch CPU threads (0 = torch default; under torchrun the CPUs divided among the local ranks).
        workers: data-loader worker processes per training process (-1 = auto: the CPUs of this process
            minus one, at most 8; 0 = load in the training process). The samples do not depend on it.
        cache_mb: decoded images kept in memory per loader worker (or per process without workers), in
            MiB; a set smaller than this is read once, a larger one is re-read (least recently used first).
        checkpoint_every: steps between checkpoints (also written at the end and on cancel).
        log_every: steps between metrics.csv rows / log lines.
        val_every: steps between validations (0 = at the end of every epoch); also at the end.
        run_dir: folder for checkpoints, metrics.csv, curves.png.
        output: final model file (.safetensors).
        name: model name written into the card.
        tile_size, overlap: inference defaults written into the card.
        resume: continue from run_dir/checkpoint.pt when present.
        overwrite: start over in a run_dir that holds another run's checkpoint / metrics (they are
            replaced); without it (and without ``resume``) such a run_dir is refused.
        init: model file (.safetensors) whose weights start the run (fine-tuning); its architecture,
            strategy and config must match this config's.
    """

    data: list[DataSource] = field(default_factory=list)
    val: list[DataSource] = field(default_factory=list)
    arch: str = "mmcanet"
    strategy: str = "single"
    model: dict[str, Any] = field(default_factory=dict)
    epochs: int = 10
    max_steps: int = 0
    stop_at: int = 0
    batch_size: int = 4
    crop: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    loss_l1: float = 1.0
    loss_carl: float = 0.5
    loss_ssim: float = 0.2
    loss_sam: float = 0.5
    loss_opacity: float = 0.1
    loss_error: float = 0.1
    train_only: list[str] = field(default_factory=list)
    stage_decay: float = 0.5
    curriculum: bool = True
    sar_dropout: float = 0.1
    sim_mask: str = "opacity"
    sim_bright_clouds: float = 0.0
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    threads: int = 0
    workers: int = -1
    cache_mb: int = 1024
    checkpoint_every: int = 100
    log_every: int = 10
    val_every: int = 0
    run_dir: str = "runs/default"
    output: str = "runs/default/model.safetensors"
    name: str = "mmcanet"
    tile_size: int = 256
    overlap: int = 32
    resume: bool = False
    overwrite: bool = False
    init: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _source(item: Any, where: str, base: Path) -> DataSource:
    if isinstance(item, (str, os.PathLike)):
        item = {"path": str(item)}
    if not isinstance(item, dict):
        raise ConfigError(f"{where}: expected a folder path or a table, got {type(item).__name__}")
    known = {f.name for f in fields(DataSource)}
    unknown = set(item) - known
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    if "path" not in item:
        raise ConfigError(f"{where}: 'path' is required")
    for key, kind in (("path", str), ("kind", str), ("include", list), ("exclude", list), ("repeat", int)):
        if key in item and (isinstance(item[key], bool) or not isinstance(item[key], kind)):
            raise ConfigError(f"{where}: {key} must be a {'list of ids' if kind is list else kind.__name__}, got {item[key]!r}")
    for key in ("include", "exclude"):
        if not all(isinstance(v, str) for v in item.get(key, [])):
            raise ConfigError(f"{where}: {key} must be a list of ids (strings), got {item[key]!r}")
    if not item["path"]:
        raise ConfigError(f"{where}: path is empty")
    if item.get("repeat", 1) < 1:
        raise ConfigError(f"{where}: repeat must be >= 1, got {item['repeat']}")
    src = DataSource(**item)
    if src.kind not in DATA_KINDS:
        raise ConfigError(f"{where}: kind {src.kind!r} unknown; choose one of {', '.join(DATA_KINDS)}")
    p = Path(os.path.expanduser(src.path))
    src.path = str(p if p.is_absolute() else (base / p))
    return src


def config_from_dict(d: dict[str, Any], base: Path | None = None, source: str = "config") -> TrainConfig:
    """Validate a plain dict (unknown keys are errors naming the key) into a TrainConfig."""
    base = base or Path.cwd()
    known = {f.name: f for f in fields(TrainConfig)}
    unknown = set(d) - set(known)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(sorted(unknown))}; known keys: {', '.join(sorted(known))}")
    kwargs: dict[str, Any] = {}
    for key, value in d.items():
        if key in ("data", "val"):
            if not isinstance(value, list):
                value = [value]
            kwargs[key] = [_source(v, f"{source}: {key}[{i}]", base) for i, v in enumerate(value)]
            continue
        default = getattr(TrainConfig(), key)
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{source}: {key} must be true or false, got {value!r}")
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{source}: {key} must be an integer, got {value!r}")
        elif isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{source}: {key} must be a number, got {value!r}")
            value = float(value)
            if not math.isfinite(value):
                raise ConfigError(f"{source}: {key} must be a finite number, got {value!r}")
        elif isinstance(default, str):
            if not isinstance(value, str):
                raise ConfigError(f"{source}: {key} must be a string, got {value!r}")
        elif isinstance(default, list) and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise ConfigError(f"{source}: {key} must be a list of strings, got {value!r}")
        elif isinstance(default, dict) and not isinstance(value, dict):
            raise ConfigError(f"{source}: {key} must be a table, got {value!r}")
        kwargs[key] = value
    cfg = TrainConfig(**kwargs)
    for key in ("run_dir", "output", "init"):
        if not getattr(cfg, key):
            continue
        p = Path(os.path.expanduser(getattr(cfg, key)))
        setattr(cfg, key, str(p if p.is_absolute() else base / p))
    _check(cfg, source)
    return cfg


def _check(cfg: TrainConfig, source: str) -> None:
    from .models import ARCHITECTURES, STRATEGIES, model_config

    if cfg.arch not in ARCHITECTURES:
        raise ConfigError(f"{source}: arch {cfg.arch!r} unknown; choose one of {', '.join(ARCHITECTURES)}")
    if cfg.strategy not in STRATEGIES:
        raise ConfigError(f"{source}: strategy {cfg.strategy!r} unknown; choose one of {', '.join(STRATEGIES)}")
    try:
        model_config(cfg.arch, **cfg.model)
    except ValueError as exc:
        raise ConfigError(f"{source}: model: {exc}") from None
    if cfg.device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"{source}: device must be auto, cpu or cuda, got {cfg.device!r}")
    if cfg.crop % 8 or cfg.crop < 16:
        raise ConfigError(f"{source}: crop must be a multiple of 8 and >= 16, got {cfg.crop}")
    for key in ("epochs", "batch_size", "checkpoint_every", "log_every"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"{source}: {key} must be >= 1, got {getattr(cfg, key)}")
    if cfg.workers < -1:
        raise ConfigError(f"{source}: workers must be >= 0, or -1 for automatic, got {cfg.workers}")
    for key in ("max_steps", "stop_at", "warmup_steps", "threads", "overlap", "cache_mb"):
        if getattr(cfg, key) < 0:
            raise ConfigError(f"{source}: {key} must be >= 0 (0 = {_ZERO_MEANS[key]}), got {getattr(cfg, key)}")
    if cfg.lr <= 0:
        raise ConfigError(f"{source}: lr must be > 0, got {cfg.lr}")
    for key in ("weight_decay", "loss_l1", "loss_carl", "loss_ssim", "loss_sam", "loss_opacity", "loss_error"):
        if getattr(cfg, key) < 0:
            raise ConfigError(f"{source}: {key} must be >= 0, got {getattr(cfg, key)}")
    if not any(getattr(cfg, k) for k in ("loss_l1", "loss_carl", "loss_ssim", "loss_sam")):
        raise ConfigError(f"{source}: every restoration loss weight (loss_l1, loss_carl, loss_ssim, loss_sam) is 0; nothing would be learnt")
    for key in ("sar_dropout", "stage_decay", "sim_bright_clouds"):
        if not 0.0 <= getattr(cfg, key) <= 1.0:
            raise ConfigError(f"{source}: {key} is a fraction and must be between 0 and 1, got {getattr(cfg, key)}")
    if cfg.sim_mask not in SIM_MASKS:
        raise ConfigError(f"{source}: sim_mask must be one of {', '.join(SIM_MASKS)}, got {cfg.sim_mask!r}")
    if cfg.tile_size < 16:
        raise ConfigError(f"{source}: tile_size must be >= 16 px, got {cfg.tile_size}")
    if cfg.overlap > cfg.tile_size // 2:
        raise ConfigError(f"{source}: overlap must be at most half of tile_size ({cfg.tile_size // 2} px), got {cfg.overlap}")
    if not cfg.run_dir or not cfg.output:
        raise ConfigError(f"{source}: run_dir and output must not be empty")
    out, run = Path(cfg.output), Path(cfg.run_dir)
    if os.path.realpath(out) == os.path.realpath(run) or out.is_dir():
        raise ConfigError(
            f"{source}: output '{cfg.output}' is a folder (or the run_dir); it is the model FILE to write, "
            f"e.g. {run / 'model.safetensors'}"
        )
    if out.suffix.lower() != ".safetensors":
        raise ConfigError(f"{source}: output '{cfg.output}' must end in .safetensors (it is a safetensors model file)")
    if cfg.resume and cfg.overwrite:
        raise ConfigError(f"{source}: resume and overwrite exclude each other (continue the run, or start it over)")


_ZERO_MEANS = {"max_steps": "no limit", "stop_at": "off", "warmup_steps": "no warm-up", "threads": "torch default",
               "overlap": "no overlap", "cache_mb": "no cache"}


def load_config(path: str | os.PathLike[str], overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a TOML (.toml) or YAML (.yaml/.yml) file; relative paths resolve against its folder."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix.lower() == ".toml":
            import tomllib

            d = tomllib.loads(text)
        elif p.suffix.lower() in (".yaml", ".yml"):
            import yaml  # type: ignore[import-untyped]

            d = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"{p}: use a .toml or .yaml file")
    except ConfigError:
        raise
    except Exception as exc:  # parser errors carry line numbers
        raise ConfigError(f"{p}: cannot parse ({exc})") from None
    if not isinstance(d, dict):
        raise ConfigError(f"{p}: the top level must be a table/mapping")
    d.update(overrides or {})
    return config_from_dict(d, p.parent.resolve(), str(p))
