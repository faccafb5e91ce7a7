"""Make the method's composite per tile: DSM, nDSM and NDVI as a 3-band 8-bit GeoTIFF.

    python make_composite.py                    # TRAIN_IDS, TEST_IDS, VAL_IDS, and OFFICIAL_TEST_IDS found
    python make_composite.py --ids 2 4 DATASET=vaihingen

Reads the DSM (DSM_PATTERN), the nDSM (NDSM_PATTERN) and the image's RED_BAND and
NIR_BAND; writes COMPOSITE_PATTERN with band 1 the DSM stretched min..max per tile to
0..255, band 2 the nDSM from 0..COMPOSITE_NDSM_MAX metres to 0..255, band 3 the NDVI
from -1..1 to 0..255. The image's georeference is kept; composites that exist are replaced only
with --force, and no tile's input ever. To feed it to a network beside
the image, add to EXTRA_SOURCES:
    {"pattern": COMPOSITE_PATTERN, "bands": [1, 2, 3], "band_names": ["DSM", "nDSM", "NDVI"],
     "mean": [0.0, 0.0, 0.0], "std": [255.0, 255.0, 255.0]}
"""

from __future__ import annotations

from tqdm import tqdm

from eoseg.cli import make_parser, parse, run
from eoseg.composite import COMPOSITE_RECORD, is_composite, write_composite
from eoseg.errors import EosegError
from eoseg.io import check_outputs
from eoseg.tiles import tile_inputs


def main(argv=None):
    parser = make_parser(__doc__)
    parser.add_argument("--force", action="store_true", help="replace composites that exist")
    parser.add_argument("--ids", nargs="+", metavar="ID", help="tiles to make composites of (default: TRAIN_IDS, TEST_IDS, VAL_IDS and the OFFICIAL_TEST_IDS whose images exist)")
    args, cfg = parse(parser, argv)
    # inference.py --split official_test needs composites too: of the official test tiles at hand
    official = [t for t in cfg.tile_ids("official_test") if cfg.tile_path("IMAGE_PATTERN", t).is_file()]
    configured = cfg.tile_ids("train") + cfg.tile_ids("test") + cfg.ids("VAL_IDS") + official
    tile_ids = [str(t) for t in args.ids] if args.ids else list(dict.fromkeys(configured))
    if not tile_ids:
        raise EosegError("no tiles: TRAIN_IDS, TEST_IDS and OFFICIAL_TEST_IDS are empty and no --ids given")
    if not cfg.COMPOSITE_PATTERN:
        raise EosegError("COMPOSITE_PATTERN is empty: set where the composites go")
    check_outputs([cfg.tile_path("COMPOSITE_PATTERN", tile_id) for tile_id in tile_ids],
                  tile_inputs(cfg, list(dict.fromkeys(configured + tile_ids)), made_here="COMPOSITE_PATTERN"), args.force,
                  "COMPOSITE_PATTERN")
    for tile_id in tile_ids:  # another's file there (an nDSM EXTRA_SOURCES reads: review) is no composite to replace
        existing = cfg.tile_path("COMPOSITE_PATTERN", tile_id)
        if existing.is_file() and not is_composite(existing):
            raise EosegError(f"{existing} exists and is no composite make_composite.py wrote (its bands are not "
                             "described as DSM, nDSM and NDVI): COMPOSITE_PATTERN names another file, which --force "
                             "would replace; choose another COMPOSITE_PATTERN")
    written = [write_composite(cfg, tile_id) for tile_id in tqdm(tile_ids, desc="composite", unit="tile")]
    cfg.save(written[0].parent, COMPOSITE_RECORD)
    print(f"wrote {len(written)} composites (DSM, nDSM, NDVI) to {written[0].parent}")


if __name__ == "__main__":
    run(main)
