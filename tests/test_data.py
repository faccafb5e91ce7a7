"""eoseg.data: the sample stream's order, and augmented LMDB patches and tile crops as pure functions of their key."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eoseg.augment import apply
from eoseg.data import (AugmentedPatches, StreamBatchSampler, TileCrops, epoch_permutation, median_frequency_weights,
                        sample_rng)
from eoseg.errors import EosegError


def dihedral_variants(array: np.ndarray) -> list[np.ndarray]:
    """The 8 flips and rotations of ``array``'s last two axes."""
    return [apply(name, mirror) for mirror in (array, array[..., ::-1])
            for name in ("orig", "rot90", "rot180", "rot270")]


def test_each_epoch_visits_every_sample_once_in_an_order_of_its_own():
    orders = [epoch_permutation(3, epoch, 50) for epoch in range(3)]
    assert all(sorted(order) == list(range(50)) for order in orders)
    assert not np.array_equal(orders[0], orders[1]) and not np.array_equal(orders[1], orders[2])
    np.testing.assert_array_equal(epoch_permutation(3, 1, 50), orders[1])
    assert not np.array_equal(epoch_permutation(4, 1, 50), orders[1])


def test_each_sample_draws_from_a_generator_of_its_own_key():
    draw = [sample_rng(3, epoch, index).integers(0, 2**31) for epoch, index in ((0, 0), (0, 1), (1, 0))]
    assert len(set(draw)) == 3 and sample_rng(3, 0, 1).integers(0, 2**31) == draw[1]
    # the permutation stream of an epoch is not the augmentation stream of any sample
    assert np.random.default_rng((3, 0, 0)).integers(0, 2**31) != sample_rng(3, 0, 0).integers(0, 2**31)


def test_no_samples_no_stream():
    with pytest.raises(EosegError, match="the training data hold no samples"):
        StreamBatchSampler(0, 4, seed=0)


class FakePatches:
    """Stands in for LmdbPatches: records by index, and a meta record."""

    meta = {"pixel_size_m": [0.5, 0.5], "input_statistics": {"mean": [1.0]}, "class_pixels": [3, 4]}

    def __init__(self, count: int = 5):
        rng = np.random.default_rng(0)
        self.records = []
        for _ in range(count):
            image = rng.integers(0, 255, (2, 8, 8), dtype=np.uint8)
            self.records.append((image, image[0].copy()))  # the label is the first band: misalignment shows

    def __len__(self):
        return len(self.records)

    def __getitem__(self, index):
        return self.records[index]


def test_augmented_patches_flip_image_and_label_alike_by_key():
    patches = FakePatches()
    data = AugmentedPatches(patches, flips=True, seed=1)
    assert len(data) == 5 and data.pixel_size_m == [0.5, 0.5] and data.class_pixels == [3, 4]
    image, label = patches[2]
    seen = set()
    for epoch in range(16):
        got, got_label = data[(epoch, 2)]
        assert got.dtype == torch.uint8 and torch.equal(got[0], got_label)
        assert any(np.array_equal(got.numpy(), variant) for variant in dihedral_variants(image))
        seen.add(got.numpy().tobytes())
    assert len(seen) > 2 and torch.equal(data[(3, 2)][0], data[(3, 2)][0])
    plain = AugmentedPatches(patches, flips=False, seed=1)
    assert np.array_equal(plain[(3, 2)][0].numpy(), image) and np.array_equal(plain[(3, 2)][1].numpy(), label)
    assert [m.tobytes() for m in data.label_maps()] == [r[1].tobytes() for r in patches.records]


def test_tile_crops_come_from_the_tiles_in_proportion_to_their_area():
    rng = np.random.default_rng(0)
    big, small = (rng.integers(0, 255, (1, side, side), dtype=np.uint8) for side in (48, 16))
    tiles = [(big, big[0].copy()), (small, small[0].copy())]
    crops = TileCrops(tiles, size=16, flips=True, seed=2)
    assert len(crops) == 9 + 1  # as many crops as patches tile them once
    assert crops.tile_probabilities.tolist() == pytest.approx([0.9, 0.1])
    from_small = 0
    for index in range(60):
        image, labels = crops[(0, index)]
        assert image.shape == (1, 16, 16) and torch.equal(image[0], labels)
        found = [np.array_equal(image.numpy(), variant) for variant in dihedral_variants(small)]
        from_small += any(found)
        if not any(found) and index < 10:  # somewhere in the big tile, flipped or rotated
            assert any(np.array_equal(image.numpy(), variant)
                       for row in range(33) for col in range(33)
                       for variant in dihedral_variants(big[:, row:row + 16, col:col + 16]))
    assert 0 < from_small < 20
    assert torch.equal(crops[(4, 7)][0], crops[(4, 7)][0])


def test_class_weights_need_a_labelled_pixel():
    with pytest.raises(EosegError, match="the training labels hold no labelled pixel"):
        median_frequency_weights([np.full((4, 4), 255, np.uint8)], num_classes=3, ignore_label=255)
    assert median_frequency_weights([np.array([[0, 0, 2, 255]], np.uint8)], 3, 255) == pytest.approx([0.75, 0.0, 1.5])  # f0 2/3, f2 1/3: median 1/2


def test_training_tiles_that_would_not_fit_in_memory_are_refused_before_they_are_read(tiny_cfg, monkeypatch):
    """TRAIN_SOURCE="tiles" holds every training tile in memory: a run killed for memory would say nothing of why."""
    from eoseg import data

    cfg = tiny_cfg.replace(TRAIN_SOURCE="tiles")
    needed = 3 * 160 * 160 * (3 + 1)  # three tiles of 160 x 160 px, three uint8 bands and their labels
    monkeypatch.setattr(data, "available_memory", lambda: int(needed / data.TILES_MEMORY_SHARE) - 1)
    monkeypatch.setattr(data, "training_filling", lambda cfg: pytest.fail("a tile was read"))
    with pytest.raises(EosegError, match=r"TRAIN_SOURCE='tiles' holds every training tile in memory \(it holds them\), "
                                         r"0.0 GiB for 3 tiles, and this machine has 0.0 GiB available; train from patches"):
        data.training_data(cfg)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # torchrun: each process holds them
    monkeypatch.setattr(data, "available_memory", lambda: int(needed / data.TILES_MEMORY_SHARE) + 1)
    with pytest.raises(EosegError, match=r"\(2 processes each hold them\)"):
        data.training_data(cfg)
    monkeypatch.undo()
    monkeypatch.setattr(data, "available_memory", lambda: int(needed / data.TILES_MEMORY_SHARE) + 1)  # just enough
    assert len(data.training_data(cfg).tiles) == 3
    monkeypatch.setattr(data, "available_memory", lambda: None)  # not Linux: nothing to go by
    assert len(data.training_data(cfg).tiles) == 3
