"""Make the bundled sample: synthetic urban tiles in the ISPRS Vaihingen layout.

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
import re
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from eoseg.cli import make_parser, parse, run
from eoseg.config import Config
from eoseg.errors import EosegError
from eoseg.io import atomic_directory
from eoseg.sample import COLLECTIONS, check_classes, tile_paths, write_sample_tile

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
        cfg.save(folder, CONFIG_NAME)

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
        foreign = _files_not_from_the_sample(cfg, root, tile_ids) if root.exists() else []
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
# eoseg's records of a folder it wrote into (config.convert_gt.json, conversions.convert_gt.json, ...)
RECORD_NAME = re.compile(r"(config|conversions)\.[a-z_]+\.json")


def _files_not_from_the_sample(cfg: Config, root: Path, tile_ids: list[str]) -> list[Path]:
    """Files under ``root`` that this script did not make (under this run's config or the one it recorded) and no
    step made from its tiles, beside their GDAL side files and eoseg's records: --force would delete the user's."""
    recorded = json.loads((root / CONFIG_NAME).read_text()).get("config", {})
    keys = (*COLLECTIONS, *DERIVED_COLLECTIONS, "TRAIN_IDS", "TEST_IDS")
    configs = [(cfg, tile_ids)]
    try:
        before = cfg.replace(**{key: recorded[key] for key in keys if key in recorded})
        configs.append((before, before.tile_ids("train") + before.tile_ids("test")))
    except EosegError:  # a record of another version: this run's own files still count
        pass
    ours = {(root / CONFIG_NAME).absolute()}
    for config, ids in configs:
        config = config.replace(DATA_ROOT=str(root))
        for tile_id in ids:
            for name in (*COLLECTIONS, *DERIVED_COLLECTIONS):
                try:
                    path = config.tile_path(name, tile_id)
                except EosegError:
                    continue
                if path is not None:
                    ours.add(path.absolute())
    for record in root.rglob("conversions.convert_gt.json"):  # label maps convert_gt.py made of the sample's GT
        for name, entry in json.loads(record.read_text()).items():
            if Path(entry.get("source", "/")).absolute().is_relative_to(root.absolute()):
                ours.add((record.parent / name).absolute())
    ours_by_folder = {}
    for path in ours:
        ours_by_folder.setdefault(path.parent, set()).add(path.name)
    foreign = []
    for path in sorted(p.absolute() for p in root.rglob("*") if p.is_file()):
        names = ours_by_folder.get(path.parent, set())
        if path in ours or path.name.startswith(".") or (names and RECORD_NAME.fullmatch(path.name)):
            continue
        if any(path.name.startswith(f"{name}.") for name in names):  # .aux.xml, .ovr, .msk, a record beside it
            continue
        foreign.append(path)
    return foreign


if __name__ == "__main__":
    run(main)
