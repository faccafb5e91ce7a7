"""One scene to train and to test on: a tile listed in TRAIN_IDS and in TEST_IDS (or VAL_IDS) is
cut into square blocks of HOLDOUT_BLOCK px, and one block in HOLDOUT_EVERY is held out.

Block (r, c), counted from the top-left, is held out where (r + c) % HOLDOUT_EVERY == 0: diagonal
lines across the scene, so that the held-out blocks sample all of it. Training reads the other
blocks only, as pieces (the runs of training blocks along a row of blocks) at least PATCH_SIZE
each way, so that no patch or crop holds a held-out pixel, of the image or of its labels; the
tile's test scores (inference, validation) count the held-out blocks' pixels only. Whole blocks,
not random pixels: neighbouring pixels look alike, and a test pixel next to a training pixel
would flatter the scores.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import numpy as np
import shapely

from eoseg.config import Config
from eoseg.errors import EosegError
from eoseg.grid import footprint, is_engineering, same_crs
from eoseg.io import RasterInfo, raster_info


@dataclass(frozen=True)
class TileSplit:
    """The blocks of one ``height`` x ``width`` px tile: held out or trained on."""

    tile_id: str
    block: int
    every: int
    height: int
    width: int
    patch_size: int

    def is_held_out(self, block_row, block_col):
        """Whether block (``block_row``, ``block_col``) is held out; of arrays of them, elementwise."""
        return (block_row + block_col) % self.every == 0

    def held_out_pixels(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """(len(rows), len(cols)) True where pixel (row, col) of the tile lies in a held-out block."""
        return self.is_held_out(np.asarray(rows)[:, None] // self.block, np.asarray(cols)[None, :] // self.block)

    def pieces(self, held_out: bool) -> list[tuple[int, int, int, int]]:
        """(row, col, height, width) of each run of held-out (or training) blocks along a row of blocks,
        those at least PATCH_SIZE each way: what training (or the test patches) may be cut from."""
        found = []
        columns = -(-self.width // self.block)
        for top in range(0, self.height, self.block):
            rows = min(self.block, self.height - top)
            start = None
            for index in range(columns + 1):
                inside = index < columns and self.is_held_out(top // self.block, index) == held_out
                if inside and start is None:
                    start = index
                elif not inside and start is not None:
                    left, right = start * self.block, min(index * self.block, self.width)
                    if rows >= self.patch_size and right - left >= self.patch_size:
                        found.append((top, left, rows, right - left))
                    start = None
        return found

    def mask(self, first_row: int, end_row: int, held_out: bool) -> np.ndarray:
        """(rows, width) True on the pixels of rows first..end-1 that the held-out blocks (``held_out``)
        or the training pieces hold."""
        if held_out:
            return self.held_out_pixels(np.arange(first_row, end_row), np.arange(self.width))
        inside = np.zeros((end_row - first_row, self.width), dtype=bool)
        for row, col, rows, cols in self.pieces(held_out=False):
            top, bottom = max(row, first_row), min(row + rows, end_row)
            if top < bottom:
                inside[top - first_row:bottom - first_row, col:col + cols] = True
        return inside

    def held_out_share(self) -> float:
        """Fraction of the tile's pixels in held-out blocks."""
        rows = [min(self.block, self.height - top) for top in range(0, self.height, self.block)]
        cols = [min(self.block, self.width - left) for left in range(0, self.width, self.block)]
        held = sum(r * c for i, r in enumerate(rows) for j, c in enumerate(cols) if self.is_held_out(i, j))
        return held / (self.height * self.width)

    def describe(self) -> str:
        return (f"its held-out blocks only ({self.held_out_share():.0%} of the tile: 1 block in {self.every} of "
                f"{self.block} px, HOLDOUT_BLOCK and HOLDOUT_EVERY)")


def split_tiles(cfg: Config) -> list[str]:
    """Tiles in TRAIN_IDS and in TEST_IDS or VAL_IDS, whose blocks are split (none where HOLDOUT_BLOCK is 0).

    Refused where there are such tiles and HOLDOUT_BLOCK is under 2 x PATCH_SIZE (without them, it is not used)."""
    if not cfg.HOLDOUT_BLOCK:
        return []
    held_out = set(cfg.tile_ids("test")) | set(cfg.ids("VAL_IDS"))
    tiles = [tile_id for tile_id in cfg.tile_ids("train") if tile_id in held_out]
    if tiles and cfg.HOLDOUT_BLOCK < 2 * cfg.PATCH_SIZE:
        raise EosegError(f"HOLDOUT_BLOCK must be 0 (no split) or at least 2 x PATCH_SIZE = {2 * cfg.PATCH_SIZE} px, so "
                         f"that training patches fit beside the held-out blocks of tiles {listed(tiles)} (in TRAIN_IDS "
                         f"and held out); got {cfg.HOLDOUT_BLOCK!r}")
    return tiles


def tile_split(cfg: Config, tile_id: str, height: int, width: int) -> TileSplit | None:
    """How tile ``tile_id`` (``height`` x ``width`` px) is split, or None where it is not.

    Refused where the split leaves it no piece to train on or no block to test on, with a
    HOLDOUT_BLOCK that would."""
    if tile_id not in split_tiles(cfg):
        return None
    split = TileSplit(tile_id, cfg.HOLDOUT_BLOCK, cfg.HOLDOUT_EVERY, height, width, cfg.PATCH_SIZE)
    missing = "training" if not split.pieces(held_out=False) else "held-out" if not split.pieces(held_out=True) else None
    if missing:
        block = fitting_block(height, width, cfg.HOLDOUT_EVERY, cfg.PATCH_SIZE)
        patch = next((p for p in (cfg.PATCH_SIZE // 2, cfg.PATCH_SIZE // 4) if fitting_block(height, width, cfg.HOLDOUT_EVERY, p)),
                     None)
        fix = (f"set HOLDOUT_BLOCK={block}" if block else
               f"lower PATCH_SIZE to {patch} and set HOLDOUT_BLOCK={fitting_block(height, width, cfg.HOLDOUT_EVERY, patch)}"
               if patch else "leave it out of TRAIN_IDS or of the held-out lists")
        if block or patch:  # a --config for another folder inherits TRAIN_IDS: its glob found the tile (review)
            fix += "; if it is no training tile, leave it out of TRAIN_IDS (a --config importing another inherits it)"
        raise EosegError(f"tile {tile_id} ({width} x {height} px) is in TRAIN_IDS and held out, but blocks of "
                         f"HOLDOUT_BLOCK={cfg.HOLDOUT_BLOCK} px leave it no {missing} area of PATCH_SIZE "
                         f"{cfg.PATCH_SIZE}; {fix}")
    return split


def _block_for_all(cfg: Config, tile_ids: list[str]) -> int | None:
    """A HOLDOUT_BLOCK that splits every tile of ``tile_ids`` (1024 where it does; else the smallest tile's
    :func:`fitting_block`), or None where none does or a tile cannot be read (the steps say why)."""
    try:
        sizes = [(info.height, info.width) for info in (raster_info(cfg.tile_path("IMAGE_PATTERN", t)) for t in tile_ids)]
    except EosegError:
        return None

    def splits_all(block: int) -> bool:
        return all(split.pieces(held_out=False) and split.pieces(held_out=True) for split in
                   (TileSplit("", block, cfg.HOLDOUT_EVERY, height, width, cfg.PATCH_SIZE) for height, width in sizes))

    candidates = [max(1024, 2 * cfg.PATCH_SIZE), fitting_block(*min(sizes), cfg.HOLDOUT_EVERY, cfg.PATCH_SIZE)]
    return next((block for block in candidates if block and splits_all(block)), None)


def fitting_block(height: int, width: int, every: int, patch_size: int) -> int | None:
    """The block (at least 2 x ``patch_size``) that leaves a ``height`` x ``width`` px tile both a training
    piece and a held-out block of ``patch_size``, and holds out the share nearest 1 / ``every`` (of two,
    the larger); None where none does."""
    best, best_gap = None, None
    for block in range(max(height, width), 2 * patch_size - 1, -1):
        split = TileSplit("", block, every, height, width, patch_size)
        if split.pieces(held_out=False) and split.pieces(held_out=True):
            gap = abs(split.held_out_share() - 1 / every)
            if best_gap is None or gap < best_gap - 1e-9:
                best, best_gap = block, gap
    return best


def holdout_record(cfg: Config) -> dict | None:
    """What artifacts record of the split: the block, the share and the tiles it applies to (None: no tile split)."""
    tiles = split_tiles(cfg)
    if not tiles:
        return None
    return {"block": int(cfg.HOLDOUT_BLOCK), "every": int(cfg.HOLDOUT_EVERY), "tiles": tiles}


def check_scored_tiles(signature: dict, cfg: Config, tile_ids: list[str], weights: str) -> None:
    """Refuse to score a tile whose blocks ``weights`` (their data ``signature``) were trained on under another
    split than ``cfg``'s: its scores would count pixels the weights learned from. A tile they were trained on
    whole is scored with a warning on stderr (training and scoring one tile, with HOLDOUT_BLOCK = 0, is allowed)."""
    recorded = signature.get("holdout") or {"tiles": []}
    memorised = [t for t in tile_ids if t in signature.get("train_tiles", ()) and t not in recorded["tiles"]]
    if memorised:
        print(f"warning: {weights} were trained on tiles {listed(memorised)} (as they record): their scores measure "
              "what the model memorised, not how it generalises", file=sys.stderr)
    inherited = [t for t in tile_ids if t in signature.get("inherited_train_tiles", ()) and t not in memorised]
    if inherited:
        print(f"warning: {weights} started from weights (ENCODER_WEIGHTS or INIT_WEIGHTS) trained on tiles "
              f"{listed(inherited)} (as they record): "
              "if those were these images, their scores measure what the model memorised, not how it generalises",
              file=sys.stderr)
    mine = holdout_record(cfg) or {}
    trained = signature.get("train_tiles")  # absent: weights from before it was recorded
    for tile_id in tile_ids:
        if tile_id in mine.get("tiles", ()) and trained is not None and tile_id not in trained:
            raise EosegError(
                f"{weights} were not trained on tile {tile_id} (they record tiles {listed(trained)}), but the config has "
                f"it in TRAIN_IDS and held out, so only its held-out blocks would be scored: set TRAIN_IDS to the tiles "
                "the weights were trained on, or to [] to score it whole (a config that imports another inherits its "
                "TRAIN_IDS, whose globs may now find these tiles)")
        if tile_id not in recorded["tiles"]:
            continue
        if tile_id not in mine.get("tiles", ()) or (mine["block"], mine["every"]) != (recorded["block"], recorded["every"]):
            raise EosegError(
                f"{weights} were trained on the blocks of tile {tile_id} that HOLDOUT_BLOCK={recorded['block']} and "
                f"HOLDOUT_EVERY={recorded['every']} leave to training, with the tile in TRAIN_IDS and held out; score it "
                "with those settings and lists, or its scores count pixels the weights learned from")


def report_overlapping_tiles(cfg: Config) -> None:
    """Say once, on stderr, which tiles are in TRAIN_IDS and held out too: split into blocks, or (HOLDOUT_BLOCK
    = 0) trained on and scored whole, scores that flatter the model; and which held-out tiles cover ground that
    training tiles cover too."""
    training = cfg.tile_ids("train")
    split = split_tiles(cfg)
    if split:
        print(f"note: tiles {listed(split)} are in TRAIN_IDS and held out: 1 block in {cfg.HOLDOUT_EVERY} of "
              f"{cfg.HOLDOUT_BLOCK} x {cfg.HOLDOUT_BLOCK} px of each is left out of training and alone scored "
              "(HOLDOUT_BLOCK, HOLDOUT_EVERY)", file=sys.stderr)
    else:
        for name in ("TEST_IDS", "VAL_IDS"):
            shared = [t for t in cfg.ids(name) if t in training]
            if shared:
                block = _block_for_all(cfg, shared)
                hint = f" (HOLDOUT_BLOCK={block} would hold out blocks of them)" if block else ""
                print(f"warning: tiles {listed(shared)} are in both TRAIN_IDS and {name}: their scores measure what the "
                      f"model memorised, not how it generalises{hint}", file=sys.stderr)
    for warning in shared_ground_warnings(cfg):
        print(warning, file=sys.stderr)


def shared_ground_warnings(cfg: Config, tiles: list[str] | None = None) -> list[str]:
    """A warning for each held-out tile of ``cfg`` (of ``tiles``, where given) whose ground training tiles cover too
    (:func:`ground_in_training`)."""
    split = split_tiles(cfg)
    warnings = []
    for tile_id, (share, covering) in ground_in_training(cfg).items():
        if tiles is not None and tile_id not in tiles:
            continue
        ground = "its held-out blocks' ground" if tile_id in split else "its ground"
        warnings.append(f"warning: held-out tile {tile_id}: {share:.0%} of {ground} is in training tiles too (by their "
                        f"georeference: {listed(covering)}): its scores there measure what the model memorised; leave "
                        "those tiles out of TRAIN_IDS (\"!ID\") or this one out of TEST_IDS and VAL_IDS")
    return warnings


SHARED_GROUND_SHARE = 0.01  # a held-out tile with more of its area in training tiles is named (not tiles whose edges
                            # overlap by a few px)


def ground_in_training(cfg: Config) -> dict[str, tuple[float, list[str]]]:
    """Held-out tiles (TEST_IDS, VAL_IDS) over SHARED_GROUND_SHARE of whose scored area other training tiles cover
    too, by their georeference: tile -> (that share, those training tiles). The scored area of a tile split into
    blocks (in TRAIN_IDS too) is its held-out blocks. Tiles not found, unreadable or without a georeference are
    passed over: other checks name them."""
    training_ids = cfg.tile_ids("train")
    split = set(split_tiles(cfg))
    held_out = [t for name in ("TEST_IDS", "VAL_IDS") for t in cfg.ids(name) if t not in training_ids or t in split]
    if not held_out or not training_ids or not cfg.IMAGE_PATTERN:
        return {}
    training = _placed_images(cfg, training_ids)
    trees: dict[str | None, tuple[list[str], shapely.STRtree]] = {}  # by CRS: the training footprints in it
    found = {}
    for tile_id, info in _placed_images(cfg, list(dict.fromkeys(held_out))).items():
        key = None if info.crs is None else info.crs.to_wkt()
        if key not in trees:
            relatable = {t: other for t, other in training.items()
                         if same_crs(info.crs, other.crs) or not (info.crs is None or other.crs is None or
                                                                  is_engineering(info.crs) or is_engineering(other.crs))}
            placed = {t: shape for t, other in relatable.items() if (shape := _trained_ground(cfg, t, other, info.crs, split))
                      is not None}
            trees[key] = (list(placed), shapely.STRtree(list(placed.values())))
        names, tree = trees[key]
        area = footprint(info, info.crs) if tile_id not in split else _held_out_ground(cfg, tile_id, info)
        shared = {int(i): shapely.intersection(area, tree.geometries[i]) for i in tree.query(area, predicate="intersects")
                  if names[int(i)] != tile_id}  # a split tile's own training blocks lie beside its held-out ones
        shared = {i: piece for i, piece in shared.items() if piece.area > 0}  # not tiles that only touch it
        share = shapely.union_all(list(shared.values())).area / area.area if shared and area.area > 0 else 0.0
        if math.isfinite(share) and share > SHARED_GROUND_SHARE:
            found[tile_id] = (share, [names[i] for i in sorted(shared)])
    return found


def _held_out_ground(cfg: Config, tile_id: str, info: RasterInfo) -> shapely.Geometry:
    """The ground of the held-out blocks of split tile ``tile_id``, in its CRS."""
    split = TileSplit(tile_id, cfg.HOLDOUT_BLOCK, cfg.HOLDOUT_EVERY, info.height, info.width, cfg.PATCH_SIZE)
    blocks = []
    for top in range(0, info.height, split.block):
        for left in range(0, info.width, split.block):
            if split.is_held_out(top // split.block, left // split.block):
                bottom, right = min(top + split.block, info.height), min(left + split.block, info.width)
                xs, ys = info.transform * (np.array([left, right, right, left]), np.array([top, top, bottom, bottom]))
                blocks.append(shapely.Polygon(np.column_stack([xs, ys])))
    return shapely.union_all(blocks)


def _trained_ground(cfg: Config, tile_id: str, info: RasterInfo, crs, split: set[str]) -> shapely.Geometry | None:
    """The ground training read of tile ``tile_id`` (``info``), in ``crs``: its footprint, less its held-out blocks
    where it is split and ``crs`` is its own (review: a second flight over a split one's held-out blocks was said
    to be all in training)."""
    shape = _footprint_in(info, crs)
    if shape is None or tile_id not in split or not same_crs(info.crs, crs):
        return shape
    return shapely.difference(shape, _held_out_ground(cfg, tile_id, info))


def _footprint_in(info: RasterInfo, crs) -> shapely.Geometry | None:
    """``info``'s footprint in ``crs``; None where it cannot be brought there (outside the CRS's domain: PROJ fails, or
    gives coordinates that are not finite)."""
    try:
        shape = footprint(info, crs)
    except Exception:  # noqa: BLE001  PROJ's failures come as rasterio's CPLE errors (of its private module), among others
        return None
    return shape if np.isfinite(shapely.get_coordinates(shape)).all() and not shape.is_empty else None


def _placed_images(cfg: Config, tile_ids: list[str]) -> dict[str, RasterInfo]:
    """The images of ``tile_ids`` that exist and carry a geotransform, by id."""
    placed = {}
    for tile_id in tile_ids:
        path = cfg.tile_path("IMAGE_PATTERN", tile_id)
        if path is None or not path.is_file():
            continue
        try:
            info = raster_info(path, "image")
        except EosegError:
            continue
        if info.georeferenced:
            placed[tile_id] = info
    return placed


def listed(tiles: list[str], most: int = 5) -> str:
    """The first ``most`` tile ids, then how many more."""
    return ", ".join(tiles[:most]) + (f" and {len(tiles) - most} more" if len(tiles) > most else "")
