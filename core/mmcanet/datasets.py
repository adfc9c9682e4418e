"""Training / evaluation readers: every dataset yields the same normalised sample dict.

Sample (all tensors ``torch.float32``; H, W = the full image):

=============  ==============  =============================================================
key            shape           meaning
=============  ==============  =============================================================
``s1``         ``(2, H, W)``   VV, VH in [0, 1] (``Normalization.s1_to_unit``); zeros when no SAR
``s2_cloudy``  ``(13, H, W)``  cloudy S2, L1C band order, [0, 1] (``Normalization.s2_to_unit``)
``s2_clear``   ``(13, H, W)``  cloud-free target, same scaling
``mask``       ``(1, H, W)``   cloud mask / opacity in [0, 1] (1 = cloud)
``has_sar``    ``()``          1.0 when ``s1`` holds real SAR, 0.0 when it is a zero placeholder
``valid``      ``(1, H, W)``   1.0 where every input pixel was finite and not nodata, else 0.0
``id``         str             sample identifier (file stem / patch name)
=============  ==============  =============================================================

NaN / nodata pixels (GDAL nodata value, non-finite values, S2 pixels that are 0 in every band) are
replaced by 0 after normalisation (S1: the lower dB bound, i.e. 0 as well) and flagged 0 in
``valid`` so losses and metrics can ignore them.

Bad input (empty folder, missing counterpart file, wrong band count, unreadable raster) raises
:class:`mmcanet.errors.InputError` naming the file when the dataset is constructed.

Readers return full images and draw nothing at random; crops, flips/rotations and simulated clouds
for training are made in one place, :class:`mmcanet.trainset.TrainingDataset`. Raster reading lives
in :mod:`mmcanet.sample_io`, the official SEN12MS-CR layout in :mod:`mmcanet.sen12mscr` (both
re-exported here).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .bands import B10_FILL_DN, B10_INDEX, S2_BANDS_L1C, S2_DN_SCALE, normalise_band_name
from .errors import ConfigError, InputError
from .normalization import Normalization
from .sample_io import (
    ImageReader,
    Sample,
    _read_bands,
    check_raster,
    detector_mask,
    list_triplet_ids,
    raster_info,
    read_mask,
    read_s1_db,
    read_s2_dn,
)
from .sar_units import check_sar_dtype, sar_as_db
from .sen12mscr import (
    SEN12MSCR_SEASONS,
    SEN12MSCR_TEST_SCENES,
    SEN12MSCR_VAL_SCENES,
    SPLITS,
    Sen12MSCR,
    Sen12MSCRPatch,
    index_sen12mscr,
    sen12mscr_split_of,
)

__all__ = [
    "B10_FILL_DN", "SEN12MSCR_SEASONS", "SEN12MSCR_TEST_SCENES", "SEN12MSCR_VAL_SCENES", "SPLITS",
    "BigEarthNetPairs", "ClearS1S2Pairs", "CloudyClearPairs", "ImageReader", "Sen12MSCR", "Sen12MSCRPatch", "TripletFolder",
    "check_raster", "describe_sample", "detect_layout", "detector_mask", "index_sen12mscr", "list_triplet_ids",
    "open_source", "raster_info", "read_mask", "read_s1_db", "read_s2_dn", "sample_keys", "sen12mscr_split_of",
]


# ----------------------------------------------------------------------------------------- folder layouts


class TripletFolder(ImageReader):
    """Flat folder of SEN12MS-CR style triplets.

    Files per sample ``id``: ``{id}_s1.tif`` (2 bands, dB), ``{id}_s2_cloudy.tif`` and
    ``{id}_s2_cloudfree.tif`` (13 bands DN, or 12 L2A bands: B10 filled with :data:`B10_FILL_DN`),
    optional ``{id}_cloudmask.tif`` (1 band, 1 = cloud; when absent the rule-based detector's cloud +
    shadow mask of the cloudy image is used).

    Args:
        root: the folder.
        ids: sample ids to use (default: all, see :func:`list_triplet_ids`).
        normalization: DN / dB -> [0, 1] mapping (default ``Normalization()``).
        use_mask_files: use ``{id}_cloudmask.tif`` when present (else always run the detector).
        detector_shadows: detector masks include cloud shadows.

    Raises:
        InputError: empty folder, missing counterpart file, wrong band count (names the file).
    """

    _require_s1 = True

    def __init__(
        self,
        root: str | Path,
        ids: Sequence[str] | None = None,
        normalization: Normalization | None = None,
        *,
        use_mask_files: bool = True,
        detector_shadows: bool = True,
    ) -> None:
        super().__init__(normalization)
        self.root = Path(root)
        self.ids = list(ids) if ids is not None else list_triplet_ids(self.root)
        if not self.ids:
            raise InputError(f"{self.root}: no samples selected")
        self.use_mask_files = use_mask_files
        self.detector_shadows = detector_shadows
        for sid in self.ids:
            cloudy, clear = check_raster(self._path(sid, "s2_cloudy"), "s2"), check_raster(self._path(sid, "s2_cloudfree"), "s2")
            if cloudy.count != clear.count:
                raise InputError(
                    f"{self.root}: sample {sid!r}: the cloudy image has {cloudy.count} bands and the cloud-free "
                    f"reference {clear.count}; both must be Level-1C (13 bands) or both Level-2A (12 bands), else "
                    "top-of-atmosphere is scored against surface reflectance"
                )
            infos = [cloudy, clear]
            s1 = self._path(sid, "s1")
            if self._require_s1:
                infos.append(check_raster(s1, "s1"))
            if use_mask_files and self._path(sid, "cloudmask").exists():
                infos.append(check_raster(self._path(sid, "cloudmask"), "mask"))
            sizes = {(i.height, i.width) for i in infos}
            if len(sizes) > 1:
                raise InputError(f"{self.root}: the rasters of sample {sid!r} differ in size {sorted(sizes)}")

    def _path(self, sid: str, suffix: str) -> Path:
        return self.root / f"{sid}_{suffix}.tif"

    def __len__(self) -> int:
        return len(self.ids)

    def sample_key(self, index: int) -> str:
        """Identity of sample ``index`` across readers of the same folder (for caches)."""
        return f"{type(self).__name__}:{self._path(self.ids[index], 's2_cloudy')}"

    def __getitem__(self, index: int) -> Sample:
        sid = self.ids[index]
        cloudy_dn, bad_c = read_s2_dn(self._path(sid, "s2_cloudy"))
        clear_dn, bad_t = read_s2_dn(self._path(sid, "s2_cloudfree"))
        invalid = bad_c | bad_t
        norm = self.normalization
        has_sar = self._require_s1
        if has_sar:
            s1_db, bad_s = read_s1_db(self._path(sid, "s1"))
            invalid |= bad_s
            s1 = norm.s1_to_unit(s1_db)
        else:
            s1 = np.zeros((2,) + cloudy_dn.shape[1:], dtype=np.float32)
        mpath = self._path(sid, "cloudmask")
        if self.use_mask_files and mpath.exists():
            mask = read_mask(mpath)
        else:
            mask = detector_mask(cloudy_dn / S2_DN_SCALE, shadows=self.detector_shadows)
        arrays = {
            "s1": s1,
            "s2_cloudy": norm.s2_to_unit(cloudy_dn),
            "s2_clear": norm.s2_to_unit(clear_dn),
            "mask": mask[None],
            "valid": (~invalid).astype(np.float32)[None],
        }
        return self._finish(arrays, sid, has_sar)


class CloudyClearPairs(TripletFolder):
    """Cloudy / cloud-free S2 pairs without SAR: ``{id}_s2_cloudy.tif`` + ``{id}_s2_cloudfree.tif``.

    ``s1`` is zeros and ``has_sar`` 0.0; ``mask`` comes from ``{id}_cloudmask.tif`` when present,
    else from the rule-based detector. Same arguments as :class:`TripletFolder`.
    """

    _require_s1 = False


class ClearS1S2Pairs(ImageReader):
    """Clear, co-registered Sentinel-1 + Sentinel-2 pairs: ``{id}_s1.tif`` (VV, VH) + ``{id}_s2.tif`` (13 or 12 bands).

    Real SAR with a cloud-free optical image and nothing cloudy (e.g. ``../shared/data/s1s2-pairs``:
    TerraMind examples and a Sen1Floods11 sample): the data kind ``s1s2`` trains on them with
    simulated clouds, which is what teaches the SAR-to-optical mapping under thick cloud.
    ``s2_cloudy`` equals ``s2_clear`` and ``mask`` is zeros; invalid pixels (S2 nodata 0, S1 NaN) are
    flagged in ``valid``.

    Raises:
        InputError: no ``*_s2.tif`` with a matching ``*_s1.tif``, wrong band counts or sizes (names the file).
    """

    def __init__(self, root: str | Path, normalization: Normalization | None = None) -> None:
        super().__init__(normalization)
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputError(f"{self.root}: not a folder")
        stems = sorted(p.name[: -len("_s2.tif")] for p in self.root.glob("*_s2.tif"))
        self._ids = [s for s in stems if (self.root / f"{s}_s1.tif").is_file()]
        if not self._ids:
            raise InputError(f"{self.root}: no '{{id}}_s2.tif' with a matching '{{id}}_s1.tif' (clear S1 + S2 pairs)")
        for sid in self._ids:
            s2, s1 = check_raster(self.root / f"{sid}_s2.tif", "s2"), check_raster(self.root / f"{sid}_s1.tif", "s1")
            if (s2.height, s2.width) != (s1.height, s1.width):
                raise InputError(
                    f"{self.root}: pair {sid!r}: S2 is {s2.width}x{s2.height} px and S1 {s1.width}x{s1.height}; "
                    "they must be co-registered on one grid"
                )

    @property
    def ids(self) -> list[str]:
        return list(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def sample_key(self, index: int) -> str:
        """Identity of sample ``index`` across readers (the S2 file), for caches."""
        return f"ClearS1S2Pairs:{self.root / (self._ids[index] + '_s2.tif')}"

    def __getitem__(self, index: int) -> Sample:
        sid = self._ids[index]
        dn, invalid = read_s2_dn(self.root / f"{sid}_s2.tif")
        db, bad_s = read_s1_db(self.root / f"{sid}_s1.tif")
        invalid = invalid | bad_s
        norm = self.normalization
        clear = norm.s2_to_unit(dn)
        arrays = {
            "s1": norm.s1_to_unit(db),
            "s2_cloudy": clear.copy(),
            "s2_clear": clear,
            "mask": np.zeros((1,) + dn.shape[1:], dtype=np.float32),
            "valid": (~invalid).astype(np.float32)[None],
        }
        return self._finish(arrays, sid, True)


# ----------------------------------------------------------------------------------------- BigEarthNet-MM


_BEN_S2_BANDS: tuple[str, ...] = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")


def _find_dirs(root: Path, predicate: Callable[[Path], bool], max_depth: int = 3) -> list[Path]:
    found: list[Path] = []
    stack = [(root, 0)]
    while stack:
        d, depth = stack.pop()
        if predicate(d):
            found.append(d)
            continue
        if depth < max_depth:
            try:
                subs = [e for e in d.iterdir() if e.is_dir()]
            except OSError:
                continue
            stack += [(s, depth + 1) for s in subs]
    return sorted(found, key=lambda p: p.name)


class BigEarthNetPairs(ImageReader):
    """BigEarthNet-MM patches: clear S2 Level-2A (12 band files at 10/20/60 m) + S1 VV/VH files.

    S2 bands are resampled (bilinear, GDAL) to the 10 m grid (120 x 120 px); the missing cirrus band
    B10 is filled with :data:`B10_FILL_DN`. NOTE: Level-2A is bottom-of-atmosphere (surface)
    reflectance, darker and bluer-free than the Level-1C top-of-atmosphere reflectance the models are
    trained on; train on these patches with simulated clouds (data kind ``bigearthnet``) and expect a domain gap.

    S1 patches are paired through ``corresponding_s2_patch`` in their ``*_labels_metadata.json``; S2
    patches without S1 get ``s1`` zeros and ``has_sar`` 0. ``s2_cloudy`` equals ``s2_clear`` and
    ``mask`` is zeros (clear images only).

    Args:
        root: folder searched (3 levels deep) for S2 patch folders (holding ``*_B02.tif``) and S1 patch
            folders (holding ``*_VV.tif``).
        s1_root: separate folder for the S1 patches (default: ``root``).
        normalization: DN / dB -> [0, 1] mapping (default ``Normalization()``).

    Raises:
        InputError: no S2 patch found, or a patch folder missing a band file (names the file).
    """

    def __init__(
        self,
        root: str | Path,
        s1_root: str | Path | None = None,
        normalization: Normalization | None = None,
    ) -> None:
        super().__init__(normalization)
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputError(f"{self.root}: not a folder")
        self.s2_dirs = _find_dirs(self.root, lambda d: any(d.glob("*_B02.tif")))
        if not self.s2_dirs:
            raise InputError(f"{self.root}: no BigEarthNet S2 patch folders (with *_B02.tif) found")
        s1_dirs = _find_dirs(Path(s1_root) if s1_root else self.root, lambda d: any(d.glob("*_VV.tif")))
        by_s2: dict[str, Path] = {}
        for d in s1_dirs:
            for meta in d.glob("*_labels_metadata.json"):
                try:
                    target = json.loads(meta.read_text()).get("corresponding_s2_patch")
                except (OSError, ValueError) as exc:
                    raise InputError(f"{meta}: unreadable metadata ({exc})") from exc
                if target:
                    by_s2[str(target)] = d
        self.s1_dirs: list[Path | None] = []
        for d in self.s2_dirs:
            for b in _BEN_S2_BANDS:
                f = d / f"{d.name}_{b}.tif"
                if not f.is_file():
                    raise InputError(f"{f}: band file missing in BigEarthNet S2 patch {d.name}")
            s1d = by_s2.get(d.name)
            if s1d is not None:
                for pol in ("VV", "VH"):
                    if not (s1d / f"{s1d.name}_{pol}.tif").is_file():
                        raise InputError(f"{s1d / (s1d.name + '_' + pol + '.tif')}: missing S1 polarisation file")
            self.s1_dirs.append(s1d)

    @property
    def ids(self) -> list[str]:
        return [d.name for d in self.s2_dirs]

    def __len__(self) -> int:
        return len(self.s2_dirs)

    def sample_key(self, index: int) -> str:
        """Identity of sample ``index`` across readers (the S2 patch folder), for caches."""
        return f"BigEarthNetPairs:{self.s2_dirs[index]}"

    def read_s2_dn(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """S2 DN ``(13, H, W)`` at 10 m (B10 filled) and the invalid mask ``(H, W)``."""
        d = self.s2_dirs[index]
        ref = raster_info(d / f"{d.name}_B02.tif")
        size = (ref.height, ref.width)
        bands: dict[str, np.ndarray] = {}
        invalid = np.zeros(size, dtype=bool)
        for b in _BEN_S2_BANDS:
            a, bad = _read_bands(d / f"{d.name}_{b}.tif", size=size)
            bands[normalise_band_name(b)] = a[0]
            invalid |= bad
        dn = np.stack([bands[n] if n != "B10" else np.full(size, B10_FILL_DN, np.float32) for n in S2_BANDS_L1C])
        invalid |= np.all(np.nan_to_num(dn[[i for i in range(13) if i != B10_INDEX]], nan=0.0) == 0, axis=0)
        dn[:, invalid] = np.nan
        return dn, invalid

    def __getitem__(self, index: int) -> Sample:
        dn, invalid = self.read_s2_dn(index)
        norm = self.normalization
        s1d = self.s1_dirs[index]
        if s1d is not None:
            hw = (dn.shape[1], dn.shape[2])
            vv_path = s1d / f"{s1d.name}_VV.tif"
            sar_dtype = raster_info(vv_path).dtype
            check_sar_dtype(sar_dtype, str(vv_path))  # before reading: complex pixels do not cast to float
            vv, bad_v = _read_bands(vv_path, size=hw)
            vh, bad_h = _read_bands(s1d / f"{s1d.name}_VH.tif", size=hw)
            db = sar_as_db(np.concatenate([vv, vh]), sar_dtype, f"{s1d} (VV / VH files)")
            invalid = invalid | bad_v | bad_h | ~np.isfinite(db).all(axis=0)
            s1 = norm.s1_to_unit(db)
        else:
            s1 = np.zeros((2,) + dn.shape[1:], dtype=np.float32)
        clear = norm.s2_to_unit(dn)
        arrays = {
            "s1": s1,
            "s2_cloudy": clear.copy(),
            "s2_clear": clear,
            "mask": np.zeros((1,) + dn.shape[1:], dtype=np.float32),
            "valid": (~invalid).astype(np.float32)[None],
        }
        return self._finish(arrays, self.s2_dirs[index].name, s1d is not None)


# ----------------------------------------------------------------------------------------- layouts


LAYOUTS: tuple[str, ...] = ("triplets", "pairs", "sen12mscr", "bigearthnet", "s1s2")


def detect_layout(path: str | Path) -> str:
    """The layout of a data folder: "triplets", "pairs", "sen12mscr" (official ROIs* tree) or "bigearthnet".

    The one layout detector of the project (training sources and ``mmcanet evaluate`` use it).

    Raises:
        InputError: missing folder, or no known layout (the message lists what was expected).
    """
    p = Path(path)
    if not p.is_dir():
        raise InputError(f"data folder not found: {p}")
    names = [c.name for c in p.iterdir()]
    if any(n.endswith("_s2_cloudy.tif") for n in names):
        return "triplets" if any(n.endswith("_s1.tif") for n in names) else "pairs"
    if any(n.startswith("ROIs") and (p / n).is_dir() for n in names):
        return "sen12mscr"
    if any(n.endswith("_s2.tif") for n in names) and any(n.endswith("_s1.tif") for n in names):
        return "s1s2"
    if any(n.startswith("S2") and (p / n).is_dir() for n in names) or (p / "BigEarthNet-S2-Example").is_dir():
        return "bigearthnet"
    raise InputError(
        f"{p}: cannot tell the data layout (expected *_s1.tif/*_s2_cloudy.tif/*_s2_cloudfree.tif triplets, "
        "*_s2_cloudy.tif/*_s2_cloudfree.tif pairs, *_s1.tif/*_s2.tif clear pairs, an official SEN12MS-CR ROIs* "
        "tree or BigEarthNet folders)"
    )


class _Filtered(ImageReader):
    """Keep the samples of a reader whose id is in ``include`` (when given) and not in ``exclude``."""

    def __init__(self, reader: Any, where: str, include: Sequence[str], exclude: Sequence[str]) -> None:
        super().__init__(reader.normalization)
        self.reader = reader
        ids = [str(i) for i in reader.ids]
        unknown = sorted((set(include) | set(exclude)) - set(ids))
        if unknown:
            raise InputError(f"{where}: no image with id {', '.join(unknown)} (ids look like {ids[0]!r})")
        self.keep = [i for i, name in enumerate(ids) if (not include or name in include) and name not in exclude]
        if not self.keep:
            raise InputError(f"{where}: no images left after include/exclude")

    @property
    def ids(self) -> list[str]:
        return [str(self.reader.ids[i]) for i in self.keep]

    def __len__(self) -> int:
        return len(self.keep)

    def sample_key(self, index: int) -> str:
        return str(self.reader.sample_key(self.keep[index]))

    def __getitem__(self, index: int) -> Sample:
        return dict(self.reader[self.keep[index]])


def open_source(
    path: str | Path,
    kind: str = "auto",
    split: str = "train",
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    normalization: Normalization | None = None,
) -> tuple[ImageReader, bool]:
    """Open one data source as a reader of full images, and say whether to simulate clouds on it.

    Args:
        path: the folder.
        kind: a config data kind (``mmcanet.config.DATA_KINDS``): "auto" and "simulated" detect the layout;
            "simulated", "bigearthnet" and "s1s2" sources get simulated clouds on their clear images.
        split: SEN12MS-CR split for official trees ("train", "val", "test", "all").
        include, exclude: sample ids to keep / leave out.
        normalization: passed to the reader.

    Returns:
        ``(reader, simulate)``.

    Raises:
        InputError: bad folder or unknown ids; ConfigError: unsupported kind.
    """
    p = Path(path)
    layout = detect_layout(p) if kind in ("auto", "simulated") else kind
    simulate = kind == "simulated" or layout in ("bigearthnet", "s1s2")
    reader: ImageReader
    if layout == "triplets":
        ids = list_triplet_ids(p)
        unknown = sorted((set(include) | set(exclude)) - set(ids))
        if unknown:
            raise InputError(f"{p}: no triplet with id {', '.join(unknown)} (ids look like {ids[0]!r})")
        ids = [i for i in ids if (not include or i in set(include)) and i not in set(exclude)]
        if not ids:
            raise InputError(f"{p}: no triplets left after include/exclude")
        return TripletFolder(p, ids=ids, normalization=normalization), simulate
    if layout == "pairs":
        reader = CloudyClearPairs(p, normalization=normalization)
    elif layout == "sen12mscr":
        reader = Sen12MSCR(p, split=split, normalization=normalization)
    elif layout == "bigearthnet":
        reader = BigEarthNetPairs(p, normalization=normalization)
    elif layout == "s1s2":
        reader = ClearS1S2Pairs(p, normalization=normalization)
    else:
        raise ConfigError(f"data kind {kind!r} not supported")
    if include or exclude:
        reader = _Filtered(reader, str(p), include, exclude)
    return reader, simulate


def sample_keys() -> tuple[str, ...]:
    """Keys of every sample dict (for collate / documentation)."""
    return ("s1", "s2_cloudy", "s2_clear", "mask", "has_sar", "valid", "id")


def describe_sample(sample: Mapping[str, Any]) -> str:
    """One-line summary of a sample's shapes and ranges (for logs and debugging)."""
    parts = []
    for k in sample_keys():
        v = sample.get(k)
        if isinstance(v, torch.Tensor) and v.ndim > 0:
            parts.append(f"{k}{tuple(v.shape)}[{float(v.min()):.3f},{float(v.max()):.3f}]")
        else:
            parts.append(f"{k}={v if not isinstance(v, torch.Tensor) else float(v)}")
    return " ".join(parts)
