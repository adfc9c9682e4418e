"""SEN12MS-CR in its official folder layout: the standard split tables, the patch index, the reader.

Ebel, Meraner, Schmitt, Zhu, "Multisensor Data Fusion for Cloud Removal in Global and All-Season
Sentinel-2 Imagery", IEEE TGRS 2020. Scene splits as in the UnCRtainTS / SEN12MS-CR-TS code.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .bands import S2_DN_SCALE
from .errors import InputError
from .normalization import Normalization
from .sample_io import ImageReader, Sample, _natural_key, check_raster, detector_mask, read_s1_db, read_s2_dn

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

class Sen12MSCR(ImageReader):
    """SEN12MS-CR in its official folder layout, with the standard test split matched exactly.

    Args:
        root: dataset root (see :func:`index_sen12mscr` for the layouts).
        split: "train", "val", "test" or "all" (test: :data:`SEN12MSCR_TEST_SCENES`, val:
            :data:`SEN12MSCR_VAL_SCENES`, train: every other scene).
        normalization: DN / dB -> [0, 1] mapping (default ``Normalization()``).
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
        *,
        validate: str = "first",
        skip_incomplete: bool = False,
        detector_shadows: bool = True,
    ) -> None:
        super().__init__(normalization)
        self.root = Path(root)
        self.split = split
        self.patches = index_sen12mscr(self.root, split, skip_incomplete=skip_incomplete)
        self.detector_shadows = detector_shadows
        if validate not in ("first", "all"):
            raise InputError(f"validate must be 'first' or 'all', got {validate!r}")
        check = self.patches if validate == "all" else self.patches[:1]
        for p in check:
            for path, kind in ((p.s1, "s1"), (p.s2, "s2"), (p.s2_cloudy, "s2")):
                check_raster(path, kind)

    @property
    def ids(self) -> list[str]:
        return [p.id for p in self.patches]

    def __len__(self) -> int:
        return len(self.patches)

    def sample_key(self, index: int) -> str:
        """Identity of sample ``index`` across readers (the cloudy file), for caches."""
        return f"Sen12MSCR:{self.patches[index].s2_cloudy}"

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
            "mask": detector_mask(cloudy_dn / S2_DN_SCALE, shadows=self.detector_shadows)[None],
            "valid": (~(bad_c | bad_t | bad_s)).astype(np.float32)[None],
        }
        return self._finish(arrays, p.id, True)
