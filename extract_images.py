"""Step 2: cut the tiles into image/label patches with a sliding window.

    python extract_images.py [--force] [KEY=VALUE ...]

Training tiles (TRAIN_IDS) give overlapping patches (PATCH_SIZE, TRAIN_STRIDE) plus
flipped/rotated copies (FLIPS, ROTATIONS); test tiles (TEST_IDS) give non-overlapping,
unaugmented patches. Writes PATCHES_DIR/images, labels, patches.csv (tile, position,
transform, source of each patch) and manifest.json, the completion marker, last.
"""

from __future__ import annotations

from eoseg.cli import make_parser, parse, run
from eoseg.config import given_folders
from eoseg.extract import extract_patches


def main(argv=None):
    parser = make_parser(__doc__)
    parser.add_argument("--out", metavar="DIR", help="output folder (default: PATCHES_DIR)")
    parser.add_argument("--force", action="store_true", help="replace an existing output folder")
    args, cfg = parse(parser, argv)
    cfg = given_folders(cfg, {"PATCHES_DIR": ("--out", args.out)})  # not inside LMDB_DIR, which create_lmdb.py --force replaces
    out = cfg.PATCHES_DIR
    manifest = extract_patches(cfg, out, force=args.force)
    counts = manifest["counts"]
    print(f"wrote {counts['train']} training and {counts['test']} test patches of "
          f"{cfg.PATCH_SIZE} x {cfg.PATCH_SIZE} px to {out}")


if __name__ == "__main__":
    run(main)
