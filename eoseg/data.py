"""Training data: what each process reads at each step, and the augmented samples themselves.

The order of samples and their augmentation are pure functions of (SEED, epoch, index):
the training stream visits the dataset in a fresh permutation every epoch, and a sample's
flip, rotation and (for tiles) crop come from a generator seeded with its own key. Nothing
depends on DataLoader workers, process-wide random state or the history of the run, so a
resumed run needs only its position in the stream to carry on exactly where it stopped,
and the processes of a distributed run read disjoint shards of one stream.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler
from tqdm import tqdm

from eoseg.augment import random_flip_rotate
from eoseg.config import Config
from eoseg.errors import EosegError
from eoseg.grid import pixel_size_range
from eoseg.holdout import tile_split
from eoseg.io import available_memory
from eoseg.labels import class_pixels
from eoseg.lmdb_store import TRAIN_LMDB, LmdbPatches
from eoseg.metadata import check_source_files, data_signature
from eoseg.normalization import BandStatistics, check_scale
from eoseg.tiles import (check_patch_fits, check_same_dtype, image_bands_record, read_labels, tile_stack, training_filling,
                         training_pixels)

# The two uses of SEED get separate random streams: a permutation seeded with (seed, epoch)
# must not coincide with the augmentation of some sample.
PERMUTATION_STREAM = 0
SAMPLE_STREAM = 1


def epoch_permutation(seed: int, epoch: int, length: int) -> np.ndarray:
    """The order in which epoch ``epoch`` visits the ``length`` samples."""
    return np.random.default_rng((seed, PERMUTATION_STREAM, epoch)).permutation(length)


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of sample ``index``'s augmentation in epoch ``epoch``."""
    return np.random.default_rng((seed, SAMPLE_STREAM, epoch, index))


class StreamBatchSampler(Sampler[list[tuple[int, int]]]):
    """Endless batches of (epoch, index) keys for one process of a (possibly distributed) run.

    Stream position p is sample ``epoch_permutation(seed, p // length)[p % length]``. Step t
    after ``start`` covers positions ``start + t * batch_size * world_size`` onwards; process
    ``rank`` reads the ``rank``-th block of ``batch_size`` of them, so the processes read
    disjoint shards and together consume ``batch_size * world_size`` positions per step.
    """

    def __init__(self, length: int, batch_size: int, seed: int, start: int = 0, rank: int = 0, world_size: int = 1):
        if length < 1:
            raise EosegError("the training data hold no samples")
        self.length = length
        self.batch_size = batch_size
        self.seed = seed
        self.start = start
        self.rank = rank
        self.world_size = world_size

    def position_after(self, steps: int) -> int:
        """The stream position reached after ``steps`` steps from ``start`` (all processes together)."""
        return self.start + steps * self.batch_size * self.world_size

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, order = None, None
        step = 0
        while True:
            first = self.position_after(step) + self.rank * self.batch_size
            batch = []
            for position in range(first, first + self.batch_size):
                position_epoch, offset = divmod(position, self.length)
                if position_epoch != epoch:
                    epoch, order = position_epoch, epoch_permutation(self.seed, position_epoch, self.length)
                batch.append((epoch, int(order[offset])))
            yield batch
            step += 1


class AugmentedPatches(Dataset):
    """LMDB patches, each flipped and rotated at random (image and label together) per epoch."""

    def __init__(self, patches: LmdbPatches, flips: bool, seed: int):
        self.patches = patches
        self.flips = flips
        self.seed = seed
        self.pixel_size_m = patches.meta.get("pixel_size_m")  # [smallest, largest] m of the tiles, or None
        self.input_statistics = patches.meta.get("input_statistics")  # their values' mean and std per band, or None
        self.image_bands = patches.meta.get("image_bands")  # their files' band names and scalings, or None
        self.nodata_fill = patches.meta.get("nodata_fill")  # what their nodata pixels hold; None: NORM_MEAN (older)
        self.class_pixels = patches.meta.get("class_pixels")  # labelled pixels of each class in their tiles, or None

    def __len__(self) -> int:
        return len(self.patches)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, index = key
        image, label = self.patches[index]
        if self.flips:
            image, label = random_flip_rotate(image, label, sample_rng(self.seed, epoch, index))
        return torch.from_numpy(image), torch.from_numpy(label)

    def label_maps(self) -> Iterator[np.ndarray]:
        for index in range(len(self.patches)):
            yield self.patches[index][1]


class TileCrops(Dataset):
    """Random square crops of tiles held in memory in their own dtype (uint8 stays uint8).

    An epoch is as many crops as patches tile the training area once; a crop's tile is drawn
    in proportion to tile area, so that every pixel is equally likely to be seen.
    """

    def __init__(self, tiles: list[tuple[np.ndarray, np.ndarray]], size: int, flips: bool, seed: int,
                 pixel_size_m: list[float] | None = None, input_statistics: dict | None = None,
                 class_pixels: list[int] | None = None, image_bands: dict | None = None,
                 nodata_fill: list[float] | None = None):
        self.tiles = tiles
        self.size = size
        self.flips = flips
        self.seed = seed
        self.pixel_size_m = pixel_size_m  # [smallest, largest] m of the tiles, or None
        self.input_statistics = input_statistics  # their values' mean and std per band, or None
        self.class_pixels = class_pixels  # labelled pixels of each class in the tiles, or None
        self.image_bands = image_bands  # their files' band names and scalings (tiles.image_bands_record), or None
        self.nodata_fill = nodata_fill  # what their nodata pixels hold (tiles.training_filling)
        areas = np.array([labels.size for _, labels in tiles], dtype=np.float64)
        self.tile_probabilities = areas / areas.sum()
        self.epoch_length = max(1, sum((labels.shape[0] // size) * (labels.shape[1] // size) for _, labels in tiles))

    def __len__(self) -> int:
        return self.epoch_length

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, index = key
        rng = sample_rng(self.seed, epoch, index)
        image, labels = self.tiles[int(rng.choice(len(self.tiles), p=self.tile_probabilities))]
        row = int(rng.integers(0, labels.shape[0] - self.size + 1))
        col = int(rng.integers(0, labels.shape[1] - self.size + 1))
        crop = image[:, row:row + self.size, col:col + self.size]
        crop_labels = labels[row:row + self.size, col:col + self.size]
        if self.flips:
            crop, crop_labels = random_flip_rotate(crop, crop_labels, rng)
        return torch.from_numpy(np.ascontiguousarray(crop)), torch.from_numpy(np.ascontiguousarray(crop_labels))

    def label_maps(self) -> Iterator[np.ndarray]:
        for _, labels in self.tiles:
            yield labels


def jitter_bands(images: torch.Tensor, strength: float, bands: int, generator: torch.Generator) -> torch.Tensor:
    """Normalised (N, C, H, W) ``images`` with each patch's first ``bands`` bands multiplied by one random
    factor in 1 +- ``strength`` and shifted by one random +- ``strength`` times their spread over the batch
    (so that the shift means the same under any NORM_STD): brighter, darker, hazier light, the same for
    every band of a patch, so that the ratios between bands that tell materials apart stay. A draw per
    patch from ``generator`` (on the CPU, so that a resumed run draws the same)."""
    draws = (torch.rand((2, images.shape[0], 1, 1, 1), generator=generator) * 2 - 1) * strength
    gain, shift = (draw.to(images.device, images.dtype) for draw in draws)
    colours = images[:, :bands]
    jittered = colours * (1 + gain) + shift * colours.std(dim=(0, 2, 3), keepdim=True)
    return torch.cat([jittered, images[:, bands:]], dim=1) if bands < images.shape[1] else jittered


def rescale_patches(images: torch.Tensor, labels: torch.Tensor, strength: float, ignore_label: int,
                    generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Each of the (N, C, H, W) ``images`` and its (N, H, W) ``labels`` zoomed by one random factor between
    1 / (1 + ``strength``) and 1 + ``strength`` (uniform in its logarithm, so that halving and doubling are as
    likely), then cut back to H x W at a random place: zoomed in, a random H x W crop; zoomed out, placed at
    a random place on a background of 0 (the normalised mean) labelled ``ignore_label``. Objects seen at other
    sizes, as another pixel size or city shows them. Image bilinear with antialiasing (what a coarser
    sensor would record), every band alike; labels nearest. Draws from ``generator`` (on the CPU)."""
    count, _, height, width = images.shape
    factors = torch.exp((torch.rand(count, generator=generator) * 2 - 1) * math.log1p(strength)).tolist()
    places = torch.rand((count, 2), generator=generator).tolist()
    zoomed_images = torch.zeros_like(images)
    zoomed_labels = torch.full_like(labels, ignore_label)
    for i, (factor, (along_y, along_x)) in enumerate(zip(factors, places)):
        size = (max(1, round(height * factor)), max(1, round(width * factor)))
        image = F.interpolate(images[i:i + 1], size=size, mode="bilinear", align_corners=False, antialias=True)
        label = F.interpolate(labels[i:i + 1, None].float(), size=size, mode="nearest-exact")[0, 0].to(labels.dtype)
        (source_y, target_y, rows), (source_x, target_x, columns) = (
            _overlap(zoomed, side, place) for zoomed, side, place in zip(size, (height, width), (along_y, along_x)))
        zoomed_images[i, :, target_y:target_y + rows, target_x:target_x + columns] = \
            image[0, :, source_y:source_y + rows, source_x:source_x + columns]
        zoomed_labels[i, target_y:target_y + rows, target_x:target_x + columns] = \
            label[source_y:source_y + rows, source_x:source_x + columns]
    return zoomed_images, zoomed_labels


def _overlap(zoomed: int, side: int, place: float) -> tuple[int, int, int]:
    """(start in the zoomed patch, start in the output, length) along one axis, the offset at ``place`` (0..1)
    of the slack between the two sides."""
    offset = min(int(place * (abs(zoomed - side) + 1)), abs(zoomed - side))
    return (offset, 0, side) if zoomed >= side else (0, offset, zoomed)


TILES_MEMORY_SHARE = 0.6  # of the memory available: TRAIN_SOURCE="tiles" holds its tiles and, while reading one, a copy


def check_tiles_fit_in_memory(cfg: Config) -> None:
    """Refuse TRAIN_SOURCE="tiles" where the training tiles, held in memory whole, would not fit in the memory this
    machine has available: killed for memory, the run would end without a word of why."""
    stacks = [tile_stack(cfg, tile_id) for tile_id in cfg.tile_ids("train")]
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", 1))  # under torchrun each process on this machine holds them
    needed = processes * sum(s.info.height * s.info.width * (s.count * s.dtype.itemsize + 1) for s in stacks)
    available = available_memory()
    if available is not None and needed > TILES_MEMORY_SHARE * available:
        held = f"{processes} processes each hold" if processes > 1 else "it holds"
        raise EosegError(f"TRAIN_SOURCE='tiles' holds every training tile in memory ({held} them), {needed / 2**30:.1f} "
                         f"GiB for {len(stacks)} tiles, and this machine has {available / 2**30:.1f} GiB available; train from "
                         "patches instead (TRAIN_SOURCE='lmdb', after extract_images.py and create_lmdb.py), which reads "
                         "them from disk")


def training_data(cfg: Config) -> AugmentedPatches | TileCrops:
    """The configured training source: LMDB_DIR/train.lmdb, or crops of the training tiles."""
    if cfg.TRAIN_SOURCE == "lmdb":
        patches = LmdbPatches(Path(cfg.LMDB_DIR) / TRAIN_LMDB, expected_signature=data_signature(cfg))
        check_source_files(patches.meta.get("sources"), cfg.DATA_ROOT, f"LMDB {patches.path}")
        shuffled = patches.meta.get("shuffle_seed")  # the order of its records: what a resumed run repeats
        if shuffled is not None and shuffled != cfg.SHUFFLE_SEED:
            raise EosegError(f"LMDB {patches.path} was shuffled with SHUFFLE_SEED={shuffled}, but the config has "
                             f"SHUFFLE_SEED={cfg.SHUFFLE_SEED}: the run's record would name an order its batches do not "
                             f"follow; set SHUFFLE_SEED={shuffled}, or pack it again (create_lmdb.py --force)")
        if patches.meta.get("input_statistics"):  # it holds raw pixels: NORM_STD may have changed since
            check_scale(BandStatistics.from_record(patches.meta["input_statistics"]), cfg)
        return AugmentedPatches(patches, cfg.RANDOM_FLIPS, cfg.SEED)
    tiles, infos, statistics, read_as = [], [], BandStatistics(cfg.num_bands), None
    check_tiles_fit_in_memory(cfg)
    filling = training_filling(cfg)
    for tile_id in cfg.tile_ids("train"):
        stack = tile_stack(cfg, tile_id)
        info = stack.info
        infos.append(info)
        check_patch_fits(info, cfg.PATCH_SIZE)
        image = stack.read()
        read_as = check_same_dtype(stack, read_as)
        blocks = tile_split(cfg, tile_id, info.height, info.width)
        trained_on = None if blocks is None else blocks.mask(0, info.height, held_out=False)
        image, labels = training_pixels(cfg, stack, image, read_labels(cfg, tile_id, info), filling, statistics, trained_on)
        if blocks is None:
            tiles.append((image, labels))
        else:  # each training piece a tile of its own: no crop reaches into a held-out block
            tiles += [(image[:, row:row + rows, col:col + cols], labels[row:row + rows, col:col + cols])
                      for row, col, rows, cols in blocks.pieces(held_out=False)]
    if not tiles:
        raise EosegError("TRAIN_IDS is empty: nothing to train on")
    check_scale(statistics, cfg)
    counts = np.sum([class_pixels(labels, cfg.num_classes) for _, labels in tiles], axis=0).tolist()
    return TileCrops(tiles, cfg.PATCH_SIZE, cfg.RANDOM_FLIPS, cfg.SEED, pixel_size_range(infos), statistics.record(), counts,
                     image_bands_record(infos, cfg.BANDS), filling.fill_record())


def median_frequency_weights(label_maps, num_classes: int, ignore_label: int, progress: bool = False) -> list[float]:
    """Median frequency balancing (Eigen & Fergus 2015), the class weighting SegNet uses.

    ``weight_c = median_c(f_c) / f_c`` with ``f_c`` = pixels of class c divided by the labelled
    pixels of the label maps (patches or tiles) in which c occurs; the median is taken over
    the classes that occur. A class that never occurs gets weight 0 (it is never in the loss).
    """
    class_pixels = np.zeros(num_classes, dtype=np.int64)
    pixels_where_present = np.zeros(num_classes, dtype=np.int64)
    for labels in tqdm(label_maps, desc="class frequencies", unit="map", disable=not progress):
        counts = np.bincount(labels.ravel(), minlength=256)
        counts[ignore_label] = 0
        counts = counts[:num_classes]
        class_pixels += counts
        pixels_where_present[counts > 0] += counts.sum()
    present = class_pixels > 0
    if not present.any():
        raise EosegError("the training labels hold no labelled pixel: cannot compute class weights")
    frequency = np.zeros(num_classes)
    frequency[present] = class_pixels[present] / pixels_where_present[present]
    weights = np.zeros(num_classes)
    weights[present] = np.median(frequency[present]) / frequency[present]
    return [float(w) for w in weights]
