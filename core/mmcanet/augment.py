"""Geometric augmentation and cropping applied identically to every array of a training sample.

All functions work on numpy arrays whose last two axes are (H, W), e.g. S2 ``(13, H, W)``, S1
``(2, H, W)``, masks ``(1, H, W)`` or ``(H, W)``. Randomness comes only from the
``numpy.random.Generator`` passed in, so a sample is reproducible from its seed.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .errors import InputError

DIHEDRAL_OPS: int = 8
"""Number of distinct flip/rotation combinations (the dihedral group of the square)."""


def dihedral(array: np.ndarray, op: int) -> np.ndarray:
    """Apply one of the 8 flip / 90-degree-rotation combinations to the last two axes.

    Args:
        array: array of shape ``(..., H, W)``.
        op: 0-7; ``op % 4`` is the number of counter-clockwise 90-degree rotations, ``op >= 4`` adds a
            left-right flip (applied before the rotation).

    Returns:
        A contiguous array of shape ``(..., H, W)`` (or ``(..., W, H)`` for odd rotations).
    """
    if not 0 <= op < DIHEDRAL_OPS:
        raise ValueError(f"dihedral op must be in 0..7, got {op}")
    out = array
    if op >= 4:
        out = np.flip(out, axis=-1)
    k = op % 4
    if k:
        out = np.rot90(out, k=k, axes=(-2, -1))
    return np.ascontiguousarray(out)


def random_dihedral(arrays: Mapping[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Draw one flip/rotation and apply it to every array (so they stay co-registered).

    Args:
        arrays: name -> array ``(..., H, W)``; every array must share H and W.
        rng: the random generator (one integer is drawn).

    Returns:
        A new dict with the transformed arrays (same keys).
    """
    op = int(rng.integers(0, DIHEDRAL_OPS))
    return {k: dihedral(v, op) for k, v in arrays.items()}


def crop_window(
    height: int, width: int, size: int, rng: np.random.Generator | None = None
) -> tuple[int, int]:
    """Top-left corner of a ``size x size`` window: random when ``rng`` is given, else centred.

    Args:
        height: image height in pixels.
        width: image width in pixels.
        size: crop edge in pixels; must not exceed height or width.
        rng: random generator; ``None`` gives the central window.

    Returns:
        ``(row, col)`` of the top-left pixel.

    Raises:
        InputError: if the image is smaller than the crop.
    """
    if size > height or size > width:
        raise InputError(f"crop {size}x{size} is larger than the image ({height}x{width})")
    if rng is None:
        return (height - size) // 2, (width - size) // 2
    return int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))


def crop_arrays(arrays: Mapping[str, np.ndarray], row: int, col: int, size: int) -> dict[str, np.ndarray]:
    """Cut the same ``size x size`` window (top-left ``row, col``) out of every array's last two axes."""
    return {k: np.ascontiguousarray(v[..., row : row + size, col : col + size]) for k, v in arrays.items()}


def augment_arrays(
    arrays: Mapping[str, np.ndarray],
    rng: np.random.Generator,
    *,
    crop: int | None = None,
    random_crop: bool = True,
    flips: bool = True,
) -> dict[str, np.ndarray]:
    """Crop (random or central) and randomly flip/rotate a set of co-registered arrays.

    Args:
        arrays: name -> array ``(..., H, W)`` sharing H, W.
        rng: random generator; the crop corner is drawn first, then the dihedral op.
        crop: crop edge in pixels, or ``None`` for no crop.
        random_crop: random window when True, central window when False.
        flips: apply a random flip/rotation.

    Returns:
        dict with the same keys; arrays are ``(..., crop, crop)`` when cropped.
    """
    out = dict(arrays)
    if crop is not None:
        first = next(iter(out.values()))
        h, w = first.shape[-2:]
        r, c = crop_window(h, w, crop, rng if random_crop else None)
        out = crop_arrays(out, r, c, crop)
    if flips:
        out = random_dihedral(out, rng)
    return out
