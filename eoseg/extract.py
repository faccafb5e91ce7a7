"""Cutting tiles into training and test patches, with a manifest of where each came from."""

from __future__ import annotations

import csv
import json
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import rasterio
from rasterio.transform import Affine
from rasterio.windows import Window
from tqdm import tqdm

from eoseg import augment
from eoseg.config import Config
from eoseg.errors import EosegError
from eoseg.geometry import sliding_windows
from eoseg.grid import pixel_size_range
from eoseg.holdout import TileSplit, report_overlapping_tiles, tile_split
from eoseg.io import GDAL_CACHE_MB, RasterInfo, atomic_directory, atomic_write_text
from eoseg.labels import RasterLabels, VectorLabels, class_pixels
from eoseg.metadata import data_signature, source_files_record
from eoseg.normalization import BandStatistics, Normalization, check_scale
from eoseg.tiles import (TileStack, check_patch_fits, check_same_dtype, fits_patch, image_bands_record, tile_labels,
                         tile_stack, training_filling, training_pixels, unmasked_fill_note)

MANIFEST = "manifest.json"  # written last: its presence marks a complete patch folder
PATCH_LIST = "patches.csv"
READ_BYTES = 256 * 2**20  # a tile is read by bands of rows of about this many bytes: memory bounded, whatever its size
# the checksums: of each patch's array as written, which packing reads against (a patch rewritten or cut since)
PATCH_FIELDS = ["split", "tile", "row", "col", "augmentation", "image", "label", "transform", "source_image",
                "image_crc32", "label_crc32"]


CHANGED_SINCE_EXTRACTION = "the folder changed since extraction: extract again (extract_images.py --force)"


def patch_checksum(array: np.ndarray) -> str:
    """CRC-32 of a patch array's bytes, as patches.csv records it."""
    return f"{zlib.crc32(np.ascontiguousarray(array).data):08x}"


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


@dataclass(frozen=True)
class RowRead:
    """One read of a tile by bands of rows: rows top..top+rows-1, of which the first ``owned`` are this read's
    own (those of all reads partition the tile), and the patches whose top row is one of them."""

    top: int
    rows: int
    owned: int
    corners: list[tuple[int, int]]


def row_reads(corners: Iterable[tuple[int, int]], height: int, size: int, rows_at_once: int) -> Iterator[RowRead]:
    """The reads of a tile of ``height`` rows by bands of rows, top to bottom, for its patches of ``size`` px at
    ``corners`` (row, col), in their order: each read holds about ``rows_at_once`` rows, its own rows and the rest of
    their patches, which reach at most ``size`` - 1 rows into the next read."""
    step = max(rows_at_once - size, size)
    by_read: dict[int, list[tuple[int, int]]] = {}
    for row, col in corners:
        by_read.setdefault(row // step, []).append((row, col))
    for top in range(0, height, step):
        owned = min(step, height - top)
        inside = by_read.get(top // step, [])
        yield RowRead(top, max([owned] + [row + size - top for row, _ in inside]), owned, inside)


def write_tile_patches(cfg: Config, out: Path, writer: csv.DictWriter, split: str, tile_id: str, stack: TileStack,
                       label_file: RasterLabels | VectorLabels, filling: Normalization,
                       statistics: BandStatistics) -> tuple[int, np.ndarray, np.dtype]:
    """Write the ``split`` patches of one tile into ``out`` and their rows into ``writer``, reading the tile by bands of
    rows (:func:`row_reads`); a training tile's valid pixels counted into ``statistics``. Returns how many patches were
    written, the pixels of each class that the training patches cover (zeros for test tiles), and the patches' dtype."""
    size, info = cfg.PATCH_SIZE, stack.info
    stride, variants = split_plan(cfg, split)
    train = split == "train"
    blocks = tile_split(cfg, tile_id, info.height, info.width)
    for folder in ("images", "labels"):
        (out / folder / split).mkdir(parents=True, exist_ok=True)
    written, classes, dtype = 0, np.zeros(cfg.num_classes, dtype=np.int64), stack.dtype
    corners = list(patch_corners(info, blocks, split, size, stride))
    rows_at_once = READ_BYTES // (info.width * (2 * stack.count * stack.dtype.itemsize + 3))
    earlier = None  # the last read's top row and coverage: its patches reach into this read's rows
    with stack:
        for read in row_reads(corners, info.height, size, rows_at_once):
            if not train and not read.corners:
                continue  # statistics and class counts are the training tiles' only
            window = Window(0, read.top, info.width, read.rows)
            trained_on = None if blocks is None or not train else blocks.mask(read.top, read.top + read.owned, held_out=False)
            image, labels = training_pixels(cfg, stack, stack.read(window), label_file.read(window), filling,
                                            statistics if train else None, trained_on, window, read.owned)
            dtype = image.dtype
            covered = np.zeros(labels.shape, dtype=bool)  # by the patches: what training sees of the tile
            if earlier is not None and earlier[0] + len(earlier[1]) > read.top:
                covered[:earlier[0] + len(earlier[1]) - read.top] = earlier[1][read.top - earlier[0]:]
            for row, col in read.corners:
                top = row - read.top
                covered[top:top + size, col:col + size] = True
                image_patch, label_patch = image[:, top:top + size, col:col + size], labels[top:top + size, col:col + size]
                corner = info.transform @ Affine.translation(col, row)
                for variant in variants:
                    transform = corner @ augment.source_pixels(variant, size)  # a flipped patch lies flipped on the map
                    name = f"{split}/{tile_id}_{row}_{col}_{variant}.npy"
                    image_variant, label_variant = augment.apply(variant, image_patch), augment.apply(variant, label_patch)
                    np.save(out / "images" / name, image_variant)
                    np.save(out / "labels" / name, label_variant)
                    writer.writerow({
                        "split": split, "tile": tile_id, "row": row, "col": col,
                        "augmentation": variant, "image": f"images/{name}", "label": f"labels/{name}",
                        "transform": json.dumps(list(transform)[:6]), "source_image": str(info.path),
                        "image_crc32": patch_checksum(image_variant), "label_crc32": patch_checksum(label_variant),
                    })
                    written += 1
            earlier = (read.top, covered)
            if train:  # not held-out blocks, nor the gaps a stride beyond PATCH_SIZE leaves; each row counted once
                classes += class_pixels(labels[:read.owned][covered[:read.owned]], cfg.num_classes)
    return written, classes, dtype


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
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), atomic_directory(out_dir, force=force, marker=MANIFEST) as tmp:
        with open(tmp / PATCH_LIST, "w", newline="") as handle:
            writer = csv.DictWriter(handle, PATCH_FIELDS)
            writer.writeheader()
            for split in ("train", "test"):
                counts[split] = 0
                tiles = cfg.tile_ids(split)
                for tile_id in tqdm(tiles, desc=f"extract {split}", unit="tile", disable=not progress):
                    stack = tile_stack(cfg, tile_id)
                    info = stack.info
                    if split == "test" and not fits_patch(info, size):
                        too_small.append(tile_id)  # no patch of it fits; inference labels it whole all the same
                        continue
                    check_patch_fits(info, size)
                    if split == "train":
                        train_infos.append(info)
                        collar = unmasked_fill_note(stack.sample()[1])
                        if collar:  # else learned as land, silently (review: a swath edge of zeros)
                            tqdm.write(f"note: tile {tile_id}: {collar}", file=sys.stderr)
                    label_file = tile_labels(cfg, tile_id, info)
                    label_file.check()  # its values over the whole tile, before it is read by rows
                    source_files += [source.info.path for source in stack.sources] + [label_file.path]
                    read_as = check_same_dtype(stack, read_as)
                    tile_counts, tile_classes, stack_dtype = write_tile_patches(cfg, tmp, writer, split, tile_id, stack,
                                                                               label_file, filling, statistics)
                    counts[split] += tile_counts
                    trained_classes += tile_classes
                if split == "train":  # before the test tiles: patches of a badly scaled normalisation are refused
                    check_scale(statistics, cfg)
        cfg.save(tmp)
        manifest = {
            "signature": data_signature(cfg),
            "dtype": str(stack_dtype),
            "pixel_size_m": pixel_size_range(train_infos),  # of the training tiles: the size inference labels at
            "input_statistics": statistics.record(),  # their values: the scale inference expects (normalization.value_scale)
            "nodata_fill": filling.fill_record(),  # what their nodata pixels hold (tiles.training_filling)
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
    redo = CHANGED_SINCE_EXTRACTION
    for split, count in (manifest.get("counts") or {}).items():  # a row removed from the list: packed without a word
        listed = sum(row["split"] == split for row in rows)
        if listed != count:
            raise EosegError(f"{patches_dir}: {manifest['patch_list']} lists {listed} {split} patches, {MANIFEST} "
                             f"{count}; {redo}")
    missing = next((name for row in rows for name in (row["image"], row["label"]) if not (patches_dir / name).is_file()),
                   None)
    if missing is not None:
        raise EosegError(f"{patches_dir}: patch file {missing} is missing; {redo}")
    return manifest, rows
