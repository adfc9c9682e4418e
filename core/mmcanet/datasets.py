"""Training / evaluation readers: every dataset yields the same normalised sample dict.

Sample (all tensors ``torch.float32``; H, W = crop size or full image):

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

Randomness (crops, flips/rotations, simulated clouds) comes from
``numpy.random.default_rng([seed, epoch, index])``: a sample is reproducible, and
``set_epoch(e)`` gives new draws each epoch (call it from the training loop).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .augment import augment_arrays
from .bands import B10_FILL_DN, B10_INDEX, S2_BANDS_L1C, S2_BANDS_L2A, normalise_band_name
from .clouds.detect import detect_clouds
from .clouds.simulate import simulate_clouds
from .errors import InputError
from .normalization import Normalization, linear_to_db, looks_linear

Sample = dict[str, Any]

SEN12MSCR_SEASONS: tuple[str, ...] = ("ROIs1158_spring", "ROIs1868_summer", "ROIs1970_fall", "ROIs2017_winter")
SEN12MSCR_TEST_SCENES: dict[str, tuple[int, ...]] = {
    "ROIs1158_spring": (106, 123, 140, 31, 44),
    "ROIs1868_summer": (119, 73),
    "ROIs1970_fall": (139,),
    "ROIs2017_winter": (108, 63),
}
"""Standard SEN12MS-CR test scenes (UnCRtainTS / SEN12MS-CR-TS code), matched by exact scene number."""

SEN12MSCR_VAL_SCENES: dict[str, tuple[int, ...]] = {
    "ROIs1158_spring": (17,),
    "ROIs1868_summer": (19, 80, 127, 17),
    "ROIs1970_fall": (65,),
    "ROIs2017_winter": (22, 107, 130, 84),
}
"""Validation scenes: the 10 scenes of the UnCRtainTS SEN12MS-CR validation list, matched exactly.
Every other scene (not test, not validation) is training."""

SPLITS: tuple[str, ...] = ("train", "val", "test", "all")


# ----------------------------------------------------------------------------------------- raster I/O


@dataclass
class _RasterInfo:
    path: Path
    count: int
    height: int
    width: int
    descriptions: tuple[str, ...]


def _natural_key(s: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def _open(path: Path) -> Any:
    from osgeo import gdal

    if not path.is_file():
        raise InputError(f"{path}: file not found")
    gdal.PushErrorHandler("CPLQuietErrorHandler")
    try:
        ds = gdal.Open(str(path))
    finally:
        gdal.PopErrorHandler()
    if ds is None:
        raise InputError(f"{path}: not a readable raster (GDAL could not open it)")
    return ds


def raster_info(path: str | Path) -> _RasterInfo:
    """Header of a raster (band count, size, band descriptions) without reading pixels.

    Raises:
        InputError: when the file is missing or unreadable.
    """
    p = Path(path)
    ds = _open(p)
    desc = tuple(ds.GetRasterBand(i + 1).GetDescription() or "" for i in range(ds.RasterCount))
    return _RasterInfo(p, ds.RasterCount, ds.RasterYSize, ds.RasterXSize, desc)


def _s2_band_order(info: _RasterInfo) -> list[int] | None:
    """Index into the file's bands for each L1C band (-1 = B10 missing), from descriptions or count."""
    names = [normalise_band_name(d) for d in info.descriptions]
    if set(S2_BANDS_L1C) <= set(names):
        return [names.index(b) for b in S2_BANDS_L1C]
    if set(S2_BANDS_L2A) <= set(names):
        return [names.index(b) if b != "B10" else -1 for b in S2_BANDS_L1C]
    if info.count == 13:
        return list(range(13))
    if info.count == 12:
        idx = list(range(12))
        return idx[:B10_INDEX] + [-1] + idx[B10_INDEX:]
    return None


def check_raster(path: str | Path, kind: str) -> _RasterInfo:
    """Check that a raster exists and has the band count ``kind`` needs.

    Args:
        path: raster file.
        kind: "s2" (13 L1C or 12 L2A bands), "s1" (2 bands VV, VH) or "mask" (1 band).

    Returns:
        The raster header.

    Raises:
        InputError: naming the file when it is missing, unreadable or has the wrong band count.
    """
    info = raster_info(path)
    if kind == "s2":
        if _s2_band_order(info) is None:
            raise InputError(
                f"{info.path}: expected a Sentinel-2 raster with 13 (L1C) or 12 (L2A) bands, found {info.count}"
            )
    elif kind == "s1":
        if info.count != 2:
            raise InputError(f"{info.path}: expected a Sentinel-1 raster with 2 bands (VV, VH), found {info.count}")
    elif kind == "mask":
        if info.count != 1:
            raise InputError(f"{info.path}: expected a single-band cloud mask, found {info.count} bands")
    else:  # pragma: no cover - programming error
        raise ValueError(kind)
    return info


def _read_bands(path: Path, size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """All bands as float32 ``(bands, H, W)`` with nodata / non-finite set to NaN, plus the invalid mask."""
    from osgeo import gdal

    ds = _open(path)
    out = []
    invalid = None
    for i in range(ds.RasterCount):
        band = ds.GetRasterBand(i + 1)
        if size is None:
            a = band.ReadAsArray()
        else:
            a = band.ReadAsArray(
                buf_xsize=size[1], buf_ysize=size[0], resample_alg=gdal.GRIORA_Bilinear
            )
        if a is None:
            raise InputError(f"{path}: could not read band {i + 1}")
        a = a.astype(np.float32)
        bad = ~np.isfinite(a)
        nd = band.GetNoDataValue()
        if nd is not None and np.isfinite(nd):
            bad |= a == np.float32(nd)
        a[bad] = np.nan
        invalid = bad if invalid is None else invalid | bad
        out.append(a)
    ds = None
    arr = np.stack(out)
    assert invalid is not None
    return arr, invalid


def read_s2_dn(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a Sentinel-2 raster as float32 DN ``(13, H, W)`` in L1C order (B10 filled for 12-band L2A).

    Bands are re-ordered by their descriptions when those name all bands. Invalid pixels are NaN.

    Returns:
        ``(dn, invalid)``: dn float32 ``(13, H, W)`` (NaN where invalid), invalid bool ``(H, W)``
        (nodata, non-finite, or 0 in every band).

    Raises:
        InputError: wrong band count or unreadable file.
    """
    info = check_raster(path, "s2")
    order = _s2_band_order(info)
    assert order is not None
    raw, invalid = _read_bands(info.path)
    dn = np.empty((13, info.height, info.width), dtype=np.float32)
    for i, j in enumerate(order):
        dn[i] = raw[j] if j >= 0 else B10_FILL_DN
    invalid = invalid | np.all(np.nan_to_num(raw, nan=0.0) == 0, axis=0)
    dn[:, invalid] = np.nan
    return dn, invalid


def read_s1_db(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a 2-band (VV, VH) Sentinel-1 raster in dB (linear power is detected and converted).

    Returns:
        ``(db, invalid)``: float32 ``(2, H, W)`` (NaN where invalid) and bool ``(H, W)``.
    """
    info = check_raster(path, "s1")
    db, invalid = _read_bands(info.path)
    if looks_linear(db):
        db = linear_to_db(db)
        invalid = invalid | ~np.isfinite(db).all(axis=0)
    return db, invalid


def read_mask(path: str | Path) -> np.ndarray:
    """Read a single-band cloud mask as float32 ``(H, W)`` in [0, 1].

    0/1 masks are used as they are; masks whose maximum exceeds 1 are read as percent (max <= 100)
    or 8-bit (max <= 255) probabilities. Nodata / NaN -> 0.
    """
    info = check_raster(path, "mask")
    m, _ = _read_bands(info.path)
    m = np.nan_to_num(m[0], nan=0.0)
    mx = float(m.max()) if m.size else 0.0
    if mx > 1.0:
        m = m / (100.0 if mx <= 100.0 else 255.0)
    return np.clip(m, 0.0, 1.0).astype(np.float32)


def detector_mask(s2_reflectance: np.ndarray, *, shadows: bool = True) -> np.ndarray:
    """Cloud (and shadow) mask from the rule-based detector as float32 ``(H, W)`` 0/1.

    Args:
        s2_reflectance: ``(13, H, W)`` TOA reflectance (DN / 10000), NaN allowed.
        shadows: include cloud shadows in the mask.
    """
    m = detect_clouds(np.nan_to_num(s2_reflectance, nan=0.0))
    out = m.cloud | m.shadow if shadows else m.cloud
    return out.astype(np.float32)


# ----------------------------------------------------------------------------------------- base class


class _SampleDataset(Dataset):
    """Shared crop / augmentation / tensor conversion; subclasses implement ``_load(index)``."""

    def __init__(
        self,
        normalization: Normalization | None,
        crop: int | None,
        augment: bool,
        seed: int,
        random_crop: bool,
    ) -> None:
        self.normalization = normalization or Normalization()
        if crop is not None and crop < 1:
            raise InputError(f"crop must be a positive number of pixels, got {crop}")
        self.crop = crop
        self.augment = augment
        self.seed = int(seed)
        self.random_crop = random_crop
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Change the random draws (crops, flips, simulated clouds) for a new epoch."""
        self.epoch = int(epoch)

    def rng(self, index: int) -> np.random.Generator:
        """The generator of sample ``index`` in the current epoch."""
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    def _check_crop(self, infos: Iterable[_RasterInfo]) -> None:
        if self.crop is None:
            return
        for info in infos:
            if info.height < self.crop or info.width < self.crop:
                raise InputError(f"{info.path}: {info.height}x{info.width} px is smaller than crop {self.crop}")

    def _finish(
        self, arrays: dict[str, np.ndarray], sample_id: str, has_sar: bool, index: int
    ) -> Sample:
        """Crop / augment the arrays (numpy, (C, H, W)) and convert them to tensors."""
        rng = self.rng(index)
        if self.crop is not None or self.augment:
            arrays = augment_arrays(
                arrays, rng, crop=self.crop, random_crop=self.random_crop, flips=self.augment
            )
        sample: Sample = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in arrays.items()}
        sample["has_sar"] = torch.tensor(1.0 if has_sar else 0.0, dtype=torch.float32)
        sample["id"] = sample_id
        return sample


# ----------------------------------------------------------------------------------------- folder layouts


def list_triplet_ids(root: str | Path) -> list[str]:
    """Identifiers of the samples in a triplet / pair folder: ``{id}_s2_cloudy.tif`` files, natural order.

    Raises:
        InputError: if ``root`` is not a folder or holds no ``*_s2_cloudy.tif``.
    """
    r = Path(root)
    if not r.is_dir():
        raise InputError(f"{r}: not a folder")
    ids = sorted((p.name[: -len("_s2_cloudy.tif")] for p in r.glob("*_s2_cloudy.tif")), key=_natural_key)
    if not ids:
        raise InputError(f"{r}: no '*_s2_cloudy.tif' files (expected {{id}}_s2_cloudy.tif, {{id}}_s2_cloudfree.tif ...)")
    return ids


class TripletFolder(_SampleDataset):
    """Flat folder of SEN12MS-CR style triplets.

    Files per sample ``id``: ``{id}_s1.tif`` (2 bands, dB), ``{id}_s2_cloudy.tif`` and
    ``{id}_s2_cloudfree.tif`` (13 bands DN, or 12 L2A bands: B10 filled with :data:`B10_FILL_DN`),
    optional ``{id}_cloudmask.tif`` (1 band, 1 = cloud; when absent the rule-based detector's cloud +
    shadow mask of the cloudy image is used).

    Args:
        root: the folder.
        ids: sample ids to use (default: all, see :func:`list_triplet_ids`).
        normalization: DN / dB -> [0, 1] mapping (default ``Normalization()``).
        crop: crop edge in px (random unless ``random_crop=False``), ``None`` = full image.
        augment: random flips / 90-degree rotations (identical for every array of a sample).
        seed: base seed of crops / augmentation.
        random_crop: random crop window when True, central window when False.
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
        crop: int | None = None,
        augment: bool = False,
        seed: int = 0,
        *,
        random_crop: bool = True,
        use_mask_files: bool = True,
        detector_shadows: bool = True,
    ) -> None:
        super().__init__(normalization, crop, augment, seed, random_crop)
        self.root = Path(root)
        self.ids = list(ids) if ids is not None else list_triplet_ids(self.root)
        if not self.ids:
            raise InputError(f"{self.root}: no samples selected")
        self.use_mask_files = use_mask_files
        self.detector_shadows = detector_shadows
        infos = []
        for sid in self.ids:
            cloudy, clear = check_raster(self._path(sid, "s2_cloudy"), "s2"), check_raster(self._path(sid, "s2_cloudfree"), "s2")
            if cloudy.count != clear.count:
                raise InputError(
                    f"{self.root}: sample {sid!r}: the cloudy image has {cloudy.count} bands and the cloud-free "
                    f"reference {clear.count}; both must be Level-1C (13 bands) or both Level-2A (12 bands), else "
                    "top-of-atmosphere is scored against surface reflectance"
                )
            infos += [cloudy, clear]
            s1 = self._path(sid, "s1")
            if self._require_s1:
                infos.append(check_raster(s1, "s1"))
            if use_mask_files and self._path(sid, "cloudmask").exists():
                infos.append(check_raster(self._path(sid, "cloudmask"), "mask"))
            sizes = {(i.height, i.width) for i in infos[-3:]}
            if len(sizes) > 1:
                raise InputError(f"{self.root}: the rasters of sample {sid!r} differ in size {sorted(sizes)}")
        self._check_crop(infos)

    def _path(self, sid: str, suffix: str) -> Path:
        return self.root / f"{sid}_{suffix}.tif"

    def __len__(self) -> int:
        return len(self.ids)

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
            mask = detector_mask(cloudy_dn / 10000.0, shadows=self.detector_shadows)
        arrays = {
            "s1": s1,
            "s2_cloudy": norm.s2_to_unit(cloudy_dn),
            "s2_clear": norm.s2_to_unit(clear_dn),
            "mask": mask[None],
            "valid": (~invalid).astype(np.float32)[None],
        }
        return self._finish(arrays, sid, has_sar, index)


class CloudyClearPairs(TripletFolder):
    """Cloudy / cloud-free S2 pairs without SAR: ``{id}_s2_cloudy.tif`` + ``{id}_s2_cloudfree.tif``.

    ``s1`` is zeros and ``has_sar`` 0.0; ``mask`` comes from ``{id}_cloudmask.tif`` when present,
    else from the rule-based detector. Same arguments as :class:`TripletFolder`.
    """

    _require_s1 = False


# ----------------------------------------------------------------------------------------- SEN12MS-CR


_SEASON_DIR = re.compile(r"^(ROIs\d{4}_(?:spring|summer|fall|winter))(?:_s1)?$")
_S1_SCENE_DIR = re.compile(r"^s1_(\d+)$")
_PATCH = re.compile(r"_p(\d+)\.tif$")


def sen12mscr_split_of(season: str, scene: int) -> str:
    """Split ("train", "val" or "test") of a SEN12MS-CR scene, by exact scene number.

    Args:
        season: "ROIs1158_spring", "ROIs1868_summer", "ROIs1970_fall" or "ROIs2017_winter".
        scene: the scene number of folder ``s1_{scene}``.
    """
    if scene in SEN12MSCR_TEST_SCENES.get(season, ()):
        return "test"
    if scene in SEN12MSCR_VAL_SCENES.get(season, ()):
        return "val"
    return "train"


@dataclass(frozen=True)
class Sen12MSCRPatch:
    """One SEN12MS-CR triplet: file paths and identity."""

    season: str
    scene: int
    patch: int
    s1: Path
    s2: Path
    s2_cloudy: Path

    @property
    def id(self) -> str:
        return f"{self.season}_{self.scene}_p{self.patch}"


def _counterpart(s1_scene_dir: Path, kind: str) -> Path:
    """Folder of ``kind`` ("s2" or "s2_cloudy") next to an ``s1_{scene}`` folder (both layouts)."""
    season_dir = s1_scene_dir.parent
    scene = s1_scene_dir.name[len("s1_") :]
    if season_dir.name.endswith("_s1"):  # official: ROIs1158_spring_s1/s1_1 -> ROIs1158_spring_s2_cloudy/s2_cloudy_1
        other = season_dir.parent / (season_dir.name[: -len("_s1")] + "_" + kind)
    else:  # merged: ROIs1158_spring/s1_1 -> ROIs1158_spring/s2_cloudy_1
        other = season_dir
    return other / f"{kind}_{scene}"


def index_sen12mscr(root: str | Path, split: str = "all", *, skip_incomplete: bool = False) -> list[Sen12MSCRPatch]:
    """List the SEN12MS-CR triplets of a split, matching scene numbers exactly (no substring leaks).

    Layouts accepted: the official one (``ROIs1158_spring_s1/s1_1/ROIs1158_spring_s1_1_p30.tif`` with
    sibling folders ``ROIs1158_spring_s2/s2_1`` and ``ROIs1158_spring_s2_cloudy/s2_cloudy_1``), or one
    folder per season holding ``s1_1``, ``s2_1`` and ``s2_cloudy_1``.

    Args:
        root: dataset root.
        split: "train", "val", "test" or "all".
        skip_incomplete: skip S1 patches whose S2 / cloudy S2 file is missing instead of raising.

    Returns:
        Patches sorted by season, scene, patch.

    Raises:
        InputError: unknown split, no data found, or a missing counterpart file.
    """
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; use one of {SPLITS}")
    r = Path(root)
    if not r.is_dir():
        raise InputError(f"{r}: not a folder")
    out: list[Sen12MSCRPatch] = []
    for season_dir in sorted(r.iterdir(), key=lambda p: p.name):
        m = _SEASON_DIR.match(season_dir.name)
        if not m or not season_dir.is_dir():
            continue
        season = m.group(1)
        for scene_dir in sorted(season_dir.iterdir(), key=lambda p: _natural_key(p.name)):
            ms = _S1_SCENE_DIR.match(scene_dir.name)
            if not ms or not scene_dir.is_dir():
                continue
            scene = int(ms.group(1))
            if split != "all" and sen12mscr_split_of(season, scene) != split:
                continue
            s2_dir, cl_dir = _counterpart(scene_dir, "s2"), _counterpart(scene_dir, "s2_cloudy")
            s2_files = set(os.listdir(s2_dir)) if s2_dir.is_dir() else set()
            cl_files = set(os.listdir(cl_dir)) if cl_dir.is_dir() else set()
            for name in sorted(os.listdir(scene_dir), key=_natural_key):
                mp = _PATCH.search(name)
                if not mp or "_s1_" not in name:
                    continue
                s2_name = name.replace("_s1_", "_s2_")
                cl_name = name.replace("_s1_", "_s2_cloudy_")
                missing = [d / n for d, n, have in ((s2_dir, s2_name, s2_files), (cl_dir, cl_name, cl_files)) if n not in have]
                if missing:
                    if skip_incomplete:
                        continue
                    raise InputError(f"{scene_dir / name}: counterpart file missing: {missing[0]}")
                out.append(Sen12MSCRPatch(season, scene, int(mp.group(1)), scene_dir / name, s2_dir / s2_name, cl_dir / cl_name))
    if not out:
        raise InputError(
            f"{r}: no SEN12MS-CR patches for split {split!r} "
            "(expected ROIs1158_spring_s1/s1_<scene>/ROIs1158_spring_s1_<scene>_p<patch>.tif and siblings)"
        )
    return out


class Sen12MSCR(_SampleDataset):
    """SEN12MS-CR in its official folder layout, with the standard test split matched exactly.

    Args:
        root: dataset root (see :func:`index_sen12mscr` for the layouts).
        split: "train", "val", "test" or "all" (test: :data:`SEN12MSCR_TEST_SCENES`, val:
            :data:`SEN12MSCR_VAL_SCENES`, train: every other scene).
        normalization, crop, augment, seed, random_crop: as for :class:`TripletFolder`.
        validate: "first" checks the headers of the first triplet only (fast on 100k+ patches),
            "all" opens every file's header at construction. Unreadable files found later raise
            InputError naming the file.
        skip_incomplete: skip patches with a missing counterpart instead of raising.
        detector_shadows: include shadows in the detector mask (SEN12MS-CR ships no masks).
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        normalization: Normalization | None = None,
        crop: int | None = None,
        augment: bool = False,
        seed: int = 0,
        *,
        random_crop: bool = True,
        validate: str = "first",
        skip_incomplete: bool = False,
        detector_shadows: bool = True,
    ) -> None:
        super().__init__(normalization, crop, augment, seed, random_crop)
        self.root = Path(root)
        self.split = split
        self.patches = index_sen12mscr(self.root, split, skip_incomplete=skip_incomplete)
        self.detector_shadows = detector_shadows
        if validate not in ("first", "all"):
            raise InputError(f"validate must be 'first' or 'all', got {validate!r}")
        check = self.patches if validate == "all" else self.patches[:1]
        infos = []
        for p in check:
            infos += [check_raster(p.s1, "s1"), check_raster(p.s2, "s2"), check_raster(p.s2_cloudy, "s2")]
        self._check_crop(infos)

    @property
    def ids(self) -> list[str]:
        return [p.id for p in self.patches]

    def __len__(self) -> int:
        return len(self.patches)

    def __getitem__(self, index: int) -> Sample:
        p = self.patches[index]
        cloudy_dn, bad_c = read_s2_dn(p.s2_cloudy)
        clear_dn, bad_t = read_s2_dn(p.s2)
        s1_db, bad_s = read_s1_db(p.s1)
        norm = self.normalization
        arrays = {
            "s1": norm.s1_to_unit(s1_db),
            "s2_cloudy": norm.s2_to_unit(cloudy_dn),
            "s2_clear": norm.s2_to_unit(clear_dn),
            "mask": detector_mask(cloudy_dn / 10000.0, shadows=self.detector_shadows)[None],
            "valid": (~(bad_c | bad_t | bad_s)).astype(np.float32)[None],
        }
        return self._finish(arrays, p.id, True, index)


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


class BigEarthNetPairs(_SampleDataset):
    """BigEarthNet-MM patches: clear S2 Level-2A (12 band files at 10/20/60 m) + S1 VV/VH files.

    S2 bands are resampled (bilinear, GDAL) to the 10 m grid (120 x 120 px); the missing cirrus band
    B10 is filled with :data:`B10_FILL_DN`. NOTE: Level-2A is bottom-of-atmosphere (surface)
    reflectance, darker and bluer-free than the Level-1C top-of-atmosphere reflectance the models are
    trained on; use these patches with :class:`ClearWithSimulatedClouds` and expect a domain gap.

    S1 patches are paired through ``corresponding_s2_patch`` in their ``*_labels_metadata.json``; S2
    patches without S1 get ``s1`` zeros and ``has_sar`` 0. ``s2_cloudy`` equals ``s2_clear`` and
    ``mask`` is zeros (clear images only).

    Args:
        root: folder searched (3 levels deep) for S2 patch folders (holding ``*_B02.tif``) and S1 patch
            folders (holding ``*_VV.tif``).
        s1_root: separate folder for the S1 patches (default: ``root``).
        normalization, crop, augment, seed, random_crop: as for :class:`TripletFolder`.

    Raises:
        InputError: no S2 patch found, or a patch folder missing a band file (names the file).
    """

    def __init__(
        self,
        root: str | Path,
        s1_root: str | Path | None = None,
        normalization: Normalization | None = None,
        crop: int | None = None,
        augment: bool = False,
        seed: int = 0,
        *,
        random_crop: bool = True,
    ) -> None:
        super().__init__(normalization, crop, augment, seed, random_crop)
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
        infos = []
        for d in self.s2_dirs:
            for b in _BEN_S2_BANDS:
                f = d / f"{d.name}_{b}.tif"
                if not f.is_file():
                    raise InputError(f"{f}: band file missing in BigEarthNet S2 patch {d.name}")
            infos.append(raster_info(d / f"{d.name}_B02.tif"))
            s1d = by_s2.get(d.name)
            if s1d is not None:
                for pol in ("VV", "VH"):
                    if not (s1d / f"{s1d.name}_{pol}.tif").is_file():
                        raise InputError(f"{s1d / (s1d.name + '_' + pol + '.tif')}: missing S1 polarisation file")
            self.s1_dirs.append(s1d)
        self._check_crop(infos)

    @property
    def ids(self) -> list[str]:
        return [d.name for d in self.s2_dirs]

    def __len__(self) -> int:
        return len(self.s2_dirs)

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
            vv, bad_v = _read_bands(s1d / f"{s1d.name}_VV.tif", size=hw)
            vh, bad_h = _read_bands(s1d / f"{s1d.name}_VH.tif", size=hw)
            db = np.concatenate([vv, vh])
            if looks_linear(db):
                db = linear_to_db(db)
            invalid = invalid | bad_v | bad_h
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
        return self._finish(arrays, self.s2_dirs[index].name, s1d is not None, index)


# ----------------------------------------------------------------------------------------- simulated clouds


class ClearWithSimulatedClouds(_SampleDataset):
    """Clear S2 images (+ optional S1) made cloudy by :func:`mmcanet.clouds.simulate.simulate_clouds`.

    The target ``s2_clear`` is the clear image itself (perfectly aligned); ``s2_cloudy`` the simulated
    image; ``mask`` the simulated opacity (optionally max-ed with the shadow mask).

    Args:
        source: either a dataset yielding samples (its ``s2_clear``, ``s1``, ``has_sar`` and ``valid``
            are used, e.g. :class:`BigEarthNetPairs` or :class:`TripletFolder`), or a sequence of clear
            S2 GeoTIFF paths, or of ``(s2_path, s1_path_or_None)`` tuples.
        seed: seed of the clouds (and crops / flips); clouds also change with ``set_epoch``.
        thickness: "mixed", "thin" or "thick" (see ``simulate_clouds``).
        coverage: cloud fraction, or ``None`` for random per sample.
        shadows: simulate cloud shadows.
        normalization, crop, augment, random_crop: as for :class:`TripletFolder` (crop/augment are
            applied before the clouds are drawn).
        shadow_in_mask: ``mask = max(opacity, shadow)`` instead of the opacity alone.

    Raises:
        InputError: empty source, or (for paths) a missing / wrong-band-count file.
    """

    def __init__(
        self,
        source: Dataset | Sequence[str | Path | tuple[str | Path, str | Path | None]],
        seed: int = 0,
        *,
        thickness: str = "mixed",
        coverage: float | None = None,
        shadows: bool = True,
        normalization: Normalization | None = None,
        crop: int | None = None,
        augment: bool = False,
        random_crop: bool = True,
        shadow_in_mask: bool = False,
    ) -> None:
        super().__init__(normalization, crop, augment, seed, random_crop)
        self.thickness = thickness
        self.coverage = coverage
        self.shadows = shadows
        self.shadow_in_mask = shadow_in_mask
        self.dataset: Dataset | None = None
        self.items: list[tuple[Path, Path | None]] = []
        if isinstance(source, Dataset):
            self.dataset = source
            n = len(source)  # type: ignore[arg-type]
        else:
            for item in source:
                s2p, s1p = (item if isinstance(item, tuple) else (item, None))
                self.items.append((Path(s2p), Path(s1p) if s1p is not None else None))
            infos = []
            for s2p, s1p in self.items:
                infos.append(check_raster(s2p, "s2"))
                if s1p is not None:
                    infos.append(check_raster(s1p, "s1"))
            self._check_crop(infos)
            n = len(self.items)
        if n == 0:
            raise InputError("ClearWithSimulatedClouds: the source holds no images")
        # validate the cloud options now rather than in a worker
        simulate_clouds(np.zeros((13, 8, 8), np.float32), 0, thickness=thickness, coverage=coverage)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        if self.dataset is not None and hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.dataset) if self.dataset is not None else len(self.items)  # type: ignore[arg-type]

    def _clear_arrays(self, index: int) -> tuple[dict[str, np.ndarray], str, bool]:
        if self.dataset is not None:
            s = self.dataset[index]
            scale = getattr(getattr(self.dataset, "normalization", None), "s2_max_dn", 10000.0)
            # the inner dataset's s1 is passed through as it is (its normalisation applies)
            arrays = {
                "s1": s["s1"].numpy(),
                "valid": s["valid"].numpy(),
                "clear_dn": s["s2_clear"].numpy() * np.float32(scale),
            }
            return arrays, str(s["id"]), bool(float(s["has_sar"]) > 0.5)
        s2p, s1p = self.items[index]
        dn, invalid = read_s2_dn(s2p)
        if s1p is not None:
            db, bad_s = read_s1_db(s1p)
            s1 = self.normalization.s1_to_unit(db)
            invalid = invalid | bad_s
        else:
            s1 = np.zeros((2,) + dn.shape[1:], dtype=np.float32)
        sid = s2p.name[: -len(".tif")] if s2p.name.endswith(".tif") else s2p.stem
        sid = sid.replace("_s2_cloudfree", "")
        return {"s1": s1, "valid": (~invalid).astype(np.float32)[None], "clear_dn": np.nan_to_num(dn, nan=0.0)}, sid, s1p is not None

    def __getitem__(self, index: int) -> Sample:
        arrays, sid, has_sar = self._clear_arrays(index)
        rng = self.rng(index)
        if self.crop is not None or self.augment:
            arrays = augment_arrays(arrays, rng, crop=self.crop, random_crop=self.random_crop, flips=self.augment)
        clear_refl = np.clip(arrays.pop("clear_dn") / np.float32(10000.0), 0.0, 1.0)
        sim = simulate_clouds(
            clear_refl, rng, thickness=self.thickness, coverage=self.coverage, shadows=self.shadows
        )
        mask = np.maximum(sim.opacity, sim.shadow.astype(np.float32)) if self.shadow_in_mask else sim.opacity
        norm = self.normalization
        out = {
            "s1": arrays["s1"],
            "s2_cloudy": norm.s2_to_unit(sim.cloudy * np.float32(10000.0)),
            "s2_clear": norm.s2_to_unit(clear_refl * np.float32(10000.0)),
            "mask": mask[None],
            "valid": arrays["valid"],
        }
        sample: Sample = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in out.items()}
        sample["has_sar"] = torch.tensor(1.0 if has_sar else 0.0, dtype=torch.float32)
        sample["id"] = sid
        return sample


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
