"""Step 1: colour-coded ground truth <-> numeric label maps.

    python convert_gt.py --from-color                 # every tile of the config: GT_COLOR_PATTERN -> LABEL_PATTERN
    python convert_gt.py a.tif b.tif --from-color --out labels/
    python convert_gt.py pred_labels.tif --to-color --out colored/
    python convert_gt.py masks/*.tif --from-values --out labels/   # raw values -> class ids by LABEL_VALUES

The palette (PALETTE, IGNORE_COLOR, IGNORE_LABEL) comes from the config. A colour that
is not in the palette is an error naming the file, colour and pixel count, unless
--unknown-to-ignore maps it to IGNORE_LABEL. --from-values maps the raw values of label
rasters (0/255 masks, codes) to class ids through LABEL_VALUES, as every step does when it
reads them; a value the map does not name is an error, likewise; --to-color reads them so too
(a map of class ids, eoseg's own, as it is) and leaves unlabelled pixels transparent, as
--from-color reads transparent pixels as unlabelled. Ground truth saved as JPEG
or resampled holds colours (values) near the palette's: LABEL_TOLERANCE=N reads one within
N levels of a single palette colour (LABEL_VALUES value) as it. GeoTIFF georeference is kept.
Outputs that exist are replaced only with --force, and never a tile's image or other input.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tqdm import tqdm

from eoseg.cli import make_parser, parse, run
from eoseg.convert import (CONFIG_RECORD, check_targets, colour_files_to_labels, convert_colour_tiles, labels_file_to_color,
                           values_file_to_labels)
from eoseg.errors import EosegError
from eoseg.labels import LabelValues
from eoseg.tiles import configured_inputs


def main(argv=None):
    parser = make_parser(__doc__)
    parser.add_argument("files", nargs="*", metavar="FILE", help="files to convert (required by --to-color and --from-values; --from-color without "
                        "files converts every tile of the config)")
    direction = parser.add_mutually_exclusive_group(required=True)
    direction.add_argument("--from-color", action="store_true", help="colour ground truth -> numeric label maps")
    direction.add_argument("--to-color", action="store_true", help="numeric label maps -> colour images")
    direction.add_argument("--from-values", action="store_true", help="raw label values -> class ids through LABEL_VALUES")
    parser.add_argument("--out", metavar="DIR", help="output folder (required with FILES)")
    parser.add_argument("--force", action="store_true", help="replace label maps (colour images) that exist")
    parser.add_argument("--unknown-to-ignore", action="store_true",
                        help="map colours outside the palette (label values outside LABEL_VALUES) to IGNORE_LABEL instead of "
                             "failing, as UNKNOWN_LABELS_TO_IGNORE=True does")
    args, cfg = parse(parser, argv)
    values = LabelValues.from_config(cfg)
    values.unknown_to_ignore = values.unknown_to_ignore or args.unknown_to_ignore
    if not args.files:
        if not args.from_color:
            raise EosegError(f"{'--to-color' if args.to_color else '--from-values'} needs the label files to convert")
        pairs, note = convert_colour_tiles(cfg, args.force, values.unknown_to_ignore)
        folders = ", ".join(str(folder) for folder in dict.fromkeys(target.parent for _, target in pairs))
        print(f"wrote {len(pairs)} label maps to {folders or cfg.DATA_ROOT}")
        if note:
            print(note, file=sys.stderr)
        return
    if not args.out:
        raise EosegError("--out DIR is required when files are given")
    out = Path(args.out)
    pairs = [(Path(f), out / (Path(f).stem + (Path(f).suffix if Path(f).suffix.lower() in (".tif", ".tiff", ".png") else ".tif")))
             for f in args.files]
    # label maps may replace the config's (LABEL_PATTERN); nothing may replace its images or colour ground truth
    check_targets(pairs, configured_inputs(cfg, "" if args.to_color else "LABEL_PATTERN"), args.force, "--out")
    note = None
    if args.from_color:
        note = colour_files_to_labels(pairs, cfg.palette, cfg.CLASS_NAMES, values.unknown_to_ignore)
    else:
        for source, target in tqdm(pairs, desc="convert", unit="file"):
            if args.from_values:
                values_file_to_labels(source, target, cfg.palette, values, cfg.CLASS_NAMES)
            else:
                labels_file_to_color(source, target, cfg.palette, values)
    cfg.save(out, CONFIG_RECORD)
    print(f"wrote {len(pairs)} {'colour images' if args.to_color else 'label maps'} to {out}")
    if note:
        print(note, file=sys.stderr)


if __name__ == "__main__":
    run(main)
