"""Allocation failures during a restore: the batch is halved, the failed batch's memory is really freed first,
the output is the one an unsplit run gives, and one tile that does not fit is a clear error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasters
from mmcanet.errors import MMCANetError
from mmcanet.inference import RestoreOptions, restore_scene_with_model
from mmcanet.inference.oom import is_out_of_memory
from toy_models import OOM_KINDS, Card, FailsAbove

H, W = 40, 120  # 2 tile rows of 5 tiles (32 px, overlap 8)


def restore(model: FailsAbove, folder: Path, name: str, batch_size: int, inputs: Path | None = None) -> np.ndarray:
    inputs = inputs or folder
    s2, s1 = inputs / "s2.tif", inputs / "s1.tif"
    if not s2.exists():
        rasters.write_s2(s2, H, W), rasters.write_s1(s1, H, W)
    opts = RestoreOptions(sar=s1, optical=s2, output=folder / name, keep_clear=False, batch_size=batch_size)
    res = restore_scene_with_model(model, Card(), opts)
    assert res.tiles == res.tiles_run == 10
    return rasters.read(res.output)


@pytest.fixture(scope="module")
def unsplit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """The inputs and the output of a run in batches of 5 that never fails."""
    folder = tmp_path_factory.mktemp("unsplit")
    return folder, restore(FailsAbove(limit=10), folder, "unsplit.tif", batch_size=5)


@pytest.mark.parametrize("kind", sorted(OOM_KINDS))
def test_every_allocation_failure_halves_the_batch_frees_it_first_and_changes_nothing(
    tmp_path: Path, unsplit: tuple[Path, np.ndarray], kind: str
) -> None:
    inputs, expected = unsplit
    model = FailsAbove(limit=1, kind=kind)
    split = restore(model, tmp_path, "split.tif", batch_size=5, inputs=inputs)
    np.testing.assert_array_equal(split, expected)
    assert model.batches[:4] == [5, 2, 1, 1], "5 fails, 2 fails, then one tile at a time"
    assert set(model.batches[4:]) == {1}, "the size that fitted is kept for the rest of the scene"
    assert len(model.freed_before_retry) == 2
    for freed in model.freed_before_retry:
        assert freed == [True] * 4, "the failed batch's inputs, outputs and activations were freed before the retry"


def test_one_tile_that_does_not_fit_is_an_actionable_error_and_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(MMCANetError, match=r"out of GPU memory even for one 32x32 tile on cpu .*use a smaller tile "
                                           r"size \(--tile-size, e\.g\. 16\).*--device cpu"):
        restore(FailsAbove(limit=0, kind="cudnn"), tmp_path, "o.tif", batch_size=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s1.tif", "s2.tif"]


def test_host_memory_failure_names_ram_not_the_gpu(tmp_path: Path) -> None:
    with pytest.raises(MMCANetError, match=r"out of memory even for one 32x32 tile.*close other programs"):
        restore(FailsAbove(limit=0, kind="cpu allocator"), tmp_path, "o.tif", batch_size=1)


def test_other_errors_are_not_mistaken_for_memory() -> None:
    assert not is_out_of_memory(RuntimeError("Expected all tensors to be on the same device"))
    assert not is_out_of_memory(ValueError("out of memory"))  # only runtime/allocation error types
    assert is_out_of_memory(MemoryError())
    for kind, message in OOM_KINDS.values():
        assert is_out_of_memory(kind(message))
