"""Make the sample data set: synthetic urban tiles in the ISPRS Vaihingen layout.

Writes every tile of TRAIN_IDS and TEST_IDS under DATA_ROOT with the config's patterns:
an IRRG orthophoto, the colour-coded ground truth, the same with eroded (black)
boundaries, a DSM and an nDSM (heights above the terrain; NDSM_PATTERN), all GeoTIFFs
in EPSG:32632 with 9 cm pixels. The scenes are procedural (see eoseg/sample.py), not a
benchmark: they let the whole pipeline run without the ISPRS download.

    python make_sample.py                       # data/sample, 8 tiles of 512 x 512
    python make_sample.py --size 256 --seed 3 DATA_ROOT=/tmp/small --force
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from eoseg.cli import make_parser, parse, run
from eoseg.composite import COMPOSITE_RECORD
from eoseg.config import Config, is_id_glob
from eoseg.convert import CONFIG_RECORD
from eoseg.errors import EosegError
from eoseg.io import atomic_directory, atomic_write_text
from eoseg.sample import COLLECTIONS, check_classes, tile_paths, write_sample_tile
from eoseg.tiles import CONVERSION_RECORD

CONFIG_NAME = "config.make_sample.json"


def main(argv: Sequence[str] | None = None) -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--size", type=int, default=512, help="side of each tile in pixels (default 512)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the scenes; the same seed gives the same tiles")
    parser.add_argument("--force", action="store_true", help="replace an existing DATA_ROOT made by this script")
    args, cfg = parse(parser, argv)
    check_classes(cfg)
    if args.size < 32:
        raise EosegError(f"--size must be at least 32 pixels, got {args.size}")
    if args.seed < 0:
        raise EosegError(f"--seed must be >= 0, got {args.seed}")
    tile_ids = list(dict.fromkeys(cfg.tile_ids("train") + cfg.tile_ids("test")))
    if not tile_ids:
        raise EosegError("TRAIN_IDS and TEST_IDS are both empty; there is no tile to make")
    root = Path(cfg.DATA_ROOT)

    counts = np.zeros(cfg.num_classes, dtype=np.int64)

    def write_all(folder: Path) -> None:
        staged = cfg.replace(DATA_ROOT=str(folder))
        for index, tile_id in enumerate(tqdm(tile_ids, desc="sample tiles", unit="tile")):
            _, labels = write_sample_tile(staged, tile_id, index, args.size, args.seed)
            counts[:] += np.bincount(labels.ravel(), minlength=cfg.num_classes)
        record = cfg.save(folder, CONFIG_NAME)
        # the tiles drawn, as ids: what --force may replace (a glob in TRAIN_IDS would find a user's tile added later);
        # and the size and seed they were drawn with, which the config's names do not hold (review)
        drawn = {"tile_ids": tile_ids, "size": args.size, "seed": args.seed}
        atomic_write_text(record, json.dumps({**json.loads(record.read_text()), **drawn}, indent=1) + "\n")

    if root.exists() and not args.force:
        existing = [p for t in tile_ids for p in tile_paths(cfg, t).values() if p.exists()]
        if existing:
            raise EosegError(f"{existing[0]} already exists; pass --force to replace {root}")
        # added to a folder that holds none of our files: built beside it and moved in, the record last, so that
        # an interrupted run leaves none of the tiles (a partial set would pass for the sample)
        with tempfile.TemporaryDirectory(dir=root.parent, prefix=f".{root.name}.") as staging:
            write_all(Path(staging))
            made = sorted(path for path in Path(staging).rglob("*") if path.is_file())
            for path in sorted(made, key=lambda path: path.name == CONFIG_NAME):
                target = root / path.relative_to(staging)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, target)
    else:
        if root.exists() and any(root.iterdir()) and not (root / CONFIG_NAME).exists():
            # --force deletes the folder: only do that to a sample this script made
            raise EosegError(
                f"{root} is not empty and has no {CONFIG_NAME}, so it was not made by make_sample.py; "
                "refusing to replace it, choose another DATA_ROOT or remove it yourself"
            )
        foreign = _files_not_from_the_sample(cfg, root) if root.exists() and any(root.iterdir()) else []
        if foreign:
            raise EosegError(f"{root} holds {len(foreign)} file{'s' if len(foreign) > 1 else ''} that neither "
                             f"make_sample.py nor a step reading its tiles made ({foreign[0]}"
                             f"{', ...' if len(foreign) > 1 else ''}), which --force would delete with the sample; move "
                             f"{'them' if len(foreign) > 1 else 'it'} out, or choose another DATA_ROOT")
        # build the whole dataset beside the old one and swap it in only when complete
        with atomic_directory(root, force=True) as folder:
            write_all(folder)

    print(f"wrote {len(tile_ids)} tiles of {args.size} x {args.size} px to {root}")
    print(f"{'class':<22}{'pixels':>8}")
    for name, count in zip(cfg.CLASS_NAMES, counts):
        print(f"{name:<22}{100 * count / counts.sum():>7.1f}%")


# files made from the sample's tiles by the pipeline (label maps, composites), replaced with it as stale
DERIVED_COLLECTIONS = ("LABEL_PATTERN", "COMPOSITE_PATTERN")
# eoseg's records of the folders it writes into the sample (label maps, composites)
RECORDS = (CONFIG_RECORD, CONVERSION_RECORD, COMPOSITE_RECORD)
SIDE_FILES = (".aux.xml", ".ovr", ".msk")  # what GDAL writes beside a raster


def _files_not_from_the_sample(cfg: Config, root: Path) -> list[Path]:
    """Files under ``root`` that this script did not make (its record lists the tiles it drew, under the patterns it
    recorded) and no step made from its tiles, beside their GDAL side files and eoseg's records: --force would delete
    the user's. A tile of this run's config that the record does not list is the user's (code review)."""
    files = sorted(p.absolute() for p in root.rglob("*") if p.is_file())
    try:
        saved = json.loads((root / CONFIG_NAME).read_text())
        recorded = saved["config"]
        # records before the list: their literal ids (a glob would find the user's tiles too)
        ids = saved.get("tile_ids") or [str(t) for name in ("TRAIN_IDS", "TEST_IDS") for t in recorded.get(name, [])
                                         if not is_id_glob(str(t))]
        before = cfg.replace(DATA_ROOT=str(root), **{key: recorded[key] for key in (*COLLECTIONS, *DERIVED_COLLECTIONS)
                                                      if key in recorded})
    except (OSError, ValueError, KeyError, TypeError, AttributeError, EosegError):
        return [path for path in files if path.name != CONFIG_NAME]  # an unreadable record vouches for nothing
    ours = {(root / CONFIG_NAME).absolute()}
    for tile_id in ids:
        for name in (*COLLECTIONS, *DERIVED_COLLECTIONS):
            try:
                path = before.tile_path(name, tile_id)
            except EosegError:
                continue
            if path is not None:
                ours.add(path.absolute())
    for record in root.rglob(CONVERSION_RECORD):  # label maps convert_gt.py made of the sample's GT
        try:
            converted = json.loads(record.read_text()).items()
        except (OSError, ValueError, AttributeError):
            continue
        for name, entry in converted:
            if isinstance(entry, dict) and Path(entry.get("source", "/")).absolute().is_relative_to(root.absolute()):
                ours.add((record.parent / name).absolute())
    folders = {path.parent for path in ours}
    foreign = []
    for path in files:
        if path in ours or path.name.startswith(".") or (path.parent in folders and path.name in RECORDS):
            continue
        if any(path.name == f"{Path(mine).name}{side}" for mine in ours if mine.parent == path.parent for side in SIDE_FILES):
            continue
        foreign.append(path)
    return foreign


if __name__ == "__main__":
    run(main)
