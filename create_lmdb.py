"""Step 3: pack the extracted patches into LMDB databases for fast training reads.

    python create_lmdb.py [--force] [KEY=VALUE ...]

Writes LMDB_DIR/train.lmdb (records shuffled with SHUFFLE_SEED) and LMDB_DIR/test.lmdb
(in order). Each database records classes, bands, normalisation, patch size and count,
and is marked complete only after its last record.
"""

from __future__ import annotations

from eoseg.cli import make_parser, parse, run
from eoseg.config import given_folders
from eoseg.lmdb_store import create_lmdb


def main(argv=None):
    parser = make_parser(__doc__)
    parser.add_argument("--patches", metavar="DIR", help="patch folder from extract_images.py (default: PATCHES_DIR)")
    parser.add_argument("--out", metavar="DIR", help="output folder (default: LMDB_DIR)")
    parser.add_argument("--force", action="store_true", help="replace an existing output folder")
    args, cfg = parse(parser, argv)
    # not inside PATCHES_DIR, which extract_images.py --force replaces (review: the LMDBs deleted without a word)
    cfg = given_folders(cfg, {"LMDB_DIR": ("--out", args.out), "PATCHES_DIR": ("--patches", args.patches)})
    out = cfg.LMDB_DIR
    summary = create_lmdb(cfg, cfg.PATCHES_DIR, out, force=args.force)
    print(", ".join(f"{split}.lmdb: {count} records" for split, count in summary.items()) + f" in {out}")


if __name__ == "__main__":
    run(main)
