"""Flips and 90-degree rotations, applied to image and label together."""

from __future__ import annotations

import numpy as np
from affine import Affine

# name -> function of a (..., H, W) array
TRANSFORMS = {
    "orig": lambda a: a,
    "fliplr": lambda a: a[..., ::-1],
    "flipud": lambda a: a[..., ::-1, :],
    "rot90": lambda a: np.rot90(a, 1, axes=(-2, -1)),
    "rot180": lambda a: np.rot90(a, 2, axes=(-2, -1)),
    "rot270": lambda a: np.rot90(a, 3, axes=(-2, -1)),
}


def source_pixels(name: str, size: int) -> Affine:
    """Of a square patch of ``size`` px turned into variant ``name``: its pixel coordinates (column, row, from the
    top-left corner) to those of the patch it was made from, the same point on the ground; the patch's geotransform
    after this one places the variant's pixels (np.rot90 turns a quarter counterclockwise)."""
    return {
        "orig": Affine.identity(),
        "fliplr": Affine(-1, 0, size, 0, 1, 0),
        "flipud": Affine(1, 0, 0, 0, -1, size),
        "rot90": Affine(0, -1, size, 1, 0, 0),
        "rot180": Affine(-1, 0, size, 0, -1, size),
        "rot270": Affine(0, 1, 0, -1, 0, size),
    }[name]


def augmentations(flips: bool, rotations) -> list[str]:
    """Names of the patch variants that extraction writes for training tiles."""
    names = ["orig"]
    if flips:
        names += ["fliplr", "flipud"]
    names += [f"rot{int(r)}" for r in rotations]
    return names


def apply(name: str, array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(TRANSFORMS[name](array))


def random_flip_rotate(image: np.ndarray, label: np.ndarray, rng: np.random.Generator):
    """A random flip and 90-degree rotation of a (C, H, W) image and its (H, W) label.

    Rotations are drawn only for square patches, where they keep the shape.
    """
    flip_h, flip_v = rng.integers(0, 2, size=2)
    quarter_turns = int(rng.integers(0, 4)) if image.shape[-1] == image.shape[-2] else 0
    if flip_h:
        image, label = image[..., ::-1], label[..., ::-1]
    if flip_v:
        image, label = image[..., ::-1, :], label[..., ::-1, :]
    if quarter_turns:
        image = np.rot90(image, quarter_turns, axes=(-2, -1))
        label = np.rot90(label, quarter_turns, axes=(-2, -1))
    return np.ascontiguousarray(image), np.ascontiguousarray(label)


TTA_NAMES = ("fliplr", "flipud", "rot90", "rot180", "rot270")


def transform_batch(name: str, batch, inverse: bool = False):
    """Apply (or undo) a named flip/rotation to the last two axes of a torch tensor."""
    if name == "fliplr":
        return batch.flip(-1)
    if name == "flipud":
        return batch.flip(-2)
    turns = {"rot90": 1, "rot180": 2, "rot270": 3}[name]
    return batch.rot90(-turns if inverse else turns, dims=(-2, -1))
