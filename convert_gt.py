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
"""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from eoseg.cli import make_parser, parse, run
from eoseg.convert import color_file_to_labels, labels_file_to_color, record_conversion, values_file_to_labels
from eoseg.errors import EosegError
from eoseg.labels import LabelValues
from eoseg.tiles import existing_path


def main(argv=None):
    parser = make_parser(__doc__)
    parser.add_argument("files", nargs="*", metavar="FILE", help="files to convert (default: all tiles of the config)")
    direction = parser.add_mutually_exclusive_group(required=True)
    direction.add_argument("--from-color", action="store_true", help="colour ground truth -> numeric label maps")
    direction.add_argument("--to-color", action="store_true", help="numeric label maps -> colour images")
    direction.add_argument("--from-values", action="store_true", help="raw label values -> class ids through LABEL_VALUES")
    parser.add_argument("--out", metavar="DIR", help="output folder (required with FILES)")
    parser.add_argument("--unknown-to-ignore", action="store_true",
                        help="map colours outside the palette (label values outside LABEL_VALUES) to IGNORE_LABEL instead of "
                             "failing, as UNKNOWN_LABELS_TO_IGNORE=True does")
    args, cfg = parse(parser, argv)
    palette = cfg.palette

    if args.files:
        if not args.out:
            raise EosegError("--out DIR is required when files are given")
        out = Path(args.out)
        pairs = [(Path(f), out / (Path(f).stem + (Path(f).suffix if Path(f).suffix.lower() in (".tif", ".tiff", ".png") else ".tif")))
                 for f in args.files]
    elif args.from_color:
        ids = list(dict.fromkeys(cfg.tile_ids("train") + cfg.tile_ids("test")))
        pairs = [(existing_path(cfg, "GT_COLOR_PATTERN", t, "colour ground truth"), cfg.tile_path("LABEL_PATTERN", t)) for t in ids]
        if len({target for _, target in pairs}) < len(pairs):
            raise EosegError(f"LABEL_PATTERN {cfg.LABEL_PATTERN!r} has no {{id}}, and convert_gt.py --from-color writes "
                             "a label map per tile; put {id} where the tile id goes in the file name")
        out = pairs[0][1].parent if pairs else Path(cfg.DATA_ROOT)
    else:
        raise EosegError(f"{'--to-color' if args.to_color else '--from-values'} needs the label files to convert")
    values = LabelValues.from_config(cfg)
    values.unknown_to_ignore = values.unknown_to_ignore or args.unknown_to_ignore

    for source, target in tqdm(pairs, desc="convert", unit="file"):
        if not source.is_file():
            raise EosegError(f"input not found: {source}")
        if source.resolve() == target.resolve():
            raise EosegError(f"{source}: output would overwrite the input; choose another --out")
        if args.from_color:
            color_file_to_labels(source, target, palette, values.unknown_to_ignore, cfg.CLASS_NAMES)
            if not args.files:  # the configured tiles' label maps, which every step checks against their source
                record_conversion(source, target)
        elif args.from_values:
            values_file_to_labels(source, target, palette, values, cfg.CLASS_NAMES)
        else:
            labels_file_to_color(source, target, palette, values)
    cfg.save(out, "config.convert_gt.json")
    print(f"wrote {len(pairs)} {'colour images' if args.to_color else 'label maps'} to {out}")


if __name__ == "__main__":
    run(main)
