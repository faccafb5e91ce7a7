"""Cutting tiles into training and test patches, with a manifest of where each came from."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
from rasterio.transform import Affine
from tqdm import tqdm

from eoseg import augment
from eoseg.config import Config
from eoseg.errors import EosegError
from eoseg.geometry import sliding_windows
from eoseg.grid import pixel_size_range
from eoseg.holdout import TileSplit, report_overlapping_tiles, tile_split
from eoseg.io import RasterInfo, atomic_directory, atomic_write_text
from eoseg.labels import class_pixels
from eoseg.metadata import data_signature, source_files_record
from eoseg.normalization import TRAINING_MEAN_FILL, BandStatistics, check_scale
from eoseg.tiles import (check_patch_fits, check_same_dtype, fits_patch, image_bands_record, tile_labels, tile_stack,
                         training_filling, training_pixels)

MANIFEST = "manifest.json"  # written last: its presence marks a complete patch folder
PATCH_LIST = "patches.csv"
PATCH_FIELDS = ["split", "tile", "row", "col", "augmentation", "image", "label", "transform", "source_image"]


def split_plan(cfg: Config, split: str) -> tuple[int, list[str]]:
    """Stride and augmentations of a split: overlapping and augmented for train, plain for test."""
    if split == "train":
        return cfg.TRAIN_STRIDE, augment.augmentations(cfg.FLIPS, cfg.ROTATIONS)
    return cfg.PATCH_SIZE, ["orig"]


def patch_corners(info: RasterInfo, blocks: TileSplit | None, split: str, size: int, stride: int) -> Iterator[tuple[int, int]]:
    """(row, col) of each patch of a tile: over the whole tile, or, of a tile whose blocks are split
    (``blocks``), over its training pieces (train) or held-out blocks (test) only."""
    if blocks is None:
        yield from sliding_windows(info.height, info.width, size, stride, allow_gaps=True)
        return
    for top, left, rows, cols in blocks.pieces(held_out=split != "train"):
        for row, col in sliding_windows(rows, cols, size, stride, allow_gaps=True):
            yield top + row, left + col


def extract_patches(cfg: Config, out_dir: str | Path, force: bool = False, progress: bool = True) -> dict:
    """Write image/label patches of the train and test tiles into ``out_dir``; return the manifest."""
    size = cfg.PATCH_SIZE
    counts: dict[str, int] = {}
    read_as, stack_dtype = None, None  # what the tiles are read in (check_same_dtype); what their patches hold
    train_infos, statistics = [], BandStatistics(cfg.num_bands)
    trained_classes = np.zeros(cfg.num_classes, dtype=np.int64)  # pixels of each class in the training patches
    too_small: list[str] = []  # test tiles smaller than a patch
    source_files: list[Path] = []  # the files the patches are cut from
    if not cfg.tile_ids("train"):
        raise EosegError("TRAIN_IDS is empty: there are no tiles to extract training patches from")
    report_overlapping_tiles(cfg)
    filling = training_filling(cfg)
    with atomic_directory(out_dir, force=force) as tmp:
        with open(tmp / PATCH_LIST, "w", newline="") as handle:
            writer = csv.DictWriter(handle, PATCH_FIELDS)
            writer.writeheader()
            for split in ("train", "test"):
                stride, variants = split_plan(cfg, split)
                counts[split] = 0
                tiles = cfg.tile_ids(split)
                for tile_id in tqdm(tiles, desc=f"extract {split}", unit="tile", disable=not progress):
                    stack = tile_stack(cfg, tile_id)
                    info = stack.info
                    if split == "test" and not fits_patch(info, size):
                        too_small.append(tile_id)  # no patch of it fits; inference labels it whole all the same
                        continue
                    check_patch_fits(info, size)
                    image = stack.read()
                    if split == "train":
                        train_infos.append(info)
                    label_file = tile_labels(cfg, tile_id, info)
                    labels = label_file.read()
                    source_files += [source.info.path for source in stack.sources] + [label_file.path]
                    read_as, stack_dtype = check_same_dtype(stack, read_as), image.dtype
                    blocks = tile_split(cfg, tile_id, info.height, info.width)
                    trained_on = None if blocks is None or split != "train" else blocks.mask(0, info.height, held_out=False)
                    image, labels = training_pixels(cfg, stack, image, labels, filling, statistics if split == "train" else None,
                                                    trained_on)
                    for folder in ("images", "labels"):
                        (tmp / folder / split).mkdir(parents=True, exist_ok=True)
                    covered = np.zeros(labels.shape, dtype=bool)  # by the patches: what training sees of the tile
                    for row, col in patch_corners(info, blocks, split, size, stride):
                        covered[row:row + size, col:col + size] = True
                        image_patch = image[:, row:row + size, col:col + size]
                        label_patch = labels[row:row + size, col:col + size]
                        transform = info.transform @ Affine.translation(col, row)
                        for variant in variants:
                            name = f"{split}/{tile_id}_{row}_{col}_{variant}.npy"
                            np.save(tmp / "images" / name, augment.apply(variant, image_patch))
                            np.save(tmp / "labels" / name, augment.apply(variant, label_patch))
                            writer.writerow({
                                "split": split, "tile": tile_id, "row": row, "col": col,
                                "augmentation": variant, "image": f"images/{name}", "label": f"labels/{name}",
                                "transform": json.dumps(list(transform)[:6]), "source_image": str(info.path),
                            })
                            counts[split] += 1
                    if split == "train":  # not held-out blocks, nor the gaps a stride beyond PATCH_SIZE leaves
                        trained_classes += class_pixels(labels[covered], cfg.num_classes)
                if split == "train":  # before the test tiles: patches of a badly scaled normalisation are refused
                    check_scale(statistics, cfg)
        cfg.save(tmp)
        manifest = {
            "signature": data_signature(cfg),
            "dtype": str(stack_dtype),
            "pixel_size_m": pixel_size_range(train_infos),  # of the training tiles: the size inference labels at
            "input_statistics": statistics.record(),  # their values: the scale inference expects (normalization.value_scale)
            "nodata_fill": TRAINING_MEAN_FILL,  # what their nodata pixels hold (tiles.training_filling)
            "image_bands": image_bands_record(train_infos, cfg.BANDS),  # their files' band names: the order inference expects
            "class_pixels": trained_classes.tolist(),  # of the training patches: a class never labelled is noted in training
            "counts": counts,
            "train_stride": cfg.TRAIN_STRIDE,
            "augmentations": augment.augmentations(cfg.FLIPS, cfg.ROTATIONS),
            "tiles": {split: [tile for tile in cfg.tile_ids(split) if tile not in too_small] for split in ("train", "test")},
            "patch_list": PATCH_LIST,
            "sources": source_files_record(cfg.DATA_ROOT, source_files),  # changed since: the patches are stale
        }
        atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    if not trained_classes.any():  # training refuses them: said now, before packing and training
        print("note: no training patch holds a labelled pixel (all IGNORE_LABEL, or where the images hold no data): "
              "training will refuse them; check LABEL_VALUES, the label maps and TRAIN_IDS", file=sys.stderr)
    if too_small and progress:
        print(f"note: test tiles {', '.join(too_small)} are smaller than PATCH_SIZE {size}: no test patch of them "
              "(inference labels and scores them whole)", file=sys.stderr)
    return manifest


def read_manifest(patches_dir: str | Path) -> tuple[dict, list[dict]]:
    """The manifest and the patch rows of a complete patch folder."""
    patches_dir = Path(patches_dir)
    path = patches_dir / MANIFEST
    if not path.is_file():
        raise EosegError(f"{patches_dir}: no {MANIFEST}; run extract_images.py first (an interrupted run leaves none)")
    manifest = json.loads(path.read_text())
    with open(patches_dir / manifest["patch_list"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    return manifest, rows
