"""Evaluate a model file on real image pairs: per-image metrics, the identity baseline, a report.

Protocol (../shared/docs/DOMAIN.md): all 13 bands, TOA reflectance on the 0-1 scale (DN / 10000),
metrics per full image (no central crop), then the mean over images. The model's output is clipped to
its valid range before scoring. The identity baseline scores the cloudy input itself against the
reference: a model must beat it to be useful.

Outputs in ``out_dir``: ``metrics.csv`` (one row per image + model / identity columns),
``report.md`` (protocol, mean table, per-image table, quick-looks) and ``quicklook_*.png`` (per row:
SAR VV | cloudy | restored | reference; true colour B4, B3, B2 with one 2-98 % stretch per row,
computed on the reference and applied to all three optical panels). For a model with an error head
(the trust layer, docs/TRUST.md) also: the within-image Spearman correlation between predicted and
actual absolute error per image, a reliability table and ``reliability.png``.
"""

from __future__ import annotations

import csv
import math
import os
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .bands import RGB_INDICES, S2_DN_SCALE
from .errors import CancelledError, InputError, ModelFileError
from .metrics import METRIC_NAMES, compute_metrics
from .normalization import Normalization

SOURCES: tuple[str, ...] = ("model", "identity")


@dataclass
class EvaluationResult:
    """What :func:`evaluate` measured and wrote.

    Attributes:
        rows: one dict per image: ``id``, ``cloud_fraction``, ``has_sar`` and ``{model,identity}_{metric}``.
        mean: mean over images of every numeric column (``model_psnr``, ``identity_sam``, ...).
        n_images: number of images scored.
        data_kind: "triplets", "pairs" or "sen12mscr-test".
        out_dir: output folder.
        metrics_csv: path of metrics.csv.
        report_md: path of report.md.
        quicklooks: paths of the quick-look PNGs.
        reliability: the trust layer's reliability table (pooled pixels), empty without an error head.
        reliability_png: the reliability plot, when written.
    """

    rows: list[dict[str, Any]]
    mean: dict[str, float]
    n_images: int
    data_kind: str
    out_dir: Path
    metrics_csv: Path
    report_md: Path
    quicklooks: list[Path] = field(default_factory=list)
    reliability: list[Any] = field(default_factory=list)
    reliability_png: Path | None = None


# ------------------------------------------------------------------------------------------ data


def open_evaluation_data(data_dir: str | os.PathLike[str], normalization: Normalization | None = None) -> tuple[Any, str]:
    """Open an evaluation data folder, detecting its layout.

    Args:
        data_dir: a triplet folder (``{id}_s1.tif``, ``{id}_s2_cloudy.tif``, ``{id}_s2_cloudfree.tif``,
            optional ``{id}_cloudmask.tif``), a pair folder (no ``_s1``: SAR-less evaluation), or a
            SEN12MS-CR root (its standard test split is used).
        normalization: passed to the reader (S2 must stay DN / 10000 for the metrics).

    Returns:
        ``(dataset, kind)`` with kind "triplets", "pairs" or "sen12mscr-test".

    Raises:
        InputError: when the folder is missing or its layout is not recognised.
    """
    from . import datasets as ds

    p = Path(data_dir)
    if not p.is_dir():
        raise InputError(f"evaluation data folder not found: {p}")
    try:
        layout = ds.detect_layout(p)
    except InputError:
        layout = ""
    if layout == "triplets":
        return ds.TripletFolder(p, normalization=normalization), "triplets"
    if layout == "pairs":
        return ds.CloudyClearPairs(p, normalization=normalization), "pairs"
    if layout == "sen12mscr":
        return ds.Sen12MSCR(p, split="test", normalization=normalization, validate="first"), "sen12mscr-test"
    raise InputError(
        f"{p}: not an evaluation data folder (expected {{id}}_s1.tif / {{id}}_s2_cloudy.tif / "
        "{id}_s2_cloudfree.tif triplets, cloudy/cloud-free pairs, or a SEN12MS-CR ROIs* tree)"
    )


# ------------------------------------------------------------------------------------------ images


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def write_png(path: str | os.PathLike[str], rgb: np.ndarray) -> Path:
    """Write an 8-bit RGB image ``(H, W, 3)`` uint8 as PNG (zlib only; temp file + rename)."""
    img = np.ascontiguousarray(rgb, dtype=np.uint8)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected (H, W, 3) uint8, got {img.shape}")
    h, w, _ = img.shape
    raw = b"".join(b"\x00" + img[r].tobytes() for r in range(h))
    data = (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
        + _png_chunk(b"IDAT", zlib.compress(raw, 6))
        + _png_chunk(b"IEND", b"")
    )
    out = Path(path)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, out)
    return out


def stretch_limits(x: np.ndarray, lo: float = 2.0, hi: float = 98.0) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel percentiles of ``(C, H, W)`` (finite values), for a linear display stretch."""
    flat = x.reshape(x.shape[0], -1)
    a = np.nanpercentile(flat, lo, axis=1)
    b = np.nanpercentile(flat, hi, axis=1)
    b = np.where(b - a < 1e-6, a + 1e-6, b)
    return a, b


def _to_u8(x: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    y = (x - a[:, None, None]) / (b - a)[:, None, None]
    return (np.clip(np.nan_to_num(y), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).transpose(1, 2, 0)


def quicklook_row(s1: np.ndarray | None, cloudy: np.ndarray, restored: np.ndarray, reference: np.ndarray, gap: int = 4) -> np.ndarray:
    """One quick-look row ``(H, 4 W + 3 gap, 3)`` uint8: SAR VV | cloudy | restored | reference.

    Args:
        s1: ``(2, H, W)`` 0-1 SAR (VV shown in grey) or ``None`` (grey panel).
        cloudy, restored, reference: ``(13, H, W)`` reflectance; shown as B4, B3, B2 with the 2-98 %
            stretch of the reference applied to all three.
        gap: white separator width (px).
    """
    rgb_idx = list(RGB_INDICES)
    a, b = stretch_limits(reference[rgb_idx])
    panels = [_to_u8(img[rgb_idx], a, b) for img in (cloudy, restored, reference)]
    h, w = reference.shape[1:]
    if s1 is not None and float(np.abs(s1).sum()) > 0:
        va, vb = stretch_limits(s1[:1])
        sar = np.repeat(_to_u8(s1[:1], va, vb), 3, axis=2)
    else:
        sar = np.full((h, w, 3), 128, np.uint8)
    sep = np.full((h, gap, 3), 255, np.uint8)
    return np.concatenate([sar, sep, panels[0], sep, panels[1], sep, panels[2]], axis=1)


# ------------------------------------------------------------------------------------------ evaluation


def _fmt(v: float, digits: int = 4) -> str:
    if isinstance(v, float) and (math.isinf(v) or math.isnan(v)):
        return str(v)
    return f"{v:.{digits}f}"


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _write_csv(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(columns))
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    os.replace(tmp, path)


def _columns() -> list[str]:
    return ["id", "cloud_fraction", "has_sar"] + [f"{s}_{m}" for s in SOURCES for m in METRIC_NAMES]


def score_image(
    model: torch.nn.Module,
    sample: dict[str, Any],
    device: torch.device,
    model_normalization: Normalization | None = None,
    use_mask: bool = True,
    error_scale: float | None = None,
) -> tuple[dict[str, Any], np.ndarray]:
    """Score the model and the identity baseline on one full image: THE scoring rule of the project.

    ``mmcanet evaluate``, validation during training and the model card's held-out figures all call it,
    so they agree on the same data. Protocol: see the module docstring.

    Args:
        model: ``model(s2 (1,13,H,W), s1 (1,2,H,W), mask (1,1,H,W) | None) -> (1,13,H,W)``, in eval mode.
        sample: a reader sample (:mod:`mmcanet.datasets`) whose S2 is reflectance (DN / 10000).
        device: the model's device.
        model_normalization: the model's normalisation (S2 goes in / comes out through it).
        use_mask: pass the sample's cloud mask to the model (else ``None``: the model estimates it).
        error_scale: for a model with an error head, its card's calibration scale: the trust layer is
            scored too (row ``error_spearman``, ``error_mean_predicted``, ``error_mean_actual``, and the
            per-pixel arrays under ``_predicted_error`` / ``_actual_error`` for pooled tables).

    Returns:
        ``(row, restored)``: row with ``id``, ``cloud_fraction``, ``has_sar`` and ``{model,identity}_{metric}``;
        restored reflectance ``(13, H, W)`` in [0, 1].
    """
    norm = model_normalization or Normalization()
    cloudy = np.asarray(sample["s2_cloudy"], dtype=np.float32)  # reflectance 0-1
    reference = np.asarray(sample["s2_clear"], dtype=np.float32)
    s1 = np.asarray(sample["s1"], dtype=np.float32)
    mask = np.asarray(sample["mask"], dtype=np.float32).reshape(1, *cloudy.shape[1:])
    has_sar = float(np.asarray(sample.get("has_sar", 1.0))) > 0.5
    x2 = torch.from_numpy(norm.s2_to_unit(cloudy * np.float32(S2_DN_SCALE)))[None].to(device)
    x1 = torch.from_numpy(s1 if has_sar else np.zeros_like(s1))[None].to(device)
    m = torch.from_numpy(mask)[None].to(device) if use_mask else None
    err = None
    with torch.inference_mode():
        if error_scale is not None:
            y, err = model.forward_with_error(x2, x1, m)  # type: ignore[operator]
        else:
            y = model(x2, x1, m) if m is not None else model(x2, x1)
    scale = np.float32(norm.s2_max_dn / S2_DN_SCALE)
    restored = np.clip(y[0].float().cpu().numpy(), 0.0, 1.0) * scale
    restored = np.clip(restored, 0.0, 1.0)
    row: dict[str, Any] = {"id": str(sample.get("id", "")), "cloud_fraction": float(mask.mean()), "has_sar": int(has_sar)}
    if err is not None and error_scale is not None:
        from .trust import actual_error, spearman

        predicted = err[0, 0].float().cpu().numpy() * scale * np.float32(error_scale)
        actual = actual_error(restored, reference)
        row["error_spearman"] = spearman(predicted, actual)
        row["error_mean_predicted"] = float(predicted.mean())
        row["error_mean_actual"] = float(actual.mean())
        row["_predicted_error"], row["_actual_error"] = predicted, actual
    for src, img in (("model", restored), ("identity", cloudy)):
        for k, v in compute_metrics(img, reference).items():
            row[f"{src}_{k}"] = float(v)
    return row, restored


def heldout_metrics(
    model: torch.nn.Module,
    readers: Sequence[Any],
    device: torch.device,
    model_normalization: Normalization | None = None,
    use_mask: bool = True,
    rank: int = 0,
    world: int = 1,
) -> dict[str, float]:
    """Mean metrics over every image of ``readers`` in the model card's form, scored by :func:`score_image`.

    With ``world > 1`` (an initialised process group) each rank scores images ``rank, rank + world, ...``
    and the sums are all-reduced, so every rank returns the same means and no rank waits idle.

    Returns:
        ``{"psnr", "ssim", "mae", "sam", "rmse", "identity_psnr", ..., "n_images"}`` (empty when no image).
    """
    keys = [f"{s}_{m}" for s in SOURCES for m in METRIC_NAMES]
    sums = np.zeros(len(keys) + 1, dtype=np.float64)
    was_training = model.training
    model.eval()
    g = 0
    for reader in readers:
        for i in range(len(reader)):
            if g % world == rank:
                row, _ = score_image(model, reader[i], device, model_normalization, use_mask)
                sums[:-1] += [row[k] for k in keys]
                sums[-1] += 1
            g += 1
    model.train(was_training)
    if world > 1:
        import torch.distributed as dist

        t = torch.from_numpy(sums).to(device)
        dist.all_reduce(t)
        sums = t.cpu().numpy()
    n = float(sums[-1])
    if n == 0:
        return {}
    means = {k.removeprefix("model_"): float(v / n) for k, v in zip(keys, sums[:-1], strict=True)}
    return means | {"n_images": n}


def evaluate_model(
    model: torch.nn.Module,
    dataset: Any,
    out_dir: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    model_normalization: Normalization | None = None,
    limit: int | None = None,
    use_mask: bool = True,
    quicklooks: int = 8,
    data_kind: str = "",
    title: str = "",
    notes: Sequence[str] = (),
    progress: Callable[[float], None] | None = None,
    is_canceled: Callable[[], bool] | None = None,
    error_scale: float | None = None,
) -> EvaluationResult:
    """Score a model on every image of a dataset, with the identity baseline, and write the report.

    Args:
        model: ``model(s2 (1,13,H,W), s1 (1,2,H,W), mask (1,1,H,W) | None) -> (1,13,H,W)``.
        dataset: indexable samples as produced by :mod:`mmcanet.datasets`, whose S2 is DN / 10000.
        out_dir: output folder (created).
        device: torch device for the model.
        model_normalization: the model card's normalisation (S2 inputs/outputs are converted from / to
            reflectance through it); default ``Normalization()``.
        limit: score only the first ``limit`` images.
        use_mask: pass the sample's cloud mask (file or detector) to the model; else ``None``.
        quicklooks: number of images (the first ones) that get a quick-look PNG.
        data_kind: label of the data layout for the report.
        title: report title line (e.g. the model file).
        notes: extra lines for the report's header.
        progress: ``progress(fraction)`` callback.
        is_canceled: returns True to stop (raises :class:`mmcanet.errors.CancelledError`).
        error_scale: the card's calibration scale of a model with an error head (``forward_with_error``):
            the trust layer is scored too (per-image ``error_spearman``, the reliability table and plot);
            None = not scored.

    Returns:
        :class:`EvaluationResult`.

    Raises:
        InputError: empty dataset or an output folder that cannot be created.
        CancelledError: when ``is_canceled()`` returned True.
    """
    norm = model_normalization or Normalization()
    n = len(dataset) if limit is None else min(len(dataset), max(0, int(limit)))
    if n == 0:
        raise InputError("evaluation: no images to score")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"evaluation output folder '{out}' cannot be created ({exc})") from None
    dev = torch.device(device)
    rows: list[dict[str, Any]] = []
    looks: list[Path] = []
    trust_pred: list[np.ndarray] = []
    trust_actual: list[np.ndarray] = []
    model.eval()
    for i in range(n):
        if is_canceled is not None and is_canceled():
            raise CancelledError(f"evaluation cancelled after {i} of {n} images")
        s = dataset[i]
        row, restored = score_image(model, s, dev, norm, use_mask, error_scale)
        if error_scale is not None:
            trust_pred.append(row.pop("_predicted_error").ravel())
            trust_actual.append(row.pop("_actual_error").ravel())
        rows.append(row)
        cloudy, reference = np.asarray(s["s2_cloudy"], dtype=np.float32), np.asarray(s["s2_clear"], dtype=np.float32)
        s1 = np.asarray(s["s1"], dtype=np.float32)
        has_sar = bool(row["has_sar"])
        if i < quicklooks:
            png = out / f"quicklook_{i:03d}.png"
            write_png(png, quicklook_row(s1 if has_sar else None, cloudy, restored, reference))
            looks.append(png)
        if progress is not None:
            progress((i + 1) / n)
    columns = _columns() + (list(_TRUST_COLUMNS) if trust_pred else [])
    numeric = [c for c in columns if c not in ("id",)]
    mean = {c: float(np.mean([r[c] for r in rows])) for c in numeric}
    table: list[Any] = []
    rel_png: Path | None = None
    if trust_pred:
        from .trust import reliability_table

        table = reliability_table(np.concatenate(trust_pred), np.concatenate(trust_actual))
        finite = [r["error_spearman"] for r in rows if math.isfinite(r["error_spearman"])]
        mean["error_spearman_median"] = float(np.median(finite)) if finite else math.nan
        rel_png = _reliability_plot(table, out / "reliability.png")
    csv_path = out / "metrics.csv"
    _write_csv(csv_path, rows, columns)
    report = out / "report.md"
    text = _report_text(rows, mean, data_kind, title, notes, use_mask, looks)
    if trust_pred:
        text += _trust_text(rows, mean, table, rel_png, error_scale)
    _write_text_atomic(report, text)
    return EvaluationResult(rows, mean, n, data_kind, out, csv_path, report, looks, table, rel_png)


_TRUST_COLUMNS = ("error_spearman", "error_mean_predicted", "error_mean_actual")
"""Per-image columns of the trust layer (models with an error head)."""


def _reliability_plot(table: Sequence[Any], path: Path) -> Path | None:
    """Mean actual against mean predicted error per bin, with the diagonal and the +-30 % band (PNG)."""
    from .trust import RELIABILITY_TOLERANCE

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # the plot is optional; the table is in the report
        return None
    pred = np.array([b.mean_predicted for b in table])
    act = np.array([b.mean_actual for b in table])
    top = float(max(pred.max(), act.max()) * 1.15) if len(table) else 1.0
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    line = np.array([0.0, top])
    ax.fill_between(line, line * (1 - RELIABILITY_TOLERANCE), line * (1 + RELIABILITY_TOLERANCE), color="0.9",
                    label=f"within +-{RELIABILITY_TOLERANCE:.0%}")
    ax.plot(line, line, color="0.5", lw=1, label="perfectly calibrated")
    ax.plot(pred, act, "o-", color="C0", label="per bin of predicted error")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("mean predicted absolute error (reflectance)")
    ax.set_ylabel("mean actual absolute error (reflectance)")
    ax.set_title("Trust layer reliability")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def _trust_text(rows: Sequence[dict[str, Any]], mean: dict[str, float], table: Sequence[Any], png: Path | None,
                error_scale: float | None) -> str:
    """The report's trust-layer section: Spearman per image, reliability table, plot."""
    from .trust import RELIABILITY_TOLERANCE, reliability_holds

    lines = [
        "", "## Trust layer (predicted absolute error)", "",
        f"- predicted = the model's predicted error (fitted predictor or error head) x the card's error_scale ({error_scale:.4f}), reflectance, mean over "
        "bands; actual = |restored - reference| mean over bands, per pixel (all pixels, as scored above).",
        f"- median within-image Spearman correlation (predicted vs actual): {_fmt(mean['error_spearman_median'], 3)}",
        f"- reliability within +-{RELIABILITY_TOLERANCE:.0%} in every bin: {'yes' if reliability_holds(table) else 'no'}",
        "", "| id | Spearman | mean predicted | mean actual |", "|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['id']} | {_fmt(r['error_spearman'], 3)} | {_fmt(r['error_mean_predicted'])} | "
                     f"{_fmt(r['error_mean_actual'])} |")
    lines += ["", "Reliability (pixels of all images in equal-count bins of predicted error):", "",
              "| predicted range | pixels | mean predicted | mean actual | actual / predicted |", "|---|---|---|---|---|"]
    for b in table:
        lines.append(f"| {b.low:.4f}-{b.high:.4f} | {b.n} | {b.mean_predicted:.4f} | {b.mean_actual:.4f} | {b.ratio:.2f} |")
    if png is not None:
        lines += ["", f"![reliability]({png.name})"]
    return "\n".join(lines) + "\n"


def _report_text(
    rows: Sequence[dict[str, Any]],
    mean: dict[str, float],
    data_kind: str,
    title: str,
    notes: Sequence[str],
    use_mask: bool,
    looks: Sequence[Path],
) -> str:
    units = {"psnr": "dB", "ssim": "", "mae": "", "sam": "deg", "rmse": ""}
    better = {"psnr": "higher", "ssim": "higher", "mae": "lower", "sam": "lower", "rmse": "lower"}
    lines = [f"# Evaluation report{': ' + title if title else ''}", ""]
    lines += [f"- {n}" for n in notes]
    lines += [
        f"- data layout: {data_kind or 'unknown'}; images scored: {len(rows)}",
        "- protocol: all 13 bands, TOA reflectance 0-1 (DN / 10000), full images (no crop), metrics per "
        "image then averaged; PSNR = 20 log10(1 / RMSE); SSIM 11x11 Gaussian (sigma 1.5, C1 = 0.01^2, "
        "C2 = 0.03^2, mean over bands); SAM in degrees (mean over pixels). Model output clipped to [0, 1].",
        f"- cloud mask passed to the model: {'yes (mask file, else the rule-based detector)' if use_mask else 'no'}",
        "- identity = the cloudy input scored against the reference (the baseline to beat).",
        "",
        "## Mean over images",
        "",
        "| metric | model | identity | better |",
        "|---|---|---|---|",
    ]
    for m in METRIC_NAMES:
        u = f" ({units[m]})" if units[m] else ""
        lines.append(f"| {m.upper()}{u} | {_fmt(mean[f'model_{m}'])} | {_fmt(mean[f'identity_{m}'])} | {better[m]} |")
    lines += [
        "",
        "## Per image",
        "",
        "| id | cloud fraction | PSNR model | PSNR identity | SSIM model | SSIM identity | SAM model | SAM identity |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['id']} | {r['cloud_fraction']:.3f} | {_fmt(r['model_psnr'], 2)} | {_fmt(r['identity_psnr'], 2)} "
            f"| {_fmt(r['model_ssim'])} | {_fmt(r['identity_ssim'])} | {_fmt(r['model_sam'], 2)} | {_fmt(r['identity_sam'], 2)} |"
        )
    if looks:
        lines += ["", "## Quick-looks", "", "Each row: SAR VV | cloudy | restored | reference (B4 B3 B2, 2-98 % stretch of the reference).", ""]
        for p, r in zip(looks, rows, strict=False):
            lines += [f"**{r['id']}**", "", f"![{r['id']}]({p.name})", ""]
    return "\n".join(lines) + "\n"


def evaluate(
    model_path: str | os.PathLike[str] | None,
    data_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    device: str = "cpu",
    limit: int | None = None,
    *,
    use_mask: bool = True,
    quicklooks: int = 8,
    progress: Callable[[float], None] | None = None,
    is_canceled: Callable[[], bool] | None = None,
) -> EvaluationResult:
    """Evaluate a model file on a data folder (triplets, pairs or SEN12MS-CR test split).

    Args:
        model_path: ``.safetensors`` model file (``None``: the bundled model).
        data_dir: evaluation data (see :func:`open_evaluation_data`).
        out_dir: folder for metrics.csv, report.md and the quick-look PNGs.
        device: torch device string ("cpu", "cuda", "cuda:1", ...).
        limit: score only the first ``limit`` images.
        use_mask: pass the cloud mask (file or detector) to the model.
        quicklooks: number of quick-look PNGs.
        progress: ``progress(fraction)`` callback.
        is_canceled: cancel callback.

    Returns:
        :class:`EvaluationResult` (per-image rows, means, output paths).

    Raises:
        InputError: bad data folder / output folder; ModelFileError: unusable model file.
    """
    from .modelfile import default_model_path, load_model, read_card
    from .outputs import check_outputs

    # the data folder is opened before the weights are loaded: a wrong folder fails fast
    mpath = Path(model_path) if model_path is not None else default_model_path()
    out = Path(out_dir)
    check_outputs(
        {"output folder": out, "metrics file": out / "metrics.csv", "report": out / "report.md"},
        {"evaluation data": data_dir, "model file": mpath},
    )
    try:
        card_norm = read_card(mpath).normalization
    except ModelFileError:  # load_model below reports the problem
        card_norm = None
    reader_norm = Normalization(s1_db_ranges=card_norm.s1_db_ranges) if card_norm is not None else Normalization()
    dataset, kind = open_evaluation_data(data_dir, reader_norm)
    model, card = load_model(mpath, device)
    from .trust import trust_settings

    return evaluate_model(
        model,
        dataset,
        out_dir,
        device=device,
        model_normalization=card.normalization,
        limit=limit,
        use_mask=use_mask,
        quicklooks=quicklooks,
        data_kind=kind,
        title=str(mpath),
        notes=[f"model: {card.summary()}", f"data: {Path(data_dir)}", f"device: {device}"],
        progress=progress,
        is_canceled=is_canceled,
        error_scale=trust_settings(card)[0] if card.has_error_head else None,
    )
