"""The SEN12MS-CR split, checked exactly: every test and validation scene, and the substring leaks.

The test scenes are the standard list (UnCRtainTS / SEN12MS-CR-TS code, ../shared/docs/DOMAIN.md);
the validation scenes are the 10 the core's source documents (``mmcanet.datasets.SEN12MSCR_VAL_SCENES``).
They are written out here again on purpose: a changed table must fail a test, not pass silently.
The public loader matched folder names by substring, so train scene ``s1_1`` also took test folders
``s1_106``, ``s1_123``, ...; the core matches scene numbers exactly, per season.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mmcanet.datasets import (
    SEN12MSCR_SEASONS,
    SEN12MSCR_TEST_SCENES,
    SEN12MSCR_VAL_SCENES,
    index_sen12mscr,
    sen12mscr_split_of,
)
from mmcanet.errors import InputError

TEST = {
    "ROIs1158_spring": {106, 123, 140, 31, 44},
    "ROIs1868_summer": {119, 73},
    "ROIs1970_fall": {139},
    "ROIs2017_winter": {108, 63},
}
VAL = {
    "ROIs1158_spring": {17},
    "ROIs1868_summer": {19, 80, 127, 17},
    "ROIs1970_fall": {65},
    "ROIs2017_winter": {22, 107, 130, 84},
}
SEASONS = ("ROIs1158_spring", "ROIs1868_summer", "ROIs1970_fall", "ROIs2017_winter")


def expected_split(season: str, scene: int) -> str:
    return "test" if scene in TEST[season] else "val" if scene in VAL[season] else "train"


def test_the_tables_are_the_published_lists() -> None:
    assert SEN12MSCR_SEASONS == SEASONS
    assert {k: set(v) for k, v in SEN12MSCR_TEST_SCENES.items()} == TEST
    assert {k: set(v) for k, v in SEN12MSCR_VAL_SCENES.items()} == VAL
    assert sum(len(v) for v in TEST.values()) == 10 and sum(len(v) for v in VAL.values()) == 10
    for season in SEASONS:
        assert not TEST[season] & VAL[season]


@pytest.mark.parametrize("season", SEASONS)
def test_every_scene_number_gets_its_split(season: str) -> None:
    """Scene numbers 0..2000 (SEN12MS-CR has up to ~150 per season): test / val exactly as listed, else train."""
    got = {n: sen12mscr_split_of(season, n) for n in range(2001)}
    assert got == {n: expected_split(season, n) for n in range(2001)}


def test_a_scene_is_test_only_in_its_own_season() -> None:
    for scenes in TEST.values():
        for other in SEASONS:
            for n in scenes:
                assert sen12mscr_split_of(other, n) == expected_split(other, n)
    assert sen12mscr_split_of("ROIs1868_summer", 106) == "train"
    assert sen12mscr_split_of("ROIs1970_fall", 17) == "train"  # 17 is validation in spring and summer only
    assert sen12mscr_split_of("ROIs2017_winter", 139) == "train"


def _leak_prone_scenes(season: str) -> set[int]:
    """Every listed scene plus its digit prefixes and one-digit extensions (1 -> 106, 10 -> 106, 106 -> 1060)."""
    out: set[int] = set()
    for n in TEST[season] | VAL[season]:
        s = str(n)
        out |= {int(s[:k]) for k in range(1, len(s) + 1)}
        out |= {int(s + "0"), int("1" + s)}
    return out


def _tree(root: Path, merged: bool) -> dict[str, set[tuple[str, int, int]]]:
    """Empty files in the SEN12MS-CR layout (the index reads names only); returns the expected splits."""
    expected: dict[str, set[tuple[str, int, int]]] = {"train": set(), "val": set(), "test": set()}
    for season in SEASONS:
        for n in sorted(_leak_prone_scenes(season)):
            # patch numbers that are themselves test scene numbers must not matter either
            for p in (1, 106, 139):
                for kind in ("s1", "s2", "s2_cloudy"):
                    folder = root / (season if merged else f"{season}_{kind}") / f"{kind}_{n}"
                    folder.mkdir(parents=True, exist_ok=True)
                    (folder / f"{season}_{kind}_{n}_p{p}.tif").touch()
                expected[expected_split(season, n)].add((season, n, p))
    return expected


@pytest.mark.parametrize("merged", [False, True], ids=["official-layout", "merged-layout"])
def test_index_splits_a_leak_prone_tree_exactly(tmp_path: Path, merged: bool) -> None:
    expected = _tree(tmp_path, merged)
    assert len(expected["test"]) == 10 * 3 and len(expected["val"]) == 10 * 3
    seen: dict[str, set[tuple[str, int, int]]] = {}
    for split in ("train", "val", "test"):
        patches = index_sen12mscr(tmp_path, split)
        seen[split] = {(p.season, p.scene, p.patch) for p in patches}
        assert len(patches) == len(seen[split]), "no patch listed twice"
        for p in patches:
            assert p.s1.parent.name == f"s1_{p.scene}" and p.s2.parent.name == f"s2_{p.scene}"
            assert p.s2_cloudy.parent.name == f"s2_cloudy_{p.scene}"
            assert p.s2.name == p.s1.name.replace("_s1_", "_s2_")
    assert seen == expected
    everything = index_sen12mscr(tmp_path, "all")
    assert {(p.season, p.scene, p.patch) for p in everything} == set().union(*expected.values())


def test_an_unknown_season_is_training_data() -> None:
    """A season outside the four of SEN12MS-CR has no test / validation scenes (not an error)."""
    assert sen12mscr_split_of("ROIs9999_monsoon", 139) == "train"


def test_index_lists_in_natural_order(tmp_path: Path) -> None:
    """Seasons by name, scenes and patches by number (s1_2 before s1_10, p9 before p10): stable runs."""
    for season in ("ROIs2017_winter", "ROIs1158_spring"):
        for n in (10, 2, 1):
            for p in (10, 9):
                for kind in ("s1", "s2", "s2_cloudy"):
                    folder = tmp_path / season / f"{kind}_{n}"
                    folder.mkdir(parents=True, exist_ok=True)
                    (folder / f"{season}_{kind}_{n}_p{p}.tif").touch()
            (tmp_path / season / f"s1_{n}" / "0_notes.txt").touch()  # not a patch, sorted first: skipped
        (tmp_path / season / "0_extra").mkdir()  # not a scene folder, sorted first: skipped
    (tmp_path / "0_other").mkdir()  # not a season folder, sorted first: skipped
    got = [(p.season, p.scene, p.patch) for p in index_sen12mscr(tmp_path, "all")]
    want = [(s, n, p) for s in ("ROIs1158_spring", "ROIs2017_winter") for n in (1, 2, 10) for p in (9, 10)]
    assert got == want
    # incomplete patches are skipped one by one when asked: the rest of the scene is still listed
    (tmp_path / "ROIs1158_spring" / "s2_1" / "ROIs1158_spring_s2_1_p9.tif").unlink()
    (tmp_path / "ROIs1158_spring" / "s1_3").mkdir()  # a scene with no S2 folders at all
    (tmp_path / "ROIs1158_spring" / "s1_3" / "ROIs1158_spring_s1_3_p1.tif").touch()
    got = [(p.season, p.scene, p.patch) for p in index_sen12mscr(tmp_path, "all", skip_incomplete=True)]
    assert got == [w for w in want if w != ("ROIs1158_spring", 1, 9)]
    with pytest.raises(InputError, match="counterpart file missing"):
        index_sen12mscr(tmp_path, "all")


def test_index_errors_say_what_was_expected(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown split 'dev'"):
        index_sen12mscr(tmp_path, "dev")
    with pytest.raises(InputError, match="not a folder"):
        index_sen12mscr(tmp_path / "missing", "all")
    (tmp_path / "random").mkdir()
    with pytest.raises(InputError, match=r"expected ROIs1158_spring_s1/s1_<scene>/"):
        index_sen12mscr(tmp_path, "all")
