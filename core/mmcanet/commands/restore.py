"""`mmcanet restore`: restore one scene, or a list of scenes in one process (sharded under torchrun)."""

from __future__ import annotations

import argparse
import csv
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from io import StringIO
from pathlib import Path
from typing import Any

from .. import options
from ..errors import InputError, MMCANetError
from ..options import RestoreOptions

logger = logging.getLogger("mmcanet.restore")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``restore`` subcommand."""
    d = options.defaults()
    p = subparsers.add_parser(
        "restore",
        help="remove clouds from a Sentinel-2 scene using Sentinel-1 SAR",
        description=(
            "Restore a cloudy Sentinel-2 scene (13-band L1C or 12-band L2A GeoTIFF/VRT, a .SAFE product or "
            "its MTD_MSI*.xml, or a folder of per-band files) with a Sentinel-1 scene (2 bands VV, VH, dB or "
            "linear, or a folder with a VV and a VH file; any grid overlapping the optical one). Writes a tiled, "
            "compressed GeoTIFF on the optical grid. Defaults for tile size, overlap and strategy come "
            "from the model card."
        ),
    )
    io = p.add_argument_group("inputs and outputs")
    io.add_argument("--sar", help="Sentinel-1 raster (VV, VH), or a folder with one VV and one VH raster")
    io.add_argument("--optical", help="cloudy Sentinel-2 raster, .SAFE folder, MTD_MSI*.xml, or folder of band files")
    io.add_argument("--output", help="restored GeoTIFF to write")
    io.add_argument("--cloud-mask", help="1-band cloud mask (non-zero = cloud/shadow); default: detected")
    io.add_argument("--mask-output", help="also write the cloud mask used (uint8: 1 cloud, 0 clear, 255 nodata)")
    io.add_argument("--change-output", help="also write the per-pixel mean absolute change in reflectance (float32): "
                    "how much was changed, not how right it is")
    io.add_argument("--confidence-output", dest="confidence_output", help="deprecated name of --change-output")
    io.add_argument("--uncertainty-output", help="also write the trust layer: the predicted absolute error of every "
                    "output pixel in reflectance (float32, band predicted_abs_error); needs a model with an error head")
    io.add_argument(
        "--list",
        metavar="FILE",
        help="CSV/TSV with lines 'sar,optical,output[,cloud_mask]' (relative paths: relative to FILE); "
        "restored in one process, and sharded across ranks under torchrun",
    )
    io.add_argument(
        "--extent", type=float, nargs=4, metavar=("XMIN", "YMIN", "XMAX", "YMAX"),
        help="restore only this area of interest (default: the whole image); in the optical image's CRS "
        "unless --extent-crs is given; snapped outward to the optical pixel grid",
    )
    io.add_argument("--extent-crs", help="CRS of --extent, e.g. EPSG:4326 (default: the optical image's)")
    io.add_argument(
        "--overviews", action=argparse.BooleanOptionalAction, default=d["overviews"],
        help="build internal overviews in outputs of 1024 px or more on a side, so QGIS draws zoomed-out views "
        "fast (default: %(default)s; --no-overviews saves their write time and ~1/3 of the file size)",
    )
    io.add_argument("--cog", action="store_true", default=d["cog"],
                    help="write Cloud-Optimised GeoTIFFs (GDAL COG driver) for sharing, e.g. over HTTP")
    io.add_argument(
        "--failures",
        metavar="FILE",
        help="with --list: write the scenes that failed to FILE, as a scene list to rerun (each line preceded by "
        "a '# error' comment); under torchrun rank 0 writes every rank's failures",
    )
    io.add_argument("--skip-existing", action="store_true",
                    help="with --list: skip scenes whose output already exists (resume an interrupted batch)")
    m = p.add_argument_group("model and processing")
    m.add_argument("--model", help="model file (.safetensors); default: the bundled model")
    m.add_argument("--strategy", help="progressive strategy (default: the model card's)")
    m.add_argument("--device", default=d["device"], help=f"{', '.join(options.DEVICE_CHOICES)} or cuda:N (default: %(default)s)")
    m.add_argument("--precision", choices=options.PRECISION_CHOICES, default=d["precision"],
                   help="model arithmetic: auto = bf16 on an Ampere or newer NVIDIA GPU, fp32 on the CPU "
                   "(default: %(default)s)")
    m.add_argument("--tile-size", type=int, help="tile edge in px (default: the model card's)")
    m.add_argument("--overlap", type=int, help="tile overlap in px (default: the model card's)")
    m.add_argument("--batch-size", type=int, default=d["batch_size"], help="tiles per forward pass (default: %(default)s)")
    m.add_argument(
        "--keep-clear",
        action=argparse.BooleanOptionalAction,
        default=d["keep_clear"],
        help="keep input pixels the cloud mask says are clear; --no-keep-clear restores every pixel (default: "
        "by the optical image's level: Level-2A keeps them, Level-1C has every pixel restored)",
    )
    m.add_argument(
        "--clear-weight",
        type=float,
        default=d["clear_weight"],
        help="with --keep-clear, share of the restored value in clear pixels: 0 keeps them exactly, 0.5 also "
        "halves haze the cloud detector missed, 1 restores them fully (default: %(default)s)",
    )
    m.add_argument(
        "--harmonise",
        type=int,
        default=d["harmonise"],
        metavar="PX",
        help="scale (px) over which the fill under the cloud mask takes the local brightness of the clear "
        "pixels around it; 0 turns it off (default: %(default)s)",
    )
    m.add_argument(
        "--sar-structure",
        type=int,
        default=d["sar_structure"],
        metavar="PX",
        help="under the cloud mask, replace the fill's detail finer than PX pixels by the detail the SAR "
        "predicts (a regression fitted per tile on its clear pixels); 0 turns it off (default: %(default)s)",
    )
    m.add_argument(
        "--smooth-coarse-bands",
        action=argparse.BooleanOptionalAction,
        default=d["smooth_coarse_bands"],
        help="under cloud, give the network the 20 m / 60 m bands smoothed, not as blocks (default: %(default)s)",
    )
    m.add_argument(
        "--tame-bright-cloud",
        action=argparse.BooleanOptionalAction,
        default=d["tame_bright_cloud"],
        help="under the cloud mask, give the network its training clouds' spectrum where the input is brighter "
        "than any cloud it learned from (real overcast), so it fills from the SAR (default: %(default)s)",
    )
    m.add_argument("--sar-units", choices=options.SAR_UNITS, default=d["sar_units"], help="default: %(default)s")
    m.add_argument("--threads", type=int, help="CPU threads for torch (default: all CPUs of this process)")
    m.add_argument("--gdal-cache-mb", type=int, default=256, help="GDAL block cache for this process (default: %(default)s)")
    p.set_defaults(func=run)


def shard(items: Sequence[Any], rank: int, world: int) -> list[Any]:
    """Items of one rank: every ``world``-th item starting at ``rank`` (balanced to within one item)."""
    if world < 1 or not 0 <= rank < world:
        raise InputError(f"invalid RANK={rank} / WORLD_SIZE={world}")
    return list(items[rank::world])


def rank_and_world() -> tuple[int, int]:
    """``(RANK, WORLD_SIZE)`` from the environment torchrun sets; ``(0, 1)`` otherwise."""
    try:
        return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise InputError("RANK / WORLD_SIZE environment variables must be integers") from None


def read_list(path: str | os.PathLike[str]) -> list[tuple[str, str, str, str | None]]:
    """Parse a scene list: ``sar, optical, output[, cloud_mask]`` per line (comma or tab separated).

    Blank lines, ``#`` comments and a header line (``sar,optical,output``) are skipped; relative
    paths are resolved against the list file's folder.

    Raises:
        InputError: naming the file and line for a malformed line, or when the file is missing/empty.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"scene list '{p}': file not found")
    base = p.resolve().parent
    jobs = []
    lines: list[int] = []
    try:
        text_all = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"scene list '{p}': not UTF-8 text (byte {exc.start}); save it as UTF-8 (plain CSV/TSV)") from None
    for lineno, line in enumerate(text_all.splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        delim = "\t" if "\t" in text else ","
        cols = [c.strip() for c in next(csv.reader([text], delimiter=delim))]
        while cols and not cols[-1]:
            cols.pop()
        if [c.lower() for c in cols[:3]] == ["sar", "optical", "output"]:
            continue
        if len(cols) not in (3, 4) or not all(cols[:3]):
            raise InputError(f"scene list '{p}', line {lineno}: expected 'sar,optical,output[,cloud_mask]', got {text!r}")
        full = [str(base / c) if c and not os.path.isabs(c) else c for c in cols]
        jobs.append((full[0], full[1], full[2], full[3] if len(full) == 4 and full[3] else None))
        lines.append(lineno)
    if not jobs:
        raise InputError(f"scene list '{p}': no scenes in it")
    _check_list_outputs(jobs, lines)
    return jobs


def _check_list_outputs(jobs: list[tuple[str, str, str, str | None]], lines: list[int]) -> None:
    """No two rows write the same file, and no row writes over any row's input."""
    from ..outputs import check_outputs

    check_outputs(
        {f"output of line {n}": job[2] for n, job in zip(lines, jobs, strict=True)},
        {f"input of line {n}": [x for x in (job[0], job[1], job[3]) if x] for n, job in zip(lines, jobs, strict=True)},
    )


def _progress(label: str) -> tuple[Callable[[float], None], Callable[[], None]]:
    """A progress callable: a tqdm bar on a terminal, else a log line every 10%."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=1000, desc=label, unit="‰", file=sys.stderr, leave=True)

        def update(f: float) -> None:
            bar.update(int(f * 1000) - bar.n)

        return update, bar.close
    state = {"next": 0.1}

    def log_line(f: float) -> None:
        if f >= state["next"] or f >= 1.0:
            logger.info("%s: %d%%", label, int(f * 100))
            state["next"] = (int(f * 10) + 1) / 10

    return log_line, lambda: None


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run(args: argparse.Namespace) -> int:
    """Run the subcommand; returns the exit code (0 when every scene was restored)."""
    if threading.current_thread() is threading.main_thread():
        # kill / job schedulers send SIGTERM: unwind like Ctrl-C so partial outputs are removed
        signal.signal(signal.SIGTERM, _interrupt)
    from ..gdal_calls import limit_gdal_cache
    from ..inference import restore_scene

    limit_gdal_cache(args.gdal_cache_mb)
    common = {
        "model": args.model,
        "strategy": args.strategy,
        "device": args.device,
        "tile_size": args.tile_size,
        "overlap": args.overlap,
        "batch_size": args.batch_size,
        "keep_clear": args.keep_clear,
        "clear_weight": args.clear_weight,
        "harmonise": args.harmonise,
        "sar_structure": args.sar_structure,
        "smooth_coarse_bands": args.smooth_coarse_bands,
        "tame_bright_cloud": args.tame_bright_cloud,
        "sar_units": args.sar_units,
        "threads": args.threads,
        "extent": tuple(args.extent) if args.extent else None,
        "extent_crs": args.extent_crs,
        "precision": args.precision,
        "overviews": args.overviews,
        "cog": args.cog,
    }
    if args.confidence_output:
        if args.change_output:
            raise InputError("--confidence-output is the deprecated name of --change-output: give only --change-output")
        logger.warning("--confidence-output is deprecated (it is the mean absolute change, not a confidence): "
                       "use --change-output; --uncertainty-output writes the predicted error")
        args.change_output = args.confidence_output
    # the settings shared by every scene are checked before any model is loaded
    options.validate(RestoreOptions(sar="", optical="", output="", **common))
    if args.list:
        if (args.sar or args.optical or args.output or args.cloud_mask or args.mask_output or args.change_output
                or args.uncertainty_output):
            raise InputError("--list cannot be combined with --sar/--optical/--output/--cloud-mask/--mask-output/"
                             "--change-output/--uncertainty-output")
        return _run_list(args, common)
    if args.failures or args.skip_existing:
        raise InputError("--failures and --skip-existing only apply to --list")

    missing = [flag for flag, v in (("--sar", args.sar), ("--optical", args.optical), ("--output", args.output)) if not v]
    if missing:
        raise InputError(f"missing {', '.join(missing)} (or give --list FILE)")
    opts = RestoreOptions(
        sar=args.sar,
        optical=args.optical,
        output=args.output,
        cloud_mask=args.cloud_mask,
        mask_output=args.mask_output,
        change_output=args.change_output,
        uncertainty_output=args.uncertainty_output,
        **common,
    )
    update, close = _progress(Path(args.output).name)
    try:
        result = restore_scene(opts, progress=update, log=logger.info)
    finally:
        close()
    print(result.output)
    return 0


Failure = tuple[str, str, str, str | None, str]
"""A scene that failed: ``(sar, optical, output, cloud_mask, error message)``."""


def _run_list(args: argparse.Namespace, common: dict[str, Any]) -> int:
    """Restore this rank's share of a scene list; every scene is attempted, whatever failed before.

    Under torchrun, torchrun stops every rank as soon as one exits non-zero, discarding their pending
    scenes. So a rank never exits early: it restores all its scenes, then the ranks exchange their
    failure lists (gloo, once every rank is done) and every rank exits with the same code: 1 when a
    scene failed anywhere, else 0; by then there is nothing left to kill. Rank 0 logs the summary and
    writes ``--failures``. When the ranks cannot talk (no ``torch.distributed``, no rendezvous
    address), each rank logs its own summary, writes ``--failures`` with a ``.rank<N>`` suffix and
    exits 0, so that it cannot stop the others; the log and the files carry the failures.
    """
    import torch

    from ..devices import resolve_device
    from ..inference import load_model_for, restore_scene

    rank, world = rank_and_world()
    jobs = shard(read_list(args.list), rank, world)
    prefix = f"[rank {rank}/{world}] " if world > 1 else ""
    if args.skip_existing:
        done = [j for j in jobs if os.path.exists(j[2])]
        jobs = [j for j in jobs if not os.path.exists(j[2])]
        if done:
            logger.info("%sskipping %d scene(s) whose output exists", prefix, len(done))
    logger.info("%s%d scene(s) to restore", prefix, len(jobs))
    failures: list[Failure] = []
    if jobs:
        device = resolve_device(args.device, lambda m: logger.info("%s%s", prefix, m))
        model = load_model_for(args.model, device)
        for i, (sar, optical, output, mask) in enumerate(jobs, 1):
            opts = RestoreOptions(sar=sar, optical=optical, output=output, cloud_mask=mask, **common)
            update, close = _progress(f"{prefix}{i}/{len(jobs)} {Path(output).name}")
            try:
                restore_scene(opts, progress=update, log=lambda m: logger.info("%s%s", prefix, m), model=model)
            except Exception as exc:  # noqa: BLE001 - one scene's failure must not stop the batch
                why = str(exc) if isinstance(exc, MMCANetError) else f"{type(exc).__name__}: {exc}"
                failures.append((sar, optical, output, mask, why))
                logger.error("%s%s: %s", prefix, output, why)
            finally:
                close()
        del model  # a rank that waits for the others below should not hold the GPU
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if world == 1:
        _summary(failures, len(jobs), prefix)
        _write_failures(args.failures, failures)
        return 1 if failures else 0
    everyone = _gather_failures(failures, len(jobs), prefix)
    if everyone is None:  # the ranks cannot compare notes: report this rank's part, exit 0 (see above)
        _summary(failures, len(jobs), prefix)
        _write_failures(f"{args.failures}.rank{rank}" if args.failures else None, failures)
        return 0
    all_failures, total = everyone
    if rank == 0:
        _summary(all_failures, total, "[all ranks] ")
        _write_failures(args.failures, all_failures)
    return 1 if all_failures else 0


def _summary(failures: list[Failure], total: int, prefix: str) -> None:
    if failures:
        logger.error("%s%d of %d scene(s) failed:", prefix, len(failures), total)
        for _sar, _optical, output, _mask, why in failures:
            logger.error("%s  %s: %s", prefix, output, why)
    else:
        logger.info("%sall %d scene(s) restored", prefix, total)


def _write_failures(path: str | None, failures: list[Failure]) -> None:
    """Write the failed scenes as a scene list (``sar,optical,output[,cloud_mask]``) to rerun with --list."""
    if not path:
        return
    text = StringIO()
    text.write("# scenes that failed; fix the cause, then rerun with: mmcanet restore --list THIS_FILE\n")
    rows = csv.writer(text, lineterminator="\n")
    for sar, optical, output, mask, why in failures:
        text.write("# " + " ".join(why.split()) + "\n")
        rows.writerow([sar, optical, output] + ([mask] if mask else []))
    Path(path).write_text(text.getvalue(), encoding="utf-8")
    logger.info("failed scenes listed in %s", path)


def _gather_failures(failures: list[Failure], jobs: int, prefix: str) -> tuple[list[Failure], int] | None:
    """Every rank's failures and scene count, exchanged once all ranks are done; None when not possible.

    The process group is created only here, at the end: ranks reach this point hours apart, so the
    rendezvous waits (up to a week) instead of timing out the early ones.
    """
    import datetime

    try:
        import torch.distributed as dist

        if not dist.is_available():
            raise RuntimeError("torch.distributed is not available in this torch build")
        own = not dist.is_initialized()
        if own:
            dist.init_process_group("gloo", timeout=datetime.timedelta(days=7))
        try:
            parts: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(parts, (failures, jobs))
        finally:
            if own:
                dist.destroy_process_group()
    except Exception as exc:  # noqa: BLE001 - any failure to communicate: report per rank instead
        logger.warning("%scannot collect the other ranks' results (%s); reporting this rank's scenes only", prefix, exc)
        return None
    return [f for part, _ in parts for f in part], sum(n for _, n in parts)
