"""eoseg.augment: flips and 90-degree rotations of image and label together, and their undoing in TTA."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eoseg.augment import TRANSFORMS, TTA_NAMES, apply, augmentations, random_flip_rotate, source_pixels, transform_batch


def test_the_variants_extraction_writes():
    assert augmentations(False, []) == ["orig"]
    assert augmentations(True, [90, 270]) == ["orig", "fliplr", "flipud", "rot90", "rot270"]
    assert augmentations(False, (180.0,)) == ["orig", "rot180"]


def test_each_transform_moves_the_pixels_as_named():
    array = np.arange(6).reshape(1, 2, 3)  # [[0, 1, 2], [3, 4, 5]]
    assert apply("orig", array).tolist() == [[[0, 1, 2], [3, 4, 5]]]
    assert apply("fliplr", array).tolist() == [[[2, 1, 0], [5, 4, 3]]]
    assert apply("flipud", array).tolist() == [[[3, 4, 5], [0, 1, 2]]]
    assert apply("rot90", array).tolist() == [[[2, 5], [1, 4], [0, 3]]]  # counter-clockwise
    assert apply("rot180", array).tolist() == [[[5, 4, 3], [2, 1, 0]]]
    assert apply("rot270", array).tolist() == [[[3, 0], [4, 1], [5, 2]]]
    assert all(apply(name, array).flags["C_CONTIGUOUS"] for name in TRANSFORMS)  # np.save and torch take them as they are


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_each_variants_pixels_are_placed_where_the_patch_held_them(name):
    """patches.csv gives each variant the geotransform of its pixels: a flipped patch's was the unflipped one's (review)."""
    size = 5
    patch = np.arange(size * size).reshape(size, size)
    variant = apply(name, patch)
    to_source = source_pixels(name, size)
    for row in range(size):
        for col in range(size):
            x, y = to_source * (col + 0.5, row + 0.5)  # the pixel's centre
            assert variant[row, col] == patch[int(y), int(x)]


def test_random_flips_and_rotations_keep_image_and_label_together():
    image = np.arange(2 * 8 * 8, dtype=np.uint8).reshape(2, 8, 8)
    label = image[0].copy()  # the label is the first band: any misstep shows
    variants = set()
    for seed in range(40):
        flipped, flipped_label = random_flip_rotate(image, label, np.random.default_rng(seed))
        assert flipped.shape == image.shape and flipped.flags["C_CONTIGUOUS"] and flipped_label.flags["C_CONTIGUOUS"]
        np.testing.assert_array_equal(flipped[0], flipped_label)
        assert any(np.array_equal(flipped, apply(name, image[..., ::-1] if mirrored else image))
                   for name in ("orig", "rot90", "rot180", "rot270") for mirrored in (False, True))
        variants.add(flipped.tobytes())
    assert len(variants) == 8  # every flip and rotation of a square patch is drawn
    again = random_flip_rotate(image, label, np.random.default_rng(7))
    np.testing.assert_array_equal(again[0], random_flip_rotate(image, label, np.random.default_rng(7))[0])


def test_a_patch_that_is_not_square_is_flipped_but_never_rotated():
    image = np.arange(3 * 4 * 6, dtype=np.float32).reshape(3, 4, 6)
    label = np.arange(4 * 6, dtype=np.uint8).reshape(4, 6)
    seen = set()
    for seed in range(20):
        flipped, flipped_label = random_flip_rotate(image, label, np.random.default_rng(seed))
        assert flipped.shape == (3, 4, 6) and flipped_label.shape == (4, 6)
        seen.add(flipped_label.tobytes())
    assert len(seen) == 4  # as it is, mirrored left-right, up-down, or both


@pytest.mark.parametrize("name", TTA_NAMES)
def test_tta_transforms_are_undone_by_their_inverse_and_match_the_patch_transforms(name):
    batch = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    transformed = transform_batch(name, batch)
    torch.testing.assert_close(transform_batch(name, transformed, inverse=True), batch)
    np.testing.assert_array_equal(transformed.numpy(), apply(name, batch.numpy()))
